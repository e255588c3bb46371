using System.Net;
using System.Text.Json.Nodes;
using AssuranceGateway.Testing;
using static AssuranceGateway.Testing.GrantHelpers;

namespace AssuranceGateway.FunctionalTests.Workload;

/// <summary>The xfcc workload source: believed from a trusted proxy only, and never silently skipped when malformed.</summary>
public sealed class XfccWorkloadTests
{
    private static Task<GatewayHarness> StartAsync(bool loopbackTrusted) => GatewayHarness.StartAsync(configure: c =>
    {
        c["Assurance"]!["Workload"]!["Sources"] = new JsonArray("xfcc", "claim");
        c["Assurance"]!["Workload"]!["TrustedProxies"] = loopbackTrusted ? new JsonArray("127.0.0.1/32") : new JsonArray();
    });

    private static HttpRequestMessage WithXfcc(HttpRequestMessage request, string xfcc)
    {
        request.Headers.TryAddWithoutValidation("X-Forwarded-Client-Cert", xfcc);
        return request;
    }

    [Fact]
    public async Task FromTrustedProxy_LastElementsUriIdentifiesTheWorkload()
    {
        await using var gateway = await StartAsync(loopbackTrusted: true);
        var token = gateway.Idp.Token();
        var id = await gateway.CreateGrantAsync(DeployGrant(token));

        // The client's own (forged) element comes first; the proxy next to us appended the real one last.
        using var response = await gateway.Proxy.SendAsync(WithXfcc(DeployRequest(token, null, id, out var trace),
            $"URI=spiffe://prod.test/ns/dev/sa/intruder,By=spiffe://prod.test/ns/edge/sa/envoy;Hash=ab12;URI={Deployer}"));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("xfcc", Assert.Single(gateway.Spans.Enforce(trace)).GetTagItem("assurance.workload.source"));
        Assert.Equal(1, gateway.Upstream.Count);
    }

    [Fact]
    public async Task FromUntrustedPeer_WorkloadInvalidNothingForwarded()
    {
        await using var gateway = await StartAsync(loopbackTrusted: false);
        var token = gateway.Idp.Token();
        var id = await gateway.CreateGrantAsync(DeployGrant(token));

        using var response = await gateway.Proxy.SendAsync(WithXfcc(DeployRequest(token, null, id, out _), $"URI={Deployer}"));

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("workload_invalid", await response.ReasonAsync());
        Assert.Equal(0, gateway.Upstream.Count);
    }

    /// <summary>
    /// CGI, WSGI, PHP-FPM and Rack upstreams read "X_Forwarded_Client_Cert" as X-Forwarded-Client-Cert: the alias would
    /// carry a forged certificate (or workload JWT, grant id, evidence) past the gateway's removal of the real names, on
    /// any route, protected or not.
    /// </summary>
    [Theory]
    [InlineData("/public/x", "X_Forwarded_Client_Cert")]
    [InlineData("/public/x", "x_forwarded-client_cert")]
    [InlineData("/status", "X_Forwarded_Client_Cert")]
    [InlineData("/status", "Workload_Identity")]
    [InlineData("/status", "Assurance_Evidence")]
    [InlineData("/public/x", "X_Forwarded_For")]
    public async Task HeaderSpeltWithUnderscores_NeverReachesTheUpstream(string path, string name)
    {
        await using var gateway = await StartAsync(loopbackTrusted: false);
        using var request = GatewayHarness.Request(HttpMethod.Get, path, path == "/status" ? gateway.Idp.Token() : null, out _);
        request.Headers.TryAddWithoutValidation(name, $"By=spiffe://prod.test/ns/edge/sa/envoy;URI={Deployer}");
        request.Headers.TryAddWithoutValidation("X_Tenant", "blue"); // an underscore header of the application's own

        using var response = await gateway.Proxy.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var received = Assert.Single(gateway.Upstream.Received);
        Assert.DoesNotContain(received.Headers.Keys, k => k.Equals(name, StringComparison.OrdinalIgnoreCase));
        Assert.Equal("blue", received.Headers["X_Tenant"]);
    }

    [Fact]
    public async Task MalformedFromTrustedProxy_WorkloadInvalidEvenThoughTheClaimSourceWouldIdentify()
    {
        await using var gateway = await StartAsync(loopbackTrusted: true);
        var token = gateway.Idp.Token(edit: c => c["azp"] = Deployer);
        var id = await gateway.CreateGrantAsync(DeployGrant(token));

        using var response = await gateway.Proxy.SendAsync(WithXfcc(DeployRequest(token, null, id, out _), "Hash=\"unterminated;URI=x"));

        Assert.Equal("workload_invalid", await response.ReasonAsync());
        Assert.Equal(0, gateway.Upstream.Count);
    }
}
