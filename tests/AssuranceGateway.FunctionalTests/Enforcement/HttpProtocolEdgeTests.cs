using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using AssuranceGateway.Testing;
using static AssuranceGateway.Testing.GrantHelpers;

namespace AssuranceGateway.FunctionalTests.Enforcement;

/// <summary>
/// HTTP-level edges of a request-bound route: a use is consumed only for a request that is then forwarded, and the
/// upstream receives only what the approved hash covers.
/// </summary>
public sealed class HttpProtocolEdgeTests : IAsyncLifetime
{
    private GatewayHarness _gateway = null!;

    public async Task InitializeAsync() => _gateway = await GatewayHarness.StartAsync();

    public async Task DisposeAsync() => await _gateway.DisposeAsync();

    private string Head(string token, string grantId, string headers, int length, string target = "/deploy/v1/releases") =>
        $"POST {target} HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {token}\r\n"
        + $"Workload-Identity: {_gateway.WorkloadIssuer.Svid()}\r\nAssurance-Id: {grantId}\r\n"
        + headers + $"Content-Length: {length}\r\nConnection: close\r\n";

    private async Task AssertUnusedAsync(string id)
    {
        var grant = await _gateway.GetGrantAsync(id);
        Assert.Equal(1, grant.GetProperty("usesRemaining").GetInt32());
        Assert.DoesNotContain(grant.GetProperty("events").EnumerateArray(), e => e.GetProperty("type").GetString() == "used");
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Theory]
    [InlineData("X-Change-Note: caf\u00e9 release\r\n")] // a header the policy does not bind
    [InlineData("User-Agent: d\u00e9ployeur/1.0\r\n")]
    public async Task Use_HeaderValueBeyondAscii_RefusedBeforeTheGrantIsUsed(string header)
    {
        // Kestrel accepts UTF-8 in header values; the forwarder's HttpClient sends ASCII only ("Request headers must
        // contain only ASCII characters") and YARP answered 502 after the use was consumed: an approved single-use action
        // burned, and the grant recorded "used" for an action that never ran.
        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token));
        var body = Encoding.UTF8.GetBytes(ReleaseBody);

        var (status, content) = await RawHttp.SendAsync(
            _gateway.ProxyAddress, Head(token, id, "Content-Type: application/json\r\n" + header, body.Length), body, Encoding.UTF8);

        Assert.Equal(400, status);
        Assert.Contains("\"reason\":\"request_ambiguous\"", content, StringComparison.Ordinal);
        Assert.Contains("beyond ASCII", content, StringComparison.Ordinal);
        await AssertUnusedAsync(id);
    }

    [Fact]
    public async Task Use_HeaderValueBeyondAscii_ClusterWithAHeaderEncoding_ForwardedAsReceived()
    {
        await using var gateway = await GatewayHarness.StartAsync(configure: c =>
            c["ReverseProxy"]!["Clusters"]!["upstream"]!["HttpClient"] = new JsonObject { ["RequestHeaderEncoding"] = "utf-8" });
        var token = gateway.Idp.Token();
        var id = await gateway.CreateGrantAsync(DeployGrant(token));
        var body = Encoding.UTF8.GetBytes(ReleaseBody);
        var head = $"POST /deploy/v1/releases HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {token}\r\n"
            + $"Workload-Identity: {gateway.WorkloadIssuer.Svid()}\r\nAssurance-Id: {id}\r\nContent-Type: application/json\r\n"
            + $"X-Change-Note: caf\u00e9\r\nContent-Length: {body.Length}\r\nConnection: close\r\n";

        var (status, _) = await RawHttp.SendAsync(gateway.ProxyAddress, head, body, Encoding.UTF8);

        Assert.Equal(200, status);
        Assert.Equal("caf\u00e9", Assert.Single(gateway.Upstream.Received).Headers["X-Change-Note"]);
    }

    [Theory]
    [InlineData("Content-Type: \r\n")]
    [InlineData("Content-Type: \t \r\n")]
    public async Task Use_BoundHeaderApprovedAbsent_SentPresentButEmpty_Refused(string header)
    {
        // SPEC §4.2 writes an absent bound header as "name:", and an empty one hashes the same: the approver approved a
        // request without the header, and the upstream would have received it (a flag-like header means something by
        // being there).
        var token = _gateway.Idp.Token();
        var grant = DeployGrant(token);
        grant["request"]!["headers"] = new JsonObject(); // approved: no Content-Type at all
        var id = await _gateway.CreateGrantAsync(grant);
        var body = Encoding.UTF8.GetBytes(ReleaseBody);

        var (status, content) = await RawHttp.SendAsync(_gateway.ProxyAddress, Head(token, id, header, body.Length), body);

        Assert.Equal(400, status);
        Assert.Contains("present but empty", content, StringComparison.Ordinal);
        await AssertUnusedAsync(id);
    }

    [Fact]
    public async Task CreateGrant_BoundHeaderGivenEmpty_RefusedWithTheWayOut()
    {
        var grant = DeployGrant(_gateway.Idp.Token());
        grant["request"]!["headers"] = new JsonObject { ["content-type"] = " " };

        using var response = await _gateway.PostGrantAsync(grant);

        Assert.Equal(System.Net.HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains("leave it out", (await response.ProblemAsync()).GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Use_RepeatedQueryParameterInAnotherOrder_RefusedAndTheCanonicalOrderForwarded()
    {
        // SPEC §4.2 sorts whole "name=value" pairs, so "env=prod&env=staging" and "env=staging&env=prod" hash alike while
        // an upstream that reads one value per name (Go's Query().Get, Flask's args.get: the first; PHP: the last) runs
        // another request. Only the canonical order is accepted, by the API and by the gateway.
        var token = _gateway.Idp.Token();
        var refused = DeployGrant(token);
        refused["request"]!["query"] = "env=staging&env=prod";
        using (var response = await _gateway.PostGrantAsync(refused))
        {
            Assert.Equal(System.Net.HttpStatusCode.BadRequest, response.StatusCode);
            Assert.Contains("repeats 'env' out of canonical order", (await response.ProblemAsync()).GetProperty("detail").GetString(), StringComparison.Ordinal);
        }

        var grant = DeployGrant(token, maxUses: 2);
        grant["request"]!["query"] = "env=prod&x=1&env=staging";
        var id = await _gateway.CreateGrantAsync(grant);
        var body = Encoding.UTF8.GetBytes(ReleaseBody);
        var headers = "Content-Type: application/json\r\n";

        var (reordered, content) = await RawHttp.SendAsync(_gateway.ProxyAddress,
            Head(token, id, headers, body.Length, "/deploy/v1/releases?env=staging&x=1&env=prod"), body);

        Assert.Equal(400, reordered);
        Assert.Contains("\"reason\":\"request_ambiguous\"", content, StringComparison.Ordinal);
        Assert.Contains("repeats 'env' out of canonical order", content, StringComparison.Ordinal);
        Assert.Equal(0, _gateway.Upstream.Count);

        var (canonical, _) = await RawHttp.SendAsync(_gateway.ProxyAddress,
            Head(token, id, headers, body.Length, "/deploy/v1/releases?x=1&env=prod&env=staging"), body);

        Assert.Equal(200, canonical);
        Assert.Equal("x=1&env=prod&env=staging", Assert.Single(_gateway.Upstream.Received).Query);
    }

    // Readers that also split pairs on ';' (Rack 2, Python's parse_qs before 3.9.2, Go before 1.17) read env=staging
    // first in the sent query and env=prod first in the approved one, and both hash alike: refused, nothing spent.
    [Fact]
    public async Task Use_RepeatedNameBehindASemicolonInAnotherOrder_RefusedNothingSpent()
    {
        var token = _gateway.Idp.Token();
        var grant = DeployGrant(token);
        grant["request"]!["query"] = "env=prod&v=1;env=staging";
        var id = await _gateway.CreateGrantAsync(grant);
        var body = Encoding.UTF8.GetBytes(ReleaseBody);

        var (status, content) = await RawHttp.SendAsync(_gateway.ProxyAddress,
            Head(token, id, "Content-Type: application/json\r\n", body.Length, "/deploy/v1/releases?v=1;env=staging&env=prod"), body);

        Assert.Equal(400, status);
        Assert.Contains("\"reason\":\"request_ambiguous\"", content, StringComparison.Ordinal);
        await AssertUnusedAsync(id);
    }

    // Kestrel takes "CONNECT /path" (origin form) and the route matches, but the forwarder cannot send it: the use was
    // spent on a 502 for an action that never ran. The API refuses such a grant; one bound by hash is refused at use.
    [Fact]
    public async Task Use_ConnectInOriginForm_RefusedBeforeTheGrantIsUsed()
    {
        var token = _gateway.Idp.Token();
        var grant = DeployGrant(token, body: string.Empty);
        grant["request"]!["method"] = "CONNECT";
        using (var refused = await _gateway.PostGrantAsync(grant))
        {
            Assert.Equal(System.Net.HttpStatusCode.BadRequest, refused.StatusCode);
        }

        var hash = Requests.CanonicalRequest.Compute("CONNECT", "/deploy/v1/releases", string.Empty, ["content-type"],
            n => n == "content-type" ? new Microsoft.Extensions.Primitives.StringValues("application/json") : default, []).Hash;
        grant.Remove("request");
        grant["requestHash"] = hash;
        var id = await _gateway.CreateGrantAsync(grant);

        var (status, content) = await RawHttp.SendAsync(_gateway.ProxyAddress,
            Head(token, id, "Content-Type: application/json\r\n", 0).Replace("POST ", "CONNECT ", StringComparison.Ordinal), ReadOnlyMemory<byte>.Empty);

        Assert.Equal(400, status);
        Assert.Contains("\"reason\":\"request_ambiguous\"", content, StringComparison.Ordinal);
        await AssertUnusedAsync(id);
    }

    // The proxy passes the client's Host on as X-Forwarded-Host, which upstreams serving several hosts or tenants read
    // (ASP.NET Core's forwarded headers, Django, Rails). A policy may bind it: a grant for one tenant's host is then
    // refused on another's, and nothing reaches the upstream.
    [Fact]
    public async Task Use_HostBound_AnotherHostIsRequestMismatchAndTheApprovedOneArrivesAsXForwardedHost()
    {
        await using var gateway = await GatewayHarness.StartAsync(configure: c =>
        {
            c["ReverseProxy"]!["Routes"]!.AsObject()["tenants"] = TestConfig.Route("/tenants/{**rest}", "host-bound");
            c["Assurance"]!["Policies"]!.AsObject()["host-bound"] = new JsonObject
            {
                ["Bind"] = new JsonArray("token", "request"),
                ["BoundHeaders"] = new JsonArray("host"),
                ["MaxUses"] = 2,
            };
        });
        var token = gateway.Idp.Token();
        var grant = new JsonObject
        {
            ["route"] = "tenants",
            ["tokenHash"] = TokenHash(token),
            ["request"] = new JsonObject
            {
                ["method"] = "POST", ["path"] = "/tenants/rotate-keys", ["headers"] = new JsonObject { ["host"] = "tenant-a.example" },
            },
            ["maxUses"] = 2,
        };
        var id = await gateway.CreateGrantAsync(grant);
        string Request(string host) =>
            $"POST /tenants/rotate-keys HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nAssurance-Id: {id}\r\nContent-Length: 0\r\nConnection: close\r\n";

        var (other, content) = await RawHttp.SendAsync(gateway.ProxyAddress, Request("tenant-b.example"), ReadOnlyMemory<byte>.Empty);

        Assert.Equal(403, other);
        Assert.Contains("\"reason\":\"request_mismatch\"", content, StringComparison.Ordinal);
        Assert.Equal(0, gateway.Upstream.Count);

        var (approved, _) = await RawHttp.SendAsync(gateway.ProxyAddress, Request("tenant-a.example"), ReadOnlyMemory<byte>.Empty);

        Assert.Equal(200, approved);
        Assert.Equal("tenant-a.example", Assert.Single(gateway.Upstream.Received).Headers["X-Forwarded-Host"]);
    }

    [Fact]
    public async Task Use_ChunkedBodyWithTrailers_TrailersNeverReachTheUpstream()
    {
        // A regression guard: trailers are outside the hash, and the forwarder does not send them.
        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token));
        var chunked = $"{Encoding.UTF8.GetByteCount(ReleaseBody):x}\r\n{ReleaseBody}\r\n0\r\nContent-Type: text/plain\r\nX-Env: dev\r\n\r\n";
        var head = Head(token, id, "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n", 0)
            .Replace("Content-Length: 0\r\n", string.Empty, StringComparison.Ordinal);

        var (status, _) = await RawHttp.SendAsync(_gateway.ProxyAddress, head, Encoding.ASCII.GetBytes(chunked));

        Assert.Equal(200, status);
        var received = Assert.Single(_gateway.Upstream.Received);
        Assert.Equal(ReleaseBody, Encoding.UTF8.GetString(received.Body));
        Assert.Equal("application/json", received.Headers["Content-Type"]);
        Assert.False(received.Headers.ContainsKey("X-Env"));
        Assert.Empty(_gateway.Upstream.Trailers);
    }

    /// <summary>
    /// A client that resets its connection in the middle of the body is an attempt like any other: it gets an evidence
    /// span and a log line, and the grant it named keeps the denied attempt with no use spent. Over HTTP/1.1 the reset
    /// reaches the body read before the request is marked aborted (a race: several attempts show it).
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Use_ClientResetsTheConnectionMidBody_DeniedWithEvidenceAndOnTheGrantsRecord(bool chunked)
    {
        for (var attempt = 0; attempt < 4; attempt++)
        {
            var token = _gateway.Idp.Token();
            var id = await _gateway.CreateGrantAsync(DeployGrant(token));
            var traceId = ActivityTraceId.CreateRandom().ToHexString();
            var length = Encoding.UTF8.GetByteCount(ReleaseBody);
            var head = $"POST /deploy/v1/releases HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {token}\r\n"
                + $"Workload-Identity: {_gateway.WorkloadIssuer.Svid()}\r\nAssurance-Id: {id}\r\nContent-Type: application/json\r\n"
                + $"traceparent: 00-{traceId}-{ActivitySpanId.CreateRandom().ToHexString()}-01\r\n"
                + (chunked ? "Transfer-Encoding: chunked\r\n\r\n" + $"{length:x}\r\n" : $"Content-Length: {length}\r\n\r\n");
            var address = new Uri(_gateway.ProxyAddress);
            using (var tcp = new TcpClient())
            {
                await tcp.ConnectAsync(address.Host, address.Port);
                await tcp.GetStream().WriteAsync(Encoding.ASCII.GetBytes(head + ReleaseBody[..10]));
                await Task.Delay(200); // the gateway is now waiting for the rest of the body
                tcp.Client.LingerState = new LingerOption(true, 0); // closed with a reset, not a FIN
                tcp.Client.Close();
            }

            var span = await _gateway.Spans.WaitForEnforceAsync(traceId);
            Assert.Equal("deny", span.GetTagItem("assurance.decision"));
            Assert.Equal("request_ambiguous", span.GetTagItem("assurance.reason"));
            var grant = await _gateway.GetGrantAsync(id);
            Assert.Equal(1, grant.GetProperty("usesRemaining").GetInt32());
            Assert.Contains(grant.GetProperty("events").EnumerateArray(), e => e.GetProperty("type").GetString() == "denied"
                && e.GetProperty("reason").GetString() == "request_ambiguous" && e.GetProperty("traceId").GetString() == traceId);
        }

        Assert.Equal(0, _gateway.Upstream.Count);
        Assert.DoesNotContain(_gateway.Logs.Lines, l => l.Contains("An unhandled exception was thrown by the application", StringComparison.Ordinal));
    }

    // Kestrel removes dot segments from an origin-form target and keeps '%2F' encoded, but it decodes an absolute-form
    // target (which RFC 9112 says a server must accept) with Uri, escapes and all: "/public/x%2F..%2F..%2Fdeploy/..." became
    // the path "/public/x/../../deploy/...", which the passthrough route matched, and the forwarder's Uri then removed the
    // dot segments: the upstream received POST /deploy/v1/releases with no token and no grant.
    [Theory]
    [InlineData("http://gateway/public/x%2F..%2F..%2Fdeploy/v1/releases")]
    [InlineData("http://gateway/public/x%2F%2E%2E%2F%2E%2E%2Fdeploy/v1/releases")]
    [InlineData("http://gateway/public/%2E%2E%2Fdeploy/v1/releases")]
    public async Task PassthroughRoute_AbsoluteFormTargetWithEscapedDotSegments_NeverReachesAProtectedPath(string target)
    {
        var body = Encoding.UTF8.GetBytes(ReleaseBody);
        var head = $"POST {target} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\nContent-Length: {body.Length}\r\nConnection: close\r\n";

        var (status, content) = await RawHttp.SendAsync(_gateway.ProxyAddress, head, body);

        Assert.Equal(0, _gateway.Upstream.Count);
        Assert.Equal(400, status);
        Assert.Contains("\"reason\":\"request_ambiguous\"", content, StringComparison.Ordinal);

        // An absolute-form target that stays where it was routed is forwarded as before.
        var (plain, _) = await RawHttp.SendAsync(_gateway.ProxyAddress, head.Replace(target, "http://gateway/public/docs", StringComparison.Ordinal), body);

        Assert.Equal(200, plain);
        Assert.Equal("/public/docs", Assert.Single(_gateway.Upstream.Received).Path);
    }

    // On a request-bound route the hash covered the decoded "/deploy/v1/x/../releases" and the upstream received
    // "/deploy/v1/releases": not the request that was hashed (SPEC §7.4), and the normal-form check never saw it.
    [Fact]
    public async Task Use_AbsoluteFormTargetWithEscapedDotSegments_RefusedBeforeTheGrantIsUsed()
    {
        var token = _gateway.Idp.Token();
        var body = Encoding.UTF8.GetBytes(ReleaseBody);
        var grant = DeployGrant(token);
        grant.Remove("request");
        grant["requestHash"] = Requests.CanonicalRequest.Compute("POST", "/deploy/v1/x/../releases", string.Empty, ["content-type"],
            n => n == "content-type" ? new Microsoft.Extensions.Primitives.StringValues("application/json") : default, body).Hash;
        var id = await _gateway.CreateGrantAsync(grant);

        var (status, content) = await RawHttp.SendAsync(_gateway.ProxyAddress,
            Head(token, id, "Content-Type: application/json\r\n", body.Length, "http://gateway/deploy/v1/x%2F..%2Freleases"), body);

        Assert.Equal(400, status);
        Assert.Contains("\"reason\":\"request_ambiguous\"", content, StringComparison.Ordinal);
        await AssertUnusedAsync(id);

        // The approved request in absolute form is the approved request.
        var approved = await _gateway.CreateGrantAsync(DeployGrant(token));
        var (allowed, _) = await RawHttp.SendAsync(_gateway.ProxyAddress,
            Head(token, approved, "Content-Type: application/json\r\n", body.Length, "http://gateway/deploy/v1/releases"), body);

        Assert.Equal(200, allowed);
        Assert.Equal("/deploy/v1/releases", Assert.Single(_gateway.Upstream.Received).Path);
    }

    // ASP.NET Core's HttpMethodOverride middleware, Express's method-override, Rack and Laravel run the method such a header
    // names (on a POST): the hash binds POST, and the holder of an approval to create a release had the upstream delete it.
    [Theory]
    [InlineData("X-HTTP-Method-Override: DELETE\r\n")]
    [InlineData("X-HTTP-Method: DELETE\r\n")]
    [InlineData("x-method-override: DELETE\r\n")]
    [InlineData("X_HTTP_Method_Override: DELETE\r\n")]
    public async Task Use_MethodOverrideHeaderNotBound_RefusedBeforeTheGrantIsUsed(string header)
    {
        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token));
        var body = Encoding.UTF8.GetBytes(ReleaseBody);

        var (status, content) = await RawHttp.SendAsync(_gateway.ProxyAddress, Head(token, id, "Content-Type: application/json\r\n" + header, body.Length), body);

        Assert.Equal(400, status);
        Assert.Contains("\"reason\":\"request_ambiguous\"", content, StringComparison.Ordinal);
        Assert.Contains("another method", content, StringComparison.Ordinal);
        await AssertUnusedAsync(id);
    }

    [Fact]
    public async Task Use_MethodOverrideHeaderBound_ApprovedValueForwarded()
    {
        await using var gateway = await GatewayHarness.StartAsync(configure: c =>
            c["Assurance"]!["Policies"]!["single-use-approval"]!["BoundHeaders"] = new JsonArray("content-type", "x-http-method-override"));
        var token = gateway.Idp.Token();
        var grant = DeployGrant(token);
        grant["request"]!["headers"]!["x-http-method-override"] = "PUT";
        var id = await gateway.CreateGrantAsync(grant);
        var body = Encoding.UTF8.GetBytes(ReleaseBody);
        string Send(string value) => $"POST /deploy/v1/releases HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {token}\r\n"
            + $"Workload-Identity: {gateway.WorkloadIssuer.Svid()}\r\nAssurance-Id: {id}\r\nContent-Type: application/json\r\n"
            + $"X-HTTP-Method-Override: {value}\r\nContent-Length: {body.Length}\r\nConnection: close\r\n";

        var (other, _) = await RawHttp.SendAsync(gateway.ProxyAddress, Send("DELETE"), body);

        Assert.Equal(403, other);
        Assert.Equal(0, gateway.Upstream.Count);

        var (approved, _) = await RawHttp.SendAsync(gateway.ProxyAddress, Send("PUT"), body);

        Assert.Equal(200, approved);
        Assert.Equal("PUT", Assert.Single(gateway.Upstream.Received).Headers["X-HTTP-Method-Override"]);
    }

    // The hash joins a bound header's field lines with ',' (SPEC §4.2); the forwarder joins Cookie lines with "; ". Two
    // lines "role=user" and "tier=gold" hashed as the approved one-line cookie "role=user,tier=gold" and reached the
    // upstream as two cookies, "role=user; tier=gold".
    [Fact]
    public async Task Use_BoundCookieInTwoFieldLines_RefusedAndTheApprovedLineForwardedAsIs()
    {
        await using var gateway = await GatewayHarness.StartAsync(configure: c =>
        {
            c["ReverseProxy"]!["Routes"]!.AsObject()["sessions"] = TestConfig.Route("/sessions/{**rest}", "cookie-bound");
            c["Assurance"]!["Policies"]!.AsObject()["cookie-bound"] = new JsonObject
            {
                ["Bind"] = new JsonArray("token", "request"),
                ["BoundHeaders"] = new JsonArray("cookie"),
                ["MaxUses"] = 2,
            };
        });
        var token = gateway.Idp.Token();
        var id = await gateway.CreateGrantAsync(new JsonObject
        {
            ["route"] = "sessions",
            ["tokenHash"] = TokenHash(token),
            ["request"] = new JsonObject
            {
                ["method"] = "POST", ["path"] = "/sessions/elevate", ["headers"] = new JsonObject { ["cookie"] = "role=user,tier=gold" },
            },
            ["maxUses"] = 2,
        });
        string Request(string cookies) =>
            $"POST /sessions/elevate HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {token}\r\nAssurance-Id: {id}\r\n{cookies}Content-Length: 0\r\nConnection: close\r\n";

        var (split, content) = await RawHttp.SendAsync(gateway.ProxyAddress, Request("Cookie: role=user\r\nCookie: tier=gold\r\n"), ReadOnlyMemory<byte>.Empty);

        Assert.Equal(400, split);
        Assert.Contains("\"reason\":\"request_ambiguous\"", content, StringComparison.Ordinal);
        Assert.Equal(0, gateway.Upstream.Count);
        Assert.Equal(2, (await gateway.GetGrantAsync(id)).GetProperty("usesRemaining").GetInt32());

        var (oneLine, _) = await RawHttp.SendAsync(gateway.ProxyAddress, Request("Cookie: role=user,tier=gold\r\n"), ReadOnlyMemory<byte>.Empty);

        Assert.Equal(200, oneLine);
        Assert.Equal("role=user,tier=gold", Assert.Single(gateway.Upstream.Received).Headers["Cookie"]);
    }

    // HTTP/2 is served wherever Kestrel offers it (ALPN on https listeners, or Protocols "Http2" for h2c): DATA that
    // disagrees with content-length is refused by Kestrel with the use unspent, and trailers after the DATA are neither
    // hashed nor forwarded, while the body arrives exact.
    [Fact]
    public async Task Use_OverHttp2_DataDisagreeingWithContentLengthSpendsNothingAndTrailersNeverReachTheUpstream()
    {
        await using var gateway = await GatewayHarness.StartAsync(configure: c =>
            c["Kestrel"] = new JsonObject { ["EndpointDefaults"] = new JsonObject { ["Protocols"] = "Http2" } });
        var token = gateway.Idp.Token();
        var id = await gateway.CreateGrantAsync(DeployGrant(token));
        var body = Encoding.UTF8.GetBytes(ReleaseBody);
        (string, string)[] Fields(params (string, string)[] extra) =>
        [
            (":method", "POST"), (":scheme", "http"), (":authority", "gateway"), (":path", "/deploy/v1/releases"),
            ("authorization", "Bearer " + token), ("workload-identity", gateway.WorkloadIssuer.Svid()), ("assurance-id", id),
            ("content-type", "application/json"), .. extra,
        ];

        foreach (var declared in new[] { 5, body.Length + 100 })
        {
            var refused = await RawHttp2.SendAsync(gateway.ProxyAddress, Fields(("content-length", declared.ToString(System.Globalization.CultureInfo.InvariantCulture))), body);

            Assert.True(refused.Reset || refused.Status == 400, $"content-length {declared}: {refused}");
        }

        Assert.Equal(1, (await gateway.GetGrantAsync(id)).GetProperty("usesRemaining").GetInt32());
        Assert.Equal(0, gateway.Upstream.Count);

        var allowed = await RawHttp2.SendAsync(gateway.ProxyAddress, Fields(), body, trailers: [("content-type", "text/plain"), ("x-env", "dev")]);

        Assert.Equal(200, allowed.Status);
        var received = Assert.Single(gateway.Upstream.Received);
        Assert.Equal(ReleaseBody, Encoding.UTF8.GetString(received.Body));
        Assert.Equal("application/json", received.Headers["Content-Type"]);
        Assert.False(received.Headers.ContainsKey("x-env"));
        Assert.Empty(gateway.Upstream.Trailers);
    }
}
