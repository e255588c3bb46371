using System.Buffers;
using System.Buffers.Text;
using System.Security.Cryptography;
using System.Text;

namespace AssuranceGateway.Requests;

/// <summary>The hash spellings of the contract: <c>sha256:</c> + base64url without padding (SPEC §4.2).</summary>
public static class Hashes
{
    public const string Prefix = "sha256:";

    /// <summary>Token binding hash: SHA-256 over the ASCII bytes of the raw JWT.</summary>
    public static string TokenHash(string rawToken)
    {
        var max = Encoding.ASCII.GetMaxByteCount(rawToken.Length);
        var rented = ArrayPool<byte>.Shared.Rent(max);
        try
        {
            var length = Encoding.ASCII.GetBytes(rawToken, rented);
            return Sha256Prefixed(rented.AsSpan(0, length));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }

    public static string Sha256Prefixed(ReadOnlySpan<byte> data)
    {
        Span<byte> digest = stackalloc byte[32];
        SHA256.HashData(data, digest);
        return Spell(digest);
    }

    /// <summary>How the contract spells a SHA-256 digest: <c>sha256:</c> + base64url without padding.</summary>
    public static string Spell(ReadOnlySpan<byte> digest) => Prefix + Base64Url.EncodeToString(digest);

    public static string Sha256Hex(ReadOnlySpan<byte> data)
    {
        Span<byte> digest = stackalloc byte[32];
        SHA256.HashData(data, digest);
        return Convert.ToHexStringLower(digest);
    }

    public static string Sha256Hex(string text) => Sha256Hex([text], prefixed: false);

    /// <summary>The digest of the UTF-8 of <paramref name="parts"/> joined, without building the joined text.</summary>
    public static string Sha256Prefixed(params ReadOnlySpan<string> parts) => Sha256Hex(parts, prefixed: true);

    private static string Sha256Hex(ReadOnlySpan<string> parts, bool prefixed)
    {
        var max = 0;
        foreach (var part in parts)
        {
            max += Encoding.UTF8.GetMaxByteCount(part.Length);
        }

        byte[]? rented = null;
        var buffer = max <= 1024 ? stackalloc byte[1024] : (rented = ArrayPool<byte>.Shared.Rent(max));
        try
        {
            var length = 0;
            foreach (var part in parts)
            {
                length += Encoding.UTF8.GetBytes(part, buffer[length..]);
            }

            return prefixed ? Sha256Prefixed(buffer[..length]) : Sha256Hex(buffer[..length]);
        }
        finally
        {
            if (rented is not null)
            {
                ArrayPool<byte>.Shared.Return(rented);
            }
        }
    }

    /// <summary>True when <paramref name="value"/> is spelled like a hash of ours (used to validate API input).</summary>
    public static bool IsWellFormed(string? value) =>
        value is { Length: 50 } && value.StartsWith(Prefix, StringComparison.Ordinal) && IsBase64Url(value.AsSpan(Prefix.Length));

    private static bool IsBase64Url(ReadOnlySpan<char> s)
    {
        foreach (var c in s)
        {
            if (!(char.IsAsciiLetterOrDigit(c) || c == '-' || c == '_'))
            {
                return false;
            }
        }

        return true;
    }
}
