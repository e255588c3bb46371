using AssuranceGateway.Enforcement;

namespace AssuranceGateway.Grants;

/// <summary>
/// The embedded store: same semantics as Redis, for one gateway instance. Atomicity comes from one lock around
/// each operation, which is what one Lua script gives on Redis.
/// </summary>
internal sealed class InMemoryGrantStore(TimeProvider time, TimeSpan retention) : IGrantStore
{
    private readonly Lock _lock = new();
    private readonly Dictionary<string, GrantRecord> _grants = new(StringComparer.Ordinal);

    // The ids of grants created pending, by subject, as the Redis store keeps them: counting a subject's pending grants
    // (each challenge does, under the lock every consume takes) costs what that subject holds, not the whole store. An
    // id whose grant has left pending (approved, denied, revoked, expired, swept) is dropped when its subject is counted.
    private readonly Dictionary<string, List<string>> _pendingBySubject = new(StringComparer.Ordinal);
    private DateTimeOffset _nextSweep;

    public string Description => "in-process (single instance only)";

    public Task<GrantCreated> CreateAsync(GrantRecord grant, GrantEvent created, int maxPendingPerSubject, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            var now = time.GetUtcNow();
            Sweep(now);
            if (_grants.ContainsKey(grant.Id))
            {
                return Task.FromResult(new GrantCreated(GrantChange.Conflict, default));
            }

            var expiresAt = grant.Ttl is { } ttl ? (grant.NotBefore is { } opens && opens > now ? opens : now) + ttl : grant.ExpiresAt;

            if (grant.Status == GrantStatus.Pending && grant.Subject is not null)
            {
                if (!_pendingBySubject.TryGetValue(grant.Subject, out var pending))
                {
                    pending = [];
                    _pendingBySubject[grant.Subject] = pending;
                }

                pending.RemoveAll(id => !StillPending(id, now));
                if (pending.Count >= maxPendingPerSubject)
                {
                    return Task.FromResult(new GrantCreated(GrantChange.TooMany, default));
                }

                pending.Add(grant.Id);
            }

            var events = new List<GrantEvent> { created with { At = now } };
            if (grant.Approvers.Count > 0)
            {
                events.Add(new GrantEvent
                {
                    Type = GrantEvent.Approved, At = now, TraceId = created.TraceId, SpanId = created.SpanId, Origin = created.Origin, Actor = grant.Approvers[0],
                });
            }

            _grants[grant.Id] = grant with { CreatedAt = now, ExpiresAt = expiresAt, Ttl = null, Events = events };
            return Task.FromResult(new GrantCreated(GrantChange.Done, expiresAt));
        }
    }

    public Task<ConsumeResult> ConsumeAsync(ConsumeRequest request, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            if (!_grants.TryGetValue(request.GrantId, out var grant))
            {
                return Task.FromResult(new ConsumeResult { Reason = ReasonCodes.GrantNotFound });
            }

            var now = time.GetUtcNow();
            var reason = GrantRules.Check(grant, request, now, out var mismatch);
            var revoke = reason != ReasonCodes.Ok && request.RevokeOn.Contains(reason) && grant.Status != GrantStatus.Revoked;
            if (!request.DryRun)
            {
                grant = reason == ReasonCodes.Ok ? Use(grant, request, now) : Deny(grant, request, now, reason, mismatch, revoke);
                _grants[grant.Id] = grant;
            }

            return Task.FromResult(new ConsumeResult
            {
                Reason = reason,
                Status = request.DryRun && revoke ? GrantStatus.Revoked : grant.Status,
                UsesRemaining = request.DryRun && reason == ReasonCodes.Ok ? grant.UsesRemaining - 1 : grant.UsesRemaining,
                Mismatch = mismatch,
                Revoked = revoke,
                FirstUse = grant.FirstUse,
                Approvers = grant.Approvers,
                ApprovalAal = grant.ApprovalAal,
                Subject = grant.Subject,
                Workload = grant.Workload,
                RequestHash = grant.RequestHash,
            });
        }
    }

    private static GrantRecord Use(GrantRecord grant, ConsumeRequest request, DateTimeOffset now)
    {
        var remaining = grant.UsesRemaining - 1;
        var origin = request.Origin is null ? null : GrantRules.Normalize(request.Origin).ToString();
        var used = new GrantEvent
        {
            Type = GrantEvent.Used, At = now, TraceId = request.TraceId, SpanId = request.SpanId,
            Workload = request.Workload, Origin = origin,
        };
        return Append(grant, used) with
        {
            UsesRemaining = remaining,
            Status = remaining == 0 ? GrantStatus.Consumed : grant.Status,
            FirstUse = grant.FirstUse ?? new FirstUse(request.TraceId, request.SpanId, now, request.Workload, origin),
        };
    }

    private static GrantRecord Deny(GrantRecord grant, ConsumeRequest request, DateTimeOffset now, string reason, List<string> mismatch, bool revoke)
    {
        var origin = request.Origin is null ? null : GrantRules.Normalize(request.Origin).ToString();
        var denied = new GrantEvent
        {
            Type = GrantEvent.Denied, At = now, TraceId = request.TraceId, SpanId = request.SpanId, Reason = reason,
            Workload = request.Workload, Origin = origin, Mismatch = mismatch.Count > 0 ? mismatch : null,
        };
        grant = Append(grant, denied);
        if (revoke)
        {
            grant = Append(grant, denied with { Type = GrantEvent.Revoked, Mismatch = null }) with { Status = GrantStatus.Revoked };
        }

        return grant;
    }

    private static GrantRecord Append(GrantRecord grant, GrantEvent grantEvent)
    {
        if (grant.Events.Count >= GrantRules.CapFor(grantEvent))
        {
            return grant with { DroppedEvents = grant.DroppedEvents + 1 };
        }

        // Oldest first (SPEC §5.2), like the Redis store: an event recorded late goes before the later ones.
        var index = grant.Events.Count;
        while (index > 0 && grant.Events[index - 1].At > grantEvent.At)
        {
            index--;
        }

        return grant with { Events = [.. grant.Events.Take(index), grantEvent, .. grant.Events.Skip(index)] };
    }

    public Task<GrantRecord?> GetAsync(string id, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            return Task.FromResult(_grants.GetValueOrDefault(id));
        }
    }

    public Task<GrantChange> RevokeAsync(string id, GrantEvent revoked, CancellationToken cancellationToken) =>
        Task.FromResult(Revoke(id, revoked, onlyPending: false));

    public Task<GrantChange> DenyPendingAsync(string id, GrantEvent revoked, CancellationToken cancellationToken) =>
        Task.FromResult(Revoke(id, revoked, onlyPending: true));

    private GrantChange Revoke(string id, GrantEvent revoked, bool onlyPending)
    {
        lock (_lock)
        {
            if (!_grants.TryGetValue(id, out var grant))
            {
                return GrantChange.NotFound;
            }

            if (onlyPending && grant.Status != GrantStatus.Pending)
            {
                return GrantChange.Conflict;
            }

            if (grant.Status != GrantStatus.Revoked)
            {
                _grants[id] = Append(grant, revoked with { At = time.GetUtcNow() }) with { Status = GrantStatus.Revoked };
            }

            return GrantChange.Done;
        }
    }

    public Task<ApproveResult> ApproveAsync(string id, string approver, int approverAal, GrantEvent approved, TimeSpan? activeFor, int minimumApprovals, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            if (!_grants.TryGetValue(id, out var grant))
            {
                return Task.FromResult(new ApproveResult(GrantChange.NotFound, null, 0));
            }

            var now = time.GetUtcNow();
            if (grant.Status != GrantStatus.Pending || now >= grant.ExpiresAt)
            {
                return Task.FromResult(new ApproveResult(GrantChange.Conflict, grant.Status, 0));
            }

            if (minimumApprovals > grant.ApprovalsRequired)
            {
                grant = grant with { ApprovalsRequired = minimumApprovals };
                _grants[id] = grant;
            }

            if (!grant.Approvers.Contains(approver))
            {
                var approvers = grant.Approvers.Append(approver).ToArray();
                var aal = grant.Approvers.Count == 0 ? approverAal : Math.Min(grant.ApprovalAal, approverAal);
                grant = Append(grant, approved with { At = now, Actor = approver }) with { Approvers = approvers, ApprovalAal = aal };
                if (approvers.Length >= grant.ApprovalsRequired)
                {
                    var opens = grant.NotBefore is { } notBefore && notBefore > now ? notBefore : now;
                    grant = grant with
                    {
                        Status = GrantStatus.Active,
                        ExpiresAt = activeFor is { } window && opens + window < grant.ExpiresAt ? opens + window : grant.ExpiresAt,
                    };
                }

                _grants[id] = grant;
            }

            return Task.FromResult(new ApproveResult(GrantChange.Done, grant.Status, Math.Max(0, grant.ApprovalsRequired - grant.Approvers.Count)));
        }
    }

    public Task<IReadOnlyList<GrantRecord>> ListPendingAsync(int limit, string? route, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            var now = time.GetUtcNow();
            IReadOnlyList<GrantRecord> pending = _grants.Values
                .Where(g => g.Status == GrantStatus.Pending && g.ExpiresAt > now && (route is null || string.Equals(g.Route, route, StringComparison.OrdinalIgnoreCase)))
                .OrderBy(g => g.CreatedAt)
                .Take(limit)
                .ToList();
            return Task.FromResult(pending);
        }
    }

    public Task AppendEventAsync(string id, GrantEvent grantEvent, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            if (_grants.TryGetValue(id, out var grant))
            {
                _grants[id] = Append(grant, grantEvent.At == default ? grantEvent with { At = time.GetUtcNow() } : grantEvent);
            }
        }

        return Task.CompletedTask;
    }

    public Task<string?> NotReadyAsync(CancellationToken cancellationToken) => Task.FromResult<string?>(null);

    private void Sweep(DateTimeOffset now)
    {
        if (now < _nextSweep)
        {
            return;
        }

        _nextSweep = now.AddMinutes(1);
        foreach (var (id, grant) in _grants)
        {
            if (grant.ExpiresAt + retention < now)
            {
                _grants.Remove(id);
            }
        }

        // Subjects whose pending grants have all left pending: an index entry per subject ever challenged would grow for good.
        foreach (var (subject, pending) in _pendingBySubject)
        {
            pending.RemoveAll(id => !StillPending(id, now));
            if (pending.Count == 0)
            {
                _pendingBySubject.Remove(subject);
            }
        }
    }

    /// <summary>Whether the grant <paramref name="id"/> is still held and pending (for the pending-by-subject index; under the lock).</summary>
    private bool StillPending(string id, DateTimeOffset now) =>
        _grants.TryGetValue(id, out var grant) && grant.Status == GrantStatus.Pending && grant.ExpiresAt > now;
}
