namespace AssuranceGateway.Workload;

/// <summary>
/// Envoy's <c>X-Forwarded-Client-Cert</c>: elements separated by ',', each a ';'-separated list of key=value pairs,
/// values optionally double-quoted with '\' escapes. Each proxy appends its element, so the last one is the
/// client certificate seen by the proxy next to us, the only one we can attribute to a trusted hop.
/// </summary>
public static class Xfcc
{
    /// <summary>The <c>URI=</c> of the last element, or null with a reason when the header is malformed.</summary>
    public static string? LastUri(string header, out string? error)
    {
        error = null;
        var elements = Split(header, ',');
        if (elements is null || elements.Count == 0)
        {
            error = "malformed X-Forwarded-Client-Cert";
            return null;
        }

        var pairs = Split(elements[^1], ';');
        if (pairs is null)
        {
            error = "malformed X-Forwarded-Client-Cert";
            return null;
        }

        string? uri = null;
        foreach (var pair in pairs)
        {
            var eq = pair.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0)
            {
                error = "malformed X-Forwarded-Client-Cert";
                return null;
            }

            var key = pair[..eq].Trim();
            if (!string.Equals(key, "URI", StringComparison.OrdinalIgnoreCase))
            {
                continue;
            }

            if (uri is not null)
            {
                error = "X-Forwarded-Client-Cert names more than one URI";
                return null;
            }

            uri = Unquote(pair[(eq + 1)..].Trim());
        }

        if (string.IsNullOrEmpty(uri))
        {
            error = "X-Forwarded-Client-Cert carries no URI";
            return null;
        }

        return uri;
    }

    /// <summary>Splits on <paramref name="separator"/> outside double quotes; null when a quote is left open.</summary>
    internal static List<string>? Split(string value, char separator)
    {
        var parts = new List<string>();
        var start = 0;
        var quoted = false;
        for (var i = 0; i < value.Length; i++)
        {
            var c = value[i];
            if (quoted && c == '\\')
            {
                i++;
            }
            else if (c == '"')
            {
                quoted = !quoted;
            }
            else if (!quoted && c == separator)
            {
                parts.Add(value[start..i]);
                start = i + 1;
            }
        }

        if (quoted)
        {
            return null;
        }

        parts.Add(value[start..]);
        return parts;
    }

    private static string Unquote(string value)
    {
        if (value.Length < 2 || value[0] != '"' || value[^1] != '"')
        {
            return value;
        }

        var builder = new System.Text.StringBuilder(value.Length);
        for (var i = 1; i < value.Length - 1; i++)
        {
            if (value[i] == '\\' && i + 1 < value.Length - 1)
            {
                i++;
            }

            builder.Append(value[i]);
        }

        return builder.ToString();
    }
}
