using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using AssuranceGateway.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Console;
using Microsoft.Extensions.Options;

namespace AssuranceGateway.FunctionalTests.Configuration;

/// <summary>
/// SPEC §3: a changed config file is applied without restart; an invalid change is refused and logged (event 100),
/// and the last good configuration stays in force. Each test has its own gateway: they all rewrite its file.
/// </summary>
public sealed class HotReloadTests : IAsyncLifetime
{
    private GatewayHarness _gateway = null!;

    public async Task InitializeAsync() => _gateway = await GatewayHarness.StartAsync();

    public async Task DisposeAsync() => await _gateway.DisposeAsync();

    [Fact]
    public async Task Reload_StatusSwitchedToPassthrough_AppliedWithoutRestart()
    {
        Assert.Equal(HttpStatusCode.Unauthorized, await StatusWithoutTokenAsync());
        var config = _gateway.DefaultConfig();
        config["ReverseProxy"]!["Routes"]!["status"]!["Metadata"]!["AssurancePolicy"] = "passthrough";

        Assert.True(await _gateway.ReloadAsync(config), Refusals());

        Assert.Equal(HttpStatusCode.OK, await StatusWithoutTokenAsync());
        Assert.Equal(1, _gateway.Upstream.Count);
        Assert.Empty(_gateway.RefusedReloads());
    }

    [Fact]
    public async Task Reload_ListenerChanged_AppliedForTheRestAndWarnsThatTheListenerNeedsARestart()
    {
        // Kestrel binds Urls once: a log that only said "applied" would let the operator believe the new address serves.
        var config = _gateway.DefaultConfig();
        config["Urls"] = $"http://127.0.0.1:{GatewayProcess.FreePort()}";
        config["Assurance"]!["Store"]!["KeyPrefix"] = _gateway.Config.Current.Settings.Store.KeyPrefix; // the listener alone changes

        Assert.True(await _gateway.ReloadAsync(config), Refusals());

        Assert.Contains(_gateway.Logs.Lines, l => l.Contains("[102] Changed Urls:", StringComparison.Ordinal));
    }

    [Fact]
    public async Task ServerCertificateFileRenewed_NewCertificateServedWithoutRestart()
    {
        // cert-manager and certbot renew the file in place: Kestrel's own reload of its endpoints serves the new one.
        await using var gateway = await GatewayHarness.CreateAsync();
        using var first = TestCertificates.Server();
        using var renewed = TestCertificates.Server();
        var pfx = Path.Combine(gateway.Directory, "server.pfx");
        await File.WriteAllBytesAsync(pfx, first.Export(System.Security.Cryptography.X509Certificates.X509ContentType.Pfx, "pw"));
        var config = gateway.DefaultConfig();
        var address = $"https://127.0.0.1:{GatewayProcess.FreePort()}";
        config["Kestrel"] = new JsonObject
        {
            ["Endpoints"] = new JsonObject
            {
                ["proxy"] = new JsonObject { ["Url"] = address, ["Certificate"] = new JsonObject { ["Path"] = pfx, ["Password"] = "pw" } },
            },
        };
        await gateway.StartWithAsync(config);
        Assert.Equal(first.Thumbprint, await ServedThumbprintAsync(address));

        await File.WriteAllBytesAsync(pfx, renewed.Export(System.Security.Cryptography.X509Certificates.X509ContentType.Pfx, "pw"));

        // Kestrel rebinds the endpoint to serve the new file: a connection in that moment is refused (seen in a CI run).
        var served = string.Empty;
        for (var i = 0; i < 40 && served != renewed.Thumbprint; i++)
        {
            await Task.Delay(250);
            try
            {
                served = await ServedThumbprintAsync(address);
            }
            catch (System.Net.Sockets.SocketException e) when (e.SocketErrorCode == System.Net.Sockets.SocketError.ConnectionRefused)
            {
                served = string.Empty;
            }
        }

        Assert.Equal(renewed.Thumbprint, served);
    }

    // A change the gateway refuses is refused whole: Kestrel once rebound Kestrel:Endpoints from the same file by itself,
    // so a refused file still moved the listener (and one with an endpoint the gateway refused for its missing
    // certificate stopped the listener it replaced). An applied change moves it.
    [Fact]
    public async Task Reload_EndpointMovedInARefusedChange_ListenerStaysUntilAnAppliedChangeMovesIt()
    {
        await using var gateway = await GatewayHarness.CreateAsync();
        var before = $"http://127.0.0.1:{GatewayProcess.FreePort()}";
        var after = $"http://127.0.0.1:{GatewayProcess.FreePort()}";
        JsonObject Config(string address)
        {
            var config = gateway.DefaultConfig();
            config["Kestrel"] = new JsonObject { ["Endpoints"] = new JsonObject { ["proxy"] = new JsonObject { ["Url"] = address } } };
            return config;
        }

        await gateway.StartWithAsync(Config(before));
        Assert.Equal(HttpStatusCode.Unauthorized, await StatusAsync(before));

        var refused = Config(after);
        refused["ReverseProxy"]!["Routes"]!["status"]!["Metadata"]!["AssurancePolicy"] = "no-such-policy";
        Assert.False(await gateway.ReloadAsync(refused));
        await Task.Delay(1500); // Kestrel rebinds a moment after the file changes

        Assert.Null(await StatusAsync(after));
        Assert.Equal(HttpStatusCode.Unauthorized, await StatusAsync(before));

        var httpsWithoutCertificate = Config(after.Replace("http:", "https:", StringComparison.Ordinal));
        Assert.False(await gateway.ReloadAsync(httpsWithoutCertificate));
        await Task.Delay(1500);

        Assert.Equal(HttpStatusCode.Unauthorized, await StatusAsync(before));

        Assert.True(await gateway.ReloadAsync(Config(after)), string.Join(Environment.NewLine, gateway.RefusedReloads()));
        HttpStatusCode? moved = null;
        for (var i = 0; i < 40 && moved is null; i++)
        {
            await Task.Delay(250);
            moved = await StatusAsync(after);
        }

        Assert.Equal(HttpStatusCode.Unauthorized, moved);
        Assert.Empty(gateway.Upstream.Received);
    }

    /// <summary>The status of a token-less GET /status at that listener; null when nothing listens there.</summary>
    private static async Task<HttpStatusCode?> StatusAsync(string address)
    {
        using var client = new HttpClient { BaseAddress = new Uri(address), Timeout = TimeSpan.FromSeconds(5) };
        try
        {
            using var response = await client.GetAsync("/status");
            return response.StatusCode;
        }
        catch (HttpRequestException)
        {
            return null;
        }
    }

    private static async Task<string> ServedThumbprintAsync(string address)
    {
        var uri = new Uri(address);
        using var tcp = new System.Net.Sockets.TcpClient();
        await tcp.ConnectAsync(uri.Host, uri.Port);
#pragma warning disable CA5359 // the test reads which certificate is served, whichever it is
        await using var tls = new System.Net.Security.SslStream(tcp.GetStream(), false, (_, _, _, _) => true);
#pragma warning restore CA5359
        await tls.AuthenticateAsClientAsync("localhost");
        using var certificate = new System.Security.Cryptography.X509Certificates.X509Certificate2(tls.RemoteCertificate!);
        return certificate.Thumbprint;
    }

    [Fact]
    public async Task Reload_NewRoute_ServedWithItsPolicy()
    {
        Assert.Equal(HttpStatusCode.NotFound, await SendAsync("/reports/daily", _gateway.Idp.Token()));
        var config = _gateway.DefaultConfig();
        config["ReverseProxy"]!["Routes"]!["reports"] = TestConfig.Route("/reports/{**rest}", "token-only");

        Assert.True(await _gateway.ReloadAsync(config), Refusals());

        Assert.Equal(HttpStatusCode.Unauthorized, await SendAsync("/reports/daily", token: null));
        Assert.Equal(HttpStatusCode.OK, await SendAsync("/reports/daily", _gateway.Idp.Token()));
        Assert.Equal("/reports/daily", Assert.Single(_gateway.Upstream.Received).Path);
    }

    // YARP takes new routes a moment after the policies change. Two routes that trade paths on every reload: a request
    // that YARP matched with the old route must be decided by the old route's policy, never by the policy that the
    // same route id has now (here: passthrough for the protected path).
    [Fact]
    public async Task Reload_RoutesTradePathsUnderLoad_ProtectedPathNeverDecidedByTheOtherRoutesPolicy()
    {
        static JsonObject Layout(JsonObject config, bool traded)
        {
            var routes = config["ReverseProxy"]!["Routes"]!.AsObject();
            routes["a"] = traded ? TestConfig.Route("/open/{**rest}", "passthrough") : TestConfig.Route("/admin/{**rest}", "token-only");
            routes["b"] = traded ? TestConfig.Route("/admin/{**rest}", "token-only") : TestConfig.Route("/open/{**rest}", "passthrough");
            return config;
        }

        Assert.True(await _gateway.ReloadAsync(Layout(_gateway.DefaultConfig(), traded: false)), Refusals());
        using var stop = new CancellationTokenSource();
        var sent = 0;
        var attackers = Enumerable.Range(0, 4).Select(_ => Task.Run(async () =>
        {
            using var client = new HttpClient { BaseAddress = new Uri(_gateway.ProxyAddress) };
            while (!stop.IsCancellationRequested)
            {
                using var response = await client.GetAsync("/admin/drop-tables");
                Interlocked.Increment(ref sent);
            }
        })).ToArray();

        for (var i = 0; i < 12; i++)
        {
            Assert.True(await _gateway.ReloadAsync(Layout(_gateway.DefaultConfig(), traded: i % 2 == 0)), Refusals());
            await Task.Delay(100);
        }

        await stop.CancelAsync();
        await Task.WhenAll(attackers);

        Assert.True(sent > 1000, $"only {sent} requests: the reloads were not under load");
        var leaked = _gateway.Upstream.Received.Count(r => r.Path.StartsWith("/admin", StringComparison.Ordinal));
        Assert.True(leaked == 0, $"{leaked} of {sent} token-less requests for /admin reached the upstream");
    }

    [Fact]
    public async Task Reload_UnknownPolicy_RefusedLoggedLastGoodStays()
    {
        var config = _gateway.DefaultConfig();
        config["ReverseProxy"]!["Routes"]!["status"]!["Metadata"]!["AssurancePolicy"] = "nope";

        Assert.False(await _gateway.ReloadAsync(config));

        var refusal = Assert.Single(_gateway.RefusedReloads());
        Assert.Contains("ReverseProxy:Routes:status:Metadata:AssurancePolicy: unknown policy 'nope'", refusal, StringComparison.Ordinal);
        await AssertOriginalConfigurationInForceAsync();
    }

    [Theory]
    [InlineData("{}")]
    [InlineData("""{ "ReverseProxy": { "Routes": {} } }""")]
    public async Task Reload_NoRoutesLeft_RefusedLoggedLastGoodStays(string file)
    {
        // A file truncated to "{}" (or emptied by a parse racing a reload) parses and used to be applied: every protected
        // API a 404, and that the "last good" configuration from then on.
        Assert.False(await _gateway.ReloadRawAsync(file));

        var refusal = Assert.Single(_gateway.RefusedReloads());
        Assert.Contains("ReverseProxy:Routes: no routes: the gateway would forward nothing", refusal, StringComparison.Ordinal);
        await AssertOriginalConfigurationInForceAsync();
    }

    [Fact]
    public async Task Reload_InvalidJson_RefusedLoggedLastGoodStays()
    {
        Assert.False(await _gateway.ReloadRawAsync("""{ "ReverseProxy": { "Routes": """));

        var refusal = Assert.Single(_gateway.RefusedReloads());
        Assert.Contains($"{_gateway.ConfigPath}: Could not parse the JSON file: ", refusal, StringComparison.Ordinal);
        Assert.Contains("LineNumber: 0", refusal, StringComparison.Ordinal); // says where
        await AssertOriginalConfigurationInForceAsync();
    }

    [Fact]
    public async Task Reload_FileDeleted_RefusedLoggedLastGoodStays()
    {
        Assert.False(await _gateway.DeleteConfigAsync());

        var refusal = Assert.Single(_gateway.RefusedReloads());
        Assert.Contains($"'{_gateway.ConfigPath}' does not exist", refusal, StringComparison.Ordinal);
        await AssertOriginalConfigurationInForceAsync();
    }

    [Fact]
    public async Task Reload_YarpRejectsRoute_RefusedLoggedLastGoodStays()
    {
        // Valid for our compiler, invalid for YARP (a route must match on something): still one whole refusal.
        var config = _gateway.DefaultConfig();
        ((JsonObject)config["ReverseProxy"]!["Routes"]!["status"]!).Remove("Match");

        Assert.False(await _gateway.ReloadAsync(config));

        Assert.Contains("ReverseProxy:Routes:status:", Assert.Single(_gateway.RefusedReloads()), StringComparison.Ordinal);
        await AssertOriginalConfigurationInForceAsync();
    }

    [Fact]
    public async Task Reload_GoodChangeAfterInvalidJson_Applied()
    {
        Assert.False(await _gateway.ReloadRawAsync("{ not json"));
        var config = _gateway.DefaultConfig();
        config["ReverseProxy"]!["Routes"]!["status"]!["Metadata"]!["AssurancePolicy"] = "passthrough";

        Assert.True(await _gateway.ReloadAsync(config), Refusals());

        Assert.Equal(HttpStatusCode.OK, await StatusWithoutTokenAsync());
    }

    [Fact]
    public async Task Reload_GoodChangeAfterDeletedFile_Applied()
    {
        Assert.False(await _gateway.DeleteConfigAsync());
        var config = _gateway.DefaultConfig();
        config["ReverseProxy"]!["Routes"]!["status"]!["Metadata"]!["AssurancePolicy"] = "passthrough";

        Assert.True(await _gateway.ReloadAsync(config), Refusals());

        Assert.Equal(HttpStatusCode.OK, await StatusWithoutTokenAsync());
    }

    [Fact]
    public async Task Reload_GoodChangeAfterRefusedChange_Applied()
    {
        var bad = _gateway.DefaultConfig();
        bad["Assurance"]!["Policies"]!["token-only"]!["Mode"] = "audit";
        Assert.False(await _gateway.ReloadAsync(bad));
        var good = _gateway.DefaultConfig();
        good["ReverseProxy"]!["Routes"]!["status"]!["Metadata"]!["AssurancePolicy"] = "passthrough";

        Assert.True(await _gateway.ReloadAsync(good), Refusals());

        Assert.Equal(HttpStatusCode.OK, await StatusWithoutTokenAsync());
        Assert.Single(_gateway.RefusedReloads());
    }

    [Fact]
    public async Task Reload_NewJwksFile_NewIssuerKeyTrusted()
    {
        // Keys in files change by editing the config (the file is read at each load): rotate to a new key file.
        using var rotated = new TestIssuer(_gateway.Idp.Issuer, _gateway.Directory, "k2");
        Assert.Equal(HttpStatusCode.Unauthorized, await SendAsync("/status", rotated.Token()));
        var config = _gateway.DefaultConfig();
        config["Assurance"]!["Tokens"]!["Issuers"]![0]!["JwksFile"] = rotated.JwksPath;

        Assert.True(await _gateway.ReloadAsync(config), Refusals());

        Assert.Equal(HttpStatusCode.OK, await SendAsync("/status", rotated.Token()));
        Assert.Equal(HttpStatusCode.Unauthorized, await SendAsync("/status", _gateway.Idp.Token()));
    }

    [Fact]
    public async Task Reload_KeyRemovedFromTheJwksFile_ItsTokensNoLongerTrusted()
    {
        // The config file is untouched: the operator revokes a key by rewriting the JWKS file it names.
        using var rotated = new TestIssuer(_gateway.Idp.Issuer, _gateway.Directory, "k2");
        var before = _gateway.Config.Generation;
        Assert.Equal(HttpStatusCode.OK, await SendAsync("/status", _gateway.Idp.Token()));

        var temporary = _gateway.Idp.JwksPath + ".tmp";
        File.Copy(rotated.JwksPath, temporary);
        File.Move(temporary, _gateway.Idp.JwksPath, overwrite: true);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (_gateway.Config.Generation == before && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }

        Assert.True(_gateway.Config.Generation > before, "the key file change was not applied; " + Refusals());
        Assert.Equal(HttpStatusCode.Unauthorized, await SendAsync("/status", _gateway.Idp.Token()));
        Assert.Equal(HttpStatusCode.OK, await SendAsync("/status", rotated.Token()));
        Assert.Equal(2, _gateway.Upstream.Count);
    }

    /// <summary>
    /// The issuer's only key is compromised and the operator empties its JWKS file: refused at start (a mistake there),
    /// but at run time it is the revocation, applied with a warning, and every token of the issuer is refused.
    /// </summary>
    [Fact]
    public async Task Reload_JwksFileEmptiedToRevokeTheOnlyKey_AppliedWithAWarningAndItsTokensRefused()
    {
        var token = _gateway.Idp.Token();
        Assert.Equal(HttpStatusCode.OK, await SendAsync("/status", token));

        Assert.True(await _gateway.ReplaceKeyFileAsync(_gateway.Idp.JwksPath, """{"keys":[]}"""), "the revocation was refused; " + Refusals());

        Assert.Equal(HttpStatusCode.Unauthorized, await SendAsync("/status", token));
        Assert.Equal(HttpStatusCode.Unauthorized, await SendAsync("/status", _gateway.Idp.Token()));
        Assert.Equal(1, _gateway.Upstream.Count);
        Assert.Contains(_gateway.Logs.Lines, l => l.Contains("[103]", StringComparison.Ordinal) && l.Contains("holds no signing key", StringComparison.Ordinal));
    }

    // A request is decided by the generation it was routed with, and may wait on its body for minutes. A key removed from
    // the JWKS file while such a request waited was still trusted for it: its grant was used and it reached the upstream
    // after the revocation was in force.
    [Fact]
    public async Task Reload_KeyRemovedWhileARequestBodyIsRead_GrantNotUsedNothingForwarded()
    {
        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(GrantHelpers.DeployGrant(token));
        using var rotated = new TestIssuer(_gateway.Idp.Issuer, _gateway.Directory, "k2");

        using var response = await DeployWhileKeyFileIsReplacedAsync(token, id, _gateway.Idp.JwksPath, rotated);

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("token_invalid", await response.ReasonAsync());
        Assert.Empty(_gateway.Upstream.Received);
        using var read = new HttpRequestMessage(HttpMethod.Get, $"/assurance/v1/grants/{id}");
        read.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", rotated.ApiToken()); // the old key is gone
        using var grant = JsonDocument.Parse(await (await _gateway.Api.SendAsync(read)).EnsureSuccessStatusCode().Content.ReadAsStringAsync());
        Assert.Equal(1, grant.RootElement.GetProperty("usesRemaining").GetInt32());
    }

    /// <summary>
    /// Sends the deploy request with grant <paramref name="id"/> and holds its body until <paramref name="jwksPath"/> holds
    /// only <paramref name="rotated"/>'s key and that change is applied.
    /// </summary>
    private async Task<HttpResponseMessage> DeployWhileKeyFileIsReplacedAsync(string token, string id, string jwksPath, TestIssuer rotated)
    {
        using var client = GatedBody.Client(_gateway.ProxyAddress);
        using var request = GrantHelpers.DeployRequest(token, _gateway.WorkloadIssuer.Svid(), id, out _);
        return await new GatedBody(Encoding.UTF8.GetBytes(GrantHelpers.ReleaseBody)).SendHeldAsync(client, request, async () =>
            Assert.True(await _gateway.ReplaceKeyFileAsync(jwksPath, await File.ReadAllTextAsync(rotated.JwksPath)), Refusals()));
    }

    // The same for the API: a caller authenticated before its key was removed, whose grant request body arrives after
    // the removal is in force, created the grant.
    [Fact]
    public async Task Reload_KeyRemovedWhileAGrantRequestBodyIsRead_NoGrantCreated()
    {
        using var rotated = new TestIssuer(_gateway.Idp.Issuer, _gateway.Directory, "k2");
        using var client = GatedBody.Client(_gateway.ApiAddress);
        using var request = new HttpRequestMessage(HttpMethod.Post, "/assurance/v1/grants");
        request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", _gateway.Idp.ApiToken());
        var grant = Encoding.UTF8.GetBytes(GrantHelpers.DeployGrant(_gateway.Idp.Token()).ToJsonString());

        using var response = await new GatedBody(grant).SendHeldAsync(client, request, async () =>
            Assert.True(await _gateway.ReplaceKeyFileAsync(_gateway.Idp.JwksPath, await File.ReadAllTextAsync(rotated.JwksPath)), Refusals()));

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("token_invalid", await response.ReasonAsync());
        Assert.Empty(_gateway.Upstream.Received);
    }

    [Fact]
    public async Task Reload_WorkloadKeyRemovedWhileARequestBodyIsRead_GrantNotUsedNothingForwarded()
    {
        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(GrantHelpers.DeployGrant(token));
        using var rotated = new TestIssuer(_gateway.WorkloadIssuer.Issuer, _gateway.Directory, "w2");

        using var response = await DeployWhileKeyFileIsReplacedAsync(token, id, _gateway.WorkloadIssuer.JwksPath, rotated);

        Assert.NotEqual(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("workload_invalid", await response.ReasonAsync());
        Assert.Empty(_gateway.Upstream.Received);
        Assert.Equal(1, (await _gateway.GetGrantAsync(id)).GetProperty("usesRemaining").GetInt32());
    }

    // Loopback plays the proxy: trusted, its X-Forwarded-For names the client the grant is bound to. Removed from
    // TrustedProxies while the request waits on its body, the forwarded address it vouched for is no longer believed.
    [Fact]
    public async Task Reload_TrustedProxyRemovedWhileARequestBodyIsRead_ForwardedOriginNoLongerBelievedGrantNotUsed()
    {
        static JsonObject WithOriginRoute(JsonObject config, params string[] trustedProxies)
        {
            config["ReverseProxy"]!["Routes"]!["backup"] = TestConfig.Route("/backup/{**rest}", "origin-bound");
            config["Assurance"]!["Policies"]!["origin-bound"] = new JsonObject { ["Bind"] = new JsonArray("subject", "origin", "request") };
            config["Assurance"]!["Workload"]!["TrustedProxies"] = new JsonArray([.. trustedProxies.Select(p => (JsonNode)p)]);
            return config;
        }

        Assert.True(await _gateway.ReloadAsync(WithOriginRoute(_gateway.DefaultConfig(), "127.0.0.1/32")), Refusals());
        var id = await _gateway.CreateGrantAsync(new JsonObject
        {
            ["route"] = "backup",
            ["subject"] = "alice",
            ["origin"] = new JsonArray("203.0.113.7"),
            ["request"] = new JsonObject { ["method"] = "POST", ["path"] = "/backup/run", ["body"] = Convert.ToBase64String("{}"u8.ToArray()) },
            ["maxUses"] = 1,
        });
        using var client = GatedBody.Client(_gateway.ProxyAddress);
        using var request = GatewayHarness.Request(HttpMethod.Post, "/backup/run", _gateway.Idp.Token(), out _);
        request.Headers.TryAddWithoutValidation("Assurance-Id", id);
        request.Headers.TryAddWithoutValidation("X-Forwarded-For", "203.0.113.7");

        using var response = await new GatedBody("{}"u8.ToArray()).SendHeldAsync(client, request, async () =>
            Assert.True(await _gateway.ReloadAsync(WithOriginRoute(_gateway.DefaultConfig())), Refusals()));

        Assert.NotEqual(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("origin_mismatch", await response.ReasonAsync());
        Assert.Empty(_gateway.Upstream.Received);
        Assert.Equal(1, (await _gateway.GetGrantAsync(id)).GetProperty("usesRemaining").GetInt32());
    }

    // The other side: a reload that revokes nothing this request relies on leaves it alone (it is not refused for
    // having crossed a reload), and it is decided by the policy it was routed with.
    [Fact]
    public async Task Reload_UnrelatedChangeWhileARequestBodyIsRead_RequestAllowedOnce()
    {
        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(GrantHelpers.DeployGrant(token));
        using var client = GatedBody.Client(_gateway.ProxyAddress);
        using var request = GrantHelpers.DeployRequest(token, _gateway.WorkloadIssuer.Svid(), id, out _);
        var config = _gateway.DefaultConfig();
        config["ReverseProxy"]!["Routes"]!["status"]!["Metadata"]!["AssurancePolicy"] = "passthrough";

        using var response = await new GatedBody(Encoding.UTF8.GetBytes(GrantHelpers.ReleaseBody)).SendHeldAsync(client, request, async () =>
            Assert.True(await _gateway.ReloadAsync(config), Refusals()));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(GrantHelpers.ReleaseBody, Encoding.UTF8.GetString(Assert.Single(_gateway.Upstream.Received).Body));
        Assert.Equal(0, (await _gateway.GetGrantAsync(id)).GetProperty("usesRemaining").GetInt32());
    }

    [Fact]
    public async Task Reload_JwksFileBrokenThenFixed_RefusedLoggedThenApplied()
    {
        File.WriteAllText(_gateway.Idp.JwksPath, "{ not a jwks");
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (_gateway.RefusedReloads().Count == 0 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }

        // An editor's write may come as more than one change: each is refused the same way.
        Assert.All(_gateway.RefusedReloads(), line => Assert.Contains("JwksFile", line, StringComparison.Ordinal));
        await AssertOriginalConfigurationInForceAsync();

        // Still watched after the refusal: the fix is picked up.
        using var rotated = new TestIssuer(_gateway.Idp.Issuer, _gateway.Directory, "k2");
        var before = _gateway.Config.Generation;
        File.Copy(rotated.JwksPath, _gateway.Idp.JwksPath, overwrite: true);
        deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (_gateway.Config.Generation == before && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }

        Assert.Equal(HttpStatusCode.OK, await SendAsync("/status", rotated.Token()));
    }

    [Fact]
    public async Task Reload_TransformsRewritingRequestBoundRoute_RefusedUpstreamGetsApprovedRequest()
    {
        // SPEC §7.4: the upstream receives exactly the request that was hashed and approved. These transforms would
        // have sent it another path, query, method and content type.
        var config = _gateway.DefaultConfig();
        config["ReverseProxy"]!["Routes"]!["deploy"]!["Transforms"] = new JsonArray(
            new JsonObject { ["PathSet"] = "/admin/wipe-everything" },
            new JsonObject { ["QueryValueParameter"] = "force", ["Append"] = "true" },
            new JsonObject { ["HttpMethodChange"] = "POST", ["Set"] = "DELETE" },
            new JsonObject { ["RequestHeader"] = "content-type", ["Set"] = "text/plain" });

        Assert.False(await _gateway.ReloadAsync(config));

        var refusal = Assert.Single(_gateway.RefusedReloads());
        for (var i = 0; i < 4; i++)
        {
            Assert.Contains($"ReverseProxy:Routes:deploy:Transforms[{i}]: ", refusal, StringComparison.Ordinal);
        }

        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(GrantHelpers.DeployGrant(token));
        using var response = await _gateway.Proxy.SendAsync(GrantHelpers.DeployRequest(token, _gateway.WorkloadIssuer.Svid(), id, out _));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var received = Assert.Single(_gateway.Upstream.Received);
        Assert.Equal(("POST", "/deploy/v1/releases", "", "application/json"), (received.Method, received.Path, received.Query, received.Headers["Content-Type"]));
    }

    [Fact]
    public async Task Reload_KeyFilePathWithNulCharacter_RefusedLoggedLastGoodStays()
    {
        var config = _gateway.DefaultConfig();
        config["Assurance"]!["Tokens"]!["Issuers"]![0]!["JwksFile"] = "keys/idp\u0000.jwks.json";

        Assert.False(await _gateway.ReloadAsync(config));

        Assert.Contains("Assurance:Tokens:Issuers:0:JwksFile: ", Assert.Single(_gateway.RefusedReloads()), StringComparison.Ordinal);
        await AssertOriginalConfigurationInForceAsync();
    }

    [Fact]
    public async Task Reload_LogLevelThatIsNoLevel_RefusedAsAStartWouldBe()
    {
        // Applied, it would be in force until the next restart or rollout, which then could not start.
        var config = _gateway.DefaultConfig();
        config["Logging"] = new JsonObject { ["LogLevel"] = new JsonObject { ["Default"] = "Verbose" } };

        Assert.False(await _gateway.ReloadAsync(config));

        Assert.Contains("Logging:LogLevel:Default: 'Verbose' is not a log level", Assert.Single(_gateway.RefusedReloads()), StringComparison.Ordinal);
        await AssertOriginalConfigurationInForceAsync();
    }

    // The host's logging read the Logging section of the file on its own and threw on "Verbose" on the file watcher's
    // thread: the watcher passed the exception to its Error event, whose handler fired the change again, threw again,
    // and the process ended (every replica at once, when a ConfigMap changes); later its filter options could not be
    // read at all. It reads the section the gateway applied now: refused and said, logging keeps its levels, and the
    // next good change is applied, logging's included.
    [Fact]
    public async Task Reload_LogLevelThatIsNoLevel_TheProcessLivesOnAndTheNextGoodChangeApplies()
    {
        var bad = _gateway.DefaultConfig();
        bad["Logging"] = new JsonObject { ["LogLevel"] = new JsonObject { ["Default"] = "Verbose" } };
        Assert.False(await _gateway.ReloadAsync(bad));
        Assert.Contains("Logging:LogLevel:Default: 'Verbose' is not a log level", Assert.Single(_gateway.RefusedReloads()), StringComparison.Ordinal);
        Assert.NotEmpty(_gateway.Services.GetRequiredService<IOptionsMonitor<LoggerFilterOptions>>().CurrentValue.Rules);
        Assert.DoesNotContain(_gateway.Logs.Lines, l => l.Contains("[104]", StringComparison.Ordinal));

        var good = _gateway.DefaultConfig();
        good["Logging"] = new JsonObject { ["LogLevel"] = new JsonObject { ["Default"] = "Information", ["AssuranceGateway"] = "Warning" } };
        Assert.True(await _gateway.ReloadAsync(good), Refusals());

        var filters = _gateway.Services.GetRequiredService<IOptionsMonitor<LoggerFilterOptions>>().CurrentValue;
        Assert.Contains(filters.Rules, r => r.CategoryName == "AssuranceGateway" && r.LogLevel == LogLevel.Warning);
        await AssertOriginalConfigurationInForceAsync();
    }

    // The console logger binds Logging:Console (its own options and its formatters') on its own. A value it cannot bind
    // was applied here (only LogLevel was checked), and the console options were unreadable from then on: every logger
    // created after it threw, and the next start ended with exit 134.
    [Theory]
    [InlineData("LogToStandardErrorThreshold", "Verbose")]
    [InlineData("MaxQueueLength", "-5")]
    [InlineData("QueueFullMode", "Block")]
    [InlineData("FormatterOptions:ColorBehavior", "Sometimes")]
    [InlineData("FormatterOptions:UseUtcTimestamp", "maybe")]
    public async Task Reload_ConsoleLoggerOptionItCannotTake_RefusedNamingTheKeyAndConsoleOptionsStillBind(string key, string value)
    {
        var config = _gateway.DefaultConfig();
        var console = new JsonObject();
        var parts = key.Split(':');
        var section = console;
        foreach (var part in parts[..^1])
        {
            var child = new JsonObject();
            section[part] = child;
            section = child;
        }

        section[parts[^1]] = value;
        config["Logging"] = new JsonObject { ["Console"] = console };

        Assert.False(await _gateway.ReloadAsync(config));

        Assert.Contains($"Logging:Console:{key}: '{value}' ", Assert.Single(_gateway.RefusedReloads()), StringComparison.Ordinal);
        _ = _gateway.Services.GetRequiredService<IOptionsMonitor<ConsoleLoggerOptions>>().CurrentValue;
        _ = _gateway.Services.GetRequiredService<IOptionsMonitor<SimpleConsoleFormatterOptions>>().CurrentValue;
        _ = _gateway.Services.GetRequiredService<IOptionsMonitor<JsonConsoleFormatterOptions>>().CurrentValue;
        await AssertOriginalConfigurationInForceAsync();
    }

    // The host's logging reads what the gateway applied, not the file: a good change of the console's options is taken.
    [Fact]
    public async Task Reload_ConsoleLoggerOptionValid_AppliedToTheHostsConsoleOptions()
    {
        var config = _gateway.DefaultConfig();
        config["Logging"] = new JsonObject { ["Console"] = new JsonObject { ["LogToStandardErrorThreshold"] = "Warning", ["FormatterOptions"] = new JsonObject { ["SingleLine"] = true } } };

        Assert.True(await _gateway.ReloadAsync(config), Refusals());

        Assert.Equal(LogLevel.Warning, _gateway.Services.GetRequiredService<IOptionsMonitor<ConsoleLoggerOptions>>().CurrentValue.LogToStandardErrorThreshold);
        Assert.True(_gateway.Services.GetRequiredService<IOptionsMonitor<SimpleConsoleFormatterOptions>>().CurrentValue.SingleLine);
    }

    /// <summary>The start-up configuration: /status needs a token, which passes; nothing else got through.</summary>
    private async Task AssertOriginalConfigurationInForceAsync()
    {
        using (var request = GatewayHarness.Request(HttpMethod.Get, "/status", token: null, out _))
        using (var response = await _gateway.Proxy.SendAsync(request))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
            using var problem = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
            Assert.Equal("token_missing", problem.RootElement.GetProperty("reason").GetString());
        }

        Assert.Equal(0, _gateway.Upstream.Count);
        Assert.Equal(HttpStatusCode.OK, await SendAsync("/status", _gateway.Idp.Token()));
        Assert.Equal(HttpStatusCode.OK, await SendAsync("/public/ping", token: null));
        Assert.Equal(2, _gateway.Upstream.Count);
    }

    private string Refusals() => "refused: " + string.Join(Environment.NewLine, _gateway.RefusedReloads());

    private Task<HttpStatusCode> StatusWithoutTokenAsync() => SendAsync("/status", token: null);

    private async Task<HttpStatusCode> SendAsync(string path, string? token)
    {
        using var request = GatewayHarness.Request(HttpMethod.Get, path, token, out _);
        using var response = await _gateway.Proxy.SendAsync(request);
        return response.StatusCode;
    }
}
