using System.Net;
using System.Text.Json;
using AssuranceGateway.Testing;

namespace AssuranceGateway.FunctionalTests.Enforcement;

public sealed class PolicyRoutingTests : IAsyncLifetime
{
    private GatewayHarness _gateway = null!;

    public async Task InitializeAsync() => _gateway = await GatewayHarness.StartAsync();

    public async Task DisposeAsync() => await _gateway.DisposeAsync();

    [Fact]
    public async Task Passthrough_NoToken_ForwardsAndRecordsEvidence()
    {
        using var request = GatewayHarness.Request(HttpMethod.Get, "/public/ping?x=1", token: null, out var traceId);

        using var response = await _gateway.Proxy.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var received = Assert.Single(_gateway.Upstream.Received);
        Assert.Equal("/public/ping", received.Path);
        var span = Assert.Single(_gateway.Spans.Enforce(traceId));
        Assert.Equal("allow", span.GetTagItem("assurance.decision"));
        Assert.Equal("passthrough", span.GetTagItem("assurance.policy"));
    }

    [Fact]
    public async Task TokenOnly_ValidToken_Forwards()
    {
        using var request = GatewayHarness.Request(HttpMethod.Get, "/status", _gateway.Idp.Token(), out var traceId);

        using var response = await _gateway.Proxy.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(1, _gateway.Upstream.Count);
        var span = Assert.Single(_gateway.Spans.Enforce(traceId));
        Assert.Equal("ok", span.GetTagItem("assurance.reason"));
        Assert.Equal("alice", span.GetTagItem("assurance.subject"));
        Assert.Equal(2, span.GetTagItem("assurance.aal"));
    }

    [Fact]
    public async Task TokenOnly_NoToken_401ProblemAndNothingForwarded()
    {
        using var request = GatewayHarness.Request(HttpMethod.Get, "/status", token: null, out var traceId);

        using var response = await _gateway.Proxy.SendAsync(request);

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        using var problem = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal("token_missing", problem.RootElement.GetProperty("reason").GetString());
        Assert.Equal("urn:assurance-gateway:token_missing", problem.RootElement.GetProperty("type").GetString());
        Assert.Equal(401, problem.RootElement.GetProperty("status").GetInt32());
        Assert.Equal(traceId, problem.RootElement.GetProperty("traceId").GetString());
        Assert.Equal(0, _gateway.Upstream.Count);
        var span = Assert.Single(_gateway.Spans.Enforce(traceId));
        Assert.Equal(System.Diagnostics.ActivityStatusCode.Error, span.Status);
        Assert.Equal("token_missing", span.StatusDescription);
    }

    /// <summary>A request no route matches gets problem+json like every other refusal (it was an empty 404), and nothing is forwarded.</summary>
    [Theory]
    [InlineData("GET", "/nowhere/at/all")]
    [InlineData("POST", "/assurance/v1/grants")]
    [InlineData("DELETE", "/")]
    // A last segment that looks like a file name: MapFallback's {*path:nonfile} left it to routing's empty 404.
    [InlineData("GET", "/nowhere/app.tar.gz")]
    public async Task NoRouteMatches_404ProblemJsonNoRoute_NothingForwarded(string method, string path)
    {
        using var request = new HttpRequestMessage(new HttpMethod(method), path);
        request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", _gateway.Idp.Token());
        using var response = await _gateway.Proxy.SendAsync(request);

        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        using var problem = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal("no_route", problem.RootElement.GetProperty("reason").GetString());
        Assert.Equal(404, problem.RootElement.GetProperty("status").GetInt32());
        Assert.Equal(32, problem.RootElement.GetProperty("traceId").GetString()!.Length);
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    /// <summary>
    /// A route restricted to some methods (YARP's Match.Methods), asked with another: the path exists, so the answer is
    /// RFC 9110 §15.5.6's 405 with the route's methods in Allow, as ASP.NET Core routing gives without the no-route
    /// fallback (which took every method, and made it a 404 no_route), as problem+json. Nothing is forwarded, on a
    /// passthrough route as on a protected one.
    /// </summary>
    [Theory]
    [InlineData("GET", "/jobs/run")]
    [InlineData("DELETE", "/jobs/run")]
    [InlineData("GET", "/releases/v1/app.tar.gz")]
    [InlineData("PUT", "/releases/v1")]
    public async Task RouteOfOtherMethods_405ProblemJsonWithAllow_NothingForwarded(string method, string path)
    {
        await using var gateway = await GatewayHarness.StartAsync(c =>
        {
            var routes = c["ReverseProxy"]!["Routes"]!.AsObject();
            routes["jobs"] = TestConfig.Route("/jobs/{**rest}", "passthrough");
            routes["jobs"]!["Match"]!["Methods"] = new System.Text.Json.Nodes.JsonArray("POST");
            routes["releases"] = TestConfig.Route("/releases/{**rest}", "single-use-approval");
            routes["releases"]!["Match"]!["Methods"] = new System.Text.Json.Nodes.JsonArray("POST", "PATCH");
        });
        using var request = new HttpRequestMessage(new HttpMethod(method), path);
        request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", gateway.Idp.Token());

        using var response = await gateway.Proxy.SendAsync(request);
        using var head = await gateway.Proxy.SendAsync(new HttpRequestMessage(HttpMethod.Head, path));
        using var allowed = await gateway.Proxy.SendAsync(new HttpRequestMessage(HttpMethod.Post, "/jobs/run"));

        Assert.Equal(HttpStatusCode.MethodNotAllowed, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        using var problem = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal("method_not_allowed", problem.RootElement.GetProperty("reason").GetString());
        Assert.Equal(405, problem.RootElement.GetProperty("status").GetInt32());
        Assert.Equal(32, problem.RootElement.GetProperty("traceId").GetString()!.Length);
        var allow = path.StartsWith("/jobs", StringComparison.Ordinal) ? new[] { "POST" } : ["PATCH", "POST"];
        Assert.Equal(allow, response.Content.Headers.Allow.Order(StringComparer.Ordinal));
        Assert.Equal(HttpStatusCode.MethodNotAllowed, head.StatusCode);
        Assert.Empty(await head.Content.ReadAsByteArrayAsync());
        // The passthrough route still forwards the method it takes: only the refusals above reached nothing.
        Assert.Equal(HttpStatusCode.OK, allowed.StatusCode);
        Assert.Equal("POST", Assert.Single(gateway.Upstream.Received).Method);
    }

    [Fact]
    public async Task NoRouteMatches_Head_404WithoutABody()
    {
        using var response = await _gateway.Proxy.SendAsync(new HttpRequestMessage(HttpMethod.Head, "/nowhere"));

        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        Assert.Empty(await response.Content.ReadAsByteArrayAsync());
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task ApiEndpoints_AreNotServedOnProxyListener()
    {
        using var health = await _gateway.Proxy.GetAsync("/healthz");
        using var ready = await _gateway.Proxy.GetAsync("/readyz");
        using var grants = await _gateway.Proxy.GetAsync("/assurance/v1/grants?status=pending");

        Assert.Equal(HttpStatusCode.NotFound, health.StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, ready.StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, grants.StatusCode);
        Assert.Equal(0, _gateway.Upstream.Count);
        Assert.Equal(HttpStatusCode.OK, (await _gateway.Api.GetAsync("/healthz")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await _gateway.Api.GetAsync("/readyz")).StatusCode);
    }

    /// <summary>Load balancers and uptime checks often probe with HEAD (RFC 9110 §9.3.2): the GET status, no body.</summary>
    [Theory]
    [InlineData("/healthz")]
    [InlineData("/readyz")]
    public async Task HealthEndpoints_AnswerHeadLikeGetWithoutABody(string path)
    {
        using var head = await _gateway.Api.SendAsync(new HttpRequestMessage(HttpMethod.Head, path));

        Assert.Equal(HttpStatusCode.OK, head.StatusCode);
        Assert.Empty(await head.Content.ReadAsByteArrayAsync());
    }
}
