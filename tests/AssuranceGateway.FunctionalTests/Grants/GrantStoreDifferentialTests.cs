using System.Globalization;
using System.Net;
using System.Text;
using AssuranceGateway.Enforcement;
using AssuranceGateway.Grants;
using AssuranceGateway.Requests;
using AssuranceGateway.Testing;

namespace AssuranceGateway.FunctionalTests.Grants;

/// <summary>
/// The two stores against each other: one seeded random sequence of operations (creates with every kind of binding, use
/// count and approval rule; consumes whose every binding matches or not; approvals by the requester, the creator, the same
/// approver twice; revocations, denials, listings, late events, unknown ids), run step by step on the in-memory store and
/// on a real Redis store, and every answer compared: the reason, status, uses left, approvers, mismatch, first use, and
/// the record read back with its events (types, fields and order). The conformance suite checks each store against
/// chosen cases; this finds the sequences nobody chose. A mismatch names the seed, the step, the operation and both
/// answers, with the operations before it.
/// </summary>
/// <remarks>
/// Time: Redis judges by its own TIME, the in-memory store by a manual clock that starts at the same instant and moves
/// 1 ms per step. Every window is hours away from the run (expired grants an hour ago, notBefore an hour ahead,
/// ttls and activation windows of 30 minutes and more), so no decision depends on how the two clocks drift during the
/// run; times are compared by what they are (the creation, the last approval plus the window, a fixed instant of the
/// run), event times by their order. Left out: anything that turns on a clock passing a boundary during the run (a grant
/// expiring between two steps), and late events dated ahead of the store's clock (an unknown outcome stamped by a gateway
/// whose clock is ahead of Redis's): the stores do disagree there. The in-memory store files every later event before it,
/// by time; the Redis scripts append theirs after it, so its list is no longer oldest first.
/// </remarks>
public sealed class GrantStoreDifferentialTests(RedisServer redis) : IClassFixture<RedisServer>
{
    private const int Steps = 160;

    public static TheoryData<int> Seeds => new() { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 };

    [Theory]
    [MemberData(nameof(Seeds))]
    public async Task RandomOperations_InMemoryAndRedis_AnswerAlike(int seed)
    {
        using var redisStore = await RedisStores.StartAsync(RedisStores.Settings(redis));
        await new Run(seed, redisStore).ExecuteAsync(Steps);
    }

    /// <summary>One seed's run: the generator, both stores, and what has been done so far.</summary>
    internal sealed class Run
    {
        private static readonly string[] Routes = ["deploy", "Deploy-Prod", "straße", "status", "\u017Ftatus"];
        private static readonly string[] People = ["alice", "bob", "carol", "dave", "erin", "zoë/ops"];

        /// <summary>Origin ranges of a grant, each with an address inside it (nibble-aligned prefixes and others).</summary>
        private static readonly (string Network, string Inside)[] Networks =
        [
            ("10.1.0.0/16", "10.1.2.3"), ("10.1.2.3/32", "10.1.2.3"), ("172.16.0.0/12", "172.31.255.254"),
            ("192.168.0.0/21", "192.168.7.1"), ("2001:db8::/32", "2001:db8::5"), ("2001:db8:8000::/33", "2001:db8:ffff::1"),
            ("0.0.0.0/0", "203.0.113.9"), ("fe80::/10", "fe80::1%2"),
        ];

        private static readonly string[] OtherAddresses =
            ["10.2.0.1", "172.32.0.1", "192.168.8.1", "::ffff:10.1.2.3", "2001:db9::1", "2001:db8:7fff::1", "fe80::1%2", "127.0.0.1"];

        private static readonly string[] ConsumeReasons =
        [
            ReasonCodes.GrantPending, ReasonCodes.GrantRevoked, ReasonCodes.GrantExpired, ReasonCodes.GrantNotYetValid,
            ReasonCodes.RouteMismatch, ReasonCodes.SubjectMismatch, ReasonCodes.SessionMismatch, ReasonCodes.TokenMismatch,
            ReasonCodes.WorkloadMismatch, ReasonCodes.OriginMismatch, ReasonCodes.RequestMismatch, ReasonCodes.SelfApproval,
            ReasonCodes.Replayed,
        ];

        private static readonly Bindings[] EveryBinding =
            [Bindings.Subject, Bindings.Session, Bindings.Token, Bindings.Workload, Bindings.Origin, Bindings.Request];

        private static readonly TimeSpan[] Ttls = [TimeSpan.FromMinutes(60), TimeSpan.FromMinutes(240)];
        private static readonly TimeSpan[] Windows = [TimeSpan.FromMinutes(30), TimeSpan.FromMinutes(600)];

        private readonly int _seed;
        private readonly Random _random;
        private readonly DateTimeOffset _t0;
        private readonly ManualTimeProvider _clock;
        private readonly InMemoryGrantStore _memory;
        private readonly IGrantStore _redis;
        private readonly List<GrantRecord> _grants = [];
        private readonly List<string> _log = [];
        private int _step;

        public Run(int seed, IGrantStore redisStore)
        {
            _seed = seed;
            _random = new Random(seed);

            // Whole milliseconds, so that the fixed instants below round-trip through Redis's microseconds; the in-memory
            // clock starts just after, so that its creation time plus a ttl is never one of them.
            _t0 = DateTimeOffset.FromUnixTimeMilliseconds(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
            _clock = new ManualTimeProvider(_t0.AddMilliseconds(1));
            _memory = new InMemoryGrantStore(_clock, TimeSpan.FromDays(7));
            _redis = redisStore;
        }

        public async Task ExecuteAsync(int steps)
        {
            for (_step = 1; _step <= steps; _step++)
            {
                var operation = Next();
                _log.Add($"{_step}: {operation.Description}");
                _clock.Advance(TimeSpan.FromMilliseconds(1));
                var memory = await AnswerAsync(_memory, operation.Act);
                var redisAnswer = await AnswerAsync(_redis, operation.Act);
                Same(operation.Description, memory, redisAnswer);
                foreach (var id in operation.Touched)
                {
                    await SameRecordAsync(id);
                }

                if (_step % 40 == 0 || _step == steps)
                {
                    foreach (var grant in _grants)
                    {
                        await SameRecordAsync(grant.Id);
                    }

                    Same("ListPendingAsync(100, null) (check)", await ListAsync(_memory, 100, null), await ListAsync(_redis, 100, null));
                }
            }
        }

        private async Task SameRecordAsync(string id) =>
            Same($"GetAsync({id}) (check)", await AnswerAsync(_memory, s => GetAsync(s, id)), await AnswerAsync(_redis, s => GetAsync(s, id)));

        private void Same(string what, string memory, string redisAnswer)
        {
            if (!string.Equals(memory, redisAnswer, StringComparison.Ordinal))
            {
                // Long answers (a record with hundreds of events) are shown from a little before where they part.
                var from = 0;
                while (from < memory.Length && from < redisAnswer.Length && memory[from] == redisAnswer[from])
                {
                    from++;
                }

                from = Math.Max(0, from - 400);
                var lead = from > 0 ? "…" : string.Empty;
                Assert.Fail(
                    $"The stores disagree: seed {_seed}, step {_step}, {what}{Environment.NewLine}"
                    + $"  in-memory: {lead}{Clip(memory[from..])}{Environment.NewLine}  redis:     {lead}{Clip(redisAnswer[from..])}{Environment.NewLine}"
                    + $"Operations so far:{Environment.NewLine}  " + string.Join(Environment.NewLine + "  ", _log.TakeLast(40)));
            }
        }

        private static string Clip(string text) => text.Length > 1500 ? text[..1500] + "…" : text;

        private static async Task<string> AnswerAsync(IGrantStore store, Func<IGrantStore, Task<string>> act)
        {
            try
            {
                return await act(store);
            }
            catch (Exception e) when (e is not Xunit.Sdk.XunitException)
            {
                return $"throws {e.GetType().Name}";
            }
        }

        private sealed record Operation(string Description, Func<IGrantStore, Task<string>> Act, params string[] Touched);

        // ------------------------------------------------------------------ the generator

        private Operation Next()
        {
            var roll = _random.Next(100);
            if (_grants.Count == 0 || roll < 18)
            {
                return Create(NewGrant());
            }

            if (roll < 20)
            {
                return Create(AnyGrant() with { Route = Pick(Routes) }); // an id that is taken
            }

            if (roll < 38)
            {
                return Consume(Matching(AnyGrant()));
            }

            if (roll < 56)
            {
                return Consume(Perturbed(AnyGrant()));
            }

            if (roll < 58)
            {
                return Consume(Perturbed(NewGrant()) with { GrantId = "unknown-" + _step });
            }

            if (roll < 72)
            {
                return Approve(_random.Next(30) == 0 ? "unknown-" + _step : AnyGrant().Id);
            }

            if (roll < 76)
            {
                return Revoke(_random.Next(10) == 0 ? "unknown-" + _step : AnyGrant().Id, onlyPending: false);
            }

            if (roll < 81)
            {
                return Revoke(_random.Next(10) == 0 ? "unknown-" + _step : AnyGrant().Id, onlyPending: true);
            }

            if (roll < 87)
            {
                var limit = Pick(1, 2, 3, 100);
                var route = _random.Next(2) == 0 ? null : Cased(Pick(Routes));
                return new Operation($"ListPendingAsync({limit}, {route ?? "null"})", s => ListAsync(s, limit, route));
            }

            if (roll < 98)
            {
                return AppendEvent(_random.Next(20) == 0 ? "unknown-" + _step : AnyGrant().Id);
            }

            return Flood(AnyGrant());
        }

        /// <summary>Recent grants more often: sequences on one grant go deeper.</summary>
        private GrantRecord AnyGrant() =>
            _random.Next(3) == 0 ? _grants[_random.Next(_grants.Count)] : _grants[Math.Max(0, _grants.Count - 1 - _random.Next(4))];

        private GrantRecord NewGrant()
        {
            var approvers = Pick<string[]>([], ["carol"], ["carol"], ["carol", "dave"], ["alice"], ["bob", "carol"]);
            var pending = approvers.Length == 0 || _random.Next(3) == 0;
            var uses = Pick(1, 1, 2, 3);
            var origins = _random.Next(3) == 0 ? [] : Enumerable.Range(0, 1 + _random.Next(2)).Select(_ => Pick(Networks).Network).Distinct().ToList();
            if (_random.Next(15) == 0)
            {
                origins.Add("not-an-address"); // skipped by both stores
            }

            var request = _random.Next(32);
            return new GrantRecord
            {
                Id = $"s{_seed}g{_grants.Count + _step * 1000}",
                Route = Pick(Routes),
                Policy = Pick<string?>(null, "approval"),
                Status = pending ? GrantStatus.Pending : GrantStatus.Active,
                Subject = Pick<string?>("alice", "alice", "bob", null, null, string.Empty),
                Session = Pick<string?>("sess-1", "sess-2", null),
                TokenHash = Pick<string?>("sha256:token-1", "sha256:token-2", null),
                Workload = Pick<string?>("spiffe://prod/ci", "spiffe://prod/cd", null),
                Origins = origins,
                RequestHash = _random.Next(6) == 0 ? null : RequestHash(request),
                Digests = _random.Next(5) == 0 ? null : Components(request).Digests,
                Method = "POST",
                Path = "/deploy/v1/releases",
                Query = Pick<string?>(null, "env=prod"),
                MaxUses = uses,
                UsesRemaining = _random.Next(20) == 0 ? 0 : uses,
                ExpiresAt = _random.Next(8) == 0 ? _t0.AddMinutes(-60) : _t0.AddMinutes(Pick(120, 180)),
                NotBefore = Pick<DateTimeOffset?>(null, null, null, _t0.AddMinutes(-30), _t0.AddMinutes(60)),
                Ttl = _random.Next(5) == 0 ? Pick(Ttls) : null,
                Reason = "CHG-" + _step,
                CreatedBy = approvers.FirstOrDefault(),
                ApprovalsRequired = Pick(1, 1, 2, 3),
                Approvers = approvers,
                ApprovalAal = approvers.Length == 0 ? 0 : Pick(1, 2, 3),
                Bound = RandomBindings(3),
            };
        }

        private Operation Create(GrantRecord grant)
        {
            var created = new GrantEvent
            {
                Type = GrantEvent.Created, TraceId = Pick<string?>(null, "trace-create-" + _step), SpanId = Pick<string?>(null, "span-" + _step),
                Origin = Pick<string?>(null, "10.9.9.9"), Actor = grant.CreatedBy ?? "carol",
            };
            var maxPending = Pick(1, 2, 3);
            var isNew = !_grants.Exists(g => g.Id == grant.Id);
            if (isNew)
            {
                _grants.Add(grant);
            }

            return new Operation(
                $"CreateAsync({Describe(grant)}, maxPending {maxPending})",
                async s =>
                {
                    var result = await s.CreateAsync(grant, created, maxPending, default);
                    var stored = result.Outcome == GrantChange.Done ? await s.GetAsync(grant.Id, default) : null;
                    return $"{result.Outcome} expires {(stored is null ? result.ExpiresAt.ToString("O") : Time(result.ExpiresAt, stored))}";
                },
                grant.Id);
        }

        private ConsumeRequest Matching(GrantRecord grant)
        {
            var inside = grant.Origins.Select(o => Networks.FirstOrDefault(n => n.Network == o).Inside).FirstOrDefault(a => a is not null);
            var request = RequestBits(grant.RequestHash);
            return new ConsumeRequest
            {
                GrantId = grant.Id,
                Route = _random.Next(4) == 0 ? Cased(grant.Route) : grant.Route,
                Required = RandomBindings(2),
                Subject = grant.Subject ?? Pick<string?>(null, "alice", "carol"), // a subject-less grant: maybe one of its approvers
                Session = grant.Session,
                TokenHash = grant.TokenHash,
                Workload = grant.Workload,
                Origin = inside is null ? Pick<IPAddress?>(null, IPAddress.Parse(Pick(OtherAddresses))) : IPAddress.Parse(inside),
                RequestHash = grant.RequestHash,
                Digests = request is { } bits && _random.Next(2) == 0 ? Components(bits).Digests : null,
                RevokeOn = RandomRevokeOn(),
                MinimumApprovals = Pick(0, 1, 1, 1, 2, 3),
                MinimumApprovalAal = Pick(0, 0, 0, 1, 2, 3),
                TraceId = Pick<string?>("trace-" + _step, null),
                SpanId = Pick<string?>("span-" + _step, null),
                DryRun = _random.Next(12) == 0,
            };
        }

        /// <summary>A request that is the grant's in some respects and another's in others, or presents nothing.</summary>
        private ConsumeRequest Perturbed(GrantRecord grant)
        {
            var matching = Matching(grant);
            var bits = RequestBits(grant.RequestHash) ?? _random.Next(32);
            var presented = _random.Next(3) == 0 ? bits : bits ^ (1 << _random.Next(5));
            var digests = _random.Next(3);
            return matching with
            {
                Route = _random.Next(6) == 0 ? Pick(Routes) : matching.Route,
                Required = RandomBindings(2),
                Subject = Value(matching.Subject, People),
                Session = Value(matching.Session, "sess-1", "sess-2", string.Empty),
                TokenHash = Value(matching.TokenHash, "sha256:token-1", "sha256:token-2"),
                Workload = Value(matching.Workload, "spiffe://prod/ci", "spiffe://prod/cd"),
                Origin = _random.Next(2) == 0 ? matching.Origin : Pick<IPAddress?>(null, IPAddress.Parse(Pick(OtherAddresses)), IPAddress.Parse(Pick(Networks).Inside)),
                RequestHash = _random.Next(8) == 0 ? null : RequestHash(presented),
                Digests = digests == 0 ? Components(presented).Digests : null,
                Components = digests == 1 ? Components(presented) : null,
            };
        }

        private static Operation Consume(ConsumeRequest request) => new(
            $"ConsumeAsync({Describe(request)})",
            async s =>
            {
                var r = await s.ConsumeAsync(request, default);
                return $"{r.Reason} status {r.Status} uses {r.UsesRemaining} mismatch [{string.Join(",", r.Mismatch)}] revoked {r.Revoked} "
                    + $"firstUse {(r.FirstUse is { } u ? $"{u.TraceId}/{u.SpanId}/{u.Workload}/{u.Origin}" : "none")} approvers [{string.Join(",", r.Approvers)}] "
                    + $"aal {r.ApprovalAal} subject {r.Subject ?? "null"} workload {r.Workload ?? "null"} request {r.RequestHash ?? "null"}";
            },
            request.GrantId);

        private Operation Approve(string id)
        {
            var approver = Pick(People);
            var aal = Pick(1, 2, 3);
            var activeFor = Pick<TimeSpan?>(null, null, Windows[0], Windows[1]);
            var minimum = Pick(0, 1, 1, 2, 3);
            var approved = new GrantEvent { Type = GrantEvent.Approved, TraceId = Pick<string?>(null, "trace-approve-" + _step), Origin = Pick<string?>(null, "10.8.8.8") };
            return new Operation(
                $"ApproveAsync({id}, {approver}, aal {aal}, activeFor {activeFor?.TotalMinutes.ToString(CultureInfo.InvariantCulture) ?? "null"}, minimum {minimum})",
                async s =>
                {
                    var r = await s.ApproveAsync(id, approver, aal, approved, activeFor, minimum, default);
                    return $"{r.Outcome} {r.Status} remaining {r.ApprovalsRemaining}";
                },
                id);
        }

        private Operation Revoke(string id, bool onlyPending)
        {
            var revoked = new GrantEvent { Type = GrantEvent.Revoked, TraceId = Pick<string?>(null, "trace-revoke-" + _step), Actor = Pick(People) };
            return new Operation(
                $"{(onlyPending ? "DenyPendingAsync" : "RevokeAsync")}({id})",
                async s => (onlyPending ? await s.DenyPendingAsync(id, revoked, default) : await s.RevokeAsync(id, revoked, default)).ToString(),
                id);
        }

        /// <summary>An event recorded after the fact: stamped by the store, dated before everything, or between two events.</summary>
        private Operation AppendEvent(string id)
        {
            var grantEvent = _random.Next(4) switch
            {
                0 => new GrantEvent { Type = GrantEvent.ForwardFailed, Reason = "request" },
                1 => new GrantEvent { Type = GrantEvent.UnknownOutcome, Origin = "10.1.2.3" },
                2 => new GrantEvent { Type = GrantEvent.Denied, Reason = ReasonCodes.TokenInvalid }, // decided before the store: a smaller cap
                _ => new GrantEvent { Type = GrantEvent.Denied, Reason = ReasonCodes.ClaimsMismatch, Workload = "spiffe://prod/ci" },
            };
            grantEvent = grantEvent with { TraceId = Pick<string?>(null, "trace-late-" + _step) };
            var when = _random.Next(6);
            var between = _random.Next(1000);
            return new Operation(
                $"AppendEventAsync({id}, {grantEvent.Type}/{grantEvent.Reason}, {(when < 4 ? "store time" : when == 4 ? "T0-3h" : "between events #" + between)})",
                async s =>
                {
                    var at = default(DateTimeOffset);
                    if (when == 4)
                    {
                        at = _t0.AddHours(-3);
                    }
                    else if (when == 5 && await s.GetAsync(id, default) is { Events.Count: >= 2 } stored)
                    {
                        // Between two events of this store's own record: the same place in both, whatever their clocks say.
                        var k = between % (stored.Events.Count - 1);
                        var middle = stored.Events[k].At + ((stored.Events[k + 1].At - stored.Events[k].At) / 2);
                        at = new DateTimeOffset(middle.UtcTicks - (middle.UtcTicks % 10), TimeSpan.Zero);
                    }

                    await s.AppendEventAsync(id, grantEvent with { At = at }, default);
                    return "done";
                },
                id);
        }

        /// <summary>Enough denials (or late early denials) to fill the grant's event list up to a cap.</summary>
        private Operation Flood(GrantRecord grant)
        {
            var early = _random.Next(2) == 0;
            var count = early ? GrantRules.MaxEarlyDenials + 2 : GrantRules.MaxEvents + 2;
            return new Operation(
                $"Flood({grant.Id}, {count} {(early ? "early denials" : "route mismatches")})",
                async s =>
                {
                    var answers = new HashSet<string>(StringComparer.Ordinal);
                    for (var i = 0; i < count; i++)
                    {
                        _clock.Advance(TimeSpan.FromMilliseconds(1)); // one operation each, as on Redis
                        if (early)
                        {
                            await s.AppendEventAsync(grant.Id, new GrantEvent { Type = GrantEvent.Denied, Reason = ReasonCodes.InsufficientAal, TraceId = "flood-" + i }, default);
                        }
                        else
                        {
                            var r = await s.ConsumeAsync(new ConsumeRequest { GrantId = grant.Id, Route = "nowhere", TraceId = "flood-" + i }, default);
                            answers.Add($"{r.Reason} {r.Status} {r.UsesRemaining}");
                        }
                    }

                    return string.Join(" | ", answers.Order(StringComparer.Ordinal));
                },
                grant.Id);
        }

        // ------------------------------------------------------------------ what the stores answer, made comparable

        private async Task<string> GetAsync(IGrantStore store, string id) => Show(await store.GetAsync(id, default));

        private async Task<string> ListAsync(IGrantStore store, int limit, string? route)
        {
            var pending = await store.ListPendingAsync(limit, route, default);
            return string.Join(Environment.NewLine + "    ", pending.Select(g => Show(g)));
        }

        private string Show(GrantRecord? g)
        {
            if (g is null)
            {
                return "null";
            }

            var text = new StringBuilder()
                .Append(CultureInfo.InvariantCulture, $"{g.Id} route {g.Route} policy {g.Policy} {g.Status} subject {g.Subject ?? "null"} session {g.Session ?? "null"} ")
                .Append(CultureInfo.InvariantCulture, $"token {g.TokenHash ?? "null"} workload {g.Workload ?? "null"} origins [{string.Join(",", g.Origins)}] ")
                .Append(CultureInfo.InvariantCulture, $"request {g.RequestHash ?? "null"} digests {g.Digests?.ToString() ?? "null"} {g.Method} {g.Path} ?{g.Query ?? "null"} ")
                .Append(CultureInfo.InvariantCulture, $"uses {g.UsesRemaining}/{g.MaxUses} expires {Time(g.ExpiresAt, g)} notBefore {(g.NotBefore is { } nb ? Time(nb, g) : "null")} ")
                .Append(CultureInfo.InvariantCulture, $"ttl {g.Ttl?.ToString() ?? "null"} reason {g.Reason} by {g.CreatedBy} approvals {g.ApprovalsRequired} [{string.Join(",", g.Approvers)}] ")
                .Append(CultureInfo.InvariantCulture, $"aal {g.ApprovalAal} bound {g.Bound} dropped {g.DroppedEvents} ");
            if (g.FirstUse is { } u)
            {
                var firstUsed = g.Events.FirstOrDefault(e => e.Type == GrantEvent.Used);
                text.Append(CultureInfo.InvariantCulture, $"firstUse {u.TraceId}/{u.SpanId}/{u.Workload}/{u.Origin} at {(firstUsed is not null && u.At == firstUsed.At ? "first used event" : Time(u.At, g))} ");
            }
            else
            {
                text.Append("firstUse none ");
            }

            text.Append("events:");
            DateTimeOffset? previous = null;
            foreach (var e in g.Events)
            {
                // Times as their order: equal (written by one operation), later, or earlier (never oldest first).
                var at = previous is not { } p ? (e.At == g.CreatedAt ? "=created" : e.At < g.CreatedAt ? "<created" : ">created")
                    : e.At == p ? "same" : e.At > p ? "later" : "EARLIER";
                previous = e.At;
                text.Append(CultureInfo.InvariantCulture, $" [{e.Type} {at} trace {e.TraceId} span {e.SpanId} reason {e.Reason} workload {e.Workload} origin {e.Origin} actor {e.Actor}");
                if (e.Mismatch is not null)
                {
                    text.Append(CultureInfo.InvariantCulture, $" mismatch {string.Join(",", e.Mismatch)}");
                }

                text.Append(']');
            }

            return text.ToString();
        }

        /// <summary>A time of a record by what it is: its creation (plus a ttl), its last approval plus a window, or an instant of the run.</summary>
        private string Time(DateTimeOffset time, GrantRecord g)
        {
            if (time == g.CreatedAt)
            {
                return "created";
            }

            foreach (var ttl in Ttls)
            {
                if (time == g.CreatedAt + ttl)
                {
                    return $"created+{ttl.TotalMinutes}m";
                }
            }

            if (g.Events.LastOrDefault(e => e.Type == GrantEvent.Approved) is { } approved)
            {
                foreach (var window in Windows)
                {
                    if (time == approved.At + window)
                    {
                        return $"approved+{window.TotalMinutes}m";
                    }
                }
            }

            var offset = time - _t0;
            return offset.Ticks % TimeSpan.TicksPerMinute == 0 ? $"T0{offset.TotalMinutes:+0;-0}m" : $"unexplained T0+{offset}";
        }

        private static string Describe(GrantRecord g) =>
            $"{g.Id} {g.Route} {g.Status} subject {g.Subject ?? "null"} approvers [{string.Join(",", g.Approvers)}] of {g.ApprovalsRequired} uses {g.UsesRemaining} "
            + $"bound {g.Bound} origins [{string.Join(",", g.Origins)}] expires {g.ExpiresAt:O} ttl {g.Ttl} notBefore {g.NotBefore:O}";

        private static string Describe(ConsumeRequest r) =>
            $"{r.GrantId} {r.Route} required {r.Required} subject {r.Subject ?? "null"} session {r.Session ?? "null"} token {r.TokenHash ?? "null"} "
            + $"workload {r.Workload ?? "null"} origin {r.Origin?.ToString() ?? "null"} request {r.RequestHash ?? "null"} "
            + $"digests {(r.Components is not null ? "components" : r.Digests is not null ? "given" : "none")} revokeOn [{string.Join(",", r.RevokeOn)}] "
            + $"approvals {r.MinimumApprovals}/aal {r.MinimumApprovalAal} trace {r.TraceId ?? "null"} dryRun {r.DryRun}";

        // ------------------------------------------------------------------ values

        /// <summary>The canonical components of request number <paramref name="bits"/>: each bit picks one of two values of a component.</summary>
        private static CanonicalComponents Components(int bits) => new(
            (bits & 1) == 0 ? "POST" : "PUT",
            (bits & 2) == 0 ? "/deploy/v1/releases" : "/deploy/v1/rollback",
            (bits & 4) == 0 ? string.Empty : "env=prod",
            (bits & 8) == 0 ? "content-type:application/json\n" : string.Empty,
            (bits & 16) == 0 ? "ab12" : "cd34");

        private static string RequestHash(int bits) => "sha256:request-" + bits.ToString(CultureInfo.InvariantCulture);

        private static int? RequestBits(string? hash) =>
            hash is not null && hash.StartsWith("sha256:request-", StringComparison.Ordinal) ? int.Parse(hash["sha256:request-".Length..], CultureInfo.InvariantCulture) : null;

        private Bindings RandomBindings(int oneIn)
        {
            var bindings = Bindings.None;
            foreach (var binding in EveryBinding)
            {
                if (_random.Next(oneIn) == 0)
                {
                    bindings |= binding;
                }
            }

            return bindings;
        }

        private string[] RandomRevokeOn() => _random.Next(3) == 0 ? [.. ConsumeReasons.Where(_ => _random.Next(6) == 0)] : [];

        private string? Value(string? matching, params string[] others) => _random.Next(10) switch
        {
            < 5 => matching,
            < 8 => Pick(others),
            _ => null,
        };

        private string Cased(string route) => _random.Next(2) == 0 ? route.ToUpperInvariant() : route.ToLowerInvariant();

        private T Pick<T>(params T[] values) => values[_random.Next(values.Length)];
    }
}
