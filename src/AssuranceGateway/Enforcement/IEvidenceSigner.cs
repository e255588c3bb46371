using AssuranceGateway.Configuration;

namespace AssuranceGateway.Enforcement;

/// <summary>Signs the evidence of an allowed request for the upstream (SPEC §5.6).</summary>
public interface IEvidenceSigner
{
    string Sign(AssuranceDecision decision, GatewaySettings settings);
}
