using AssuranceGateway.Tokens;
using AssuranceGateway.Workload;

namespace AssuranceGateway.Configuration;

/// <summary>
/// What one configuration generation needs at request time: the settings and the validators built from them.
/// A request reads <see cref="GatewayConfigState.Current"/> once and uses this value throughout, so a reload in the
/// middle of a request can never mix the keys of one generation with the policy of another.
/// </summary>
public sealed class GatewayRuntime
{
    public GatewayRuntime(GatewaySettings settings, TimeProvider time)
    {
        Settings = settings;
        AccessTokens = new TokenValidator(settings.Tokens, time);
        ApiTokens = new TokenValidator(settings.Tokens, time, [settings.Api.Audience]);
        Workloads = new WorkloadResolver(settings.Workload, settings.Tokens, time);
    }

    public GatewaySettings Settings { get; }

    /// <summary>The generation this configuration is, as stamped on its routes (<see cref="GatewayConfigState.RuntimeFor"/>).</summary>
    public string Stamp { get; init; } = "0";

    /// <summary>Tokens presented on the proxy listener: each issuer's own audiences.</summary>
    public TokenValidator AccessTokens { get; }

    /// <summary>Tokens presented to the assurance API: audience <c>Assurance:Api:Audience</c> only.</summary>
    public TokenValidator ApiTokens { get; }

    public WorkloadResolver Workloads { get; }
}
