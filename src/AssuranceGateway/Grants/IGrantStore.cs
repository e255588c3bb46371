namespace AssuranceGateway.Grants;

/// <summary>
/// Grant storage. Every method is one atomic operation: the in-memory store and the Redis store (one Lua script
/// per operation) must behave identically, which the store conformance tests check against both.
/// </summary>
public interface IGrantStore
{
    /// <summary>Name for logs and readiness (e.g. "redis 127.0.0.1:6379", "in-process").</summary>
    string Description { get; }

    /// <summary>
    /// Stores a new grant with its <c>created</c> event (and <c>approved</c> for its creator when given). A grant with a
    /// <see cref="GrantRecord.Ttl"/> gets its expiry from the store's clock, in the same operation: the later of now and
    /// its notBefore, plus the ttl. The expiry stored is returned, for the caller to show.
    /// </summary>
    /// <param name="maxPendingPerSubject">For a pending grant: refuse (<see cref="GrantChange.TooMany"/>) beyond this many for its subject.</param>
    Task<GrantCreated> CreateAsync(GrantRecord grant, GrantEvent created, int maxPendingPerSubject, CancellationToken cancellationToken);

    /// <summary>SPEC §2 step 6: every check in order, and the use consumed, in one operation.</summary>
    Task<ConsumeResult> ConsumeAsync(ConsumeRequest request, CancellationToken cancellationToken);

    Task<GrantRecord?> GetAsync(string id, CancellationToken cancellationToken);

    Task<GrantChange> RevokeAsync(string id, GrantEvent revoked, CancellationToken cancellationToken);

    /// <summary>
    /// Revokes the grant only while it is pending (an approver's "no"); <see cref="GrantChange.Conflict"/> once it is
    /// anything else, decided in the same operation, so an approval racing the denial is never revoked by it.
    /// </summary>
    Task<GrantChange> DenyPendingAsync(string id, GrantEvent revoked, CancellationToken cancellationToken);

    /// <summary>
    /// Adds one distinct approver; activates the grant once enough have approved. An activated grant expires no later
    /// than <paramref name="activeFor"/> after the later of now and its notBefore (null: its expiry stays).
    /// </summary>
    /// <param name="minimumApprovals">The quorum of the policy in force now: a grant created under a smaller one needs this
    /// many (a reload that raised Approvals also holds for grants already waiting); never fewer than its own.</param>
    Task<ApproveResult> ApproveAsync(string id, string approver, int approverAal, GrantEvent approved, TimeSpan? activeFor, int minimumApprovals, CancellationToken cancellationToken);

    /// <summary>Live pending grants, oldest first, up to <paramref name="limit"/>; only those of <paramref name="route"/> (ignoring case, as routes compare) when given.</summary>
    Task<IReadOnlyList<GrantRecord>> ListPendingAsync(int limit, string? route, CancellationToken cancellationToken);

    /// <summary>
    /// Appends an event without changing state (unknown outcomes once the store is back, a forward that failed). An event
    /// whose <see cref="GrantEvent.At"/> is default is stamped with the store's clock, so that it comes after the events
    /// the store stamped before it (the gateway's clock and Redis's may differ by milliseconds). A store that cannot take
    /// it now throws <see cref="StoreUnavailableException"/> and writes it once it answers again.
    /// </summary>
    Task AppendEventAsync(string id, GrantEvent grantEvent, CancellationToken cancellationToken);

    /// <summary>
    /// Readiness (<c>/readyz</c>): null when the store could serve an enforced request now, else why not, for an
    /// operator. Answering is not enough: a replica, or a Redis full under noeviction, answers PING and refuses every
    /// consume and every new grant.
    /// </summary>
    Task<string?> NotReadyAsync(CancellationToken cancellationToken);
}
