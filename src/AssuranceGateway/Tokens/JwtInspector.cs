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
    internal static string Printable(string value)
    {
        const int Max = 32;
        var length = Math.Min(value.Length, Max);
        var text = string.Create(length, value, (span, source) =>
        {
            for (var i = 0; i < span.Length; i++)
            {
                var c = source[i];
                span[i] = c is >= ' ' and <= '~' ? c : '?';
            }
        });
        return value.Length > Max ? text + "..." : text;
    }

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
