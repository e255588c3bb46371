using System.Text;
using AssuranceGateway.Grants;
using Microsoft.Extensions.Primitives;

namespace AssuranceGateway.Requests;

/// <summary>The request hash of SPEC §4.2 and the canonical components that let a mismatch name what differs.</summary>
public readonly record struct RequestHash(string Hash, CanonicalComponents Components)
{
    /// <summary>The digest of each component, computed on first read (see <see cref="CanonicalComponents"/>).</summary>
    public RequestDigests Digests => Components.Digests;
}

/// <summary>
/// The canonical texts of one request (SPEC §4.2), whose digests name the components of a request mismatch. They are
/// computed on first read: on the proxy only a request that does not match its grant needs them, and four SHA-256 calls
/// (each ~0.6 µs, most of it the call into OpenSSL) and their hex spellings were a tenth of a bound request's own work.
/// </summary>
public sealed class CanonicalComponents
{
    private readonly string _method;
    private readonly string _path;
    private readonly string _query;
    private readonly string _headers;
    private readonly string _bodyHex;
    private RequestDigests? _digests;

    internal CanonicalComponents(string method, string path, string query, string headers, string bodyHex)
    {
        _method = method;
        _path = path;
        _query = query;
        _headers = headers;
        _bodyHex = bodyHex;
    }

    /// <summary>Whether <see cref="Digests"/> has been read (tests show that a matching request never computes them).</summary>
    internal bool DigestsComputed => _digests is not null;

    /// <summary>Computed once (two threads racing compute the same value).</summary>
    public RequestDigests Digests => _digests ??= new RequestDigests(
        Hashes.Sha256Hex(_method), Hashes.Sha256Hex(_path), Hashes.Sha256Hex(_query), Hashes.Sha256Hex(_headers), _bodyHex);
}

/// <summary>
/// SPEC §4.2, computed identically for the proxy (from the wire) and for issuers (from the API or the CLI):
/// <code>
/// AGW-REQUEST-V1\n METHOD\n raw-path\n sorted-raw-query\n (name:values\n)* body-sha256-hex
/// </code>
/// </summary>
public static class CanonicalRequest
{
    private static readonly System.Buffers.SearchValues<char> TokenChars =
        System.Buffers.SearchValues.Create("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~");

    /// <summary>An HTTP token (RFC 9110 §5.6.2, tchar): what a method or a header name must be.</summary>
    public static bool IsToken(ReadOnlySpan<char> value) => !value.IsEmpty && !value.ContainsAnyExcept(TokenChars);

    public const string Version = "AGW-REQUEST-V1";

    /// <param name="method">Any case; upper-cased here.</param>
    /// <param name="rawPath">The path as received on the wire, percent-encoding untouched.</param>
    /// <param name="rawQuery">The query as received, without the leading '?'.</param>
    /// <param name="boundHeaders">Lower-case names, sorted ordinally (as the policy stores them).</param>
    /// <param name="headerValues">Values of a bound header (empty when absent).</param>
    /// <param name="body">The exact body bytes that will be forwarded.</param>
    public static RequestHash Compute(
        string method,
        string rawPath,
        string rawQuery,
        IReadOnlyList<string> boundHeaders,
        Func<string, StringValues> headerValues,
        ReadOnlySpan<byte> body)
    {
        var methodText = method.ToUpperInvariant();
        var pathText = rawPath.Length == 0 ? "/" : rawPath;
        var queryText = CanonicalQuery(rawQuery);
        var headersText = CanonicalHeaders(boundHeaders, headerValues);
        var bodyHex = Hashes.Sha256Hex(body);

        var hash = Hashes.Sha256Prefixed(Version, "\n", methodText, "\n", pathText, "\n", queryText, "\n", headersText, bodyHex);
        return new RequestHash(hash, new CanonicalComponents(methodText, pathText, queryText, headersText, bodyHex));
    }

    /// <summary>Raw "name=value" pairs split on '&amp;', empty pairs dropped, sorted by ordinal byte order.</summary>
    public static string CanonicalQuery(string rawQuery)
    {
        if (rawQuery.StartsWith('?'))
        {
            rawQuery = rawQuery[1..];
        }

        if (rawQuery.Length == 0)
        {
            return string.Empty;
        }

        var pairs = rawQuery.Split('&', StringSplitOptions.RemoveEmptyEntries);
        if (pairs.Length == 1)
        {
            return pairs[0];
        }

        Array.Sort(pairs, Utf8ByteOrder);
        return string.Join('&', pairs);
    }

    /// <summary>
    /// The order of the pairs' UTF-8 bytes (SPEC §4.2), without encoding them. UTF-16 ordinal order is the same except
    /// for a character beyond U+FFFF (a surrogate pair, 0xD800-0xDFFF) against one in U+E000-U+FFFF, which UTF-16 puts
    /// first and UTF-8 (lead byte 0xF0 against 0xEE/0xEF) puts last: the proxy and the API refuse non-ASCII queries
    /// today, but an issuer's own code that follows the SPEC must get the hash this one computes.
    /// </summary>
    private static int Utf8ByteOrder(string? x, string? y)
    {
        var a = x.AsSpan();
        var b = y.AsSpan();
        var length = Math.Min(a.Length, b.Length);
        for (var i = 0; i < length; i++)
        {
            if (a[i] != b[i])
            {
                return CodePointOrder(a[i]) - CodePointOrder(b[i]);
            }
        }

        return a.Length - b.Length;

        // Moves the surrogates above U+E000-U+FFFF (and U+E000-U+FFFF down below them), so that UTF-16 units compare in
        // code point order, which is UTF-8 byte order.
        static int CodePointOrder(char c) => c < 0xD800 ? c : c >= 0xE000 ? c - 0x800 : c + 0x2000;
    }

    /// <summary>
    /// Why a path written by an issuer (the API's <c>request.path</c>, <c>agw hash --path</c>) can never be the path of a
    /// request the gateway lets through, or null. The gateway hashes the path as it arrives and forwards it only when the
    /// upstream receives it unchanged (no dot segments; no escape that would be decoded or re-encoded on the way: only
    /// upper-case escapes of bytes outside RFC 3986's pchar set, and never of '/'), so a grant for any other spelling, or
    /// for a path that holds a query or a fragment, could never be used.
    /// </summary>
    public static string? PathProblem(string path)
    {
        if (path.Length == 0 || path[0] != '/')
        {
            return "must start with '/'";
        }

        var segmentStart = 1;
        for (var i = 1; i <= path.Length; i++)
        {
            if (i == path.Length || path[i] == '/')
            {
                var segment = path.AsSpan(segmentStart, i - segmentStart);
                if (segment is "." or "..")
                {
                    return "has a dot segment ('.' or '..'), which the gateway refuses (the upstream would receive another path)";
                }

                segmentStart = i + 1;
                continue;
            }

            var c = path[i];
            if (c == '%')
            {
                if (i + 2 >= path.Length || !IsUpperHex(path[i + 1]) || !IsUpperHex(path[i + 2]))
                {
                    return "has a '%' that is not an escape with two upper-case hex digits (the forwarded path would spell it otherwise)";
                }

                var escaped = (char)Convert.ToInt32(path.Substring(i + 1, 2), 16);
                if (escaped < 0x80 && (escaped == '/' || ForwardedPathChars.Contains(escaped)))
                {
                    return $"escapes '{escaped}' (%{path.Substring(i + 1, 2)}), which the gateway refuses: the upstream would receive it unescaped"
                        + (escaped == '/' ? " or escaped twice" : string.Empty) + "; write it as is";
                }

                if (escaped == 0)
                {
                    return "escapes a NUL (%00), which the server refuses";
                }

                if (escaped >= 0x80 && !IsUtf8Run(path, ref i))
                {
                    return "has escapes that are not UTF-8 (a lone or cut-short byte, an overlong or surrogate form): the path is decoded as UTF-8 on the way";
                }

                i += 2;
            }
            else if (c is '?' or '#')
            {
                return $"holds a '{c}': give the query separately, without '?' (a fragment is never sent)";
            }
            else if (!ForwardedPathChars.Contains(c))
            {
                return $"holds '{(char.IsControl(c) ? $"\\u{(int)c:x4}" : c.ToString())}', which is sent percent-encoded: write its UTF-8 bytes as upper-case escapes";
            }
        }

        // Decoded as Kestrel decodes it (every escape but %2F), for what an upstream reads as a dot segment.
        return UpstreamPaths.HasDotSegment(DecodeAsciiEscapes(path))
            ? "has a segment that some upstreams read as a dot segment ('..;x', '..%5C', '..%20'), which the gateway refuses"
            : null;

        static string DecodeAsciiEscapes(string path)
        {
            var decoded = new StringBuilder(path.Length);
            for (var i = 0; i < path.Length; i++)
            {
                if (path[i] == '%' && i + 2 < path.Length && Convert.ToInt32(path.Substring(i + 1, 2), 16) is var b and < 0x80 and not '/')
                {
                    decoded.Append((char)b);
                    i += 2;
                }
                else
                {
                    decoded.Append(path[i]);
                }
            }

            return decoded.ToString();
        }

        static bool IsUpperHex(char c) => char.IsAsciiDigit(c) || c is >= 'A' and <= 'F';

        // The run of escapes of bytes >= 0x80 that starts at i, which must decode as strict UTF-8; i is left on the last
        // one's '%'.
        static bool IsUtf8Run(string path, ref int i)
        {
            var bytes = new List<byte>();
            var last = i;
            for (var j = i; j + 2 < path.Length && path[j] == '%' && IsUpperHex(path[j + 1]) && IsUpperHex(path[j + 2]); j += 3)
            {
                var value = Convert.ToByte(path.Substring(j + 1, 2), 16);
                if (value < 0x80)
                {
                    break;
                }

                bytes.Add(value);
                last = j;
            }

            i = last;
            var next = last + 3;
            if (next < path.Length && path[next] == '%'
                && (next + 2 >= path.Length || !IsUpperHex(path[next + 1]) || !IsUpperHex(path[next + 2])))
            {
                // The run ends on a badly written escape ("%a9", a cut-short "%A"): that is the problem to name, and the
                // outer loop names it next.
                return true;
            }

            try
            {
                _ = StrictUtf8.GetString(bytes.ToArray());
                return true;
            }
            catch (System.Text.DecoderFallbackException)
            {
                return false;
            }
        }
    }

    /// <summary>
    /// Why a query written by an issuer (the API's <c>request.query</c>, <c>agw --query</c>; one leading '?' allowed)
    /// can never be the query of a request the gateway lets through, or null: the gateway refuses a second leading '?',
    /// a query the proxy would not forward as it arrived (see <see cref="QueryForwardedAsIs"/>) and a repeated name out
    /// of canonical order.
    /// </summary>
    public static string? QueryProblem(string query)
    {
        var raw = query.StartsWith('?') ? query[1..] : query;
        if (raw.StartsWith('?'))
        {
            return "starts with a second '?', which the gateway refuses on the wire (give the query without its '?', or with one)";
        }

        if (!QueryForwardedAsIs(raw))
        {
            return "would not reach the upstream as written, so the gateway refuses it: escape with upper-case hex only, never an "
                + "unreserved character (%7E is '~'), and escape what is not allowed as is (such as '{', '\"' or non-ASCII)";
        }

        return RepeatedNameOutOfOrder(raw) is { } repeated
            ? $"repeats '{repeated}' out of canonical order, which the gateway refuses (the hash sorts pairs): give its pairs sorted by byte order"
            : null;
    }

    /// <summary>
    /// True when the proxy forwards the raw query (without its '?') as it arrived: YARP passes it through
    /// <see cref="Uri"/>, which decodes escaped unreserved characters, upper-cases escapes and escapes characters that
    /// may not appear as they are.
    /// </summary>
    public static bool QueryForwardedAsIs(string rawQuery) =>
        rawQuery.AsSpan().IndexOfAnyExcept(QueryChars) < 0
        || (Uri.TryCreate("http://upstream/?" + rawQuery, UriKind.Absolute, out var uri)
            && string.Equals(uri.Query, "?" + rawQuery, StringComparison.Ordinal));

    /// <summary>RFC 3986 query characters without '%': a query of only these (no escapes) is left alone by Uri.</summary>
    private static readonly System.Buffers.SearchValues<char> QueryChars =
        System.Buffers.SearchValues.Create("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/?");

    private static readonly System.Text.UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>RFC 3986 pchar and '/', without '%': what the proxy forwards in a path as it is.</summary>
    internal static readonly System.Buffers.SearchValues<char> ForwardedPathChars =
        System.Buffers.SearchValues.Create("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/");

    /// <summary>
    /// The first query parameter name that repeats out of canonical order, or null. The canonical query sorts whole
    /// pairs, so "env=staging&amp;env=prod" and "env=prod&amp;env=staging" hash alike, while an upstream that reads one
    /// value per name takes the first (Go, Flask) or the last (PHP): for a repeated name the order is part of the request
    /// but not of the hash. A query whose repeated names already come in canonical order is the one request its hash
    /// stands for, so the gateway and the API accept only that. Names are compared as an upstream reads them: '+' is a
    /// space, escapes decoded, case ignored (ASP.NET Core's query collection ignores case), and PHP's folding of ' ', '.'
    /// and '[' into '_', so that "Env", "%65nv" or "dry.run" cannot repeat "env" or "dry_run" unnoticed; the pairs
    /// themselves are compared raw, as the hash sorts them.
    /// </summary>
    public static string? RepeatedNameOutOfOrder(string rawQuery)
    {
        var query = rawQuery.StartsWith('?') ? rawQuery[1..] : rawQuery;
        if (!query.Contains('&', StringComparison.Ordinal))
        {
            return null;
        }

        // The hash sorts the '&'-separated pairs. Some readers also split on ';' (Rack 2, Python's parse_qs before 3.9.2,
        // Go before 1.17): "v=1;env=staging" holds the name env for them, so it counts as a pair that names env too.
        var pairs = query.Split('&', StringSplitOptions.RemoveEmptyEntries);
        var last = new Dictionary<string, int>(StringComparer.OrdinalIgnoreCase);
        for (var index = 0; index < pairs.Length; index++)
        {
            var pair = pairs[index];
            foreach (var part in pair.Split(';', StringSplitOptions.RemoveEmptyEntries))
            {
                var equals = part.IndexOf('=', StringComparison.Ordinal);
                var raw = equals < 0 ? part : part[..equals];
                var name = ReadAsUpstream(raw);
                if (last.TryGetValue(name, out var previous) && previous != index && string.CompareOrdinal(pairs[previous], pair) > 0)
                {
                    return raw;
                }

                last[name] = index;
            }
        }

        return null;
    }

    /// <summary>
    /// A header sent with nothing but optional white space: it hashes as "name:", exactly as an absent one does, so a
    /// request-bound route refuses it (a flag-like header means something by being there).
    /// </summary>
    public static bool PresentButEmpty(StringValues values)
    {
        if (values.Count == 0)
        {
            return false;
        }

        foreach (var value in values)
        {
            if (!string.IsNullOrEmpty(value) && value.AsSpan().Trim(OptionalWhiteSpace).Length > 0)
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>
    /// A query name as the readers an upstream may use see it, folded together: form decoding ('+' is a space, escapes
    /// decoded), ASP.NET Core (case ignored: compared with OrdinalIgnoreCase), PHP (leading spaces dropped, then ' ',
    /// '.' and '[' read as '_'; '[' only when unmatched, so folding every one refuses a little more than needed).
    /// </summary>
    private static string ReadAsUpstream(string raw)
    {
        if (raw.AsSpan().IndexOfAny("%+.[ ") < 0)
        {
            return raw;
        }

        var decoded = Uri.UnescapeDataString(raw.Replace('+', ' ')).TrimStart(' ');
        return decoded.Replace(' ', '_').Replace('.', '_').Replace('[', '_');
    }

    private static readonly char[] OptionalWhiteSpace = [' ', '\t'];

    /// <summary>
    /// A header value as the hash sees it: only optional white space (RFC 9110: spaces and tabs) around it is
    /// insignificant; anything else the upstream receives as sent, so it is hashed as sent. String.Trim() would also drop
    /// \v, \f, U+001C-U+001F and NBSP.
    /// </summary>
    public static string TrimOptionalWhiteSpace(string value) => value.Trim(OptionalWhiteSpace);

    public static string CanonicalHeaders(IReadOnlyList<string> boundHeaders, Func<string, StringValues> headerValues)
    {
        if (boundHeaders.Count == 0)
        {
            return string.Empty;
        }

        var builder = new StringBuilder();
        foreach (var name in boundHeaders)
        {
            builder.Append(name).Append(':');
            var values = headerValues(name);
            for (var i = 0; i < values.Count; i++)
            {
                if (i > 0)
                {
                    builder.Append(',');
                }

                builder.Append(values[i] is { } value ? TrimOptionalWhiteSpace(value) : null);
            }

            builder.Append('\n');
        }

        return builder.ToString();
    }
}
