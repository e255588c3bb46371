using System.Text.Json;
using System.Text.Json.Nodes;
using AssuranceGateway.Testing;
using static AssuranceGateway.Testing.GrantHelpers;

namespace AssuranceGateway.FunctionalTests.Enforcement;

/// <summary>
/// Protocol upgrades and tunnels through protected routes, from the attacker's side, against an upstream that accepts
/// every upgrade (<see cref="TunnelUpstream"/>). After a 101 (or an HTTP/2 extended CONNECT's 200) the connection is a
/// tunnel: what flows through it is covered by no grant, and it outlives the grant's expiry and any revocation. A route
/// that needs a grant never opens one; token-only and passthrough routes may, after their own checks.
/// </summary>
public sealed class UpgradeTunnelTests : IAsyncLifetime
{
    private const string WebSocket = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    private const string Spdy = "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n";
    private const string H2c = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n";
    private const string Tunnel = "rm -rf /srv/prod\n";

    private TunnelUpstream _upstream = null!;
    private GatewayHarness _gateway = null!;

    public async Task InitializeAsync()
    {
        _upstream = TunnelUpstream.Start();
        _gateway = await GatewayHarness.StartAsync(configure: c => Configure(c, _upstream.Address));
    }

    public async Task DisposeAsync()
    {
        await _gateway.DisposeAsync();
        await _upstream.DisposeAsync();
    }

    /// <summary>
    /// The default test routes against the tunnel upstream, plus /ops (a grant bound to the subject only, not the request)
    /// and /shadow (the same in shadow mode).
    /// </summary>
    private static void Configure(JsonObject c, string upstream)
    {
        c["ReverseProxy"]!["Clusters"]!["upstream"]!["Destinations"]!["d1"]!["Address"] = upstream;
        var routes = c["ReverseProxy"]!["Routes"]!.AsObject();
        routes["ops"] = TestConfig.Route("/ops/{**rest}", "subject-only");
        routes["shadow"] = TestConfig.Route("/shadow/{**rest}", "subject-shadow");
        var policies = c["Assurance"]!["Policies"]!.AsObject();
        policies["subject-only"] = new JsonObject { ["Bind"] = new JsonArray("subject") };
        policies["subject-shadow"] = new JsonObject { ["Bind"] = new JsonArray("subject"), ["Mode"] = "shadow" };
    }

    private static string Get(string target, string? token, string? grantId, string upgrade, string extra = "") =>
        $"GET {target} HTTP/1.1\r\nHost: gateway\r\n"
        + (token is null ? string.Empty : $"Authorization: Bearer {token}\r\n")
        + (grantId is null ? string.Empty : $"Assurance-Id: {grantId}\r\n")
        + extra + upgrade;

    private void AssertNothingReachedTheUpstream()
    {
        Assert.Empty(_upstream.Requests);
        Assert.Empty(_upstream.Tunnelled);
    }

    private async Task AssertUnusedWithDenialAsync(string id, string reason)
    {
        var grant = await _gateway.GetGrantAsync(id);
        Assert.Equal(1, grant.GetProperty("usesRemaining").GetInt32());
        var events = grant.GetProperty("events").EnumerateArray().ToList();
        Assert.DoesNotContain(events, e => e.GetProperty("type").GetString() == "used");
        Assert.Contains(events, e => e.GetProperty("type").GetString() == "denied" && e.GetProperty("reason").GetString() == reason);
    }

    private static JsonElement Problem(string content) => JsonDocument.Parse(content).RootElement;

    [Fact]
    public async Task TunnelUpstream_OnATokenOnlyRoute_TunnelsAfterTheTokenIsChecked()
    {
        // The upstream stand-in really tunnels through YARP: without this, a test that sees nothing tunnelled proves nothing.
        var (status, echo) = await TunnelUpstream.UpgradeAsync(_gateway.ProxyAddress, Get("/status", _gateway.Idp.Token(), null, WebSocket), Tunnel);

        Assert.Equal(101, status);
        Assert.Equal(Tunnel, echo);
        Assert.Single(_upstream.Requests);
        Assert.Equal(Tunnel, Assert.Single(_upstream.Tunnelled));
    }

    // A token-only route checks the token once, at the upgrade: a tunnel opened a moment before the token expired
    // carried traffic for as long as both ends kept it open. It is closed when the token stops being accepted (exp plus
    // the allowed skew, 0 here), and only then: a tunnel opened with a token that lasts stays open meanwhile.
    [Fact]
    public async Task Upgrade_OnATokenOnlyRoute_TunnelClosedWhenItsTokenExpires()
    {
        await using var upstream = TunnelUpstream.Start(keepOpen: true);
        await using var gateway = await GatewayHarness.StartAsync(c =>
        {
            Configure(c, upstream.Address);
            c["Assurance"]!["Tokens"]!["ClockSkew"] = "00:00:00";
        });
        // exp is in whole seconds: 3 s ahead left as little as 2 for both upgrades and the first echo (the first requests
        // through this gateway, on a loaded 2-core machine), and a 401 there says nothing about the tunnel. 5 s leaves 4.
        var expires = DateTimeOffset.UtcNow.AddSeconds(5).ToUnixTimeSeconds();
        var shortLived = gateway.Idp.Token(edit: c => c["exp"] = expires);

        using var expiring = await TunnelUpstream.OpenAsync(gateway.ProxyAddress, Get("/status", shortLived, null, WebSocket));
        using var lasting = await TunnelUpstream.OpenAsync(gateway.ProxyAddress, Get("/status", gateway.Idp.Token(), null, WebSocket));
        Assert.Equal(101, expiring.Status);
        Assert.Equal(101, lasting.Status);
        Assert.Equal("before\n", await expiring.EchoAsync("before\n"));

        await expiring.ClosedWithinAsync(TimeSpan.FromSeconds(10));

        // The close is timed on the runtime's millisecond tick, this check on the wall clock: the two may differ by a few
        // ms (a fresh-clone CI run saw the close land just before the second boundary), which is not closing early.
        Assert.True(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() >= (expires * 1000) - 50, "closed before the token expired");
        Assert.Null(await expiring.EchoAsync("after\n"));
        Assert.Equal("still\n", await lasting.EchoAsync("still\n"));
        Assert.DoesNotContain("after\n", upstream.Tunnelled);
        var closed = await gateway.Logs.WaitForAsync(l => l.Contains("[202]", StringComparison.Ordinal), "event 202");
        Assert.Contains(TokenHash(shortLived), closed, StringComparison.Ordinal);
    }

    // The workload's client certificate is a credential of the tunnel too: a route that checks the workload closes the
    // tunnel at the certificate's notAfter (SPIFFE X.509-SVIDs live about as long as tokens), though the token lasts.
    [Fact]
    public async Task Upgrade_OnAWorkloadCheckedRoute_TunnelClosedWhenTheClientCertificateExpires()
    {
        await using var upstream = TunnelUpstream.Start(keepOpen: true);
        using var ca = TestCertificates.Ca("spiffe://prod.test");
        var notAfter = DateTimeOffset.UtcNow.AddSeconds(5);
        using var certificate = TestCertificates.Client("spiffe://prod.test/w1", ca, notAfter: notAfter);
        var (gateway, thumbprint) = await Workload.TlsGateway.StartAsync([ca], w =>
        {
            w["Sources"] = new JsonArray("mtls");
            Configure(w.Root.AsObject(), upstream.Address);
            w.Root["ReverseProxy"]!["Routes"]!["tunnel"] = TestConfig.Route("/tunnel", "workload-tunnel");
            w.Root["Assurance"]!["Policies"]!["workload-tunnel"] = new JsonObject { ["Bind"] = new JsonArray("workload"), ["RequiresGrant"] = false };
        });
        await using var _ = gateway;
        var uri = new Uri(gateway.ProxyAddress);
        using var tcp = new System.Net.Sockets.TcpClient();
        await tcp.ConnectAsync(uri.Host, uri.Port);
        await using var tls = new System.Net.Security.SslStream(tcp.GetStream());
        await tls.AuthenticateAsClientAsync(new System.Net.Security.SslClientAuthenticationOptions
        {
            TargetHost = "localhost",
            ClientCertificates = [certificate],
            ApplicationProtocols = [System.Net.Security.SslApplicationProtocol.Http11],
            RemoteCertificateValidationCallback = (_, presented, _, _) =>
                presented is not null && string.Equals(presented.GetCertHashString(), thumbprint, StringComparison.OrdinalIgnoreCase),
        });
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        await tls.WriteAsync(System.Text.Encoding.ASCII.GetBytes(Get("/tunnel", gateway.Idp.Token(), null, WebSocket) + "\r\n"), deadline.Token);
        var buffer = new byte[4096];
        var head = System.Text.Encoding.ASCII.GetString(buffer, 0, await tls.ReadAsync(buffer, deadline.Token));
        Assert.StartsWith("HTTP/1.1 101", head, StringComparison.Ordinal);
        await tls.WriteAsync("through\n"u8.ToArray(), deadline.Token);
        Assert.Equal("through\n", System.Text.Encoding.ASCII.GetString(buffer, 0, await tls.ReadAsync(buffer, deadline.Token)));

        try
        {
            while (await tls.ReadAsync(buffer, deadline.Token) > 0)
            {
            }
        }
        catch (IOException)
        {
            // Reset rather than closed: closed all the same.
        }

        Assert.False(deadline.IsCancellationRequested, "the tunnel outlived its client certificate");
        Assert.True(DateTimeOffset.UtcNow >= notAfter.AddSeconds(-1), "closed before the certificate expired"); // notAfter is kept to the second
        Assert.Contains("route=tunnel", await gateway.Logs.WaitForAsync(l => l.Contains("[202]", StringComparison.Ordinal), "event 202"), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(WebSocket)]
    [InlineData(Spdy)]
    [InlineData("Connection: keep-alive, upgrade\r\nUpgrade: WebSocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")]
    public async Task Use_UpgradeWithAGrantOnARouteThatDoesNotBindTheRequest_400RequestAmbiguousNothingTunnelled(string upgrade)
    {
        // One single-use approval must not become a connection that carries any number of commands, for as long as the
        // caller keeps it open (past the grant's expiry and any revocation).
        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(new JsonObject { ["route"] = "ops", ["subject"] = "alice" });

        var (status, content) = await TunnelUpstream.UpgradeAsync(_gateway.ProxyAddress, Get("/ops/shell", token, id, upgrade), Tunnel);

        Assert.True(status == 400, $"{status}: {content}");
        var problem = Problem(content);
        Assert.Equal("request_ambiguous", problem.GetProperty("reason").GetString());
        Assert.Contains("upgrade", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        AssertNothingReachedTheUpstream();
        await AssertUnusedWithDenialAsync(id, "request_ambiguous");

        var span = await _gateway.Spans.WaitForEnforceAsync(problem.GetProperty("traceId").GetString()!);
        Assert.Equal("deny", span.GetTagItem("assurance.decision"));
        Assert.Equal("request_ambiguous", span.GetTagItem("assurance.reason"));
        Assert.Equal(id, span.GetTagItem("assurance.grant.id"));
    }

    [Fact]
    public async Task Use_UpgradeWithoutAGrantOnAGrantRoute_RefusedNothingTunnelled()
    {
        var (status, content) = await TunnelUpstream.UpgradeAsync(_gateway.ProxyAddress, Get("/ops/shell", _gateway.Idp.Token(), null, WebSocket), Tunnel);

        Assert.True(status == 400, $"{status}: {content}");
        Assert.Equal("request_ambiguous", Problem(content).GetProperty("reason").GetString());
        AssertNothingReachedTheUpstream();
    }

    [Theory]
    [InlineData(WebSocket)]
    [InlineData(Spdy)]
    [InlineData(H2c)]
    [InlineData("Connection: Upgrade\r\n")] // Kestrel reads Connection alone as an upgrade request
    public async Task Use_UpgradeWithAGrantForTheSameGetOnARequestBoundRoute_400RequestAmbiguousNothingTunnelled(string upgrade)
    {
        var token = _gateway.Idp.Token();
        var grant = DeployGrant(token, body: string.Empty);
        grant["request"]!["method"] = "GET";
        grant["request"]!["headers"] = new JsonObject();
        var id = await _gateway.CreateGrantAsync(grant);

        var (status, content) = await TunnelUpstream.UpgradeAsync(
            _gateway.ProxyAddress, Get("/deploy/v1/releases", token, id, upgrade, $"Workload-Identity: {_gateway.WorkloadIssuer.Svid()}\r\n"), Tunnel);

        Assert.True(status == 400, $"{status}: {content}");
        Assert.Equal("request_ambiguous", Problem(content).GetProperty("reason").GetString());
        AssertNothingReachedTheUpstream();
        await AssertUnusedWithDenialAsync(id, "request_ambiguous");
    }

    [Fact]
    public async Task Use_UpgradeOnAPostWithABody_ForwardedAsThePlainApprovedRequestWithoutUpgradeHeaders()
    {
        // Kestrel does not read a request with a body as an upgrade (RFC 9110 §7.8 lets a server ignore Upgrade): the
        // approved POST is forwarded, its hashed body and nothing else, and the upstream is never asked to switch.
        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token));
        var head = $"POST /deploy/v1/releases HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {token}\r\nAssurance-Id: {id}\r\n"
            + $"Workload-Identity: {_gateway.WorkloadIssuer.Svid()}\r\nContent-Type: application/json\r\n"
            + $"Content-Length: {ReleaseBody.Length}\r\n" + WebSocket;

        var (status, content) = await TunnelUpstream.UpgradeAsync(_gateway.ProxyAddress, head, Tunnel, body: ReleaseBody);

        Assert.True(status == 200, $"{status}: {content}");
        var received = Assert.Single(_upstream.Requests);
        Assert.StartsWith("POST /deploy/v1/releases HTTP/1.1", received, StringComparison.Ordinal);
        Assert.DoesNotContain("upgrade:", received, StringComparison.OrdinalIgnoreCase);
        Assert.Empty(_upstream.Tunnelled);
    }

    [Fact]
    public async Task Use_UpgradeInChallengeMode_NoApprovalRequested()
    {
        // An approver would be asked to approve a request that can never be sent.
        var (status, content) = await TunnelUpstream.UpgradeAsync(
            _gateway.ProxyAddress,
            Get("/agent/run", _gateway.Idp.Token(), null, WebSocket, $"Workload-Identity: {_gateway.WorkloadIssuer.Svid()}\r\n"), Tunnel);

        Assert.True(status == 400, $"{status}: {content}");
        Assert.False(Problem(content).TryGetProperty("grantId", out _));
        AssertNothingReachedTheUpstream();
    }

    [Fact]
    public async Task Upgrade_OnATokenOnlyRouteWithoutAToken_401BeforeAnyTunnel()
    {
        var (status, content) = await TunnelUpstream.UpgradeAsync(_gateway.ProxyAddress, Get("/status", null, null, WebSocket), Tunnel);

        Assert.True(status == 401, $"{status}: {content}");
        Assert.Equal("token_missing", Problem(content).GetProperty("reason").GetString());
        AssertNothingReachedTheUpstream();
    }

    [Fact]
    public async Task Upgrade_OnAPassthroughRoute_TunnelledAsTheRouteOwnerChose()
    {
        var (status, echo) = await TunnelUpstream.UpgradeAsync(_gateway.ProxyAddress, Get("/public/feed", null, null, WebSocket), Tunnel);

        Assert.Equal(101, status);
        Assert.Equal(Tunnel, echo);
    }

    [Fact]
    public async Task Upgrade_InShadowMode_ForwardedWithTheRefusalItWouldHaveBeenInTheEvidence()
    {
        // Shadow mode never breaks a caller (SPEC §2): the tunnel opens, and the evidence says enforcement would refuse it.
        var (status, echo) = await TunnelUpstream.UpgradeAsync(
            _gateway.ProxyAddress, Get("/shadow/shell", _gateway.Idp.Token(), null, WebSocket, "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"), Tunnel);

        Assert.Equal(101, status);
        Assert.Equal(Tunnel, echo);
        var span = await _gateway.Spans.WaitForEnforceAsync("0af7651916cd43dd8448eb211c80319c");
        Assert.Equal("shadow", span.GetTagItem("assurance.mode"));
        Assert.Equal("request_ambiguous", span.GetTagItem("assurance.reason"));
    }

    [Fact]
    public async Task ConnectAuthorityForm_NeverReachesTheUpstream()
    {
        // "CONNECT host:port" has no path: no route matches it, and YARP refuses to forward CONNECT (by design).
        var (status, _) = await TunnelUpstream.UpgradeAsync(
            _gateway.ProxyAddress, $"CONNECT 127.0.0.1:6379 HTTP/1.1\r\nHost: 127.0.0.1:6379\r\nAuthorization: Bearer {_gateway.Idp.Token()}\r\n", Tunnel);

        Assert.True(status >= 400, $"{status}");
        AssertNothingReachedTheUpstream();
    }

    /// <summary>HTTP/2 extended CONNECT (RFC 8441), which Kestrel accepts on an HTTP/2 listener.</summary>
    [Fact]
    public async Task ExtendedConnect_OverHttp2_RefusedOnGrantRoutesTunnelledOnATokenOnlyRouteAfterItsToken()
    {
        await using var upstream = TunnelUpstream.Start();
        await using var gateway = await GatewayHarness.StartAsync(configure: c =>
        {
            Configure(c, upstream.Address);
            c["Kestrel"] = new JsonObject { ["EndpointDefaults"] = new JsonObject { ["Protocols"] = "Http2" } };
        });
        var token = gateway.Idp.Token();
        var id = await gateway.CreateGrantAsync(new JsonObject { ["route"] = "ops", ["subject"] = "alice" });
        (string, string)[] Fields(string path, params (string, string)[] extra) =>
        [
            (":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "http"), (":authority", "gateway"), (":path", path),
            ("sec-websocket-version", "13"), .. extra,
        ];
        var tunnel = System.Text.Encoding.ASCII.GetBytes(Tunnel);

        var granted = await RawHttp2.SendAsync(gateway.ProxyAddress, Fields("/ops/shell", ("authorization", "Bearer " + token), ("assurance-id", id)), tunnel);
        var anonymous = await RawHttp2.SendAsync(gateway.ProxyAddress, Fields("/status"), tunnel);

        Assert.True(granted.Status == 400, granted.ToString());
        Assert.Equal("request_ambiguous", Problem(granted.Content).GetProperty("reason").GetString());
        Assert.Contains("upgrade", Problem(granted.Content).GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.True(anonymous.Status == 401, anonymous.ToString());
        Assert.Empty(upstream.Requests);
        Assert.Equal(1, (await gateway.GetGrantAsync(id)).GetProperty("usesRemaining").GetInt32());

        var allowed = await RawHttp2.SendAsync(gateway.ProxyAddress, Fields("/status", ("authorization", "Bearer " + token)), tunnel);

        Assert.True(allowed.Status == 200, allowed.ToString());
        Assert.Equal(Tunnel, allowed.Content);
        Assert.Equal(Tunnel, Assert.Single(upstream.Tunnelled));
    }
}
