using System.Net;
using System.Text.Json.Nodes;
using AssuranceGateway.Testing;
using static AssuranceGateway.Testing.GrantHelpers;

namespace AssuranceGateway.FunctionalTests.Enforcement;

/// <summary>
/// Two gateways on one Redis that do not run the same configuration at the same moment: a rolling deploy, a ConfigMap
/// that reaches pods seconds apart, a canary. A grant issued through one and presented to the other is decided by the
/// policy in force on the gateway that decides the request, and never by less than what the grant itself carries.
/// </summary>
public sealed class ConfigSkewTests : IAsyncLifetime
{
    private RedisServer _redis = null!;

    public async Task InitializeAsync() => _redis = await RedisServer.StartAsync();

    public async Task DisposeAsync() => await _redis.DisposeAsync();

    /// <summary>Gateway A with <paramref name="editA"/>, gateway B with A's configuration edited by <paramref name="editB"/>.</summary>
    private async Task<(GatewayHarness A, GatewayHarness B)> TwoAsync(Action<JsonObject> editA, Action<JsonObject> editB)
    {
        var a = await GatewayHarness.StartAsync(editA, redis: $"127.0.0.1:{_redis.Port}");
        var config = JsonNode.Parse(await File.ReadAllTextAsync(a.ConfigPath))!.AsObject();
        editB(config);
        var b = await GatewayHarness.CreateAsync();
        await b.StartWithAsync(config);
        return (a, b);
    }

    private static JsonObject Deploy(JsonObject config) => config["Assurance"]!["Policies"]!["single-use-approval"]!.AsObject();

    /// <summary>
    /// The quorum of the deploy policy goes from one approver to two. A replica still on the old configuration issues a
    /// grant with its creator as the only approver (active at once); a replica already on the new one must not let it
    /// through: the insider who could not pass the new four-eyes rule had only to land on the lagging replica's API.
    /// </summary>
    [Fact]
    public async Task Consume_GrantIssuedWithOneApproverWhereTheQuorumIsNowTwo_GrantPendingNothingForwarded()
    {
        var (a, b) = await TwoAsync(c => Deploy(c)["Approvals"] = 1, c => Deploy(c)["Approvals"] = 2);
        await using var disposeA = a;
        await using var disposeB = b;
        var token = a.Idp.Token();
        var id = await a.CreateGrantAsync(DeployGrant(token));

        using var response = await b.Proxy.SendAsync(DeployRequest(token, a.WorkloadIssuer.Svid(), id, out _));

        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        Assert.Equal("grant_pending", await response.ReasonAsync());
        Assert.Equal(0, a.Upstream.Count);
        Assert.Equal(0, b.Upstream.Count);

        // Nothing was spent: the replica whose policy it meets still lets it through, once.
        using var allowed = await a.Proxy.SendAsync(DeployRequest(token, a.WorkloadIssuer.Svid(), id, out _));
        Assert.Equal(HttpStatusCode.OK, allowed.StatusCode);
        Assert.Equal(1, a.Upstream.Count);
    }

    /// <summary>The approvers' strength goes from AAL 2 to AAL 3: a grant an AAL 2 approver issued meanwhile is refused where 3 holds.</summary>
    [Fact]
    public async Task Consume_GrantApprovedBelowTheMinimumApprovalAalNowInForce_GrantPendingNothingForwarded()
    {
        var (a, b) = await TwoAsync(c => Deploy(c)["MinimumApprovalAal"] = 2, c => Deploy(c)["MinimumApprovalAal"] = 3);
        await using var disposeA = a;
        await using var disposeB = b;
        var token = a.Idp.Token();
        var id = await a.CreateGrantAsync(DeployGrant(token), a.Idp.ApiToken(acr: "urn:aal2"));

        using var response = await b.Proxy.SendAsync(DeployRequest(token, a.WorkloadIssuer.Svid(), id, out _));

        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        Assert.Equal("grant_pending", await response.ReasonAsync());
        Assert.Equal(0, a.Upstream.Count);
        var shown = await a.GetGrantAsync(id);
        Assert.Equal("active", shown.GetProperty("status").GetString());
        Assert.Equal(1, shown.GetProperty("usesRemaining").GetInt32());
    }

    /// <summary>
    /// The reverse: a grant issued under token + workload + request, presented where the route's policy binds the token
    /// only. The grant's own bindings still hold (the replica neither identifies the workload nor hashes the request
    /// there, so the grant cannot be used on it at all): fail closed, nothing forwarded, and the grant burned by that
    /// replica's RevokeOn only if that policy says so.
    /// </summary>
    [Fact]
    public async Task Consume_GrantIssuedUnderStrongerBindingsPresentedWhereThePolicyBindsLess_MismatchNothingForwarded()
    {
        var (a, b) = await TwoAsync(_ => { }, c =>
        {
            Deploy(c)["Bind"] = new JsonArray("token");
            Deploy(c)["RevokeOn"] = new JsonArray();
            Deploy(c).Remove("BoundHeaders");
            Deploy(c).Remove("MaxBodyBytes");
        });
        await using var disposeA = a;
        await using var disposeB = b;
        var token = a.Idp.Token();
        var id = await a.CreateGrantAsync(DeployGrant(token));

        using var otherBody = await b.Proxy.SendAsync(DeployRequest(token, a.WorkloadIssuer.Svid(OtherWorkload), id, out _, body: """{"release":"6.6"}"""));
        using var exact = await b.Proxy.SendAsync(DeployRequest(token, a.WorkloadIssuer.Svid(), id, out _));

        Assert.Equal(HttpStatusCode.Forbidden, otherBody.StatusCode);
        Assert.Equal("workload_mismatch", await otherBody.ReasonAsync());
        Assert.Equal(HttpStatusCode.Forbidden, exact.StatusCode);
        Assert.Equal("workload_mismatch", await exact.ReasonAsync());
        Assert.Equal(0, a.Upstream.Count);

        using var home = await a.Proxy.SendAsync(DeployRequest(token, a.WorkloadIssuer.Svid(), id, out _));
        Assert.Equal(HttpStatusCode.OK, home.StatusCode);
        Assert.Equal(1, a.Upstream.Count);
    }

    /// <summary>A route renamed on one replica (same path, new name): a grant names the route it was issued for.</summary>
    [Fact]
    public async Task Consume_RouteRenamedOnTheOtherReplica_RouteMismatchNothingForwarded()
    {
        var (a, b) = await TwoAsync(_ => { }, c =>
        {
            var routes = c["ReverseProxy"]!["Routes"]!.AsObject();
            var deploy = routes["deploy"]!;
            routes.Remove("deploy");
            routes["deploy-v2"] = deploy;
        });
        await using var disposeA = a;
        await using var disposeB = b;
        var token = a.Idp.Token();
        var id = await a.CreateGrantAsync(DeployGrant(token));

        using var response = await b.Proxy.SendAsync(DeployRequest(token, a.WorkloadIssuer.Svid(), id, out _));

        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        Assert.Equal("route_mismatch", await response.ReasonAsync());
        Assert.Equal(0, a.Upstream.Count);
    }
}
