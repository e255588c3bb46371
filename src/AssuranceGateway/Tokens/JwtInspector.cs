using System.Buffers;
using System.Buffers.Text;
using System.Text.Json;

namespace AssuranceGateway.Tokens;

/// <summary>What the header and payload of a compact JWS say, read without any cryptography.</summary>
internal readonly record struct JwtShape(
    string Algorithm,
    string? Type,
    string? KeyId,
    string? Issuer,
    long? Expires,
    long? NotBefore,
    long? IssuedAt);

/// <summary>
/// Structural checks run before any signature work, so that a hostile token costs us parsing only.
/// Each rule closes a gap that <c>JsonWebTokenHandler</c> leaves open by default (measured here with 8.16):
/// duplicate names (last one wins there), <c>crit</c> (ignored there), embedded keys, and a string <c>exp</c>.
/// </summary>
internal static class JwtInspector
{
    private const int MaxSegmentBytes = 16 * 1024;

    // RFC 7515 §4.1: key material carried by the token itself must never be trusted for verification.
    private static readonly string[] EmbeddedKeyHeaders = ["jwk", "jku", "x5u", "x5c"];

    public static bool TryInspect(string token, out JwtShape shape, out string failure)
    {
        shape = default;
        var first = token.IndexOf('.', StringComparison.Ordinal);
        var second = first < 0 ? -1 : token.IndexOf('.', first + 1);
        if (first <= 0 || second < 0 || token.IndexOf('.', second + 1) >= 0)
        {
            failure = "not a compact JWS (three segments expected)";
            return false;
        }

        if (second == token.Length - 1)
        {
            failure = "signature missing";
            return false;
        }

        if (!TryReadHeader(token.AsSpan(0, first), out var alg, out var typ, out var kid, out failure))
        {
            return false;
        }

        if (!TryReadPayload(token.AsSpan(first + 1, second - first - 1), out var iss, out var exp, out var nbf, out var iat, out failure))
        {
            return false;
        }

        shape = new JwtShape(alg, typ, kid, iss, exp, nbf, iat);
        return true;
    }

    private static bool TryReadHeader(ReadOnlySpan<char> segment, out string alg, out string? typ, out string? kid, out string failure)
    {
        alg = string.Empty;
        typ = null;
        kid = null;
        string? algValue = null, typValue = null, kidValue = null;
        var ok = WithDecoded(segment, "header", out failure, (ref Utf8JsonReader reader, string name, ref string error) =>
        {
            switch (name)
            {
                case "alg":
                    return ReadString(ref reader, name, ref algValue, ref error);
                case "typ":
                    return ReadString(ref reader, name, ref typValue, ref error);
                case "kid":
                    return ReadString(ref reader, name, ref kidValue, ref error);
                case "crit":
                    // RFC 7515 §4.1.11: we understand no extension, so a token that demands one must be refused.
                    error = "crit header present";
                    return false;
                default:
                    if (Array.IndexOf(EmbeddedKeyHeaders, name) >= 0)
                    {
                        error = $"embedded key header '{name}' present";
                        return false;
                    }

                    reader.Skip();
                    return true;
            }
        });

        typ = typValue;
        kid = kidValue;
        if (!ok)
        {
            return false;
        }

        if (string.IsNullOrEmpty(algValue))
        {
            failure = "alg missing";
            return false;
        }

        alg = algValue;
        return true;
    }

    private static bool TryReadPayload(
        ReadOnlySpan<char> segment, out string? iss, out long? exp, out long? nbf, out long? iat, out string failure)
    {
        iss = null;
        long? expValue = null, nbfValue = null, iatValue = null;
        string? issValue = null;
        var ok = WithDecoded(segment, "payload", out failure, (ref Utf8JsonReader reader, string name, ref string error) =>
        {
            switch (name)
            {
                case "iss":
                    return ReadString(ref reader, name, ref issValue, ref error);
                case "exp":
                    return ReadNumericDate(ref reader, name, ref expValue, ref error);
                case "nbf":
                    return ReadNumericDate(ref reader, name, ref nbfValue, ref error);
                case "iat":
                    return ReadNumericDate(ref reader, name, ref iatValue, ref error);
                default:
                    reader.Skip();
                    return true;
            }
        });

        iss = issValue;
        exp = expValue;
        nbf = nbfValue;
        iat = iatValue;
        if (!ok)
        {
            return false;
        }

        if (exp is null)
        {
            failure = "exp missing";
            return false;
        }

        return true;
    }

    private delegate bool PropertyVisitor(ref Utf8JsonReader reader, string name, ref string error);

    private static bool WithDecoded(ReadOnlySpan<char> segment, string part, out string failure, PropertyVisitor visit)
    {
        failure = string.Empty;
        if (segment.Length > MaxSegmentBytes)
        {
            failure = $"{part} too large";
            return false;
        }

        var rented = ArrayPool<byte>.Shared.Rent(Base64Url.GetMaxDecodedLength(segment.Length));
        try
        {
            if (Base64Url.DecodeFromChars(segment, rented, out _, out var written) != OperationStatus.Done)
            {
                failure = $"{part} is not base64url";
                return false;
            }

            return VisitObject(rented.AsSpan(0, written), part, visit, ref failure);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }

    private static bool VisitObject(ReadOnlySpan<byte> json, string part, PropertyVisitor visit, ref string failure)
    {
        try
        {
            var reader = new Utf8JsonReader(json, new JsonReaderOptions { MaxDepth = 16 });
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
            {
                failure = $"{part} is not a JSON object";
                return false;
            }

            // RFC 7515 §4 and RFC 7519 §4: names must be unique; parsers that keep the last one let an attacker
            // show one value to a filter and another to the validator.
            var seen = new HashSet<string>(StringComparer.Ordinal);
            while (reader.Read())
            {
                if (reader.TokenType == JsonTokenType.EndObject)
                {
                    return !reader.Read() || Fail(part, ref failure);
                }

                var name = reader.GetString()!;
                if (!seen.Add(name))
                {
                    failure = $"duplicate {part} name '{Printable(name)}'";
                    return false;
                }

                if (!reader.Read() || !visit(ref reader, name, ref failure))
                {
                    return false;
                }
            }

            failure = $"{part} is not a JSON object";
            return false;
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        {
            // InvalidOperationException: a name or string that is not valid UTF-8 or holds a lone surrogate (GetString).
            failure = $"{part} is not valid JSON";
            return false;
        }
    }

    /// <summary>
    /// Token text echoed in a failure (which reaches the problem detail, the evidence span and the deny log line):
    /// printable ASCII only and short, so that a name or alg carrying CR/LF cannot forge log lines (CWE-117) and a
    /// long one cannot bloat them.
    /// </summary>
    internal static string Printable(string value) => Printable(value, 32, asciiOnly: true);

    /// <summary>
    /// <paramref name="value"/> made safe to write into a log line, at most <paramref name="max"/> characters (then
    /// "..."). With <paramref name="asciiOnly"/> every character outside printable ASCII becomes '?'. Without it (an
    /// identifier from a signed claim, such as a token's sub or a workload id: any script is legible) only the characters
    /// that can forge a line or drive a terminal are escaped, as <c>\uXXXX</c> so that the evidence still shows them:
    /// C0 and C1 controls (CR, LF, ESC, NEL), DEL, the Unicode line and paragraph separators and the bidirectional
    /// overrides and isolates. A value with nothing to do is returned as it is, after one vectorised scan.
    /// </summary>
    internal static string Printable(string value, int max, bool asciiOnly)
    {
        var unsafeAt = asciiOnly ? value.AsSpan().IndexOfAnyExceptInRange(' ', '~') : value.AsSpan().IndexOfAny(LogUnsafe);
        if (unsafeAt < 0 && value.Length <= max)
        {
            return value;
        }

        var text = new System.Text.StringBuilder(Math.Min(value.Length, max) + 8);
        var i = 0;
        for (; i < value.Length && text.Length < max; i++)
        {
            var c = value[i];
            if (asciiOnly ? c is >= ' ' and <= '~' : !LogUnsafe.Contains(c))
            {
                text.Append(c);
            }
            else if (asciiOnly)
            {
                text.Append('?');
            }
            else
            {
                text.Append("\\u").Append(((int)c).ToString("X4", System.Globalization.CultureInfo.InvariantCulture));
            }
        }

        if (i < value.Length)
        {
            if (text.Length > 0 && char.IsHighSurrogate(text[^1]))
            {
                text.Length--; // no half of a surrogate pair before the ellipsis
            }

            text.Append("...");
        }

        return text.ToString();
    }

    private static readonly SearchValues<char> LogUnsafe = SearchValues.Create(
        "\u0000\u0001\u0002\u0003\u0004\u0005\u0006\u0007\u0008\u0009\u000A\u000B\u000C\u000D\u000E\u000F"
        + "\u0010\u0011\u0012\u0013\u0014\u0015\u0016\u0017\u0018\u0019\u001A\u001B\u001C\u001D\u001E\u001F"
        + "\u007F\u0080\u0081\u0082\u0083\u0084\u0085\u0086\u0087\u0088\u0089\u008A\u008B\u008C\u008D\u008E\u008F"
        + "\u0090\u0091\u0092\u0093\u0094\u0095\u0096\u0097\u0098\u0099\u009A\u009B\u009C\u009D\u009E\u009F"
        + "\u2028\u2029\u202A\u202B\u202C\u202D\u202E\u2066\u2067\u2068\u2069");

    private static bool Fail(string part, ref string failure)
    {
        failure = $"trailing data after {part}";
        return false;
    }

    private static bool ReadString(ref Utf8JsonReader reader, string name, ref string? value, ref string error)
    {
        if (reader.TokenType != JsonTokenType.String)
        {
            error = $"'{name}' is not a string";
            return false;
        }

        value = reader.GetString();
        return true;
    }

    private const long MaxNumericDate = 253_402_300_799; // 9999-12-31T23:59:59Z

    private static bool ReadNumericDate(ref Utf8JsonReader reader, string name, ref long? value, ref string error)
    {
        // RFC 7519 §2 NumericDate is a JSON number; a string "exp" is accepted by the library and refused here.
        if (reader.TokenType != JsonTokenType.Number)
        {
            error = $"'{name}' is not a NumericDate";
            return false;
        }

        // From the epoch to the year 9999: outside that, arithmetic on the value (lifetime = exp - iat) could overflow
        // and let a token through a limit.
        if (reader.TryGetInt64(out var seconds) && seconds is >= 0 and <= MaxNumericDate)
        {
            value = seconds;
            return true;
        }

        if (reader.TryGetDouble(out var fractional) && fractional is >= 0 and < MaxNumericDate)
        {
            value = (long)Math.Floor(fractional);
            return true;
        }

        error = $"'{name}' is out of range";
        return false;
    }
}
