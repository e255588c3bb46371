using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using AssuranceGateway.Testing;
using static AssuranceGateway.Testing.GrantHelpers;

namespace AssuranceGateway.FunctionalTests.Workload;

/// <summary>The header workload source from the attacker's side: what a JWT-SVID may and may not claim to be.</summary>
public sealed class JwtSvidWorkloadTests
{
    [Fact]
    public async Task JwtSvid_AnotherTrustDomainsIssuerNamingAProdWorkload_WorkloadInvalid()
    {
        // Two trust domains are trusted; the staging signer asserts a prod.test identity.
        var harness = await GatewayHarness.CreateAsync();
        await using var gateway = harness;
        using var staging = new TestIssuer("spiffe://staging.test", harness.Directory, "s1");
        var config = harness.DefaultConfig();
        config["Assurance"]!["Workload"]!["Sources"] = new JsonArray("header");
        config["Assurance"]!["Workload"]!["Issuers"]!.AsArray().Add(new JsonObject { ["Issuer"] = staging.Issuer, ["JwksFile"] = staging.JwksPath });
        await harness.StartWithAsync(config);
        var token = gateway.Idp.Token();
        var id = await gateway.CreateGrantAsync(DeployGrant(token, workload: Deployer));

        using var response = await gateway.Proxy.SendAsync(DeployRequest(token, staging.Svid(Deployer), id, out _));

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("workload_invalid", await response.ReasonAsync());
        Assert.Equal(0, gateway.Upstream.Count);

        // Its own trust domain's identities it may assert.
        var own = await gateway.CreateGrantAsync(DeployGrant(token, workload: "spiffe://staging.test/ns/ci/sa/deployer"));
        using var allowed = await gateway.Proxy.SendAsync(DeployRequest(token, staging.Svid("spiffe://staging.test/ns/ci/sa/deployer"), own, out _));
        Assert.Equal(HttpStatusCode.OK, allowed.StatusCode);
    }

    [Theory]
    [InlineData("x509:sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")] // the mtls source's thumbprint identities
    [InlineData("spiffe://prod.test")]                                                             // a trust domain, no workload
    [InlineData("spiffe://prod.test/")]                                                            // the same with a trailing slash
    [InlineData("deployer")]
    public async Task JwtSvid_SubNotASpiffeIdOfItsTrustDomain_WorkloadInvalid(string subject)
    {
        await using var gateway = await GatewayHarness.StartAsync(configure: c => c["Assurance"]!["Workload"]!["Sources"] = new JsonArray("header"));
        var token = gateway.Idp.Token();
        var id = await gateway.CreateGrantAsync(DeployGrant(token, workload: subject));

        using var response = await gateway.Proxy.SendAsync(DeployRequest(token, gateway.WorkloadIssuer.Svid(subject), id, out _));

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("workload_invalid", await response.ReasonAsync());
        Assert.Equal(0, gateway.Upstream.Count);
    }

    [Fact]
    public async Task JwtSvid_TwoWorkloadIdentityHeaderLines_WorkloadInvalidNothingForwarded()
    {
        // Which of two workload JWTs speaks for the caller is not for the gateway to pick: the first line is the deployer's
        // own (the one the grant binds), the second another workload's.
        await using var gateway = await GatewayHarness.StartAsync(configure: c => c["Assurance"]!["Workload"]!["Sources"] = new JsonArray("header"));
        var token = gateway.Idp.Token();
        var id = await gateway.CreateGrantAsync(DeployGrant(token));
        var body = Encoding.UTF8.GetBytes(ReleaseBody);
        var head = $"POST /deploy/v1/releases HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {token}\r\n"
            + $"Workload-Identity: {gateway.WorkloadIssuer.Svid()}\r\nWorkload-Identity: {gateway.WorkloadIssuer.Svid(OtherWorkload)}\r\n"
            + $"Assurance-Id: {id}\r\nContent-Type: application/json\r\nContent-Length: {body.Length}\r\nConnection: close\r\n";

        var (status, content) = await RawHttp.SendAsync(gateway.ProxyAddress, head, body);

        Assert.Equal(401, status);
        Assert.Contains("\"reason\":\"workload_invalid\"", content, StringComparison.Ordinal);
        Assert.Equal(0, gateway.Upstream.Count);
        Assert.Equal(1, (await gateway.GetGrantAsync(id)).GetProperty("usesRemaining").GetInt32());
    }

    [Fact]
    public async Task RequireClaims_WorkloadTokenFromALaterSource_ItsClaimsRuleNotTheAccessTokens()
    {
        // SPEC §2 step 3: claims are matched on the workload token, else the access token. XFCC names the workload first
        // (no token); the workload's own JWT-SVID agrees on the identity but says dev; the access token says prod.
        await using var gateway = await GatewayHarness.StartAsync(configure: c =>
        {
            c["ReverseProxy"]!["Routes"]!.AsObject()["prod"] = TestConfig.Route("/prod/{**rest}", "prod-workload");
            c["Assurance"]!["Policies"]!.AsObject()["prod-workload"] = new JsonObject
            {
                ["Bind"] = new JsonArray("workload"),
                ["RequiresGrant"] = false,
                ["RequireClaims"] = new JsonObject { ["environment"] = new JsonArray("prod") },
            };
            c["Assurance"]!["Workload"]!["Sources"] = new JsonArray("xfcc", "header");
            c["Assurance"]!["Workload"]!["TrustedProxies"] = new JsonArray("127.0.0.1/32");
        });

        using var request = GatewayHarness.Request(HttpMethod.Post, "/prod/deploy", gateway.Idp.Token(edit: c => c["environment"] = "prod"), out _);
        request.Headers.TryAddWithoutValidation("X-Forwarded-Client-Cert", $"By=spiffe://prod.test/ns/edge/sa/envoy;URI={Deployer}");
        request.Headers.TryAddWithoutValidation("Workload-Identity", gateway.WorkloadIssuer.Svid(Deployer, edit: c => c["environment"] = "dev"));
        using var response = await gateway.Proxy.SendAsync(request);

        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        Assert.Equal("claims_mismatch", await response.ReasonAsync());
        Assert.Equal(0, gateway.Upstream.Count);
    }
}
