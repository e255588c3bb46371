using System.Globalization;
using System.Net;
using System.Text.Json;
using AssuranceGateway.FunctionalTests.Grants;
using AssuranceGateway.Testing;
using Microsoft.Extensions.DependencyInjection;
using static AssuranceGateway.Testing.GrantHelpers;

namespace AssuranceGateway.FunctionalTests.Enforcement;

/// <summary>
/// A grant's window from the caller's side, on the embedded store and a clock the test sets (to the millisecond): the
/// window is [notBefore, expiresAt), and a use one millisecond outside it never reaches the upstream.
/// </summary>
public sealed class GrantClockTests : IAsyncLifetime
{
    private readonly ManualTimeProvider _clock = new(DateTimeOffset.FromUnixTimeMilliseconds(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()));
    private GatewayHarness _gateway = null!;

    public async Task InitializeAsync() =>
        _gateway = await GatewayHarness.StartAsync(services: s => s.AddSingleton<TimeProvider>(_clock));

    public async Task DisposeAsync() => await _gateway.DisposeAsync();

    private async Task<HttpResponseMessage> DeployAsync(string token, string svid, string id) =>
        await _gateway.Proxy.SendAsync(DeployRequest(token, svid, id, out _));

    [Fact]
    public async Task Consume_OneMillisecondAfterExpiresAt_GrantExpiredAndNothingForwarded()
    {
        var token = _gateway.Idp.Token();
        var svid = _gateway.WorkloadIssuer.Svid();
        var grant = DeployGrant(token, maxUses: 2);
        grant["ttlSeconds"] = 60;
        var id = await _gateway.CreateGrantAsync(grant);

        _clock.Advance(TimeSpan.FromSeconds(60) - TimeSpan.FromMilliseconds(1));
        using (var last = await DeployAsync(token, svid, id))
        {
            Assert.Equal(HttpStatusCode.OK, last.StatusCode);
        }

        _gateway.Upstream.Clear();
        _clock.Advance(TimeSpan.FromMilliseconds(1));
        using var late = await DeployAsync(token, svid, id);

        Assert.Equal(HttpStatusCode.Forbidden, late.StatusCode);
        Assert.Equal("grant_expired", await late.ReasonAsync());
        Assert.Empty(_gateway.Upstream.Received);
        Assert.Equal(1, (await _gateway.GetGrantAsync(id)).GetProperty("usesRemaining").GetInt32());
    }

    [Fact]
    public async Task Consume_NotBeforeInTheFuture_RefusedUntilItsMillisecondThenWindowLastsTtlFromIt()
    {
        var token = _gateway.Idp.Token();
        var svid = _gateway.WorkloadIssuer.Svid();
        var opens = _clock.GetUtcNow().AddSeconds(10);
        var grant = DeployGrant(token);
        grant["ttlSeconds"] = 60;
        grant["notBefore"] = opens.ToString("O", CultureInfo.InvariantCulture);
        using var created = await _gateway.PostGrantAsync(grant);
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        using var body = JsonDocument.Parse(await created.Content.ReadAsStringAsync());
        var id = body.RootElement.GetProperty("id").GetString()!;
        Assert.Equal(opens.AddSeconds(60), body.RootElement.GetProperty("expiresAt").GetDateTimeOffset());

        _clock.Advance(TimeSpan.FromSeconds(10) - TimeSpan.FromMilliseconds(1));
        using (var early = await DeployAsync(token, svid, id))
        {
            Assert.Equal(HttpStatusCode.Forbidden, early.StatusCode);
            Assert.Equal("grant_not_yet_valid", await early.ReasonAsync());
            Assert.Empty(_gateway.Upstream.Received);
        }

        _clock.Advance(TimeSpan.FromMilliseconds(1));
        using var open = await DeployAsync(token, svid, id);
        Assert.Equal(HttpStatusCode.OK, open.StatusCode);
    }
}
