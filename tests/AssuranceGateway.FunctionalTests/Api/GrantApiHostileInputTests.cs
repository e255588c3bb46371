using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using AssuranceGateway.Testing;
using static AssuranceGateway.Testing.GrantHelpers;

namespace AssuranceGateway.FunctionalTests.Api;

/// <summary>The assurance API against hostile input and lifetimes, from the caller's side.</summary>
public sealed class GrantApiHostileInputTests : IAsyncLifetime
{
    private GatewayHarness _gateway = null!;

    public async Task InitializeAsync() => _gateway = await GatewayHarness.StartAsync();

    public async Task DisposeAsync() => await _gateway.DisposeAsync();

    [Fact]
    public async Task Create_BrokenChunkedFraming_400IsProblemJson()
    {
        // Every error of the API is problem+json (SPEC §5): a body Kestrel cannot de-chunk is a 400 like any other.
        var head = "POST /assurance/v1/grants HTTP/1.1\r\nHost: api\r\n"
            + $"Authorization: Bearer {_gateway.Idp.ApiToken()}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n";

        var (status, content) = await RawHttp.SendAsync(_gateway.ApiAddress, head, Encoding.ASCII.GetBytes("5\r\n{\"rou\r\nZZ\r\nxx\r\n0\r\n\r\n"));

        Assert.Equal(400, status);
        Assert.Contains("\"reason\":\"invalid_request\"", content, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Create_DuplicateMember_400NotLastOneWins()
    {
        // Ambiguous JSON: a ticketing system or approval UI that reads the first "subject" shows alice, the gateway
        // stores the last one. A security API should refuse duplicates, not pick one.
        var json = DeployGrant(_gateway.Idp.Token()).ToJsonString()
            .Replace("\"subject\":\"alice\"", "\"subject\":\"alice\",\"subject\":\"mallory\"", StringComparison.Ordinal);
        using var request = new HttpRequestMessage(HttpMethod.Post, "/assurance/v1/grants") { Content = new StringContent(json, Encoding.UTF8, "application/json") };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _gateway.Idp.ApiToken());

        using var response = await _gateway.Api.SendAsync(request);

        var stored = response.StatusCode == HttpStatusCode.Created
            ? (await _gateway.GetGrantAsync((await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("id").GetString()!)).GetProperty("subject").GetString()
            : null;
        Assert.True(response.StatusCode == HttpStatusCode.BadRequest, $"{(int)response.StatusCode}, stored subject '{stored}'");
    }

    [Fact]
    public async Task Challenge_ApprovedGrant_LivesNoLongerThanPolicyMaxTtl()
    {
        // agent-approval: MaxTtl 5 min (default), PendingTtl 15 min (default). MaxTtl is "the upper limit for grants of
        // this policy"; an approved challenge grant must not be usable longer than an API-issued one could be.
        var agentToken = _gateway.Idp.Token("alice", acr: "urn:aal1", sid: "agent-session-7");
        using var call = GatewayHarness.Request(HttpMethod.Post, "/agent/tools/exec", agentToken, out _);
        call.Content = new StringContent("{}", Encoding.UTF8);
        call.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        call.Headers.TryAddWithoutValidation("Workload-Identity", _gateway.WorkloadIssuer.Svid("spiffe://prod.test/ns/agents/sa/copilot"));
        using var challenged = await _gateway.Proxy.SendAsync(call);
        var grantId = (await challenged.ProblemAsync()).GetProperty("grantId").GetString()!;
        using var approve = new HttpRequestMessage(HttpMethod.Post, $"/assurance/v1/grants/{grantId}/approve");
        approve.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _gateway.Idp.ApiToken("bob"));
        using var approved = await _gateway.Api.SendAsync(approve);
        Assert.Equal(HttpStatusCode.OK, approved.StatusCode);
        var approvedAt = DateTimeOffset.UtcNow;

        var grant = await _gateway.GetGrantAsync(grantId);

        Assert.Equal("active", grant.GetProperty("status").GetString());
        var activeFor = grant.GetProperty("expiresAt").GetDateTimeOffset() - approvedAt;
        Assert.True(activeFor <= TimeSpan.FromMinutes(5), $"active grant usable for {activeFor} after approval; policy MaxTtl is 00:05:00");
    }
}
