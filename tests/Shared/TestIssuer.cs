using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.IdentityModel.Tokens;

namespace AssuranceGateway.Testing;

/// <summary>
/// A token issuer for tests: an EC P-256 key with a kid, its JWKS written to a file, and a JWT builder that can
/// produce both honest tokens and every malformed or hostile variant (raw header and payload JSON).
/// </summary>
public sealed class TestIssuer : IDisposable
{
    private static readonly JsonSerializerOptions Compact = new();

    public TestIssuer(string issuer, string directory, string kid = "k1")
    {
        Issuer = issuer;
        Kid = kid;
        Key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        Directory.CreateDirectory(directory);
        JwksPath = Path.Combine(directory, $"{Guid.NewGuid():N}.jwks.json");
        WriteJwks(JwksPath, (Key, kid));
    }

    public string Issuer { get; }
    public string Kid { get; }
    public ECDsa Key { get; }
    public string JwksPath { get; }

    public static void WriteJwks(string path, params (ECDsa Key, string Kid)[] keys)
    {
        var array = new JsonArray();
        foreach (var (key, kid) in keys)
        {
            var p = key.ExportParameters(false);
            array.Add(new JsonObject
            {
                ["kty"] = "EC", ["crv"] = "P-256", ["kid"] = kid, ["use"] = "sig", ["alg"] = "ES256",
                ["x"] = Base64UrlEncoder.Encode(p.Q.X), ["y"] = Base64UrlEncoder.Encode(p.Q.Y),
            });
        }

        File.WriteAllText(path, new JsonObject { ["keys"] = array }.ToJsonString());
    }

    /// <summary>Standard access-token claims, valid now for five minutes; tests edit what they need.</summary>
    public JsonObject Claims(string subject = "alice", string audience = "gateway", string? acr = "urn:aal2", string? sid = "s-1")
    {
        var now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var claims = new JsonObject
        {
            ["iss"] = Issuer, ["sub"] = subject, ["aud"] = audience, ["iat"] = now, ["nbf"] = now, ["exp"] = now + 300,
            ["jti"] = Guid.NewGuid().ToString("N"),
        };
        if (acr is not null)
        {
            claims["acr"] = acr;
        }

        if (sid is not null)
        {
            claims["sid"] = sid;
        }

        return claims;
    }

    public JsonObject Header(string typ = "at+jwt") => new() { ["alg"] = "ES256", ["typ"] = typ, ["kid"] = Kid };

    public string Token(string subject = "alice", string audience = "gateway", string? acr = "urn:aal2", string? sid = "s-1", Action<JsonObject>? edit = null)
    {
        var claims = Claims(subject, audience, acr, sid);
        edit?.Invoke(claims);
        return Sign(Header(), claims.ToJsonString());
    }

    /// <summary>Signs raw header and payload JSON exactly as given (duplicates and all).</summary>
    public string Sign(JsonObject header, string payloadJson, ECDsa? key = null) =>
        SignRaw(header.ToJsonString(Compact), payloadJson, key ?? Key);

    public static string SignRaw(string headerJson, string payloadJson, ECDsa key)
    {
        var signingInput = Base64UrlEncoder.Encode(Encoding.UTF8.GetBytes(headerJson)) + "." + Base64UrlEncoder.Encode(Encoding.UTF8.GetBytes(payloadJson));
        var signature = key.SignData(Encoding.ASCII.GetBytes(signingInput), HashAlgorithmName.SHA256, DSASignatureFormat.IeeeP1363FixedFieldConcatenation);
        return signingInput + "." + Base64UrlEncoder.Encode(signature);
    }

    public void Dispose() => Key.Dispose();
}
