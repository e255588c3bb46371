using System.Security.Claims;
using AssuranceGateway.Configuration;
using AssuranceGateway.Enforcement;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;

namespace AssuranceGateway.Evidence;

/// <summary>
/// SPEC §5.6: the upstream receives <c>Assurance-Evidence</c>, a short-lived ES256 JWS saying which approval let this
/// very request through, so it can verify that for itself with the key published at /.well-known/jwks.json.
/// The key is read from the configuration in force, so a rotated key file takes effect on reload.
/// </summary>
public sealed class EvidenceSigner(TimeProvider time) : IEvidenceSigner
{
    public const string Type = "assurance-evidence+jwt";
    public const string Issuer = "urn:assurance-gateway";

    private readonly JsonWebTokenHandler _handler = new() { SetDefaultTimesOnTokenCreation = false };

    public string Sign(AssuranceDecision decision, GatewaySettings settings)
    {
        var key = settings.Evidence.SigningKey ?? throw new InvalidOperationException("no evidence signing key configured");
        var now = time.GetUtcNow().UtcDateTime;
        var claims = new Dictionary<string, object>(StringComparer.Ordinal)
        {
            ["route"] = decision.Route,
            ["policy"] = decision.Policy.Name,
            ["traceId"] = decision.TraceId ?? string.Empty,
        };
        Add(claims, "grantId", decision.GrantId);
        Add(claims, "requestHash", decision.RequestHash);
        Add(claims, "workload", decision.WorkloadId);
        Add(claims, "aal", decision.Aal);
        Add(claims, "approvalAal", decision.ApprovalAal);
        Add(claims, "usesRemaining", decision.UsesRemaining);
        if (decision.Approvers.Count > 0)
        {
            claims["approvers"] = decision.Approvers.ToArray();
        }

        var descriptor = new SecurityTokenDescriptor
        {
            Issuer = Issuer,
            Subject = decision.Subject is null ? null : new ClaimsIdentity([new Claim("sub", decision.Subject)]),
            IssuedAt = now,
            Expires = now + settings.Evidence.Lifetime,
            Claims = claims,
            TokenType = Type,
            SigningCredentials = new SigningCredentials(key, SecurityAlgorithms.EcdsaSha256),
        };
        return _handler.CreateToken(descriptor);
    }

    /// <summary>The public half of the evidence key as a JWK Set (what /.well-known/jwks.json serves).</summary>
    public static Dictionary<string, object> PublicJwks(JsonWebKey? key)
    {
        var keys = new List<Dictionary<string, string>>();
        if (key is not null)
        {
            var jwk = new Dictionary<string, string>(StringComparer.Ordinal)
            {
                ["kty"] = key.Kty, ["crv"] = key.Crv, ["x"] = key.X, ["y"] = key.Y, ["use"] = "sig", ["alg"] = "ES256",
            };
            if (!string.IsNullOrEmpty(key.Kid))
            {
                jwk["kid"] = key.Kid;
            }

            keys.Add(jwk);
        }

        return new Dictionary<string, object> { ["keys"] = keys };
    }

    private static void Add(Dictionary<string, object> claims, string name, object? value)
    {
        if (value is not null)
        {
            claims[name] = value;
        }
    }
}
