using System.Buffers.Text;
using System.Security.Cryptography;

namespace AssuranceGateway.Grants;

/// <summary>Grant ids: 128 random bits, base64url (22 chars). Accepted ids are 1–64 chars of [A-Za-z0-9_-].</summary>
public static class GrantIds
{
    public const int MaxLength = 64;

    public static string New()
    {
        Span<byte> bytes = stackalloc byte[16];
        RandomNumberGenerator.Fill(bytes);
        return Base64Url.EncodeToString(bytes);
    }

    public static bool IsWellFormed(ReadOnlySpan<char> id)
    {
        if (id.Length is 0 or > MaxLength)
        {
            return false;
        }

        foreach (var c in id)
        {
            if (!(char.IsAsciiLetterOrDigit(c) || c == '-' || c == '_'))
            {
                return false;
            }
        }

        return true;
    }
}
