using System.Security.Cryptography;
using Microsoft.IdentityModel.Tokens;

namespace AssuranceGateway.Tokens;

/// <summary>
/// EC JSON Web Keys as .NET keys, in one place: the issuers' public keys, the evidence signing key and agw's
/// development keys are read the same way.
/// </summary>
public static class EcJwk
{
    /// <summary>The named curve of a JWK's <c>crv</c>, or null for one this gateway does not know.</summary>
    public static ECCurve? Curve(string? crv) => crv switch
    {
        "P-256" => ECCurve.NamedCurves.nistP256,
        "P-384" => ECCurve.NamedCurves.nistP384,
        "P-521" => ECCurve.NamedCurves.nistP521,
        _ => null,
    };

    /// <summary>
    /// The key of this JWK, with its private part <c>d</c> when <paramref name="includePrivate"/>. A key of an unknown
    /// curve, a point off its curve or a member that is not base64url throws <see cref="CryptographicException"/>,
    /// <see cref="FormatException"/> or <see cref="ArgumentException"/>.
    /// </summary>
    public static ECDsa Create(JsonWebKey key, bool includePrivate)
    {
        ArgumentNullException.ThrowIfNull(key);
        var curve = Curve(key.Crv) ?? throw new CryptographicException("unknown curve");
        return ECDsa.Create(new ECParameters
        {
            Curve = curve,
            D = includePrivate ? Base64UrlEncoder.DecodeBytes(key.D) : null,
            Q = new ECPoint { X = Base64UrlEncoder.DecodeBytes(key.X), Y = Base64UrlEncoder.DecodeBytes(key.Y) },
        });
    }

    /// <summary>
    /// Null when the public JWK is a point on its curve, else why not: a key that cannot verify would otherwise be
    /// published, and found unusable only by the upstream that tries it.
    /// </summary>
    public static string? ProvePublicKey(JsonWebKey key)
    {
        try
        {
            using var verifier = Create(key, includePrivate: false);
            // Importing the point checks it; exporting makes sure the platform has really taken it.
            _ = verifier.ExportParameters(includePrivateParameters: false);
            return null;
        }
        catch (Exception e) when (e is CryptographicException or FormatException or ArgumentException)
        {
            return e.Message;
        }
    }

    /// <summary>
    /// Null when the private JWK signs and its public point alone verifies that signature, else why not: a key whose
    /// private part does not belong to x and y would otherwise fail only when it is first used.
    /// </summary>
    public static string? ProveKeyPair(JsonWebKey key)
    {
        try
        {
            using var signer = Create(key, includePrivate: true);
            using var verifier = Create(key, includePrivate: false);
            var payload = "AGW key check"u8;
            var signature = signer.SignData(payload, HashAlgorithmName.SHA256);
            return verifier.VerifyData(payload, signature, HashAlgorithmName.SHA256) ? null : "its private part d does not belong to its public point x, y";
        }
        catch (Exception e) when (e is CryptographicException or FormatException or ArgumentException)
        {
            return e.Message;
        }
    }
}
