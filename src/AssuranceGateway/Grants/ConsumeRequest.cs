using System.Net;
using AssuranceGateway.Enforcement;
using AssuranceGateway.Requests;

namespace AssuranceGateway.Grants;

/// <summary>Everything one request presents for step 6: the grant id and this request's value of every binding.</summary>
public sealed record ConsumeRequest
{
    public required string GrantId { get; init; }
    public required string Route { get; init; }

    /// <summary>The bindings the policy requires; a grant's own extra bindings are checked as well.</summary>
    public Bindings Required { get; init; }

    public string? Subject { get; init; }
    public string? Session { get; init; }
    public string? TokenHash { get; init; }
    public string? Workload { get; init; }
    public IPAddress? Origin { get; init; }
    public string? RequestHash { get; init; }

    /// <summary>
    /// This request's component digests, given as they are (<see cref="Digests"/>) or as the components they are computed
    /// from on first read (<see cref="Components"/>): only a request mismatch reads them.
    /// </summary>
    public RequestDigests? Digests
    {
        get => _digests ?? Components?.Digests;
        init => _digests = value;
    }

    /// <summary>The canonical components of the request, whose digests are computed only when a mismatch needs them.</summary>
    public CanonicalComponents? Components { get; init; }

    /// <summary>Whether <see cref="Digests"/> has a value, without computing it.</summary>
    public bool HasDigests => _digests is not null || Components is not null;

    private readonly RequestDigests? _digests;
    public IReadOnlyList<string> RevokeOn { get; init; } = [];

    /// <summary>
    /// The approvals the route's policy in force asks for (<c>Approvals</c>, <c>MinimumApprovalAal</c>). A grant made
    /// active under a weaker rule (issued by a replica still on the previous configuration during a rolling change, or
    /// before a reload raised the rule) carries fewer or weaker approvals than these, and is not used here.
    /// </summary>
    public int MinimumApprovals { get; init; }

    public int MinimumApprovalAal { get; init; }
    public string? TraceId { get; init; }
    public string? SpanId { get; init; }

    /// <summary>Shadow mode: decide exactly as enforcement would, but write nothing.</summary>
    public bool DryRun { get; init; }
}

/// <summary>The verdict of the atomic check-and-consume, with what evidence needs to explain it.</summary>
public sealed record ConsumeResult
{
    public required string Reason { get; init; }
    public GrantStatus? Status { get; init; }
    public int UsesRemaining { get; init; }
    public IReadOnlyList<string> Mismatch { get; init; } = [];
    public bool Revoked { get; init; }
    private FirstUse? _firstUse;
    private string? _firstUseJson;

    /// <summary>The grant's first use (the evidence a replay points at).</summary>
    public FirstUse? FirstUse
    {
        get => _firstUse ??= _firstUseJson is null ? null : RedisGrantStore.ReadFirstUse(_firstUseJson);
        init => _firstUse = value;
    }

    /// <summary>
    /// The first use as the Redis store returns it: parsed only when read, which an allowed request never does
    /// (only a replay's evidence names the first use).
    /// </summary>
    internal string? FirstUseJson
    {
        init => _firstUseJson = value;
    }

    public IReadOnlyList<string> Approvers { get; init; } = [];
    public int ApprovalAal { get; init; }
    public string? Subject { get; init; }
    public string? Workload { get; init; }
    public string? RequestHash { get; init; }

    public bool Allowed => Reason == ReasonCodes.Ok;
}

public enum GrantChange
{
    Done,
    NotFound,

    /// <summary>The grant is not in a state that allows the change (e.g. approving a revoked grant).</summary>
    Conflict,

    /// <summary>Challenge mode: the subject already has the maximum number of pending grants.</summary>
    TooMany,
}

/// <summary>What <see cref="IGrantStore.CreateAsync"/> did, and (when <see cref="GrantChange.Done"/>) the expiry the store set.</summary>
public sealed record GrantCreated(GrantChange Outcome, DateTimeOffset ExpiresAt);

public sealed record ApproveResult(GrantChange Outcome, GrantStatus? Status, int ApprovalsRemaining);
