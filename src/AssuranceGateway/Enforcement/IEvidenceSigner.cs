using AssuranceGateway.Configuration;

namespace AssuranceGateway.Enforcement;

/// <summary>Signs the evidence of an allowed request for the upstream (SPEC §5.6).</summary>
public interface IEvidenceSigner
{
    string Sign(AssuranceDecision decision, GatewaySettings settings);

    /// <summary>
    /// The public JWK Set upstreams verify evidence with: the signing key of <paramref name="settings"/>, its published
    /// keys, and every earlier key whose evidence may not have expired yet. Never a private member.
    /// </summary>
    Dictionary<string, object> PublicJwks(GatewaySettings settings);
}
