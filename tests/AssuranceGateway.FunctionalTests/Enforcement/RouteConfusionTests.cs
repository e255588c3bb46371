using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using AssuranceGateway.Testing;

namespace AssuranceGateway.FunctionalTests.Enforcement;

/// <summary>
/// A protected route and a weaker one on the same cluster (here the passthrough <c>/public/{**rest}</c> and a passthrough
/// catch-all <c>/{**catch-all}</c> next to the grant-bound <c>/deploy/{**rest}</c>): a path that the gateway routes to the
/// weaker route but that a common upstream reads as a protected path is never forwarded. Each attack is sent as an
/// attacker would (no token, no grant) and must leave the upstream untouched; the controls show that the spellings
/// legitimate clients use still reach it byte for byte.
/// </summary>
public sealed class RouteConfusionTests : IAsyncLifetime
{
    private GatewayHarness _gateway = null!;

    public async Task InitializeAsync() => _gateway = await GatewayHarness.StartAsync(configure: c =>
        c["ReverseProxy"]!["Routes"]!.AsObject()["rest"] = TestConfig.Route("/{**catch-all}", "passthrough"));

    public async Task DisposeAsync() => await _gateway.DisposeAsync();

    private static string Head(string target, string traceId) =>
        $"POST {target} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\nContent-Length: {Encoding.UTF8.GetByteCount(GrantHelpers.ReleaseBody)}\r\n"
        + $"traceparent: 00-{traceId}-{ActivitySpanId.CreateRandom().ToHexString()}-01\r\nConnection: close\r\n";

    private async Task AssertRefusedAsync(string target)
    {
        var traceId = ActivityTraceId.CreateRandom().ToHexString();

        var (status, content) = await RawHttp.SendAsync(_gateway.ProxyAddress, Head(target, traceId), Encoding.UTF8.GetBytes(GrantHelpers.ReleaseBody));

        Assert.True(_gateway.Upstream.Count == 0, $"{target} reached the upstream as {string.Join(", ", _gateway.Upstream.Received.Select(r => r.Path))}");
        Assert.Equal(400, status);
        Assert.Contains("\"reason\":\"request_ambiguous\"", content, StringComparison.Ordinal);
        var span = await _gateway.Spans.WaitForEnforceAsync(traceId);
        Assert.Equal("deny", span.GetTagItem("assurance.decision"));
        Assert.Equal("request_ambiguous", span.GetTagItem("assurance.reason"));
    }

    // Routed to the catch-all (its first segment is not "deploy"), forwarded as is, and read as /deploy/v1/releases by:
    [Theory]
    [InlineData("/deploy;x=1/v1/releases")] // Tomcat, Jetty, Spring: path parameters are cut from each segment
    [InlineData("/deploy;/v1/releases")]
    [InlineData("/;x/deploy/v1/releases")] // Tomcat: "/;x/deploy" is "//deploy", then the slashes are merged
    [InlineData("//deploy/v1/releases")] // nginx (merge_slashes is on by default), Tomcat, and many frameworks merge slashes
    [InlineData("///deploy/v1/releases")]
    [InlineData("/deploy\\v1/releases")] // IIS and Windows hosts read '\' (forwarded as %5C) as '/'
    [InlineData("/deploy%5Cv1/releases")]
    [InlineData("/deploy./v1/releases")] // IIS and Windows hosts drop trailing dots and spaces from a segment
    [InlineData("/deploy%2E/v1/releases")]
    [InlineData("/deploy%20/v1/releases")]
    [InlineData("/deploy.%20./v1/releases")]
    [InlineData("http://gateway/deploy;x=1/v1/releases")] // the same in absolute form
    [InlineData("http://gateway//deploy/v1/releases")]
    public Task CatchAllPassthrough_PathAnUpstreamReadsAsAProtectedRoute_RefusedNothingForwarded(string target) => AssertRefusedAsync(target);

    // Routed to /public (passthrough), and read as /deploy/v1/releases by an upstream that sees a dot segment in it:
    [Theory]
    [InlineData("/public/..;/deploy/v1/releases")] // Tomcat, Jetty, Spring: "..;" is ".." once the parameter is cut
    [InlineData("/public/x/..;/..;/deploy/v1/releases")]
    [InlineData("/public/.;/..;x=1/deploy/v1/releases")]
    [InlineData("/public/..%5Cdeploy/v1/releases")] // IIS: "\" is "/"
    [InlineData("/public/..\\deploy/v1/releases")]
    [InlineData("/public/..%20/deploy/v1/releases")] // Windows: trailing spaces and dots dropped
    [InlineData("/public/..%2E/deploy/v1/releases")]
    [InlineData("/x/..;/deploy/v1/releases")] // the catch-all
    [InlineData("http://gateway/public/..;/deploy/v1/releases")]
    public Task PassthroughRoute_SegmentAnUpstreamReadsAsADotSegment_RefusedNothingForwarded(string target) => AssertRefusedAsync(target);

    // What legitimate clients send still goes through, byte for byte: a path parameter, a doubled or trailing slash, a
    // trailing dot or an escaped space inside the route the gateway matched, or elsewhere under the catch-all.
    [Theory]
    [InlineData("/public/docs", "/public/docs")]
    [InlineData("/public/cart;jsessionid=0A1B2C", "/public/cart;jsessionid=0A1B2C")]
    [InlineData("/public//docs/", "/public//docs/")]
    [InlineData("/public/report%20final.pdf", "/public/report%20final.pdf")]
    [InlineData("/public/v1.", "/public/v1.")]
    [InlineData("/public/a\\b", "/public/a%5Cb")]
    [InlineData("/catalog;v=2/items", "/catalog;v=2/items")]
    [InlineData("//catalog/items", "//catalog/items")]
    [InlineData("/deployments/v1", "/deployments/v1")]
    [InlineData("/%EF%BD%84eploy/v1/releases", "/%EF%BD%84eploy/v1/releases")] // fullwidth 'd': no common upstream folds it
    public async Task PassthroughRoute_PathThatStaysOnItsRoute_ForwardedAsReceived(string target, string forwarded)
    {
        var traceId = ActivityTraceId.CreateRandom().ToHexString();

        var (status, _) = await RawHttp.SendAsync(_gateway.ProxyAddress, Head(target, traceId), Encoding.UTF8.GetBytes(GrantHelpers.ReleaseBody));

        Assert.Equal(200, status);
        Assert.Equal(forwarded, Assert.Single(_gateway.Upstream.Received).Path);
    }

    // Routing ignores case, so /DEPLOY is the protected route, whose checks run (and whose hash binds the path as sent).
    [Theory]
    [InlineData("/DEPLOY/v1/releases")]
    [InlineData("/Deploy/v1/releases")]
    [InlineData("/%64eploy/v1/releases")] // Kestrel decodes the escape before routing
    public async Task ProtectedRoute_OtherCaseOrEscapedLetter_IsTheProtectedRoute(string target)
    {
        var (status, content) = await RawHttp.SendAsync(_gateway.ProxyAddress, Head(target, ActivityTraceId.CreateRandom().ToHexString()),
            Encoding.UTF8.GetBytes(GrantHelpers.ReleaseBody));

        Assert.Equal(401, status);
        Assert.Contains("\"reason\":\"token_missing\"", content, StringComparison.Ordinal);
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    // A grant for such a path could never be used: the API refuses to issue it, and a grant bound to it by requestHash
    // is refused at use with nothing spent.
    [Theory]
    [InlineData("/deploy/v1/..;/..;/public/x")]
    [InlineData("/deploy/v1/..%5C..%5Cpublic")]
    public async Task GrantForAPathAnUpstreamReadsAsAnotherRoute_RefusedByTheApiAndAtUse(string path)
    {
        var token = _gateway.Idp.Token();
        using (var refused = await _gateway.PostGrantAsync(GrantHelpers.DeployGrant(token, path: path)))
        {
            Assert.Equal(System.Net.HttpStatusCode.BadRequest, refused.StatusCode);
            Assert.Contains("read as a dot segment", (await refused.ProblemAsync()).GetProperty("detail").GetString(), StringComparison.Ordinal);
        }

        var body = Encoding.UTF8.GetBytes(GrantHelpers.ReleaseBody);
        var grant = GrantHelpers.DeployGrant(token);
        grant.Remove("request");
        grant["requestHash"] = Requests.CanonicalRequest.Compute("POST", path, string.Empty, ["content-type"],
            n => n == "content-type" ? new Microsoft.Extensions.Primitives.StringValues("application/json") : default, body).Hash;
        var id = await _gateway.CreateGrantAsync(grant);
        var head = $"POST {path} HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {token}\r\nWorkload-Identity: {_gateway.WorkloadIssuer.Svid()}\r\n"
            + $"Assurance-Id: {id}\r\nContent-Type: application/json\r\nContent-Length: {body.Length}\r\nConnection: close\r\n";

        var (status, content) = await RawHttp.SendAsync(_gateway.ProxyAddress, head, body);

        Assert.Equal(400, status);
        Assert.Contains("\"reason\":\"request_ambiguous\"", content, StringComparison.Ordinal);
        Assert.Equal(0, _gateway.Upstream.Count);
        Assert.Equal(1, (await _gateway.GetGrantAsync(id)).GetProperty("usesRemaining").GetInt32());
    }

    // A route constraint counts: "5;x=1" is no int, so the gateway routed /items/5;x=1 to the catch-all, while Tomcat
    // reads /items/5, the protected route's path.
    [Fact]
    public async Task CatchAllPassthrough_PathParameterDefeatingARouteConstraint_RefusedNothingForwarded()
    {
        await using var gateway = await GatewayHarness.StartAsync(configure: c =>
        {
            var routes = c["ReverseProxy"]!["Routes"]!.AsObject();
            routes["items"] = TestConfig.Route("/items/{id:int}", "token-only");
            routes["rest"] = TestConfig.Route("/{**catch-all}", "passthrough");
        });

        var (status, content) = await RawHttp.SendAsync(gateway.ProxyAddress,
            "DELETE /items/5;x=1 HTTP/1.1\r\nHost: gateway\r\nContent-Length: 0\r\nConnection: close\r\n", ReadOnlyMemory<byte>.Empty);

        Assert.Equal(0, gateway.Upstream.Count);
        Assert.Equal(400, status);
        Assert.Contains("\"reason\":\"request_ambiguous\"", content, StringComparison.Ordinal);

        var (other, _) = await RawHttp.SendAsync(gateway.ProxyAddress,
            "DELETE /items/five;x=1 HTTP/1.1\r\nHost: gateway\r\nContent-Length: 0\r\nConnection: close\r\n", ReadOnlyMemory<byte>.Empty);

        Assert.Equal(200, other);
        Assert.Equal("/items/five;x=1", Assert.Single(gateway.Upstream.Received).Path);
    }
}
