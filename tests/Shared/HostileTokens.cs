using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.IdentityModel.Tokens;

namespace AssuranceGateway.Testing;

/// <summary>
/// Builders for tokens that an attacker would send: unsigned, re-signed with HMAC over the public key, carrying
/// their own keys, duplicated names, wrong types. Each one is a known way past a permissive JWT library.
/// </summary>
public static class HostileTokens
{
    public static string Segment(string json) => Base64UrlEncoder.Encode(Encoding.UTF8.GetBytes(json));

    /// <summary><c>alg: none</c> with an empty signature (RFC 7519 §6 "unsecured JWT").</summary>
    public static string AlgNone(JsonObject payload, string typ = "at+jwt") =>
        Segment(new JsonObject { ["alg"] = "none", ["typ"] = typ }.ToJsonString()) + "." + Segment(payload.ToJsonString()) + ".";

    /// <summary>A real token with its signature cut off, keeping the trailing dot.</summary>
    public static string StripSignature(string token) => token[..(token.LastIndexOf('.') + 1)];

    /// <summary>
    /// The classic key-confusion attack: <c>alg: HS256</c>, keyed with the issuer's PUBLIC key (here its PEM text,
    /// which an attacker can download), hoping the verifier feeds the same bytes to HMAC.
    /// </summary>
    public static string HmacWithPublicKey(JsonObject payload, ECDsa publicKey, string kid)
    {
        var header = new JsonObject { ["alg"] = "HS256", ["typ"] = "at+jwt", ["kid"] = kid };
        var input = Segment(header.ToJsonString()) + "." + Segment(payload.ToJsonString());
        var secret = Encoding.ASCII.GetBytes(publicKey.ExportSubjectPublicKeyInfoPem());
        return input + "." + Base64UrlEncoder.Encode(HMACSHA256.HashData(secret, Encoding.ASCII.GetBytes(input)));
    }

    /// <summary>The public half of <paramref name="key"/> as a JWK, for headers that try to bring their own key.</summary>
    public static JsonObject PublicJwk(ECDsa key, string? kid = null)
    {
        var p = key.ExportParameters(false);
        var jwk = new JsonObject
        {
            ["kty"] = "EC", ["crv"] = "P-256",
            ["x"] = Base64UrlEncoder.Encode(p.Q.X), ["y"] = Base64UrlEncoder.Encode(p.Q.Y),
        };
        if (kid is not null)
        {
            jwk["kid"] = kid;
        }

        return jwk;
    }

    /// <summary>A JWE compact serialization shape (five segments), which must never be read as a JWS.</summary>
    public static string JweShaped(JsonObject payload) =>
        Segment("""{"alg":"RSA-OAEP-256","enc":"A256GCM","typ":"at+jwt"}""") + "." + Segment("key") + "." + Segment("iv")
        + "." + Segment(payload.ToJsonString()) + "." + Segment("tag");

    /// <summary>Adds a claim of <paramref name="length"/> characters, to push a token over a size limit.</summary>
    public static JsonObject Padded(JsonObject claims, int length)
    {
        claims["pad"] = new string('x', length);
        return claims;
    }

    /// <summary>
    /// Inserts <paramref name="member"/> (raw JSON, e.g. <c>"sub":"mallory"</c>) as the first member of
    /// <paramref name="json"/>, so that an object can carry a name twice, which JsonObject itself refuses.
    /// </summary>
    public static string WithLeadingMember(string json, string member) => "{" + member + "," + json[1..];
}
