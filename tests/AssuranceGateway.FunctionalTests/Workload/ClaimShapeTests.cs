using System.Net;
using System.Text.Json.Nodes;
using AssuranceGateway.Testing;
using static AssuranceGateway.Testing.GrantHelpers;

namespace AssuranceGateway.FunctionalTests.Workload;

/// <summary>
/// Claims that are not plain strings (JSON arrays, booleans), read by RequireClaims (SPEC §2 step 3) and by the
/// <c>claim</c> workload source: an array holds each of its strings, a boolean reads "true" or "false". (IdentityModel
/// gives an array as its JSON text and a boolean as "True" when asked for a string, which the gateway once used.)
/// </summary>
public sealed class ClaimShapeTests
{
    private static Task<GatewayHarness> StartAsync(JsonObject requireClaims, params string[] sources) => GatewayHarness.StartAsync(configure: c =>
    {
        c["ReverseProxy"]!["Routes"]!.AsObject()["prod"] = TestConfig.Route("/prod/{**rest}", "prod-workload");
        c["Assurance"]!["Policies"]!.AsObject()["prod-workload"] = new JsonObject
        {
            ["Bind"] = new JsonArray("workload"),
            ["RequiresGrant"] = false,
            ["RequireClaims"] = requireClaims,
        };
        if (sources.Length > 0)
        {
            c["Assurance"]!["Workload"]!["Sources"] = new JsonArray([.. sources.Select(s => (JsonNode)s)]);
        }
    });

    [Theory]
    [InlineData("prod")]
    [InlineData("dev,prod")]
    public async Task RequireClaims_WorkloadJwtArrayClaimHoldingTheRequiredValue_Forwarded(string environmentList)
    {
        var environments = environmentList.Split(',');
        // RequireClaims { environment: [prod] }: a JWT-SVID whose environment claim is a JSON array holding "prod".
        await using var gateway = await StartAsync(new JsonObject { ["environment"] = new JsonArray("prod") }, "header");
        using var request = GatewayHarness.Request(HttpMethod.Post, "/prod/deploy", gateway.Idp.Token(), out _);
        request.Headers.TryAddWithoutValidation("Workload-Identity", gateway.WorkloadIssuer.Svid(Deployer,
            edit: c => c["environment"] = new JsonArray([.. environments.Select(e => (JsonNode)e)])));

        using var response = await gateway.Proxy.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(1, gateway.Upstream.Count);
    }

    [Fact]
    public async Task RequireClaims_AccessTokenGroupsArrayHoldingTheRequiredValue_Forwarded()
    {
        // No workload token (claim source): RequireClaims read the access token, whose groups claim is an array, as IdPs issue it.
        await using var gateway = await StartAsync(new JsonObject { ["groups"] = "release-managers" }, "claim");
        var token = gateway.Idp.Token(edit: c =>
        {
            c["azp"] = Deployer;
            c["groups"] = new JsonArray("staff", "release-managers");
        });
        using var request = GatewayHarness.Request(HttpMethod.Post, "/prod/deploy", token, out _);

        using var response = await gateway.Proxy.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(1, gateway.Upstream.Count);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task RequireClaims_BooleanClaimRequiredAsTrue_Forwarded(bool jsonBoolean)
    {
        // "true" is what the same key gets from an environment override (Assurance__Policies__prod-workload__RequireClaims__
        // email_verified=true) or a JSON string, and a JSON true in the file reaches the configuration as "True"; the token
        // carries the JSON boolean true, which ClaimReader once spelt "True".
        await using var gateway = await StartAsync(new JsonObject { ["email_verified"] = jsonBoolean ? JsonValue.Create(true) : "true" }, "header");
        using var request = GatewayHarness.Request(HttpMethod.Post, "/prod/deploy", gateway.Idp.Token(), out _);
        request.Headers.TryAddWithoutValidation("Workload-Identity", gateway.WorkloadIssuer.Svid(Deployer, edit: c => c["email_verified"] = true));

        using var response = await gateway.Proxy.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(1, gateway.Upstream.Count);
    }

    // The configuration cannot tell a JSON true (read as "True") from the string "True": a string claim "True" (what
    // issuers built on .NET's bool.ToString write) still matches a required "True".
    [Fact]
    public async Task RequireClaims_StringClaimTrueRequiredAsTheStringTrue_Forwarded()
    {
        await using var gateway = await StartAsync(new JsonObject { ["change_approved"] = "True" }, "header");
        using var request = GatewayHarness.Request(HttpMethod.Post, "/prod/deploy", gateway.Idp.Token(), out _);
        request.Headers.TryAddWithoutValidation("Workload-Identity", gateway.WorkloadIssuer.Svid(Deployer, edit: c => c["change_approved"] = "True"));

        using var response = await gateway.Proxy.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(1, gateway.Upstream.Count);
    }

    [Fact]
    public async Task ClaimSource_ClaimNamingTwoWorkloads_WorkloadInvalidNothingForwarded()
    {
        // A claim that is not one string is present but invalid (SPEC §2 step 3): an array naming two workloads once
        // became one workload, its JSON text.
        await using var gateway = await GatewayHarness.StartAsync(configure: c =>
        {
            c["ReverseProxy"]!["Routes"]!.AsObject()["prod"] = TestConfig.Route("/prod/{**rest}", "workload-only");
            c["Assurance"]!["Policies"]!.AsObject()["workload-only"] = new JsonObject { ["Bind"] = new JsonArray("workload"), ["RequiresGrant"] = false };
            c["Assurance"]!["Workload"]!["Sources"] = new JsonArray("claim");
            c["Assurance"]!["Workload"]!["Claim"] = "workload";
        });
        var token = gateway.Idp.Token(edit: c => c["workload"] = new JsonArray(Deployer, OtherWorkload));
        using var request = GatewayHarness.Request(HttpMethod.Post, "/prod/deploy", token, out _);

        using var response = await gateway.Proxy.SendAsync(request);

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("workload_invalid", await response.ReasonAsync());
        Assert.Equal(0, gateway.Upstream.Count);
    }
}
