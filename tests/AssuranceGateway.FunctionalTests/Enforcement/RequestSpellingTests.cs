using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using AssuranceGateway.Testing;
using static AssuranceGateway.Testing.GrantHelpers;

namespace AssuranceGateway.FunctionalTests.Enforcement;

/// <summary>
/// Spellings of one request that the hash or the API would read as another: each is refused, or accepted exactly as the
/// gateway checks it.
/// </summary>
public sealed class RequestSpellingTests
{
    private static Task<GatewayHarness> StartAsync() => GatewayHarness.StartAsync(configure: c =>
    {
        var routes = c["ReverseProxy"]!["Routes"]!.AsObject();
        var policies = c["Assurance"]!["Policies"]!.AsObject();
        // Binds no workload, but RequireClaims makes the gateway resolve it (AssurancePolicy.NeedsWorkload).
        routes["claims"] = TestConfig.Route("/claims/{**rest}", "claims-checked");
        policies["claims-checked"] = new JsonObject
        {
            ["Bind"] = new JsonArray("subject"),
            ["RequireClaims"] = new JsonObject { ["repository"] = "org/app" },
        };
    });

    /// <summary>
    /// A workload on a policy that does not bind it is refused because the gateway never resolves it there, but it does
    /// whenever the policy has RequireClaims (step 3), and the store checks what the grant binds: such a grant is usable.
    /// </summary>
    [Fact]
    public async Task CreateGrant_WorkloadOnPolicyWithRequireClaimsOnly_AcceptedAndUsable()
    {
        await using var gateway = await StartAsync();
        var grant = new JsonObject { ["route"] = "claims", ["subject"] = "alice", ["workload"] = Deployer };

        using var created = await gateway.PostGrantAsync(grant);

        Assert.True(created.StatusCode == HttpStatusCode.Created,
            $"{(int)created.StatusCode}: {(created.StatusCode == HttpStatusCode.Created ? string.Empty : (await created.ProblemAsync()).GetProperty("detail").GetString())}");
        var id = (await System.Net.Http.Json.HttpContentJsonExtensions.ReadFromJsonAsync<System.Text.Json.JsonElement>(created.Content)).GetProperty("id").GetString()!;
        using var use = GatewayHarness.Request(HttpMethod.Post, "/claims/run", gateway.Idp.Token(), out _);
        use.Headers.TryAddWithoutValidation("Assurance-Id", id);
        use.Headers.TryAddWithoutValidation("Workload-Identity", gateway.WorkloadIssuer.Svid(edit: c => c["repository"] = "org/app"));
        using var response = await gateway.Proxy.SendAsync(use);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    /// <summary>
    /// "Content-Type" and "content-type" are two members to the JSON reader and one header to the hash: refused, as a
    /// member given twice is, instead of the last one silently winning.
    /// </summary>
    [Fact]
    public async Task CreateGrant_BoundHeaderGivenTwiceInDifferentCase_Refused()
    {
        await using var gateway = await GatewayHarness.StartAsync();
        var grant = DeployGrant(gateway.Idp.Token());
        grant["request"]!["headers"] = new JsonObject { ["Content-Type"] = "application/json", ["content-type"] = "text/plain" };

        using var response = await gateway.PostGrantAsync(grant);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
    }

    /// <summary>
    /// A repeated query name is accepted only in canonical order, and names are compared as an upstream reads them. ASP.NET Core
    /// (and so any .NET upstream) reads query names case-insensitively: "env=prod&amp;Env=staging" and
    /// "Env=staging&amp;env=prod" hash alike (the pairs sort the same) and give the upstream different first values.
    /// The same holds for names spelt with '+' and '%20', or '%2A' and '*', under every form decoder.
    /// </summary>
    [Fact]
    public async Task Use_RepeatedQueryNameSpelledInAnotherCase_OtherOrderRefused()
    {
        await using var gateway = await GatewayHarness.StartAsync();
        var token = gateway.Idp.Token();
        var grant = DeployGrant(token, maxUses: 2);
        grant["request"]!["query"] = "Env=staging&env=prod"; // a .NET upstream reads env = staging
        var id = await gateway.CreateGrantAsync(grant);

        using var reordered = DeployRequest(token, gateway.WorkloadIssuer.Svid(), id, out _, path: "/deploy/v1/releases?env=prod&Env=staging");
        using var response = await gateway.Proxy.SendAsync(reordered);

        Assert.True(response.StatusCode == HttpStatusCode.BadRequest,
            $"{(int)response.StatusCode}; upstream received query '{(gateway.Upstream.Received is { Count: > 0 } r ? r[r.Count - 1].Query : null)}' (first 'env' value: prod, approved: staging)");
        Assert.Equal("request_ambiguous", await response.ReasonAsync());
        Assert.Equal(0, gateway.Upstream.Count);
    }

    /// <summary>
    /// CanonicalQuery drops one leading '?' (issuers may write it), and the gateway hands it the query already without
    /// its delimiter, so "/x??dry_run=true" hashed as "/x?dry_run=true" while the upstream received a parameter named
    /// "?dry_run" and no "dry_run": an approved dry run became a real one under the same hash.
    /// </summary>
    [Fact]
    public async Task Use_QueryWithASecondQuestionMark_IsNotTheApprovedRequest()
    {
        await using var gateway = await GatewayHarness.StartAsync();
        var token = gateway.Idp.Token();
        var grant = DeployGrant(token);
        grant["request"]!["query"] = "dry_run=true";
        var id = await gateway.CreateGrantAsync(grant);

        using var request = DeployRequest(token, gateway.WorkloadIssuer.Svid(), id, out _, path: "/deploy/v1/releases??dry_run=true");
        using var response = await gateway.Proxy.SendAsync(request);

        Assert.True(response.StatusCode != HttpStatusCode.OK,
            $"{(int)response.StatusCode}; upstream received query '{(gateway.Upstream.Received is { Count: > 0 } r ? r[r.Count - 1].Query : null)}' under the hash approved for 'dry_run=true'");
        Assert.Equal("request_ambiguous", await response.ReasonAsync());
        Assert.Equal(0, gateway.Upstream.Count);
    }

    /// <summary>
    /// CGI, WSGI, PHP-FPM and Rack upstreams read "content_type" and "content-type" alike: sent next to the bound header,
    /// the alias (which no hash covers) would give the upstream another content type than the one approved. Refused
    /// before the grant is touched, so the approved request still gets through afterwards.
    /// </summary>
    [Theory]
    [InlineData("Content_Type")]
    [InlineData("content_type")]
    public async Task Use_BoundHeaderAlsoSentSpeltWithUnderscore_RefusedBeforeTheGrantIsUsed(string alias)
    {
        await using var gateway = await GatewayHarness.StartAsync();
        var token = gateway.Idp.Token();
        var id = await gateway.CreateGrantAsync(DeployGrant(token));
        using var aliased = DeployRequest(token, gateway.WorkloadIssuer.Svid(), id, out _);
        aliased.Headers.TryAddWithoutValidation(alias, "application/x-www-form-urlencoded");

        using var response = await gateway.Proxy.SendAsync(aliased);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("request_ambiguous", await response.ReasonAsync());
        Assert.Equal(0, gateway.Upstream.Count);
        using var approved = await gateway.Proxy.SendAsync(DeployRequest(token, gateway.WorkloadIssuer.Svid(), id, out _));
        Assert.Equal(HttpStatusCode.OK, approved.StatusCode);
    }

    /// <summary>
    /// The non-ASCII check covers headers the upstream would receive: a hop-by-hop header YARP never forwards does not
    /// stop the request.
    /// </summary>
    [Fact]
    public async Task Use_HopByHopHeaderBeyondAscii_Forwarded()
    {
        await using var gateway = await GatewayHarness.StartAsync();
        var token = gateway.Idp.Token();
        var id = await gateway.CreateGrantAsync(DeployGrant(token));
        var body = Encoding.UTF8.GetBytes(ReleaseBody);
        var head = $"POST /deploy/v1/releases HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {token}\r\n"
            + $"Workload-Identity: {gateway.WorkloadIssuer.Svid()}\r\nAssurance-Id: {id}\r\nContent-Type: application/json\r\n"
            + $"Keep-Alive: caf\u00e9\r\nContent-Length: {body.Length}\r\nConnection: close\r\n";

        var (status, content) = await RawHttp.SendAsync(gateway.ProxyAddress, head, body, Encoding.UTF8);

        Assert.True(status == 200, $"{status}: {content}");
        Assert.False(Assert.Single(gateway.Upstream.Received).Headers.ContainsKey("Keep-Alive"));
    }

    [Fact]
    public async Task CreateGrant_QueryStartingWithTwoQuestionMarks_RefusedLikeTheGatewayRefusesIt()
    {
        // "??dry_run=true" hashes as the wire query "?dry_run=true", which the gateway always refuses: a grant no request
        // could ever use.
        await using var gateway = await GatewayHarness.StartAsync();
        var grant = DeployGrant(gateway.Idp.Token());
        grant["request"]!["query"] = "??dry_run=true";

        using var response = await gateway.PostGrantAsync(grant);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains("second '?'", (await response.ProblemAsync()).GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    /// <summary>
    /// Trailer is hop-by-hop in RFC 9110 but YARP 2.1 copies it: a value beyond ASCII reached HttpClient after the use was
    /// consumed, and the client got a 502. (YARP also sends Upgrade again for a SPDY or WebSocket upgrade, but no route
    /// that requires a grant forwards an upgrade: UpgradeTunnelTests.)
    /// </summary>
    [Fact]
    public async Task Use_ForwardedHopByHopHeaderBeyondAscii_RefusedBeforeTheGrantIsUsed()
    {
        await using var gateway = await GatewayHarness.StartAsync();
        var token = gateway.Idp.Token();
        var id = await gateway.CreateGrantAsync(DeployGrant(token));
        var body = Encoding.UTF8.GetBytes(ReleaseBody);
        var head = $"POST /deploy/v1/releases HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {token}\r\nAssurance-Id: {id}\r\n"
            + $"Workload-Identity: {gateway.WorkloadIssuer.Svid()}\r\nContent-Length: {body.Length}\r\n"
            + "Content-Type: application/json\r\nTrailer: caf\u00e9\r\n";

        var (status, content) = await RawHttp.SendAsync(gateway.ProxyAddress, head, body, Encoding.UTF8);

        Assert.True(status == 400, $"{status}: {content}");
        Assert.Contains("beyond ASCII", content, StringComparison.Ordinal);
        Assert.Equal(1, (await gateway.GetGrantAsync(id)).GetProperty("usesRemaining").GetInt32());
        Assert.Equal(0, gateway.Upstream.Count);
    }

    /// <summary>A header the route's transform removes never reaches HttpClient either: not refused.</summary>
    [Fact]
    public async Task Use_HeaderBeyondAsciiThatTheRouteRemoves_Forwarded()
    {
        await using var gateway = await GatewayHarness.StartAsync(configure: c =>
            c["ReverseProxy"]!["Routes"]!["deploy"]!["Transforms"] = new JsonArray(new JsonObject { ["RequestHeaderRemove"] = "X-Change-Note" }));
        var token = gateway.Idp.Token();
        var id = await gateway.CreateGrantAsync(DeployGrant(token));
        var body = Encoding.UTF8.GetBytes(ReleaseBody);
        var head = $"POST /deploy/v1/releases HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {token}\r\n"
            + $"Workload-Identity: {gateway.WorkloadIssuer.Svid()}\r\nAssurance-Id: {id}\r\nContent-Type: application/json\r\n"
            + $"x-change-note: caf\u00e9\r\nContent-Length: {body.Length}\r\nConnection: close\r\n";

        var (status, content) = await RawHttp.SendAsync(gateway.ProxyAddress, head, body, Encoding.UTF8);

        Assert.True(status == 200, $"{status}: {content}");
        Assert.False(Assert.Single(gateway.Upstream.Received).Headers.ContainsKey("X-Change-Note"));
    }
}
