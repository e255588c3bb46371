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

    /// <summary>A token's lifetime from <c>--ttl</c>: a token that is expired when minted only fails later, at the gateway.</summary>
    public static TimeSpan Lifetime(int seconds) =>
        seconds > 0 ? TimeSpan.FromSeconds(seconds) : throw new UsageException($"--ttl {seconds}: a lifetime of at least 1 second");

    /// <summary>
    /// The access token of <c>grant create --token</c>, as the gateway will see it: it hashes the token after "Bearer "
    /// and surrounding white space, so a pasted header value or a line read with its "\r" must hash the same, and
    /// anything that is not a compact JWT would bind a hash that no request has.
    /// </summary>
    public static string AccessToken(string text)
    {
        var token = text.Trim();
        if (token.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
        {
            token = token[7..].Trim();
        }

        var parts = token.Split('.');
        if (parts.Length != 3 || parts.Any(p => p.Length == 0 || p.AsSpan().ContainsAnyExcept(Base64UrlChars)))
        {
            throw new UsageException("--token: not a compact JWT (three base64url parts separated by '.'); give the access token itself");
        }

        return token;
    }

    private static readonly System.Buffers.SearchValues<char> Base64UrlChars =
        System.Buffers.SearchValues.Create("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_");

    /// <summary>
    /// A time given on the command line, which must carry its offset: without one it would be read in this machine's
    /// time zone, and a grant's window opened hours away from the one meant when the issuer's laptop and the change
    /// calendar disagree.
    /// </summary>
    public static DateTimeOffset Instant(string option, string text)
    {
        var styles = System.Globalization.DateTimeStyles.RoundtripKind;
        if (DateTime.TryParse(text, System.Globalization.CultureInfo.InvariantCulture, styles, out var time) && time.Kind != DateTimeKind.Unspecified
            && DateTimeOffset.TryParse(text, System.Globalization.CultureInfo.InvariantCulture, System.Globalization.DateTimeStyles.None, out var instant))
        {
            return instant;
        }

        throw new UsageException($"{option} '{text}': a date and time with its offset, e.g. 2026-12-01T09:00:00Z or 2026-12-01T10:00:00+01:00");
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

    /// <summary>
    /// A grant id argument, escaped for the URL path. An id is 1-64 characters of [A-Za-z0-9_-] (SPEC §4.1): anything
    /// else is refused before any call, as HttpClient removes dot segments and "x/../&lt;id&gt;" acted on &lt;id&gt;. An empty
    /// id is most often the output of an earlier <c>ID=$(agw grant create -q …)</c> that failed.
    /// </summary>
    public static string GrantId(string? id)
    {
        if (string.IsNullOrEmpty(id))
        {
            throw new UsageException("grant id is empty: give the id that 'agw grant create -q' printed (did that command fail?)");
        }

        if (!Grants.GrantIds.IsWellFormed(id))
        {
            throw new UsageException($"grant id '{UsageException.Shown(id)}': expected 1 to {Grants.GrantIds.MaxLength} characters of A-Z, a-z, 0-9, '-' and '_', as 'agw grant create' prints it");
        }

        return Uri.EscapeDataString(id);
    }

    /// <summary>
    /// The method of <c>--method</c>: an HTTP token (RFC 9110 §9.1, tchar of §5.6.2). A hash or grant for an empty method
    /// or one with a space could never be used: no request has it.
    /// </summary>
    public static string Method(string method)
    {
        if (!CanonicalRequest.IsToken(method))
        {
            throw new UsageException($"--method '{method}': not an HTTP method (a token of letters, digits and !#$%&'*+-.^_`|~, e.g. POST)");
        }

        return method;
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
