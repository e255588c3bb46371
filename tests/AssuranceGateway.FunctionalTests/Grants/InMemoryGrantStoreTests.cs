using System.Diagnostics;
using AssuranceGateway.Enforcement;
using AssuranceGateway.Grants;

namespace AssuranceGateway.FunctionalTests.Grants;

/// <summary>The conformance suite against the in-process store, on a manual clock.</summary>
public sealed class InMemoryGrantStoreTests : GrantStoreConformanceTests
{
    private readonly ManualTimeProvider _clock = new(DateTimeOffset.FromUnixTimeMilliseconds(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()));

    protected override DateTimeOffset Now => _clock.GetUtcNow();

    protected override Task<IGrantStore> CreateStoreAsync() => Task.FromResult<IGrantStore>(new InMemoryGrantStore(_clock, TimeSpan.FromDays(7)));

    protected override Task AdvanceAsync()
    {
        _clock.Advance(TimeSpan.FromMilliseconds(1));
        return Task.CompletedTask;
    }

    [Fact]
    public async Task ConsumeAsync_ClockReachesExpiry_GrantExpired()
    {
        var grant = NewGrant();
        await CreateAsync(grant);

        _clock.Advance(TimeSpan.FromMinutes(5));

        Assert.Equal(ReasonCodes.GrantExpired, (await Store.ConsumeAsync(Matching(grant), default)).Reason);
    }

    [Fact]
    public async Task ConsumeAsync_ClockReachesNotBefore_Ok()
    {
        var grant = NewGrant() with { NotBefore = Now.AddMinutes(1) };
        await CreateAsync(grant);
        Assert.Equal(ReasonCodes.GrantNotYetValid, (await Store.ConsumeAsync(Matching(grant), default)).Reason);

        _clock.Advance(TimeSpan.FromMinutes(1));

        Assert.Equal(ReasonCodes.Ok, (await Store.ConsumeAsync(Matching(grant), default)).Reason);
    }
    /// <summary>
    /// One hostile subject at its pending cap keeps challenging (each attempt is a valid token and workload, refused
    /// too_many_pending). The count of its pending grants must cost what that subject holds, not what the whole store
    /// holds: every consume of every caller waits on the same lock. Scanning every grant made each refused challenge
    /// cost milliseconds with a large store, so a few hundred attempts a second held the lock all the time.
    /// </summary>
    [Fact]
    public async Task CreateAsync_SubjectAtPendingCap_CostDoesNotGrowWithOtherGrants()
    {
        for (var i = 0; i < 150_000; i++)
        {
            Assert.Equal(GrantChange.Done, (await Store.CreateAsync(
                NewGrant() with { Subject = "user-" + (i % 5000) }, Created(), 100, default)).Outcome);
        }

        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(GrantChange.Done, (await Store.CreateAsync(NewGrant() with { Subject = "mallory", Status = GrantStatus.Pending }, Created(), 3, default)).Outcome);
        }

        var watch = Stopwatch.StartNew();
        for (var i = 0; i < 500; i++)
        {
            Assert.Equal(GrantChange.TooMany, (await Store.CreateAsync(NewGrant() with { Subject = "mallory", Status = GrantStatus.Pending }, Created(), 3, default)).Outcome);
        }

        // Generous (a loaded 2-core machine): a per-subject count does 500 refusals in about a millisecond; scanning the
        // 150,000 grants each time took ~11 ms per refusal here, under the lock every consume needs.
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(1), $"500 refused challenges took {watch.Elapsed.TotalMilliseconds:F0} ms");
    }

    /// <summary>Pending grants that were approved, revoked or expired no longer count against their subject's cap.</summary>
    [Fact]
    public async Task CreateAsync_PendingCap_CountsOnlyGrantsStillPending()
    {
        var approved = NewGrant() with { Subject = "mallory", Status = GrantStatus.Pending, ApprovalsRequired = 1 };
        var revoked = NewGrant() with { Subject = "mallory", Status = GrantStatus.Pending };
        var expiring = NewGrant() with { Subject = "mallory", Status = GrantStatus.Pending, ExpiresAt = Now.AddMinutes(1) };
        foreach (var grant in new[] { approved, revoked, expiring })
        {
            Assert.Equal(GrantChange.Done, (await Store.CreateAsync(grant, Created(), 3, default)).Outcome);
        }

        Assert.Equal(GrantChange.TooMany, (await Store.CreateAsync(NewGrant() with { Subject = "mallory", Status = GrantStatus.Pending }, Created(), 3, default)).Outcome);

        await Store.ApproveAsync(approved.Id, "carol", 2, new GrantEvent { Type = GrantEvent.Approved }, null, 1, default);
        Assert.Equal(GrantChange.Done, (await Store.CreateAsync(NewGrant() with { Subject = "mallory", Status = GrantStatus.Pending }, Created(), 3, default)).Outcome);
        Assert.Equal(GrantChange.TooMany, (await Store.CreateAsync(NewGrant() with { Subject = "mallory", Status = GrantStatus.Pending }, Created(), 3, default)).Outcome);

        await Store.RevokeAsync(revoked.Id, new GrantEvent { Type = GrantEvent.Revoked }, default);
        Assert.Equal(GrantChange.Done, (await Store.CreateAsync(NewGrant() with { Subject = "mallory", Status = GrantStatus.Pending }, Created(), 3, default)).Outcome);
        Assert.Equal(GrantChange.TooMany, (await Store.CreateAsync(NewGrant() with { Subject = "mallory", Status = GrantStatus.Pending }, Created(), 3, default)).Outcome);

        _clock.Advance(TimeSpan.FromMinutes(2));
        Assert.Equal(GrantChange.Done, (await Store.CreateAsync(NewGrant() with { Subject = "mallory", Status = GrantStatus.Pending, ExpiresAt = Now.AddMinutes(5) }, Created(), 3, default)).Outcome);
        Assert.Equal(GrantChange.TooMany, (await Store.CreateAsync(NewGrant() with { Subject = "mallory", Status = GrantStatus.Pending, ExpiresAt = Now.AddMinutes(5) }, Created(), 3, default)).Outcome);
    }
}
