using System.Net;
using AssuranceGateway.Enforcement;
using AssuranceGateway.Grants;
using AssuranceGateway.Requests;

namespace AssuranceGateway.FunctionalTests.Grants;

/// <summary>
/// One contract, every store: the same cases run against the in-memory store and the Redis store (SPEC §2 step 6,
/// IGrantStore). Times are relative to <see cref="Now"/>, the store's idea of the present: a manual clock for the
/// in-memory store, the real clock for Redis (which judges by its own TIME, on this same machine). Grants that must be
/// expired or not yet valid are a few seconds (or minutes) on the other side of now, never close to it.
/// </summary>
public abstract class GrantStoreConformanceTests : IAsyncLifetime
{
    protected const string Route = "deploy";
    protected const string Workload = "spiffe://prod.example/ns/ci/sa/deployer";
    protected static readonly RequestDigests Digests = new("sha256:m", "sha256:p", "sha256:q", "sha256:h", "sha256:b");
    protected static readonly Bindings AllBindings =
        Bindings.Subject | Bindings.Session | Bindings.Token | Bindings.Workload | Bindings.Origin | Bindings.Request;

    private IGrantStore? _store;

    protected IGrantStore Store => _store ?? throw new InvalidOperationException("Not initialized.");

    /// <summary>The store's present, to whole milliseconds (so that times round-trip exactly in every store).</summary>
    protected abstract DateTimeOffset Now { get; }

    protected abstract Task<IGrantStore> CreateStoreAsync();

    public virtual async Task InitializeAsync() => _store = await CreateStoreAsync();

    public virtual Task DisposeAsync()
    {
        (_store as IDisposable)?.Dispose();
        return Task.CompletedTask;
    }

    // ---------------------------------------------------------------- create / get

    [Fact]
    public async Task CreateAsync_ThenGetAsync_ReturnsEveryFieldAndEventsOldestFirst()
    {
        var grant = NewGrant() with
        {
            Status = GrantStatus.Pending,
            MaxUses = 3,
            UsesRemaining = 3,
            NotBefore = Now.AddMinutes(-1),
            ApprovalsRequired = 2,
            Approvers = ["bob"],
            ApprovalAal = 2,
            Bound = Bindings.Origin | Bindings.Session,
            Origins = ["10.1.0.0/16", "2001:db8::/32"],
        };
        var before = Now;

        Assert.Equal(GrantChange.Done, (await Store.CreateAsync(grant, Created(), 10, default)).Outcome);
        var stored = await Store.GetAsync(grant.Id, default);

        Assert.NotNull(stored);
        Assert.Equal(grant.Id, stored.Id);
        Assert.Equal(grant.Route, stored.Route);
        Assert.Equal(grant.Policy, stored.Policy);
        Assert.Equal(GrantStatus.Pending, stored.Status);
        Assert.Equal(grant.Subject, stored.Subject);
        Assert.Equal(grant.Session, stored.Session);
        Assert.Equal(grant.TokenHash, stored.TokenHash);
        Assert.Equal(grant.Workload, stored.Workload);
        Assert.Equal(grant.Origins, stored.Origins);
        Assert.Equal(grant.RequestHash, stored.RequestHash);
        Assert.Equal(grant.Digests, stored.Digests);
        Assert.Equal(grant.Method, stored.Method);
        Assert.Equal(grant.Path, stored.Path);
        Assert.Equal(grant.Query, stored.Query);
        Assert.Equal(3, stored.MaxUses);
        Assert.Equal(3, stored.UsesRemaining);
        Assert.Equal(grant.ExpiresAt, stored.ExpiresAt);
        Assert.Equal(grant.NotBefore, stored.NotBefore);
        Assert.Equal(grant.Reason, stored.Reason);
        Assert.Equal(grant.CreatedBy, stored.CreatedBy);
        Assert.Equal(2, stored.ApprovalsRequired);
        Assert.Equal(["bob"], stored.Approvers);
        Assert.Equal(2, stored.ApprovalAal);
        Assert.Equal(Bindings.Origin | Bindings.Session, stored.Bound);
        Assert.Null(stored.FirstUse);
        Assert.Equal(0, stored.DroppedEvents);
        Assert.InRange(stored.CreatedAt, before.AddSeconds(-5), Now.AddSeconds(5));

        Assert.Collection(
            stored.Events,
            e =>
            {
                Assert.Equal(GrantEvent.Created, e.Type);
                Assert.Equal("trace-create", e.TraceId);
                Assert.Equal("bob", e.Actor);
                Assert.Equal(stored.CreatedAt, e.At);
            },
            e =>
            {
                Assert.Equal(GrantEvent.Approved, e.Type);
                Assert.Equal("trace-create", e.TraceId);
                Assert.Equal("bob", e.Actor);
                Assert.Equal(stored.CreatedAt, e.At);
            });
    }

    [Fact]
    public async Task CreateAsync_NullAndEmptyValues_KeepsThemApart()
    {
        var grant = NewGrant() with
        {
            Policy = null, Subject = string.Empty, Session = null, TokenHash = null, Workload = null, Origins = [],
            RequestHash = null, Digests = null, Method = null, Path = null, Reason = null, CreatedBy = null, Approvers = [],
            ApprovalAal = 0,
        };

        await CreateAsync(grant);
        var stored = await Store.GetAsync(grant.Id, default);

        Assert.NotNull(stored);
        Assert.Equal(string.Empty, stored.Subject);
        Assert.Null(stored.Policy);
        Assert.Null(stored.Session);
        Assert.Null(stored.TokenHash);
        Assert.Null(stored.Workload);
        Assert.Empty(stored.Origins);
        Assert.Null(stored.RequestHash);
        Assert.Null(stored.Digests);
        Assert.Null(stored.Method);
        Assert.Null(stored.Reason);
        Assert.Empty(stored.Approvers);
        Assert.Equal(GrantEvent.Created, Assert.Single(stored.Events).Type);
    }

    // SPEC §2: the store's clock judges a grant's window, so it sets it too. A grant with a ttl expires at the later of the
    // store's now and its notBefore, plus the ttl, whatever expiresAt the caller (a gateway with its own clock) gave; the
    // expiry set is returned and is what the record, the pending index and the API show.
    [Fact]
    public async Task CreateAsync_WithTtl_ExpiryFromTheStoreClock_WinsOverExpiresAt()
    {
        var ttl = TimeSpan.FromMinutes(2);
        var anchored = NewGrant() with { ExpiresAt = Now.AddHours(5), Ttl = ttl, NotBefore = null };
        var opened = NewGrant() with { ExpiresAt = Now.AddHours(5), Ttl = ttl, NotBefore = Now.AddMinutes(-1) };
        var planned = NewGrant() with { ExpiresAt = Now.AddHours(5), Ttl = ttl, NotBefore = Now.AddHours(1) };
        var pending = NewGrant() with { Status = GrantStatus.Pending, Approvers = [], ExpiresAt = default, Ttl = ttl, NotBefore = null };
        var before = Now;

        var results = new List<GrantCreated>();
        foreach (var grant in new[] { anchored, opened, planned, pending })
        {
            results.Add(await Store.CreateAsync(grant, Created(), 10, default));
        }

        var after = Now;
        Assert.All(results, r => Assert.Equal(GrantChange.Done, r.Outcome));
        Assert.InRange(results[0].ExpiresAt, before + ttl, after + ttl + TimeSpan.FromMilliseconds(1));
        Assert.InRange(results[1].ExpiresAt, before + ttl, after + ttl + TimeSpan.FromMilliseconds(1));
        Assert.Equal(planned.NotBefore!.Value + ttl, results[2].ExpiresAt);
        Assert.InRange(results[3].ExpiresAt, before + ttl, after + ttl + TimeSpan.FromMilliseconds(1));
        string[] ids = [anchored.Id, opened.Id, planned.Id, pending.Id];
        for (var i = 0; i < ids.Length; i++)
        {
            var stored = (await Store.GetAsync(ids[i], default))!;
            Assert.Equal(results[i].ExpiresAt, stored.ExpiresAt);
            Assert.Null(stored.Ttl);
        }

        Assert.Equal(results[3].ExpiresAt, Assert.Single(await Store.ListPendingAsync(100, null, default), g => g.Id == pending.Id).ExpiresAt);
        Assert.Equal(ReasonCodes.Ok, (await Store.ConsumeAsync(Matching(anchored), default)).Reason);
    }

    [Fact]
    public async Task CreateAsync_WithoutTtl_KeepsTheGivenExpiresAt()
    {
        var grant = NewGrant() with { ExpiresAt = Now.AddMinutes(7) };

        var result = await Store.CreateAsync(grant, Created(), 10, default);

        Assert.Equal(new GrantCreated(GrantChange.Done, grant.ExpiresAt), result);
        Assert.Equal(grant.ExpiresAt, (await Store.GetAsync(grant.Id, default))!.ExpiresAt);
    }

    [Fact]
    public async Task CreateAsync_ExistingId_Conflict()
    {
        var grant = NewGrant();
        await CreateAsync(grant);

        Assert.Equal(GrantChange.Conflict, (await Store.CreateAsync(grant with { Route = "other" }, Created(), 10, default)).Outcome);
        Assert.Equal(Route, (await Store.GetAsync(grant.Id, default))!.Route);
    }

    [Fact]
    public async Task GetAsync_UnknownId_Null()
    {
        Assert.Null(await Store.GetAsync(NewId(), default));
    }

    // ---------------------------------------------------------------- consume: the allow path

    [Fact]
    public async Task ConsumeAsync_Matching_ConsumesOneUseAndRecordsWhoUsedIt()
    {
        var grant = NewGrant() with { MaxUses = 2, UsesRemaining = 2 };
        await CreateAsync(grant);
        var request = Matching(grant) with { Origin = IPAddress.Parse("::ffff:10.1.2.3") };

        var result = await Store.ConsumeAsync(request, default);

        Assert.Equal(ReasonCodes.Ok, result.Reason);
        Assert.True(result.Allowed);
        Assert.Equal(GrantStatus.Active, result.Status);
        Assert.Equal(1, result.UsesRemaining);
        Assert.Empty(result.Mismatch);
        Assert.False(result.Revoked);
        Assert.Equal(["bob"], result.Approvers);
        Assert.Equal(2, result.ApprovalAal);
        Assert.Equal(grant.Subject, result.Subject);
        Assert.Equal(grant.Workload, result.Workload);
        Assert.Equal(grant.RequestHash, result.RequestHash);
        Assert.NotNull(result.FirstUse);
        Assert.Equal(request.TraceId, result.FirstUse.TraceId);
        Assert.Equal(request.SpanId, result.FirstUse.SpanId);
        Assert.Equal(Workload, result.FirstUse.Workload);
        Assert.Equal("10.1.2.3", result.FirstUse.Origin);

        var stored = await Store.GetAsync(grant.Id, default);
        Assert.NotNull(stored);
        Assert.Equal(1, stored.UsesRemaining);
        Assert.Equal(GrantStatus.Active, stored.Status);
        Assert.Equal(result.FirstUse, stored.FirstUse);
        var used = stored.Events[^1];
        Assert.Equal(GrantEvent.Used, used.Type);
        Assert.Equal(request.TraceId, used.TraceId);
        Assert.Equal(request.SpanId, used.SpanId);
        Assert.Equal(Workload, used.Workload);
        Assert.Equal("10.1.2.3", used.Origin);
        Assert.Null(used.Reason);
        Assert.Equal(stored.FirstUse!.At, used.At);
        Assert.InRange(used.At, stored.CreatedAt, Now.AddSeconds(5));
    }

    [Fact]
    public async Task ConsumeAsync_LastUse_StatusConsumed()
    {
        var grant = NewGrant();
        await CreateAsync(grant);

        var result = await Store.ConsumeAsync(Matching(grant), default);

        Assert.Equal(ReasonCodes.Ok, result.Reason);
        Assert.Equal(GrantStatus.Consumed, result.Status);
        Assert.Equal(0, result.UsesRemaining);
        Assert.Equal(GrantStatus.Consumed, (await Store.GetAsync(grant.Id, default))!.Status);
    }

    [Fact]
    public async Task ConsumeAsync_AfterLastUse_ReplayedPointingAtFirstUse()
    {
        var grant = NewGrant();
        await CreateAsync(grant);
        var first = Matching(grant);
        await Store.ConsumeAsync(first, default);

        var replay = await Store.ConsumeAsync(Matching(grant), default);

        Assert.Equal(ReasonCodes.Replayed, replay.Reason);
        Assert.Equal(GrantStatus.Consumed, replay.Status);
        Assert.Equal(0, replay.UsesRemaining);
        Assert.NotNull(replay.FirstUse);
        Assert.Equal(first.TraceId, replay.FirstUse.TraceId);
        Assert.Equal(first.SpanId, replay.FirstUse.SpanId);
        var denied = (await Store.GetAsync(grant.Id, default))!.Events[^1];
        Assert.Equal(GrantEvent.Denied, denied.Type);
        Assert.Equal(ReasonCodes.Replayed, denied.Reason);
    }

    [Fact]
    public async Task ConsumeAsync_MaxUsesThree_AcceptedExactlyThreeTimes()
    {
        var grant = NewGrant() with { MaxUses = 3, UsesRemaining = 3 };
        await CreateAsync(grant);

        var reasons = new List<string>();
        for (var i = 0; i < 5; i++)
        {
            reasons.Add((await Store.ConsumeAsync(Matching(grant), default)).Reason);
        }

        Assert.Equal([ReasonCodes.Ok, ReasonCodes.Ok, ReasonCodes.Ok, ReasonCodes.Replayed, ReasonCodes.Replayed], reasons);
        var stored = await Store.GetAsync(grant.Id, default);
        Assert.Equal(3, stored!.Events.Count(e => e.Type == GrantEvent.Used));
        Assert.Equal(0, stored.UsesRemaining);
    }

    [Fact]
    public async Task ConsumeAsync_RouteInOtherCase_Matches()
    {
        var grant = NewGrant();
        await CreateAsync(grant);

        Assert.Equal(ReasonCodes.Ok, (await Store.ConsumeAsync(Matching(grant) with { Route = "DePloY" }, default)).Reason);
    }

    // ---------------------------------------------------------------- consume: each reason, in order

    [Fact]
    public async Task ConsumeAsync_UnknownGrant_GrantNotFound()
    {
        var result = await Store.ConsumeAsync(Matching(NewGrant()), default);

        Assert.Equal(ReasonCodes.GrantNotFound, result.Reason);
        Assert.Null(result.Status);
        Assert.Null(result.FirstUse);
    }

    [Fact]
    public async Task ConsumeAsync_PendingGrant_GrantPending()
    {
        var grant = NewGrant() with { Status = GrantStatus.Pending };
        await CreateAsync(grant);

        var result = await Store.ConsumeAsync(Matching(grant), default);

        Assert.Equal(ReasonCodes.GrantPending, result.Reason);
        Assert.Equal(GrantStatus.Pending, result.Status);
        Assert.Equal(1, (await Store.GetAsync(grant.Id, default))!.UsesRemaining);
    }

    [Fact]
    public async Task ConsumeAsync_RevokedGrant_GrantRevoked()
    {
        var grant = NewGrant();
        await CreateAsync(grant);
        await Store.RevokeAsync(grant.Id, Revoked(), default);

        var result = await Store.ConsumeAsync(Matching(grant), default);

        Assert.Equal(ReasonCodes.GrantRevoked, result.Reason);
        Assert.Equal(GrantStatus.Revoked, result.Status);
        Assert.Equal(1, result.UsesRemaining);
    }

    [Fact]
    public async Task ConsumeAsync_ExpiredGrant_GrantExpired()
    {
        var grant = NewGrant() with { ExpiresAt = Now.AddSeconds(-3) };
        await CreateAsync(grant);

        var result = await Store.ConsumeAsync(Matching(grant), default);

        Assert.Equal(ReasonCodes.GrantExpired, result.Reason);
        Assert.Equal(1, (await Store.GetAsync(grant.Id, default))!.UsesRemaining);
    }

    [Fact]
    public async Task ConsumeAsync_NotBeforeInTheFuture_GrantNotYetValid()
    {
        var grant = NewGrant() with { NotBefore = Now.AddMinutes(1) };
        await CreateAsync(grant);

        Assert.Equal(ReasonCodes.GrantNotYetValid, (await Store.ConsumeAsync(Matching(grant), default)).Reason);
    }

    [Fact]
    public async Task ConsumeAsync_OtherRoute_RouteMismatch()
    {
        var grant = NewGrant();
        await CreateAsync(grant);

        Assert.Equal(ReasonCodes.RouteMismatch, (await Store.ConsumeAsync(Matching(grant) with { Route = "status" }, default)).Reason);
    }

    // Routes compare ignoring case as the route table does (ordinal-ignore-case): "ſtatus" (U+017F, long s) and "status" are
    // two routes there. The Redis store compares upper-cased keys (ToUpperInvariant), which is the same comparison only under
    // InvariantGlobalization (Directory.Build.props): with ICU, "ſ" upper-cases to "S", and a grant issued for one route
    // was accepted on the other. This holds the two stores together if that setting ever goes.
    [Fact]
    public async Task ConsumeAsync_RouteEqualOnlyWhenUpperCased_RouteMismatch()
    {
        var grant = NewGrant() with { Route = "\u017Ftatus" };
        await CreateAsync(grant);

        Assert.Equal(ReasonCodes.RouteMismatch, (await Store.ConsumeAsync(Matching(grant) with { Route = "status" }, default)).Reason);
        Assert.Equal(ReasonCodes.RouteMismatch, (await Store.ConsumeAsync(Matching(grant) with { Route = "STATUS" }, default)).Reason);
        Assert.Equal(ReasonCodes.Ok, (await Store.ConsumeAsync(Matching(grant) with { Route = "\u017FTATUS" }, default)).Reason);
    }

    [Fact]
    public async Task ConsumeAsync_OtherSubject_SubjectMismatch()
    {
        var grant = NewGrant();
        await CreateAsync(grant);

        Assert.Equal(ReasonCodes.SubjectMismatch, (await Store.ConsumeAsync(Matching(grant) with { Subject = "mallory" }, default)).Reason);
    }

    [Fact]
    public async Task ConsumeAsync_OtherSession_SessionMismatch()
    {
        var grant = NewGrant();
        await CreateAsync(grant);

        Assert.Equal(ReasonCodes.SessionMismatch, (await Store.ConsumeAsync(Matching(grant) with { Session = "sess-other" }, default)).Reason);
    }

    [Fact]
    public async Task ConsumeAsync_OtherToken_TokenMismatch()
    {
        var grant = NewGrant();
        await CreateAsync(grant);

        Assert.Equal(ReasonCodes.TokenMismatch, (await Store.ConsumeAsync(Matching(grant) with { TokenHash = "sha256:other" }, default)).Reason);
    }

    [Fact]
    public async Task ConsumeAsync_OtherWorkload_WorkloadMismatch()
    {
        var grant = NewGrant();
        await CreateAsync(grant);

        Assert.Equal(ReasonCodes.WorkloadMismatch, (await Store.ConsumeAsync(Matching(grant) with { Workload = "spiffe://prod.example/ns/x/sa/y" }, default)).Reason);
    }

    [Theory]
    [InlineData("10.1.0.0/16", "10.1.255.7", true)]
    [InlineData("10.1.0.0/16", "10.2.0.1", false)]
    [InlineData("10.1.2.3/16", "10.1.200.1", true)] // host bits in the CIDR: IPNetwork.TryParse takes it as 10.1.0.0/16
    [InlineData("10.1.0.0/16", "::ffff:10.1.0.9", true)] // IPv4-mapped IPv6 is the IPv4 address
    [InlineData("10.1.0.0/16", "::ffff:10.2.0.9", false)]
    [InlineData("192.168.8.0/21", "192.168.15.255", true)] // prefix not on a nibble boundary
    [InlineData("192.168.8.0/21", "192.168.16.0", false)]
    [InlineData("192.168.8.0/21", "192.168.7.255", false)]
    [InlineData("10.0.0.0/13", "10.7.1.1", true)]
    [InlineData("10.0.0.0/13", "10.8.1.1", false)]
    [InlineData("203.0.113.9/32", "203.0.113.9", true)]
    [InlineData("203.0.113.9/32", "203.0.113.8", false)]
    [InlineData("0.0.0.0/0", "198.51.100.1", true)]
    [InlineData("0.0.0.0/0", "2001:db8::1", false)] // another family never matches
    [InlineData("2001:db8::/32", "2001:db8:ffff::1", true)]
    [InlineData("2001:db8::/32", "2001:db9::1", false)]
    [InlineData("2001:db8:8000::/33", "2001:db8:8000::1", true)]
    [InlineData("2001:db8:8000::/33", "2001:db8:7fff::1", false)]
    [InlineData("2001:db8::/32", "10.1.0.1", false)]
    [InlineData("not-a-cidr", "10.1.0.1", false)] // unparseable entries are skipped, as by IPNetwork.TryParse
    public async Task ConsumeAsync_OriginBinding_AllowsOnlyAddressesInsideTheNetworks(string cidr, string address, bool allowed)
    {
        var grant = NewGrant() with { Origins = [cidr] };
        await CreateAsync(grant);

        var result = await Store.ConsumeAsync(Matching(grant) with { Origin = IPAddress.Parse(address) }, default);

        Assert.Equal(allowed ? ReasonCodes.Ok : ReasonCodes.OriginMismatch, result.Reason);
    }

    [Fact]
    public async Task ConsumeAsync_OriginInSecondNetwork_Ok()
    {
        var grant = NewGrant() with { Origins = ["bogus", "10.9.0.0/16", "2001:db8::/48"] };
        await CreateAsync(grant);

        Assert.Equal(ReasonCodes.Ok, (await Store.ConsumeAsync(Matching(grant) with { Origin = IPAddress.Parse("2001:db8::42") }, default)).Reason);
    }

    /// <summary>
    /// A grant made active under a weaker approval rule than the one the request's policy now holds (another replica's
    /// configuration, an earlier generation): pending by that rule, nothing spent; the rule it does meet lets it through.
    /// </summary>
    [Theory]
    [InlineData(2, 0)]
    [InlineData(1, 3)]
    public async Task ConsumeAsync_ApprovalsShortOfThePolicyInForce_GrantPendingNothingSpent(int approvals, int approvalAal)
    {
        var grant = NewGrant() with { Approvers = ["bob"], ApprovalAal = 2 };
        await CreateAsync(grant);

        var refused = await Store.ConsumeAsync(Matching(grant) with { MinimumApprovals = approvals, MinimumApprovalAal = approvalAal }, default);
        var allowed = await Store.ConsumeAsync(Matching(grant) with { MinimumApprovals = 1, MinimumApprovalAal = 2 }, default);

        Assert.Equal(ReasonCodes.GrantPending, refused.Reason);
        Assert.Equal(GrantStatus.Active, refused.Status);
        Assert.Equal(ReasonCodes.Ok, allowed.Reason);
    }

    /// <summary>
    /// A grant whose uses are all spent, presented after the approval rule was raised: it is a replay (no uses left), not
    /// grant_pending, which would send the caller to collect approvals for a grant that can never be used again, and
    /// would leave the replay's evidence without the first use it points back to.
    /// </summary>
    [Theory]
    [InlineData(2, 0)]
    [InlineData(1, 3)]
    public async Task ConsumeAsync_UsedUpThenApprovalRuleRaised_ReplayedNotPending(int approvals, int approvalAal)
    {
        var grant = NewGrant() with { Approvers = ["bob"], ApprovalAal = 2 };
        await CreateAsync(grant);
        Assert.Equal(ReasonCodes.Ok, (await Store.ConsumeAsync(Matching(grant), default)).Reason);

        var again = await Store.ConsumeAsync(Matching(grant) with { MinimumApprovals = approvals, MinimumApprovalAal = approvalAal }, default);

        Assert.Equal(ReasonCodes.Replayed, again.Reason);
        Assert.Equal(GrantStatus.Consumed, again.Status);
        Assert.NotNull(again.FirstUse);
    }

    [Fact]
    public async Task ConsumeAsync_NoOriginPresented_OriginMismatch()
    {
        var grant = NewGrant();
        await CreateAsync(grant);

        Assert.Equal(ReasonCodes.OriginMismatch, (await Store.ConsumeAsync(Matching(grant) with { Origin = null }, default)).Reason);
    }

    [Fact]
    public async Task ConsumeAsync_OtherBody_RequestMismatchNamingBody()
    {
        var grant = NewGrant();
        await CreateAsync(grant);
        var request = Matching(grant) with { RequestHash = "sha256:other", Digests = Digests with { Body = "sha256:other-body" } };

        var result = await Store.ConsumeAsync(request, default);

        Assert.Equal(ReasonCodes.RequestMismatch, result.Reason);
        Assert.Equal(["body"], result.Mismatch);
        var denied = (await Store.GetAsync(grant.Id, default))!.Events[^1];
        Assert.Equal(GrantEvent.Denied, denied.Type);
        Assert.Equal(ReasonCodes.RequestMismatch, denied.Reason);
        Assert.Equal(["body"], denied.Mismatch);
    }

    [Fact]
    public async Task ConsumeAsync_OtherHeaders_RequestMismatchNamingHeaders()
    {
        var grant = NewGrant();
        await CreateAsync(grant);
        var request = Matching(grant) with { RequestHash = "sha256:other", Digests = Digests with { Headers = "sha256:other-headers" } };

        var result = await Store.ConsumeAsync(request, default);

        Assert.Equal(ReasonCodes.RequestMismatch, result.Reason);
        Assert.Equal(["headers"], result.Mismatch);
    }

    [Fact]
    public async Task ConsumeAsync_OtherMethodAndPath_RequestMismatchNamingBothInOrder()
    {
        var grant = NewGrant();
        await CreateAsync(grant);
        var request = Matching(grant) with
        {
            RequestHash = "sha256:other", Digests = Digests with { Method = "sha256:get", Path = "sha256:elsewhere" },
        };

        var result = await Store.ConsumeAsync(request, default);

        Assert.Equal(ReasonCodes.RequestMismatch, result.Reason);
        Assert.Equal(["method", "path"], result.Mismatch);
    }

    [Fact]
    public async Task ConsumeAsync_OtherRequestWithoutDigests_RequestMismatchNamingNothing()
    {
        var grant = NewGrant();
        await CreateAsync(grant);

        var result = await Store.ConsumeAsync(Matching(grant) with { RequestHash = "sha256:other", Digests = null }, default);

        Assert.Equal(ReasonCodes.RequestMismatch, result.Reason);
        Assert.Empty(result.Mismatch);
        Assert.Null((await Store.GetAsync(grant.Id, default))!.Events[^1].Mismatch);
    }

    [Fact]
    public async Task ConsumeAsync_ComponentsOfAnotherQuery_RequestMismatchNamingTheQuery()
    {
        var issued = ComputeRequest("env=prod&dry_run=false");
        var grant = NewGrant() with { RequestHash = issued.Hash, Digests = issued.Digests };
        await CreateAsync(grant);
        var presented = ComputeRequest("env=prod&dry_run=true");

        var result = await Store.ConsumeAsync(Matching(grant) with { RequestHash = presented.Hash, Digests = null, Components = presented.Components }, default);

        Assert.Equal(ReasonCodes.RequestMismatch, result.Reason);
        Assert.Equal(["query"], result.Mismatch);
        var stored = (await Store.GetAsync(grant.Id, default))!;
        Assert.Equal(1, stored.UsesRemaining);
        var denied = Assert.Single(stored.Events, e => e.Type == GrantEvent.Denied);
        Assert.Equal(["query"], denied.Mismatch);
    }

    [Fact]
    public async Task ConsumeAsync_MatchingComponents_AllowedWithoutComputingTheirDigests()
    {
        var issued = ComputeRequest("env=prod&dry_run=false");
        var grant = NewGrant() with { RequestHash = issued.Hash, Digests = issued.Digests };
        await CreateAsync(grant);
        var presented = ComputeRequest("env=prod&dry_run=false");

        var result = await Store.ConsumeAsync(Matching(grant) with { RequestHash = presented.Hash, Digests = null, Components = presented.Components }, default);

        Assert.True(result.Allowed, result.Reason);
        Assert.False(presented.Components.DigestsComputed);
    }

    private static RequestHash ComputeRequest(string query) => CanonicalRequest.Compute(
        "POST", "/deploy/v1/releases", query, ["content-type"], _ => new Microsoft.Extensions.Primitives.StringValues("application/json"), "{}"u8);

    // ---------------------------------------------------------------- precedence

    [Fact]
    public async Task ConsumeAsync_RevokedAndWrongWorkload_GrantRevokedFirst()
    {
        var grant = NewGrant();
        await CreateAsync(grant);
        await Store.RevokeAsync(grant.Id, Revoked(), default);

        Assert.Equal(ReasonCodes.GrantRevoked, (await Store.ConsumeAsync(Matching(grant) with { Workload = "spiffe://x" }, default)).Reason);
    }

    [Fact]
    public async Task ConsumeAsync_WrongWorkloadAndNoUsesLeft_WorkloadMismatchFirst()
    {
        var grant = NewGrant();
        await CreateAsync(grant);
        await Store.ConsumeAsync(Matching(grant), default);

        Assert.Equal(ReasonCodes.WorkloadMismatch, (await Store.ConsumeAsync(Matching(grant) with { Workload = "spiffe://x" }, default)).Reason);
    }

    [Fact]
    public async Task ConsumeAsync_PendingAndExpired_GrantPendingFirst()
    {
        var grant = NewGrant() with { Status = GrantStatus.Pending, ExpiresAt = Now.AddSeconds(-3) };
        await CreateAsync(grant);

        Assert.Equal(ReasonCodes.GrantPending, (await Store.ConsumeAsync(Matching(grant), default)).Reason);
    }

    [Fact]
    public async Task ConsumeAsync_ExpiredAndNotYetValidAndOtherRoute_GrantExpiredFirst()
    {
        var grant = NewGrant() with { ExpiresAt = Now.AddSeconds(-3), NotBefore = Now.AddMinutes(1) };
        await CreateAsync(grant);

        Assert.Equal(ReasonCodes.GrantExpired, (await Store.ConsumeAsync(Matching(grant) with { Route = "status" }, default)).Reason);
    }

    [Fact]
    public async Task ConsumeAsync_EveryBindingWrong_SubjectMismatchFirstThenEachInContractOrder()
    {
        var grant = NewGrant() with { MaxUses = 10, UsesRemaining = 10 };
        await CreateAsync(grant);
        var wrong = Matching(grant) with
        {
            Subject = "mallory", Session = "s2", TokenHash = "sha256:t2", Workload = "spiffe://x",
            Origin = IPAddress.Parse("192.0.2.1"), RequestHash = "sha256:r2", Digests = Digests with { Query = "sha256:q2" },
        };

        // Fix one binding after the other: each time the next one in contract order is reported.
        var reasons = new List<string>
        {
            (await Store.ConsumeAsync(wrong with { Route = "status" }, default)).Reason,
            (await Store.ConsumeAsync(wrong, default)).Reason,
        };
        wrong = wrong with { Subject = grant.Subject };
        reasons.Add((await Store.ConsumeAsync(wrong, default)).Reason);
        wrong = wrong with { Session = grant.Session };
        reasons.Add((await Store.ConsumeAsync(wrong, default)).Reason);
        wrong = wrong with { TokenHash = grant.TokenHash };
        reasons.Add((await Store.ConsumeAsync(wrong, default)).Reason);
        wrong = wrong with { Workload = grant.Workload };
        reasons.Add((await Store.ConsumeAsync(wrong, default)).Reason);
        wrong = wrong with { Origin = IPAddress.Parse("10.1.0.1") };
        var requestMismatch = await Store.ConsumeAsync(wrong, default);
        reasons.Add(requestMismatch.Reason);
        wrong = wrong with { RequestHash = grant.RequestHash, Digests = Digests };
        reasons.Add((await Store.ConsumeAsync(wrong, default)).Reason);

        Assert.Equal(
            [
                ReasonCodes.RouteMismatch, ReasonCodes.SubjectMismatch, ReasonCodes.SessionMismatch, ReasonCodes.TokenMismatch,
                ReasonCodes.WorkloadMismatch, ReasonCodes.OriginMismatch, ReasonCodes.RequestMismatch, ReasonCodes.Ok,
            ],
            reasons);
        Assert.Equal(["query"], requestMismatch.Mismatch);
    }

    // ---------------------------------------------------------------- which bindings are checked

    [Fact]
    public async Task ConsumeAsync_BindingOnGrantButNotRequiredByPolicy_StillChecked()
    {
        var grant = NewGrant() with { Bound = Bindings.Workload };
        await CreateAsync(grant);
        var request = Matching(grant) with { Required = Bindings.None, Workload = "spiffe://x" };

        Assert.Equal(ReasonCodes.WorkloadMismatch, (await Store.ConsumeAsync(request, default)).Reason);
    }

    [Fact]
    public async Task ConsumeAsync_BindingNeitherRequiredNorBound_NotChecked()
    {
        var grant = NewGrant();
        await CreateAsync(grant);
        var request = Matching(grant) with
        {
            Required = Bindings.Token, Subject = "x", Session = "y", Workload = "z", Origin = null, RequestHash = null, Digests = null,
        };

        Assert.Equal(ReasonCodes.Ok, (await Store.ConsumeAsync(request, default)).Reason);
    }

    [Fact]
    public async Task ConsumeAsync_BindingRequiredButAbsentOnGrant_Mismatch()
    {
        var grant = NewGrant() with { Session = null };
        await CreateAsync(grant);

        // Even a request that has no session either: a binding the policy demands must be on the grant.
        Assert.Equal(ReasonCodes.SessionMismatch, (await Store.ConsumeAsync(Matching(grant) with { Session = null }, default)).Reason);
        Assert.Equal(ReasonCodes.SessionMismatch, (await Store.ConsumeAsync(Matching(grant) with { Session = "sess-1" }, default)).Reason);
    }

    [Fact]
    public async Task ConsumeAsync_OriginRequiredButGrantHasNoNetworks_OriginMismatch()
    {
        var grant = NewGrant() with { Origins = [] };
        await CreateAsync(grant);

        Assert.Equal(ReasonCodes.OriginMismatch, (await Store.ConsumeAsync(Matching(grant), default)).Reason);
    }

    [Fact]
    public async Task ConsumeAsync_EmptyValueOnGrant_MatchesOnlyTheEmptyValue()
    {
        var grant = NewGrant() with { Session = string.Empty };
        await CreateAsync(grant);

        Assert.Equal(ReasonCodes.SessionMismatch, (await Store.ConsumeAsync(Matching(grant) with { Session = null }, default)).Reason);
        Assert.Equal(ReasonCodes.Ok, (await Store.ConsumeAsync(Matching(grant) with { Session = string.Empty }, default)).Reason);
    }

    [Fact]
    public async Task ConsumeAsync_SubjectlessGrant_OnlyAnApproverItselfIsSelfApproval()
    {
        // SPEC §5.1 four eyes on a grant without a subject: the approver "bobby" may not use it; "bob", whose name is only
        // a part of an approver's, may.
        var grant = NewGrant() with { Subject = null, Approvers = ["bobby", "ops-bob"] };
        await CreateAsync(grant);
        var request = Matching(grant) with { Required = AllBindings & ~Bindings.Subject };

        Assert.Equal(ReasonCodes.SelfApproval, (await Store.ConsumeAsync(request with { Subject = "bobby" }, default)).Reason);
        Assert.Equal(ReasonCodes.Ok, (await Store.ConsumeAsync(request with { Subject = "bob" }, default)).Reason);
    }

    // ---------------------------------------------------------------- RevokeOn

    [Fact]
    public async Task ConsumeAsync_MismatchListedInRevokeOn_BurnsTheGrant()
    {
        var grant = NewGrant() with { MaxUses = 2, UsesRemaining = 2 };
        await CreateAsync(grant);
        var attacker = Matching(grant) with { Workload = "spiffe://evil", RevokeOn = [ReasonCodes.TokenMismatch, ReasonCodes.WorkloadMismatch] };

        var result = await Store.ConsumeAsync(attacker, default);

        Assert.Equal(ReasonCodes.WorkloadMismatch, result.Reason);
        Assert.True(result.Revoked);
        Assert.Equal(GrantStatus.Revoked, result.Status);
        var stored = await Store.GetAsync(grant.Id, default);
        Assert.Equal(GrantStatus.Revoked, stored!.Status);
        Assert.Equal(2, stored.UsesRemaining);
        var denied = stored.Events[^2];
        var revoked = stored.Events[^1];
        Assert.Equal(GrantEvent.Denied, denied.Type);
        Assert.Equal(ReasonCodes.WorkloadMismatch, denied.Reason);
        Assert.Equal("spiffe://evil", denied.Workload);
        Assert.Equal(attacker.TraceId, denied.TraceId);
        Assert.Equal(GrantEvent.Revoked, revoked.Type);
        Assert.Equal(ReasonCodes.WorkloadMismatch, revoked.Reason);
        Assert.Equal(attacker.TraceId, revoked.TraceId);

        var rightful = await Store.ConsumeAsync(Matching(grant), default);
        Assert.Equal(ReasonCodes.GrantRevoked, rightful.Reason);
        Assert.False(rightful.Revoked);
    }

    [Fact]
    public async Task ConsumeAsync_MismatchNotInRevokeOn_LeavesTheGrantUsable()
    {
        var grant = NewGrant();
        await CreateAsync(grant);
        var wrong = Matching(grant) with { Subject = "mallory", RevokeOn = [ReasonCodes.TokenMismatch, ReasonCodes.WorkloadMismatch] };

        var result = await Store.ConsumeAsync(wrong, default);

        Assert.Equal(ReasonCodes.SubjectMismatch, result.Reason);
        Assert.False(result.Revoked);
        Assert.Equal(GrantStatus.Active, result.Status);
        Assert.DoesNotContain((await Store.GetAsync(grant.Id, default))!.Events, e => e.Type == GrantEvent.Revoked);
        Assert.Equal(ReasonCodes.Ok, (await Store.ConsumeAsync(Matching(grant), default)).Reason);
    }

    // ---------------------------------------------------------------- shadow mode (dry run)

    [Fact]
    public async Task ConsumeAsync_DryRunMatching_ReportsTheUseButWritesNothing()
    {
        var grant = NewGrant();
        await CreateAsync(grant);
        var before = await Store.GetAsync(grant.Id, default);

        var result = await Store.ConsumeAsync(Matching(grant) with { DryRun = true }, default);

        Assert.Equal(ReasonCodes.Ok, result.Reason);
        Assert.Equal(0, result.UsesRemaining);
        Assert.Null(result.FirstUse);
        var after = await Store.GetAsync(grant.Id, default);
        Assert.Equal(1, after!.UsesRemaining);
        Assert.Equal(GrantStatus.Active, after.Status);
        Assert.Null(after.FirstUse);
        Assert.Equal(before!.Events.Count, after.Events.Count);

        // The real use is still there to take.
        Assert.Equal(ReasonCodes.Ok, (await Store.ConsumeAsync(Matching(grant), default)).Reason);
    }

    [Fact]
    public async Task ConsumeAsync_DryRunMismatchInRevokeOn_ReportsTheRevocationButWritesNothing()
    {
        var grant = NewGrant();
        await CreateAsync(grant);
        var before = await Store.GetAsync(grant.Id, default);

        var result = await Store.ConsumeAsync(Matching(grant) with { TokenHash = "sha256:x", RevokeOn = [ReasonCodes.TokenMismatch], DryRun = true }, default);

        Assert.Equal(ReasonCodes.TokenMismatch, result.Reason);
        Assert.True(result.Revoked);
        Assert.Equal(GrantStatus.Revoked, result.Status);
        var after = await Store.GetAsync(grant.Id, default);
        Assert.Equal(GrantStatus.Active, after!.Status);
        Assert.Equal(before!.Events.Count, after.Events.Count);
        Assert.Equal(ReasonCodes.Ok, (await Store.ConsumeAsync(Matching(grant), default)).Reason);
    }

    [Fact]
    public async Task ConsumeAsync_DryRunReplay_SameReasonNoEvent()
    {
        var grant = NewGrant();
        await CreateAsync(grant);
        await Store.ConsumeAsync(Matching(grant), default);
        var events = (await Store.GetAsync(grant.Id, default))!.Events.Count;

        var result = await Store.ConsumeAsync(Matching(grant) with { DryRun = true }, default);

        Assert.Equal(ReasonCodes.Replayed, result.Reason);
        Assert.NotNull(result.FirstUse);
        Assert.Equal(events, (await Store.GetAsync(grant.Id, default))!.Events.Count);
    }

    // ---------------------------------------------------------------- revoke

    [Fact]
    public async Task RevokeAsync_ActiveGrant_RevokesOnceAndRecordsTheActor()
    {
        var grant = NewGrant();
        await CreateAsync(grant);

        Assert.Equal(GrantChange.Done, await Store.RevokeAsync(grant.Id, Revoked(), default));
        Assert.Equal(GrantChange.Done, await Store.RevokeAsync(grant.Id, Revoked() with { Actor = "someone-else" }, default));

        var stored = await Store.GetAsync(grant.Id, default);
        Assert.Equal(GrantStatus.Revoked, stored!.Status);
        var revoked = Assert.Single(stored.Events, e => e.Type == GrantEvent.Revoked);
        Assert.Equal("carol", revoked.Actor);
        Assert.Equal("trace-revoke", revoked.TraceId);
        Assert.InRange(revoked.At, stored.CreatedAt, Now.AddSeconds(5));
    }

    [Fact]
    public async Task RevokeAsync_UnknownGrant_NotFound()
    {
        Assert.Equal(GrantChange.NotFound, await Store.RevokeAsync(NewId(), Revoked(), default));
    }

    [Fact]
    public async Task DenyPendingAsync_PendingGrant_RevokedWithTheApproverAsActor()
    {
        var grant = NewGrant() with { Status = GrantStatus.Pending };
        await CreateAsync(grant);

        Assert.Equal(GrantChange.Done, await Store.DenyPendingAsync(grant.Id, Revoked(), default));

        var stored = await Store.GetAsync(grant.Id, default);
        Assert.Equal(GrantStatus.Revoked, stored!.Status);
        Assert.Equal("carol", Assert.Single(stored.Events, e => e.Type == GrantEvent.Revoked).Actor);
        Assert.DoesNotContain(await Store.ListPendingAsync(100, null, default), g => g.Id == grant.Id);
    }

    [Fact]
    public async Task DenyPendingAsync_GrantNoLongerPending_ConflictAndLeftAsItIs()
    {
        // Approved to active between the approver's read and the denial: the denial must not revoke a live grant.
        var grant = NewGrant();
        await CreateAsync(grant);

        Assert.Equal(GrantChange.Conflict, await Store.DenyPendingAsync(grant.Id, Revoked(), default));

        var stored = await Store.GetAsync(grant.Id, default);
        Assert.Equal(GrantStatus.Active, stored!.Status);
        Assert.DoesNotContain(stored.Events, e => e.Type == GrantEvent.Revoked);
        Assert.Equal(ReasonCodes.Ok, (await Store.ConsumeAsync(Matching(grant), default)).Reason);
    }

    [Fact]
    public async Task DenyPendingAsync_UnknownGrant_NotFound()
    {
        Assert.Equal(GrantChange.NotFound, await Store.DenyPendingAsync(NewId(), Revoked(), default));
    }

    // ---------------------------------------------------------------- approve

    [Fact]
    public async Task ApproveAsync_QuorumOfDistinctApprovers_ActivatesWithLowestAal()
    {
        var grant = NewGrant() with { Status = GrantStatus.Pending, ApprovalsRequired = 3, Approvers = ["bob"], ApprovalAal = 3 };
        await CreateAsync(grant);

        var first = await Store.ApproveAsync(grant.Id, "carol", 2, Approved(), null, 0, default);
        var again = await Store.ApproveAsync(grant.Id, "carol", 1, Approved(), null, 0, default);
        var creatorAgain = await Store.ApproveAsync(grant.Id, "bob", 1, Approved(), null, 0, default);
        var last = await Store.ApproveAsync(grant.Id, "dave", 3, Approved(), null, 0, default);

        Assert.Equal(new ApproveResult(GrantChange.Done, GrantStatus.Pending, 1), first);
        Assert.Equal(new ApproveResult(GrantChange.Done, GrantStatus.Pending, 1), again);
        Assert.Equal(new ApproveResult(GrantChange.Done, GrantStatus.Pending, 1), creatorAgain);
        Assert.Equal(new ApproveResult(GrantChange.Done, GrantStatus.Active, 0), last);

        var stored = await Store.GetAsync(grant.Id, default);
        Assert.Equal(GrantStatus.Active, stored!.Status);
        Assert.Equal(["bob", "carol", "dave"], stored.Approvers);
        Assert.Equal(2, stored.ApprovalAal);
        Assert.Equal(["bob", "carol", "dave"], stored.Events.Where(e => e.Type == GrantEvent.Approved).Select(e => e.Actor));
        Assert.Equal("trace-approve", stored.Events[^1].TraceId);
        Assert.Equal(ReasonCodes.Ok, (await Store.ConsumeAsync(Matching(grant), default)).Reason);
    }

    [Fact]
    public async Task ApproveAsync_Activated_UsableForAtMostTheWindowFromApprovalOrFromNotBefore()
    {
        // A challenge grant waits PendingTtl (15 min) for approvers; once active it is usable for MaxTtl, not the rest.
        var waiting = NewGrant() with { Status = GrantStatus.Pending, ApprovalsRequired = 1, Approvers = [], ExpiresAt = Now.AddMinutes(15), NotBefore = null };
        var planned = NewGrant() with { Status = GrantStatus.Pending, ApprovalsRequired = 1, Approvers = [], ExpiresAt = Now.AddHours(3), NotBefore = Now.AddHours(2) };
        var shortLived = NewGrant() with { Status = GrantStatus.Pending, ApprovalsRequired = 1, Approvers = [], ExpiresAt = Now.AddMinutes(2), NotBefore = null };
        var unlimited = NewGrant() with { Status = GrantStatus.Pending, ApprovalsRequired = 1, Approvers = [], ExpiresAt = Now.AddMinutes(15), NotBefore = null };
        foreach (var grant in new[] { waiting, planned, shortLived, unlimited })
        {
            await CreateAsync(grant);
        }

        var approvedAt = Now;
        foreach (var grant in new[] { waiting, planned, shortLived })
        {
            Assert.Equal(GrantStatus.Active, (await Store.ApproveAsync(grant.Id, "carol", 2, Approved(), TimeSpan.FromMinutes(5), 0, default)).Status);
        }

        await Store.ApproveAsync(unlimited.Id, "carol", 2, Approved(), null, 0, default);

        Assert.InRange((await Store.GetAsync(waiting.Id, default))!.ExpiresAt, approvedAt.AddMinutes(5).AddSeconds(-1), Now.AddMinutes(5).AddSeconds(1));
        AssertNear(planned.NotBefore!.Value.AddMinutes(5), (await Store.GetAsync(planned.Id, default))!.ExpiresAt);
        AssertNear(shortLived.ExpiresAt, (await Store.GetAsync(shortLived.Id, default))!.ExpiresAt);
        AssertNear(unlimited.ExpiresAt, (await Store.GetAsync(unlimited.Id, default))!.ExpiresAt);

        // The Redis store keeps microseconds, DateTimeOffset has 100 ns ticks.
        static void AssertNear(DateTimeOffset expected, DateTimeOffset actual) =>
            Assert.InRange(actual, expected.AddMilliseconds(-1), expected.AddMilliseconds(1));
    }

    [Fact]
    public async Task ApproveAsync_FirstApproverOfGrantWithoutAny_SetsItsAal()
    {
        var grant = NewGrant() with { Status = GrantStatus.Pending, ApprovalsRequired = 1, Approvers = [], ApprovalAal = 0 };
        await CreateAsync(grant);

        var result = await Store.ApproveAsync(grant.Id, "carol", 3, Approved(), null, 0, default);

        Assert.Equal(new ApproveResult(GrantChange.Done, GrantStatus.Active, 0), result);
        Assert.Equal(3, (await Store.GetAsync(grant.Id, default))!.ApprovalAal);
    }

    [Fact]
    public async Task ApproveAsync_NotPending_ConflictAndNoChange()
    {
        var active = NewGrant();
        var revoked = NewGrant() with { Status = GrantStatus.Pending };
        await CreateAsync(active);
        await CreateAsync(revoked);
        await Store.RevokeAsync(revoked.Id, Revoked(), default);

        Assert.Equal(new ApproveResult(GrantChange.Conflict, GrantStatus.Active, 0), await Store.ApproveAsync(active.Id, "carol", 2, Approved(), null, 0, default));
        Assert.Equal(new ApproveResult(GrantChange.Conflict, GrantStatus.Revoked, 0), await Store.ApproveAsync(revoked.Id, "carol", 2, Approved(), null, 0, default));
        Assert.Equal(["bob"], (await Store.GetAsync(active.Id, default))!.Approvers);
    }

    [Fact]
    public async Task ApproveAsync_PendingButExpired_Conflict()
    {
        var grant = NewGrant() with { Status = GrantStatus.Pending, ExpiresAt = Now.AddSeconds(-3) };
        await CreateAsync(grant);

        Assert.Equal(new ApproveResult(GrantChange.Conflict, GrantStatus.Pending, 0), await Store.ApproveAsync(grant.Id, "carol", 2, Approved(), null, 0, default));
    }

    [Fact]
    public async Task ApproveAsync_UnknownGrant_NotFound()
    {
        Assert.Equal(new ApproveResult(GrantChange.NotFound, null, 0), await Store.ApproveAsync(NewId(), "carol", 2, Approved(), null, 0, default));
    }

    // ---------------------------------------------------------------- pending grants

    [Fact]
    public async Task ListPendingAsync_OnlyLivePendingGrants_OldestFirstUpToLimit()
    {
        var first = NewGrant() with { Status = GrantStatus.Pending, Subject = "s1" };
        var active = NewGrant();
        var expired = NewGrant() with { Status = GrantStatus.Pending, Subject = "s2", ExpiresAt = Now.AddSeconds(-3) };
        var second = NewGrant() with { Status = GrantStatus.Pending, Subject = null };
        var approved = NewGrant() with { Status = GrantStatus.Pending, Subject = "s3" };
        var revoked = NewGrant() with { Status = GrantStatus.Pending, Subject = "s4" };
        var third = NewGrant() with { Status = GrantStatus.Pending, Subject = "s1" };
        foreach (var grant in (GrantRecord[])[first, active, expired, second, approved, revoked, third])
        {
            await CreateAsync(grant);
            await AdvanceAsync();
        }

        await Store.ApproveAsync(approved.Id, "carol", 2, Approved(), null, 0, default);
        await Store.RevokeAsync(revoked.Id, Revoked(), default);

        var all = await Store.ListPendingAsync(100, null, default);
        var two = await Store.ListPendingAsync(2, null, default);

        Assert.Equal([first.Id, second.Id, third.Id], all.Select(g => g.Id));
        Assert.Equal([first.Id, second.Id], two.Select(g => g.Id));
        Assert.Equal(first.Route, all[0].Route);
        Assert.Equal(first.Method, all[0].Method);
        Assert.Equal(first.Reason, all[0].Reason);
        Assert.Empty(await Store.ListPendingAsync(0, null, default));
    }

    // A route's pending grants behind more than a page (the Redis store reads its index 100 at a time) of other routes'.
    [Fact]
    public async Task ListPendingAsync_ByRoute_OnlyThatRoutesPastPagesOfOthers_OldestFirstUpToLimit()
    {
        for (var i = 0; i < 130; i++)
        {
            await CreateAsync(NewGrant() with { Status = GrantStatus.Pending, Subject = null, Route = "other" });
        }

        await AdvanceAsync();
        var first = NewGrant() with { Status = GrantStatus.Pending, Subject = null, Route = "mine" };
        await CreateAsync(first);
        await AdvanceAsync();
        var second = NewGrant() with { Status = GrantStatus.Pending, Subject = null, Route = "mine" };
        await CreateAsync(second);

        Assert.Equal([first.Id, second.Id], (await Store.ListPendingAsync(100, "mine", default)).Select(g => g.Id));
        Assert.Equal([first.Id], (await Store.ListPendingAsync(1, "mine", default)).Select(g => g.Id));
        Assert.Empty(await Store.ListPendingAsync(100, "nobody's", default));
        Assert.Equal(100, (await Store.ListPendingAsync(100, "other", default)).Count);
    }

    // Routes compare ignoring case (the gateway's route table, the consume script's routeKey): a grant created for
    // "Payments" on route "payments" is that route's, and an approver asking for "PAYMENTS" was told nothing waits.
    [Fact]
    public async Task ListPendingAsync_ByRoute_IgnoresCaseAsRoutesDo()
    {
        var spelt = NewGrant() with { Status = GrantStatus.Pending, Subject = null, Route = "Payments" };
        await CreateAsync(spelt);
        await AdvanceAsync();
        var other = NewGrant() with { Status = GrantStatus.Pending, Subject = null, Route = "payments" };
        await CreateAsync(other);

        Assert.Equal([spelt.Id, other.Id], (await Store.ListPendingAsync(100, "PAYMENTS", default)).Select(g => g.Id));
        Assert.Equal([spelt.Id, other.Id], (await Store.ListPendingAsync(100, "payments", default)).Select(g => g.Id));
        Assert.Empty(await Store.ListPendingAsync(100, "payment", default));
    }

    [Fact]
    public async Task ListPendingAsync_WhileOlderGrantsAreApproved_ListsEveryUntouchedPendingGrant()
    {
        // Approvers work through a long list while it is read page by page: a page that started at a rank skipped the
        // grants that moved up past it when older ones left the list (Redis: every list missed some, 8 runs of 8).
        var older = new List<GrantRecord>();
        var untouched = new List<GrantRecord>();
        for (var i = 0; i < 300; i++)
        {
            var grant = NewGrant() with { Status = GrantStatus.Pending, Subject = null };
            await CreateAsync(grant);
            (i < 150 ? older : untouched).Add(grant);
        }

        var (lists, incomplete) = (0, 0);
        var approving = Task.Run(async () =>
        {
            foreach (var chunk in older.Chunk(10))
            {
                await Task.WhenAll(chunk.Select(g => Store.ApproveAsync(g.Id, "carol", 2, Approved(), null, 0, default)));
            }
        });
        while (!approving.IsCompleted || lists == 0)
        {
            var listed = (await Store.ListPendingAsync(1000, null, default)).Select(g => g.Id).ToHashSet();
            lists++;
            incomplete += untouched.Any(g => !listed.Contains(g.Id)) ? 1 : 0;
        }

        await approving;
        Assert.True(incomplete == 0, $"{incomplete} of {lists} lists taken while older grants were approved missed untouched pending grants");
        Assert.Equal(untouched.Select(g => g.Id), (await Store.ListPendingAsync(1000, null, default)).Select(g => g.Id).Where(id => untouched.Any(u => u.Id == id)));
    }

    [Fact]
    public async Task CreateAsync_PendingBeyondLimitForSubject_TooManyAndNothingStored()
    {
        var subject = "alice-" + NewId();
        var first = NewGrant() with { Status = GrantStatus.Pending, Subject = subject };
        var second = NewGrant() with { Status = GrantStatus.Pending, Subject = subject };
        var third = NewGrant() with { Status = GrantStatus.Pending, Subject = subject };
        await CreateAsync(first, maxPendingPerSubject: 2);
        await CreateAsync(second, maxPendingPerSubject: 2);

        Assert.Equal(GrantChange.TooMany, (await Store.CreateAsync(third, Created(), 2, default)).Outcome);
        Assert.Null(await Store.GetAsync(third.Id, default));
        Assert.DoesNotContain(await Store.ListPendingAsync(100, null, default), g => g.Id == third.Id);

        // Another subject, an active grant, a pending grant without subject: not limited by alice's count.
        Assert.Equal(GrantChange.Done, (await Store.CreateAsync(NewGrant() with { Status = GrantStatus.Pending, Subject = "bob-" + NewId() }, Created(), 2, default)).Outcome);
        Assert.Equal(GrantChange.Done, (await Store.CreateAsync(NewGrant() with { Subject = subject }, Created(), 2, default)).Outcome);
        Assert.Equal(GrantChange.Done, (await Store.CreateAsync(NewGrant() with { Status = GrantStatus.Pending, Subject = null }, Created(), 0, default)).Outcome);
    }

    [Fact]
    public async Task CreateAsync_PendingAfterOthersLeftPending_SlotsAreFreedAgain()
    {
        var subject = "alice-" + NewId();
        var approved = NewGrant() with { Status = GrantStatus.Pending, Subject = subject };
        var revoked = NewGrant() with { Status = GrantStatus.Pending, Subject = subject };
        var expired = NewGrant() with { Status = GrantStatus.Pending, Subject = subject, ExpiresAt = Now.AddSeconds(-3) };
        await CreateAsync(approved, maxPendingPerSubject: 3);
        await CreateAsync(revoked, maxPendingPerSubject: 3);
        await CreateAsync(expired, maxPendingPerSubject: 3);
        await Store.ApproveAsync(approved.Id, "carol", 2, Approved(), null, 0, default);
        await Store.RevokeAsync(revoked.Id, Revoked(), default);

        // None of the three counts any more: three new pending grants fit.
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(GrantChange.Done, (await Store.CreateAsync(NewGrant() with { Status = GrantStatus.Pending, Subject = subject }, Created(), 3, default)).Outcome);
        }

        Assert.Equal(GrantChange.TooMany, (await Store.CreateAsync(NewGrant() with { Status = GrantStatus.Pending, Subject = subject }, Created(), 3, default)).Outcome);
    }

    [Fact]
    public async Task CreateAsync_PendingConsumedWithRevocation_NoLongerCounts()
    {
        var subject = "alice-" + NewId();
        var grant = NewGrant() with { Status = GrantStatus.Pending, Subject = subject };
        await CreateAsync(grant, maxPendingPerSubject: 1);

        // A consume attempt on a pending grant whose reason is listed in RevokeOn burns it: it leaves pending.
        var result = await Store.ConsumeAsync(Matching(grant) with { RevokeOn = [ReasonCodes.GrantPending] }, default);

        Assert.True(result.Revoked);
        Assert.Equal(GrantChange.Done, (await Store.CreateAsync(NewGrant() with { Status = GrantStatus.Pending, Subject = subject }, Created(), 1, default)).Outcome);
    }

    // ---------------------------------------------------------------- events

    [Fact]
    public async Task AppendEventAsync_KeepsTheEventAsGiven()
    {
        var grant = NewGrant();
        await CreateAsync(grant);
        var at = Now.AddSeconds(-30);
        var unknown = new GrantEvent
        {
            Type = GrantEvent.UnknownOutcome, At = at, TraceId = "trace-u", SpanId = "span-u", Reason = ReasonCodes.StoreUnavailable,
            Workload = Workload, Origin = "10.1.2.3", Mismatch = ["body"],
        };

        await Store.AppendEventAsync(grant.Id, unknown, default);
        await Store.AppendEventAsync(NewId(), unknown, default);

        var stored = await Store.GetAsync(grant.Id, default);
        var last = Assert.Single(stored!.Events, e => e.Type == GrantEvent.UnknownOutcome);
        Assert.Equal(at, last.At);
        Assert.Equal(unknown.TraceId, last.TraceId);
        Assert.Equal(unknown.SpanId, last.SpanId);
        Assert.Equal(unknown.Reason, last.Reason);
        Assert.Equal(unknown.Workload, last.Workload);
        Assert.Equal(unknown.Origin, last.Origin);
        Assert.Equal(["body"], last.Mismatch);
        Assert.Equal(GrantStatus.Active, stored.Status);
    }

    [Fact]
    public async Task AppendEventAsync_EventOlderThanTheLatest_PlacedOldestFirst()
    {
        // An unknown outcome is recorded once the store answers again, after the use that the timed-out consume made
        // when the store woke up: it must still be listed before that use (SPEC §5.2: oldest first).
        var grant = NewGrant() with { MaxUses = 2, UsesRemaining = 2 };
        await CreateAsync(grant);
        await Task.Delay(20);
        await AdvanceAsync();
        var before = (await Store.GetAsync(grant.Id, default))!.Events[^1].At;
        await Task.Delay(20);
        await AdvanceAsync();
        Assert.Equal(ReasonCodes.Ok, (await Store.ConsumeAsync(Matching(grant), default)).Reason);
        var used = (await Store.GetAsync(grant.Id, default))!.Events[^1];
        Assert.Equal(GrantEvent.Used, used.Type);
        var timedOut = before + (used.At - before) / 2;

        await Store.AppendEventAsync(grant.Id, new GrantEvent { Type = GrantEvent.UnknownOutcome, At = timedOut, TraceId = "late" }, default);

        var events = (await Store.GetAsync(grant.Id, default))!.Events;
        Assert.Equal([GrantEvent.UnknownOutcome, GrantEvent.Used], events.TakeLast(2).Select(e => e.Type));
        Assert.Equal(events.OrderBy(e => e.At).Select(e => e.Type), events.Select(e => e.Type));
    }

    [Fact]
    public async Task Events_DenialsBeyondTheirCap_CountedAsDroppedWhileUsesAndRevocationsAreStillRecorded()
    {
        // Anyone with a valid token can present a grant id and be denied: 254 such denials filled the list, and the
        // grant's real uses then left no event behind.
        var grant = NewGrant() with { MaxUses = 2, UsesRemaining = 2 };
        await CreateAsync(grant); // created + approved: 2 events
        await Task.Delay(2); // Now has millisecond precision, the store's clock microseconds: events appended "now" come after
        var outsider = Matching(grant) with { Subject = "mallory" };
        for (var i = 0; i < GrantRules.MaxEvents - 1; i++) // the last one does not fit
        {
            Assert.Equal(ReasonCodes.SubjectMismatch, (await Store.ConsumeAsync(outsider with { TraceId = "t" + i }, default)).Reason);
        }

        Assert.Equal(ReasonCodes.Ok, (await Store.ConsumeAsync(Matching(grant) with { TraceId = "use" }, default)).Reason);
        await Store.AppendEventAsync(grant.Id, new GrantEvent { Type = GrantEvent.UnknownOutcome, At = Now, TraceId = "unknown" }, default);
        Assert.Equal(ReasonCodes.SubjectMismatch, (await Store.ConsumeAsync(outsider with { TraceId = "burn", RevokeOn = [ReasonCodes.SubjectMismatch] }, default)).Reason);

        var stored = await Store.GetAsync(grant.Id, default);
        Assert.Equal(GrantRules.MaxEvents + 2, stored!.Events.Count);
        Assert.Equal(3, stored.DroppedEvents); // two denials and the unknown outcome (anyone can cause one: same cap)
        Assert.Equal(GrantEvent.Created, stored.Events[0].Type);
        Assert.Equal(GrantRules.MaxEvents - 2, stored.Events.Count(e => e.Type == GrantEvent.Denied));
        Assert.Equal("use", Assert.Single(stored.Events, e => e.Type == GrantEvent.Used).TraceId);
        Assert.DoesNotContain(stored.Events, e => e.Type == GrantEvent.UnknownOutcome);
        Assert.Equal("burn", Assert.Single(stored.Events, e => e.Type == GrantEvent.Revoked).TraceId);
        Assert.Equal(GrantStatus.Revoked, stored.Status);
        Assert.Equal(1, stored.UsesRemaining);
    }

    [Fact]
    public async Task AppendEventAsync_WithoutATime_StampedByTheStoreAfterTheUseItFollows()
    {
        var grant = NewGrant();
        await CreateAsync(grant);
        Assert.Equal(ReasonCodes.Ok, (await Store.ConsumeAsync(Matching(grant) with { TraceId = "use" }, default)).Reason);

        await Store.AppendEventAsync(grant.Id, new GrantEvent { Type = GrantEvent.ForwardFailed, TraceId = "use", Reason = "request" }, default);

        var events = (await Store.GetAsync(grant.Id, default))!.Events;
        Assert.Equal([GrantEvent.Used, GrantEvent.ForwardFailed], events.TakeLast(2).Select(e => e.Type));
        Assert.InRange(events[^1].At, events[^2].At, Now.AddSeconds(5));
    }

    [Fact]
    public async Task Consume_UseBeyondTheEventCap_CountedAsDroppedUseStillTakenFirstUseKept()
    {
        var grant = NewGrant() with { MaxUses = 3, UsesRemaining = 3 };
        await CreateAsync(grant);
        await Task.Delay(2); // as above: appended events must not predate the creation
        for (var i = 0; i < GrantRules.MaxEventsAnyKind - 3; i++)
        {
            await Store.AppendEventAsync(grant.Id, new GrantEvent { Type = GrantEvent.ForwardFailed, At = Now, TraceId = "t" + i, Reason = "request" }, default);
        }

        var first = await Store.ConsumeAsync(Matching(grant) with { TraceId = "first" }, default); // the last event that fits
        var second = await Store.ConsumeAsync(Matching(grant) with { TraceId = "second" }, default);
        await Store.AppendEventAsync(grant.Id, new GrantEvent { Type = GrantEvent.UnknownOutcome, At = Now }, default);

        Assert.True(second.Allowed);
        Assert.Equal(1, second.UsesRemaining);
        Assert.Equal(first.FirstUse, second.FirstUse);
        Assert.Equal("first", second.FirstUse!.TraceId);
        var stored = await Store.GetAsync(grant.Id, default);
        Assert.Equal(GrantRules.MaxEventsAnyKind, stored!.Events.Count);
        Assert.Equal(2, stored.DroppedEvents);
        Assert.Equal("first", stored.Events[^1].TraceId);
        Assert.Equal(GrantStatus.Active, stored.Status);
    }

    // A Redis store is ready once its watchdog's first round has judged the server (it answers, and whether it may evict
    // keys: on a cluster every master is asked); until then it says why not. Ready within a few seconds, and stays so.
    [Fact]
    public async Task NotReadyAsync_Reachable_Null()
    {
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var why = await Store.NotReadyAsync(default);
        while (why is not null && watch.Elapsed < TimeSpan.FromSeconds(10))
        {
            await Task.Delay(50);
            why = await Store.NotReadyAsync(default);
        }

        Assert.Null(why);
        Assert.Null(await Store.NotReadyAsync(default));
    }

    // ---------------------------------------------------------------- helpers

    protected static string NewId() => Guid.NewGuid().ToString("N");

    /// <summary>Lets the store's clock move on (CreatedAt ordering); a no-op for a store on the real clock.</summary>
    protected virtual Task AdvanceAsync() => Task.CompletedTask;

    protected GrantRecord NewGrant() => new()
    {
        Id = NewId(),
        Route = Route,
        Policy = "single-use-approval",
        Status = GrantStatus.Active,
        Subject = "alice",
        Session = "sess-1",
        TokenHash = "sha256:token",
        Workload = Workload,
        Origins = ["10.1.0.0/16"],
        RequestHash = "sha256:request",
        Digests = Digests,
        Method = "POST",
        Path = "/deploy/v1/releases",
        Query = "env=prod&dry_run=false",
        MaxUses = 1,
        UsesRemaining = 1,
        ExpiresAt = Now.AddMinutes(5),
        Reason = "CHG-1234 release 5.2",
        CreatedBy = "bob",
        ApprovalsRequired = 1,
        Approvers = ["bob"],
        ApprovalAal = 2,
    };

    protected static ConsumeRequest Matching(GrantRecord grant) => new()
    {
        GrantId = grant.Id,
        Route = grant.Route,
        Required = AllBindings,
        Subject = grant.Subject,
        Session = grant.Session,
        TokenHash = grant.TokenHash,
        Workload = grant.Workload,
        Origin = IPAddress.Parse("10.1.2.3"),
        RequestHash = grant.RequestHash,
        Digests = grant.Digests,
        TraceId = "trace-" + NewId(),
        SpanId = "span-" + NewId()[..16],
    };

    protected async Task CreateAsync(GrantRecord grant, int maxPendingPerSubject = 10) =>
        Assert.Equal(GrantChange.Done, (await Store.CreateAsync(grant, Created(), maxPendingPerSubject, default)).Outcome);

    protected static GrantEvent Created() => new() { Type = GrantEvent.Created, TraceId = "trace-create", Actor = "bob" };

    protected static GrantEvent Revoked() => new() { Type = GrantEvent.Revoked, TraceId = "trace-revoke", Actor = "carol" };

    protected static GrantEvent Approved() => new() { Type = GrantEvent.Approved, TraceId = "trace-approve" };
}
