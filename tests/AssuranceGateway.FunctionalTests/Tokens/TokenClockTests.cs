using System.Net;
using System.Text.Json.Nodes;
using AssuranceGateway.FunctionalTests.Grants;
using AssuranceGateway.Testing;
using Microsoft.Extensions.DependencyInjection;

namespace AssuranceGateway.FunctionalTests.Tokens;

/// <summary>
/// Access-token time rules from the caller's side, on a gateway whose clock the test sets: a token the verified-token
/// cache holds must be judged exactly as a fresh one would be, whichever way the clock moves.
/// </summary>
public sealed class TokenClockTests : IAsyncLifetime
{
    private const int Skew = 30; // the test config's Tokens:ClockSkew

    private readonly ManualTimeProvider _clock = new(DateTimeOffset.UtcNow);
    private GatewayHarness _gateway = null!;

    public async Task InitializeAsync() =>
        _gateway = await GatewayHarness.StartAsync(services: s => s.AddSingleton<TimeProvider>(_clock));

    public async Task DisposeAsync() => await _gateway.DisposeAsync();

    private async Task<HttpResponseMessage> StatusAsync(string token) =>
        await _gateway.Proxy.SendAsync(GatewayHarness.Request(HttpMethod.Get, "/status", token, out _));

    /// <summary>Sends <paramref name="token"/> until the cache holds it: it is held from its second verification on.</summary>
    private async Task CacheAsync(string token)
    {
        for (var i = 0; i < 2; i++)
        {
            using var response = await StatusAsync(token);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }
    }

    [Fact]
    public async Task CachedToken_ClockPastExpPlusSkew_RefusedAndNothingForwarded()
    {
        var now = _clock.GetUtcNow().ToUnixTimeSeconds();
        var token = _gateway.Idp.Token(edit: c => c["exp"] = now + 60);
        await CacheAsync(token);

        _gateway.Upstream.Clear();
        _clock.Advance(TimeSpan.FromSeconds(60 + Skew));

        using var again = await StatusAsync(token);

        Assert.Equal(HttpStatusCode.Unauthorized, again.StatusCode);
        Assert.Contains("token_invalid", await again.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        Assert.Empty(_gateway.Upstream.Received);
    }

    [Theory]
    [InlineData("nbf")]
    [InlineData("iat")]
    public async Task CachedToken_ClockSetBackBeforeItsStart_RefusedLikeAFreshTokenAndNothingForwarded(string start)
    {
        // A token verified (and cached) while valid; then the machine's clock is corrected backwards, to before the
        // token's nbf (or iat) minus the skew. A fresh validation refuses it ("not yet valid" / "iat in the future"):
        // the cache must not serve it meanwhile.
        var now = _clock.GetUtcNow().ToUnixTimeSeconds();
        var token = _gateway.Idp.Token(edit: c =>
        {
            c.Remove(start == "nbf" ? "iat" : "nbf");
            c[start] = now;
        });
        await CacheAsync(token);

        _gateway.Upstream.Clear();
        _clock.Advance(TimeSpan.FromMinutes(-10));

        using var again = await StatusAsync(token);

        Assert.Equal(HttpStatusCode.Unauthorized, again.StatusCode);
        Assert.Contains("token_invalid", await again.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        Assert.Empty(_gateway.Upstream.Received);
    }

    [Theory]
    [InlineData("1e20")]
    [InlineData("-1")]
    [InlineData("-0.5")]
    [InlineData("\"4102444800\"")]
    [InlineData("1.5")]
    public async Task Exp_OutOfRangeOrWrongType_RefusedWith401AndNothingForwarded(string exp)
    {
        var token = _gateway.Idp.Token(edit: c => c["exp"] = JsonNode.Parse(exp));

        using var response = await StatusAsync(token);

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Contains("token_invalid", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        Assert.Empty(_gateway.Upstream.Received);
    }

    [Fact]
    public async Task Exp_Fractional_AcceptedUntilItsWholeSecondPlusSkew()
    {
        // RFC 7519 §2: a NumericDate may be fractional. exp = now + 60.9 is read as now + 60 (never later than it says).
        var now = _clock.GetUtcNow().ToUnixTimeSeconds();
        var token = _gateway.Idp.Token(edit: c =>
        {
            c["exp"] = now + 60.9;
            c["nbf"] = now - 0.5;
            c["iat"] = now - 0.5;
        });
        await CacheAsync(token);

        _gateway.Upstream.Clear();
        _clock.Advance(TimeSpan.FromSeconds(60 + Skew + 1));

        using var late = await StatusAsync(token);

        Assert.Equal(HttpStatusCode.Unauthorized, late.StatusCode);
        Assert.Empty(_gateway.Upstream.Received);
    }
}
