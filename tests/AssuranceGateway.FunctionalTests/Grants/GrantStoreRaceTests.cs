using System.Net;
using AssuranceGateway.Enforcement;
using AssuranceGateway.Grants;
using AssuranceGateway.Testing;

namespace AssuranceGateway.FunctionalTests.Grants;

/// <summary>Concurrent grant lifecycles against both stores: quorum, approve against deny and revoke, use against revoke, the pending limit.</summary>
public abstract class GrantStoreRaceTests : IAsyncLifetime
{
    private IGrantStore? _store;

    protected IGrantStore Store => _store!;

    protected abstract Task<IGrantStore> CreateStoreAsync();

    public async Task InitializeAsync() => _store = await CreateStoreAsync();

    public Task DisposeAsync()
    {
        (_store as IDisposable)?.Dispose();
        return Task.CompletedTask;
    }

    protected static GrantRecord Pending(int required, string? subject = "alice", string[]? approvers = null) => new()
    {
        Id = Guid.NewGuid().ToString("N"),
        Route = "deploy",
        Policy = "p",
        Status = GrantStatus.Pending,
        Subject = subject,
        TokenHash = "sha256:token",
        MaxUses = 1,
        UsesRemaining = 1,
        ExpiresAt = DateTimeOffset.UtcNow.AddMinutes(5),
        ApprovalsRequired = required,
        Approvers = approvers ?? [],
        ApprovalAal = 2,
        Bound = Bindings.Subject | Bindings.Token,
        CreatedBy = "gateway",
    };

    protected static ConsumeRequest Use(GrantRecord grant) => new()
    {
        GrantId = grant.Id,
        Route = grant.Route,
        Required = Bindings.Subject | Bindings.Token,
        Subject = grant.Subject,
        TokenHash = grant.TokenHash,
        Origin = IPAddress.Loopback,
        TraceId = "trace-" + Guid.NewGuid().ToString("N"),
    };

    private static GrantEvent Ev(string type) => new() { Type = type, TraceId = "t" };

    [Fact]
    public async Task Race_ManyDistinctApprovers_ExactlyQuorumCounted()
    {
        for (var round = 0; round < 20; round++)
        {
            var grant = Pending(3);
            Assert.Equal(GrantChange.Done, (await Store.CreateAsync(grant, Ev(GrantEvent.Created), 1000, default)).Outcome);
            var results = await Task.WhenAll(Enumerable.Range(0, 12).Select(i => Task.Run(() =>
                Store.ApproveAsync(grant.Id, "approver" + i, 2, Ev(GrantEvent.Approved), null, 0, default))));
            var stored = (await Store.GetAsync(grant.Id, default))!;
            Assert.Equal(GrantStatus.Active, stored.Status);
            Assert.Equal(3, stored.Approvers.Count);
            Assert.Equal(3, stored.Approvers.Distinct().Count());
            Assert.Equal(3, results.Count(r => r.Outcome == GrantChange.Done));
            Assert.Equal(3, stored.Events.Count(e => e.Type == GrantEvent.Approved));
            Assert.Equal(stored.Approvers.OrderBy(a => a), stored.Events.Where(e => e.Type == GrantEvent.Approved).Select(e => e.Actor!).OrderBy(a => a));
        }
    }

    [Fact]
    public async Task Race_SameApproverConcurrently_CountsOnce()
    {
        for (var round = 0; round < 20; round++)
        {
            var grant = Pending(2);
            await Store.CreateAsync(grant, Ev(GrantEvent.Created), 1000, default);
            var results = await Task.WhenAll(Enumerable.Range(0, 10).Select(_ => Task.Run(() =>
                Store.ApproveAsync(grant.Id, "carol", 2, Ev(GrantEvent.Approved), null, 0, default))));
            var stored = (await Store.GetAsync(grant.Id, default))!;
            Assert.Equal(GrantStatus.Pending, stored.Status);
            Assert.Equal(["carol"], stored.Approvers);
            Assert.Single(stored.Events, e => e.Type == GrantEvent.Approved);
            Assert.All(results, r => Assert.Equal(1, r.ApprovalsRemaining));
        }
    }

    [Fact]
    public async Task Race_ApproveVersusDenyVersusRevoke_Consistent()
    {
        for (var round = 0; round < 30; round++)
        {
            var grant = Pending(2, approvers: ["bob"]);
            await Store.CreateAsync(grant, Ev(GrantEvent.Created), 1000, default);
            var approve = Task.Run(() => Store.ApproveAsync(grant.Id, "carol", 2, Ev(GrantEvent.Approved), null, 0, default));
            var deny = Task.Run(() => Store.DenyPendingAsync(grant.Id, Ev(GrantEvent.Revoked), default));
            var (a, d) = (await approve, await deny);
            var stored = (await Store.GetAsync(grant.Id, default))!;
            if (d == GrantChange.Done)
            {
                Assert.Equal(GrantStatus.Revoked, stored.Status);
                Assert.Equal(GrantChange.Conflict, a.Outcome);
                Assert.Equal(["bob"], stored.Approvers);
            }
            else
            {
                Assert.Equal(GrantChange.Conflict, d);
                Assert.Equal(GrantStatus.Active, stored.Status);
                Assert.Equal(GrantChange.Done, a.Outcome);
            }

            Assert.Single(stored.Events, e => e.Type == GrantEvent.Created);
        }
    }

    [Fact]
    public async Task Race_ConsumeVersusRevoke_NoUseAfterRevoke_AndUsesMatchEvents()
    {
        for (var round = 0; round < 20; round++)
        {
            var grant = Pending(1) with { Status = GrantStatus.Active, MaxUses = 5, UsesRemaining = 5, Approvers = ["bob"] };
            await Store.CreateAsync(grant, Ev(GrantEvent.Created), 1000, default);
            var consumes = Enumerable.Range(0, 20).Select(_ => Task.Run(() => Store.ConsumeAsync(Use(grant), default))).ToList();
            var revoke = Task.Run(() => Store.RevokeAsync(grant.Id, Ev(GrantEvent.Revoked), default));
            Assert.Equal(GrantChange.Done, await revoke);
            var after = await Task.WhenAll(Enumerable.Range(0, 5).Select(_ => Store.ConsumeAsync(Use(grant), default)));
            Assert.All(after, r => Assert.Equal(ReasonCodes.GrantRevoked, r.Reason));
            var results = await Task.WhenAll(consumes);
            var stored = (await Store.GetAsync(grant.Id, default))!;
            var ok = results.Count(r => r.Reason == ReasonCodes.Ok);
            Assert.InRange(ok, 0, 5);
            Assert.Equal(ok, stored.Events.Count(e => e.Type == GrantEvent.Used));
            Assert.Equal(5 - ok, stored.UsesRemaining);
            Assert.Equal(GrantStatus.Revoked, stored.Status);
            Assert.Single(stored.Events, e => e.Type == GrantEvent.Revoked);
            Assert.Equal(stored.Events.OrderBy(e => e.At).Select(e => e.At), stored.Events.Select(e => e.At));
        }
    }

    [Fact]
    public async Task Race_MaxPendingPerSubject_RespectedUnderConcurrency()
    {
        for (var round = 0; round < 10; round++)
        {
            var subject = "subj-" + Guid.NewGuid().ToString("N");
            var results = await Task.WhenAll(Enumerable.Range(0, 20).Select(_ => Task.Run(() =>
                Store.CreateAsync(Pending(1, subject), Ev(GrantEvent.Created), 3, default))));
            Assert.Equal(3, results.Count(r => r.Outcome == GrantChange.Done));
            Assert.Equal(17, results.Count(r => r.Outcome == GrantChange.TooMany));
        }
    }
}

public sealed class InMemoryGrantStoreRaceTests : GrantStoreRaceTests
{
    protected override Task<IGrantStore> CreateStoreAsync() => Task.FromResult<IGrantStore>(new InMemoryGrantStore(TimeProvider.System, TimeSpan.FromDays(7)));
}

public sealed class RedisGrantStoreRaceTests(RedisServer redis) : GrantStoreRaceTests, IClassFixture<RedisServer>
{
    protected override async Task<IGrantStore> CreateStoreAsync() => await RedisStores.StartAsync(RedisStores.Settings(redis));
}
