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
}
