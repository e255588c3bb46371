using System.Collections.Frozen;
using AssuranceGateway.Enforcement;

namespace AssuranceGateway.Configuration;

public enum PolicyMode
{
    Enforce,
    Shadow,
}

public enum MissingGrantAction
{
    Deny,
    Challenge,
}

/// <summary>A validated assurance policy: what a route demands before anything reaches its upstream.</summary>
public sealed record AssurancePolicy
{
    public const string PassthroughName = "passthrough";

    public required string Name { get; init; }

    /// <summary>False only for the built-in <c>passthrough</c>: no token, no grant, evidence span only.</summary>
    public bool RequiresToken { get; init; } = true;

    public bool RequiresGrant { get; init; } = true;
    public Bindings Bind { get; init; }
    public int MinimumAal { get; init; }
    public int MinimumApprovalAal { get; init; }
    public int MaxUses { get; init; } = 1;
    public TimeSpan MaxTtl { get; init; } = TimeSpan.FromMinutes(5);
    public PolicyMode Mode { get; init; } = PolicyMode.Enforce;
    public MissingGrantAction OnMissing { get; init; } = MissingGrantAction.Deny;
    public int Approvals { get; init; } = 1;
    public FrozenDictionary<string, string[]> RequireClaims { get; init; } = FrozenDictionary<string, string[]>.Empty;
    public TimeSpan PendingTtl { get; init; } = TimeSpan.FromMinutes(15);
    public int MaxPendingPerSubject { get; init; } = 10;

    /// <summary>Mismatch reasons that also revoke the grant: a leaked grant id is burned.</summary>
    public IReadOnlyList<string> RevokeOn { get; init; } = [];

    /// <summary>Lower-cased and sorted ordinally, as the canonical request hash wants them.</summary>
    public IReadOnlyList<string> BoundHeaders { get; init; } = [];

    public long MaxBodyBytes { get; init; } = 1024 * 1024;

    public bool NeedsWorkload => (Bind & Bindings.Workload) != 0 || RequireClaims.Count > 0;

    public static AssurancePolicy Passthrough { get; } = new()
    {
        Name = PassthroughName,
        RequiresToken = false,
        RequiresGrant = false,
    };
}
