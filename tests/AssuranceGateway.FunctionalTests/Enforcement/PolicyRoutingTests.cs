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
