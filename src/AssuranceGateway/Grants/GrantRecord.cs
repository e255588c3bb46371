using AssuranceGateway.Enforcement;

namespace AssuranceGateway.Grants;

public enum GrantStatus
{
    Pending,
    Active,
    Consumed,
    Revoked,
}

/// <summary>How a status is written: in the store, the API, the evidence and the log (without a string per call).</summary>
public static class GrantStatusNames
{
    public const string Pending = "pending";
    public const string Active = "active";
    public const string Consumed = "consumed";
    public const string Revoked = "revoked";

    public static string Of(GrantStatus status) => status switch
    {
        GrantStatus.Pending => Pending,
        GrantStatus.Active => Active,
        GrantStatus.Consumed => Consumed,
        GrantStatus.Revoked => Revoked,
        _ => throw new ArgumentOutOfRangeException(nameof(status), status, null),
    };
}

/// <summary>Digests of each canonical component, kept so that a request mismatch can name what differs.</summary>
public sealed record RequestDigests(string Method, string Path, string Query, string Headers, string Body)
{
    public static readonly string[] ComponentNames = ["method", "path", "query", "headers", "body"];

    public string this[int index] => index switch
    {
        0 => Method,
        1 => Path,
        2 => Query,
        3 => Headers,
        4 => Body,
        _ => throw new ArgumentOutOfRangeException(nameof(index)),
    };
}

/// <summary>One lifecycle event of a grant (SPEC §5.2): created, approved, used, denied, revoked, unknown_outcome.</summary>
public sealed record GrantEvent
{
    public const string Created = "created";
    public const string Approved = "approved";
    public const string Used = "used";
    public const string Denied = "denied";
    public const string Revoked = "revoked";
    public const string UnknownOutcome = "unknown_outcome";

    /// <summary>
    /// The use was consumed, then the forwarder failed (its reason: the YARP error, e.g. <c>request</c> for an upstream
    /// it could not reach, <c>request_canceled</c> for a client that went away). Whether the upstream acted on the
    /// request depends on that reason; the use is not given back, which would allow a replay.
    /// </summary>
    public const string ForwardFailed = "forward_failed";

    public required string Type { get; init; }
    public DateTimeOffset At { get; init; }
    public string? TraceId { get; init; }
    public string? SpanId { get; init; }
    public string? Reason { get; init; }
    public string? Workload { get; init; }
    public string? Origin { get; init; }
    public string? Actor { get; init; }
    public IReadOnlyList<string>? Mismatch { get; init; }
}

/// <summary>Where and when a grant was first consumed: what a replay's evidence points back to.</summary>
public sealed record FirstUse(string? TraceId, string? SpanId, DateTimeOffset At, string? Workload, string? Origin);

/// <summary>
/// A stored approval. Bindings are kept as values that are safe to store: hashes for the token and the request,
/// identifiers for subject, session and workload, CIDR ranges for the origin. Never a raw token or body.
/// </summary>
public sealed record GrantRecord
{
    public required string Id { get; init; }
    public required string Route { get; init; }
    public string? Policy { get; init; }
    public GrantStatus Status { get; init; }
    public string? Subject { get; init; }
    public string? Session { get; init; }
    public string? TokenHash { get; init; }
    public string? Workload { get; init; }
    public IReadOnlyList<string> Origins { get; init; } = [];
    public string? RequestHash { get; init; }
    public RequestDigests? Digests { get; init; }

    /// <summary>Shown to approvers: what the grant lets through. Not a binding (the request hash is).</summary>
    public string? Method { get; init; }

    public string? Path { get; init; }

    /// <summary>The raw query without its '?' (null when there is none): the query can carry the whole action.</summary>
    public string? Query { get; init; }
    public int MaxUses { get; init; } = 1;
    public int UsesRemaining { get; init; } = 1;
    public DateTimeOffset CreatedAt { get; init; }
    public DateTimeOffset ExpiresAt { get; init; }

    /// <summary>
    /// For a new grant: its window, set by the store's clock when it is created (SPEC §2 judges expiry by the store's
    /// clock, so every gateway's clock may be off): <see cref="ExpiresAt"/> becomes the later of the store's now and
    /// <see cref="NotBefore"/>, plus this. When given, it wins over <see cref="ExpiresAt"/>. Never stored (null as read).
    /// </summary>
    public TimeSpan? Ttl { get; init; }

    public DateTimeOffset? NotBefore { get; init; }
    public string? Reason { get; init; }
    public string? CreatedBy { get; init; }
    public int ApprovalsRequired { get; init; } = 1;
    public IReadOnlyList<string> Approvers { get; init; } = [];

    /// <summary>The lowest AAL among the approvals that activated the grant.</summary>
    public int ApprovalAal { get; init; }

    /// <summary>Bindings the grant carries beyond those its policy demands: they must match as well.</summary>
    public Bindings Bound { get; init; }

    public FirstUse? FirstUse { get; init; }
    public IReadOnlyList<GrantEvent> Events { get; init; } = [];
    public long DroppedEvents { get; init; }
}
