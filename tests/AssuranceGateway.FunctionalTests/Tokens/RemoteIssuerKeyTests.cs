using System.Net;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using AssuranceGateway.Testing;
using AssuranceGateway.Tokens;

namespace AssuranceGateway.FunctionalTests.Tokens;

/// <summary>
/// Issuers whose keys come from the network (SPEC §3: <c>JwksUri</c>, or <c>Authority</c> with OIDC discovery),
/// served by a loopback <see cref="JwksServer"/>. Keys are fetched on first use, cached, and refreshed when a token
/// names an unknown kid (the issuer rotated), at most once per <see cref="RemoteKeySource.RefreshInterval"/>.
/// </summary>
public sealed class RemoteIssuerKeyTests : IAsyncLifetime
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(10);

    private readonly ECDsa _k2 = ECDsa.Create(ECCurve.NamedCurves.nistP256);
    private readonly ECDsa _k3 = ECDsa.Create(ECCurve.NamedCurves.nistP256);
    private JwksServer _idp = null!;
    private GatewayHarness _gateway = null!;

    static RemoteIssuerKeyTests()
    {
        // IdentityModel honours RequestRefresh at most once per RefreshInterval (5 minutes by default), except the very
        // first request; a second rotation inside one test needs the library's minimum (1 s). Only remote key sources
        // read this, and only these tests create them.
        RemoteKeySource.RefreshInterval = TimeSpan.FromSeconds(1);
    }

    public async Task InitializeAsync()
    {
        _gateway = await GatewayHarness.CreateAsync();
        _idp = await JwksServer.StartAsync(_gateway.Idp.Issuer);
        _idp.Publish((_gateway.Idp.Key, _gateway.Idp.Kid));
    }

    public async Task DisposeAsync()
    {
        await _gateway.DisposeAsync();
        await _idp.DisposeAsync();
        _k2.Dispose();
        _k3.Dispose();
    }

    [Theory]
    [InlineData("JwksUri")]
    [InlineData("Authority")]
    public async Task RemoteIssuer_ValidToken_Forwarded(string keySource)
    {
        await StartAsync(keySource);

        Assert.Equal(HttpStatusCode.OK, await SendAsync(_gateway.Idp.Token()));

        Assert.Equal(1, _gateway.Upstream.Count);
        Assert.True(_idp.JwksFetches >= 1);
        if (keySource == "Authority")
        {
            Assert.True(_idp.DiscoveryFetches >= 1);
        }
        else
        {
            Assert.Equal(0, _idp.DiscoveryFetches);
        }
    }

    [Theory]
    [InlineData("JwksUri")]
    [InlineData("Authority")]
    public async Task RemoteIssuer_ForeignKeyWithKnownKid_Rejected(string keySource)
    {
        await StartAsync(keySource);
        var forged = _gateway.Idp.Sign(_gateway.Idp.Header(), _gateway.Idp.Claims().ToJsonString(), _k2);

        var (status, detail) = await SendForDetailAsync(forged);

        Assert.Equal((HttpStatusCode.Unauthorized, "signature invalid"), (status, detail));
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Theory]
    [InlineData("JwksUri")]
    [InlineData("Authority")]
    public async Task RemoteIssuer_KeyRotatedIn_NewKidAcceptedAfterRefresh(string keySource)
    {
        await StartAsync(keySource);
        Assert.Equal(HttpStatusCode.OK, await SendAsync(_gateway.Idp.Token()));
        var fetchesBefore = _idp.JwksFetches;

        // First rotation: the issuer starts signing with k2.
        _idp.Publish((_gateway.Idp.Key, _gateway.Idp.Kid), (_k2, "k2"));
        var byK2 = Token(_k2, "k2");
        var (first, detail) = await SendForDetailAsync(byK2);
        Assert.Equal((HttpStatusCode.Unauthorized, "unknown kid"), (first, detail));
        await AssertEventuallyAcceptedAsync(byK2);
        Assert.True(_idp.JwksFetches > fetchesBefore);

        // Second rotation, after RefreshInterval: k3 replaces k1; k2 tokens still pass, k1 ones stop once refreshed.
        await Task.Delay(RemoteKeySource.RefreshInterval + TimeSpan.FromMilliseconds(100));
        _idp.Publish((_k2, "k2"), (_k3, "k3"));
        await AssertEventuallyAcceptedAsync(Token(_k3, "k3"));
        Assert.Equal(HttpStatusCode.OK, await SendAsync(byK2));
        var (retired, retiredDetail) = await SendForDetailAsync(_gateway.Idp.Token());
        Assert.Equal((HttpStatusCode.Unauthorized, "unknown kid"), (retired, retiredDetail));
    }

    [Fact]
    public async Task JwksUri_UnknownKidFlood_KeyFetchesRateLimited()
    {
        await StartAsync("JwksUri");
        Assert.Equal(HttpStatusCode.OK, await SendAsync(_gateway.Idp.Token()));
        var fetchesBefore = _idp.JwksFetches;

        // An attacker sending random kids must not turn the gateway into a JWKS flooder.
        const int Requests = 30;
        for (var i = 0; i < Requests; i++)
        {
            var header = _gateway.Idp.Header();
            header["kid"] = $"random-{i}";
            Assert.Equal(HttpStatusCode.Unauthorized, await SendAsync(_gateway.Idp.Sign(header, _gateway.Idp.Claims().ToJsonString())));
        }

        // One refetch is expected (the rotation might be real); it runs in the background, so give it a moment.
        for (var i = 0; i < 40 && _idp.JwksFetches == fetchesBefore; i++)
        {
            await Task.Delay(50);
        }

        // 30 requests take well under a second here, so 1 is expected; 3 leaves room for a slow machine, while an
        // unthrottled source would have fetched 30 times.
        Assert.InRange(_idp.JwksFetches - fetchesBefore, 1, 3);
        Assert.Equal(1, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task JwksUri_UnreachableBeforeFirstFetch_401NothingForwarded()
    {
        _idp.Down = true;
        await StartAsync("JwksUri");

        var (status, detail) = await SendForDetailAsync(_gateway.Idp.Token());

        Assert.Equal((HttpStatusCode.Unauthorized, "signing keys of this issuer are unavailable"), (status, detail));
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task JwksUri_UnreachableAfterKeysCached_CachedKeysStillUsed()
    {
        await StartAsync("JwksUri");
        Assert.Equal(HttpStatusCode.OK, await SendAsync(_gateway.Idp.Token()));

        _idp.Down = true;

        Assert.Equal(HttpStatusCode.OK, await SendAsync(_gateway.Idp.Token()));
        Assert.Equal(2, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task JwksUri_ComesBackAfterOutage_KeysFetchedWithoutRestart()
    {
        _idp.Down = true;
        await StartAsync("JwksUri");
        Assert.Equal(HttpStatusCode.Unauthorized, await SendAsync(_gateway.Idp.Token()));

        _idp.Down = false;

        await AssertEventuallyAcceptedAsync(_gateway.Idp.Token());
    }

    private async Task StartAsync(string keySource)
    {
        var config = _gateway.DefaultConfig();
        var issuer = (JsonObject)config["Assurance"]!["Tokens"]!["Issuers"]![0]!;
        issuer.Remove("JwksFile");
        issuer[keySource] = keySource == "Authority" ? _idp.Address : _idp.JwksUri;
        await _gateway.StartWithAsync(config);
    }

    private string Token(ECDsa key, string kid)
    {
        var header = _gateway.Idp.Header();
        header["kid"] = kid;
        return _gateway.Idp.Sign(header, _gateway.Idp.Claims().ToJsonString(), key);
    }

    private async Task<HttpStatusCode> SendAsync(string token) => (await SendForDetailAsync(token)).Status;

    private Task<(HttpStatusCode Status, string? Detail)> SendForDetailAsync(string token) => _gateway.StatusAndDetailAsync(token);

    /// <summary>The key refresh runs in the background: poll until the token passes, and never forward a refused one.</summary>
    private async Task AssertEventuallyAcceptedAsync(string token)
    {
        var deadline = DateTime.UtcNow + Patience;
        var forwardedBefore = _gateway.Upstream.Count;
        while (DateTime.UtcNow < deadline)
        {
            var (status, detail) = await SendForDetailAsync(token);
            if (status == HttpStatusCode.OK)
            {
                Assert.Equal(forwardedBefore + 1, _gateway.Upstream.Count);
                return;
            }

            Assert.Equal(HttpStatusCode.Unauthorized, status);
            Assert.Equal(forwardedBefore, _gateway.Upstream.Count);
            await Task.Delay(100);
        }

        Assert.Fail($"the token was still refused after {Patience.TotalSeconds} s");
    }
}
