using AssuranceGateway.Requests;

namespace AssuranceGateway.Cli;

/// <summary>Option values that System.CommandLine cannot check by itself, read the same way by every command.</summary>
internal static class CommandInput
{

    /// <summary>
    /// Repeated <c>--header 'name: value'</c> options, by lower-case name, each name's values in the order given: a header
    /// given twice has two values, which the request hash joins with "," (SPEC §4.2) as the gateway does for a header
    /// sent twice.
    /// </summary>
    public static Dictionary<string, List<string>> Headers(string[]? options)
    {
        var headers = new Dictionary<string, List<string>>(StringComparer.Ordinal);
        foreach (var option in options ?? [])
        {
            var colon = option.IndexOf(':', StringComparison.Ordinal);
            var name = colon < 0 ? string.Empty : CanonicalRequest.TrimOptionalWhiteSpace(option[..colon]).ToLowerInvariant();
            if (name.Length == 0)
            {
                throw new UsageException($"--header '{option}': expected 'name: value'");
            }

            if (!headers.TryGetValue(name, out var values))
            {
                headers[name] = values = [];
            }

            // As the gateway's hash trims: \v, \f or NBSP around a value are part of it.
            values.Add(CanonicalRequest.TrimOptionalWhiteSpace(option[(colon + 1)..]));
        }

        return headers;
    }

    /// <summary>The exact body bytes of <c>--body</c> (empty when not given).</summary>
    public static byte[] ReadBody(FileInfo? file)
    {
        if (file is null)
        {
            return [];
        }

        if (!file.Exists)
        {
            throw new UsageException($"--body '{file}': no such file");
        }

        return File.ReadAllBytes(file.FullName);
    }

    /// <summary>How long to wait for the assurance API: <c>AGW_HTTP_TIMEOUT</c> seconds, 100 by default (HttpClient's).</summary>
    public static TimeSpan HttpTimeout()
    {
        var text = Environment.GetEnvironmentVariable("AGW_HTTP_TIMEOUT");
        if (string.IsNullOrEmpty(text))
        {
            return TimeSpan.FromSeconds(100);
        }

        return int.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var seconds) && seconds is > 0 and <= 3600
            ? TimeSpan.FromSeconds(seconds)
            : throw new UsageException($"AGW_HTTP_TIMEOUT '{text}': expected whole seconds from 1 to 3600");
    }

    /// <summary>The assurance API base address of <c>--api</c> / AGW_API.</summary>
    public static Uri ApiAddress(string text)
    {
        if (!Uri.TryCreate(text, UriKind.Absolute, out var uri) || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps))
        {
            throw new UsageException($"--api '{text}': expected an absolute http:// or https:// URL");
        }

        return uri;
    }
}
