using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using AssuranceGateway.Testing;
using static AssuranceGateway.Testing.GrantHelpers;

namespace AssuranceGateway.FunctionalTests.Workload;

/// <summary>
/// Origin and workload bindings of a grant, from the attacker's side: an origin the issuer wrote must bind exactly
/// the network the issuer meant, and a binding the API accepts must be one the gateway can match.
/// Loopback plays the trusted proxy; X-Forwarded-For names the client.
/// </summary>
public sealed class OriginBindingTests
{
    private static Task<GatewayHarness> StartAsync(string trustedProxy = "127.0.0.1/32") => GatewayHarness.StartAsync(configure: c =>
    {
        var routes = c["ReverseProxy"]!["Routes"]!.AsObject();
        routes["backup"] = TestConfig.Route("/backup/{**rest}", "origin-bound");
        var policies = c["Assurance"]!["Policies"]!.AsObject();
        policies["origin-bound"] = new JsonObject
        {
            ["Bind"] = new JsonArray("subject", "origin", "request"),
            ["RevokeOn"] = new JsonArray("origin_mismatch", "workload_mismatch"),
        };
        routes["subject"] = TestConfig.Route("/subject/{**rest}", "subject-bound");
        policies["subject-bound"] = new JsonObject { ["Bind"] = new JsonArray("subject") };
        c["Assurance"]!["Workload"]!["TrustedProxies"] = new JsonArray(trustedProxy);
    });

    private static JsonObject BackupGrant(params string[] origins) => new()
    {
        ["route"] = "backup",
        ["subject"] = "alice",
        ["origin"] = new JsonArray([.. origins.Select(o => (JsonNode)o)]),
        ["request"] = new JsonObject { ["method"] = "POST", ["path"] = "/backup/run" },
        ["maxUses"] = 1,
    };

    private static HttpRequestMessage Backup(string token, string id, string forwardedFor, string? svid = null)
    {
        var request = GatewayHarness.Request(HttpMethod.Post, "/backup/run", token, out _);
        request.Headers.TryAddWithoutValidation("Assurance-Id", id);
        request.Headers.TryAddWithoutValidation("X-Forwarded-For", forwardedFor);
        if (svid is not null)
        {
            request.Headers.TryAddWithoutValidation("Workload-Identity", svid);
        }

        return request;
    }

    /// <summary>
    /// IPAddress.TryParse reads IPv4 as inet_aton does (octal, hex, short forms) and IPNetwork drops host bits: an
    /// approver who writes "010.001.0.0/16" from a zero-padded inventory would bind 8.1.0.0/16. Refused, as in
    /// TrustedProxies, with what was wrong.
    /// </summary>
    [Theory]
    [InlineData("010.001.0.0/16", "not an IP address")]  // octal: 8.1.0.0/16
    [InlineData("010.001.002.003", "not an IP address")] // octal: 8.1.2.3/32
    [InlineData("10.1/16", "not an IP address")]         // short form: 10.0.0.1
    [InlineData("0x0a.1.2.3", "not an IP address")]      // hex
    [InlineData("167838211", "not an IP address")]       // one number: 10.1.2.3
    [InlineData("::ffff:010.1.2.3", "not an IP address")] // octal inside IPv6
    [InlineData("fe80::1%2", "not an IP address")]       // a zone id is an interface, not a network
    [InlineData("10.1.2.3/16", "write 10.1.0.0/16")]     // host bits: one host would become 65,536
    [InlineData("::ffff:10.1.0.0/64", "IPv4-mapped")]    // wider than the IPv4 space
    public async Task CreateGrant_AmbiguousOriginSpelling_RefusedWithTheReason(string origin, string detail)
    {
        await using var gateway = await StartAsync();

        using var response = await gateway.PostGrantAsync(BackupGrant(origin));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains(detail, (await response.ProblemAsync()).GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    /// <summary>
    /// "::ffff:10.1.0.0/112" is the IPv4-mapped spelling of 10.1.0.0/16. Client addresses are compared as IPv4, so the
    /// range is stored as the IPv4 range it means: before, it was accepted and never matched, and with origin_mismatch
    /// in RevokeOn the rightful client's first attempt burned the grant.
    /// </summary>
    [Fact]
    public async Task Use_OriginAsIpv4MappedRange_MatchesTheIpv4Client()
    {
        await using var gateway = await StartAsync();
        var token = gateway.Idp.Token();
        var id = await gateway.CreateGrantAsync(BackupGrant("::ffff:10.1.0.0/112"));
        Assert.Equal("10.1.0.0/16", (await gateway.GetGrantAsync(id)).GetProperty("origin")[0].GetString());

        using var response = await gateway.Proxy.SendAsync(Backup(token, id, "10.1.2.3"));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(1, gateway.Upstream.Count);
    }

    /// <summary>
    /// TrustedProxies "::ffff:127.0.0.1" was accepted, but peers are compared as IPv4, so the proxy was never trusted and
    /// every client appeared as the proxy itself. It now means 127.0.0.1/32.
    /// </summary>
    [Fact]
    public async Task TrustedProxyWrittenIpv4Mapped_TrustsThatProxy()
    {
        await using var gateway = await StartAsync(trustedProxy: "::ffff:127.0.0.1");
        var token = gateway.Idp.Token();
        var id = await gateway.CreateGrantAsync(BackupGrant("10.1.0.0/16"));

        using var response = await gateway.Proxy.SendAsync(Backup(token, id, "10.1.2.3"));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(1, gateway.Upstream.Count);
    }

    /// <summary>
    /// The gateway resolves the workload and hashes the request only on routes whose policy binds them (step 3, before
    /// the grant is read). A grant carrying either on another route could never be used, and with workload_mismatch in
    /// RevokeOn the right workload burned it on its first attempt: the API refuses it and says why.
    /// </summary>
    [Fact]
    public async Task CreateGrant_WorkloadOnPolicyWithoutWorkloadBinding_Refused()
    {
        await using var gateway = await StartAsync();
        var grant = BackupGrant("10.1.0.0/16");
        grant["workload"] = Deployer;

        using var response = await gateway.PostGrantAsync(grant);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("workload: policy 'origin-bound' of route 'backup' does not bind workload, so the gateway never checks it on this route",
            (await response.ProblemAsync()).GetProperty("detail").GetString());
    }

    [Theory]
    [InlineData("request")]
    [InlineData("requestHash")]
    public async Task CreateGrant_RequestOnPolicyWithoutRequestBinding_Refused(string field)
    {
        await using var gateway = await StartAsync();
        var grant = new JsonObject { ["route"] = "subject", ["subject"] = "alice" };
        grant[field] = field == "request"
            ? new JsonObject { ["method"] = "POST", ["path"] = "/subject/run" }
            : "sha256:" + new string('A', 43);

        using var response = await gateway.PostGrantAsync(grant);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains("does not bind request", (await response.ProblemAsync()).GetProperty("detail").GetString(), StringComparison.Ordinal);
    }
}
