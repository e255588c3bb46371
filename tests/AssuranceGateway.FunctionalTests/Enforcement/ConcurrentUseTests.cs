using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using AssuranceGateway.Testing;
using static AssuranceGateway.Testing.GrantHelpers;

namespace AssuranceGateway.FunctionalTests.Enforcement;

/// <summary>Concurrent lifecycles through the real gateway and API, with the in-process store and with Redis.</summary>
public abstract class ConcurrentUseTests : IAsyncLifetime
{
    private const string ToolCall = """{"tool":"kubectl","args":["rollout","restart","deploy/api"]}""";
    private RedisServer? _redis;

    protected abstract bool UseRedis { get; }

    protected string? Connection => _redis is null ? null : $"127.0.0.1:{_redis.Port}";

    public async Task InitializeAsync()
    {
        if (UseRedis)
        {
            _redis = await RedisServer.StartAsync();
        }
    }

    public async Task DisposeAsync()
    {
        if (_redis is not null)
        {
            await _redis.DisposeAsync();
        }
    }

    private static void Configure(JsonObject c)
    {
        GenerousStoreDeadline(c);
        var policies = c["Assurance"]!["Policies"]!.AsObject();
        policies["agent-approval"]!["MaxPendingPerSubject"] = 3;
        policies["agent-approval"]!["Approvals"] = 2;
    }

    /// <summary>
    /// A burst on a loaded CI machine can hold one Redis call past the tests' 250 ms: then a 503 (unknown outcome) and
    /// not the counts these tests are about. The deadline itself is judged elsewhere (StoreReadinessTests, resilience).
    /// </summary>
    private static void GenerousStoreDeadline(JsonObject c) => c["Assurance"]!["Store"]!["Timeout"] = "00:00:02";

    private static HttpRequestMessage AgentCall(GatewayHarness g, string token, string? grantId)
    {
        var request = GatewayHarness.Request(HttpMethod.Post, "/agent/tools/exec", token, out _);
        request.Content = new StringContent(ToolCall, Encoding.UTF8);
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        request.Headers.TryAddWithoutValidation("Workload-Identity", g.WorkloadIssuer.Svid("spiffe://prod.test/ns/agents/sa/copilot"));
        if (grantId is not null)
        {
            request.Headers.TryAddWithoutValidation("Assurance-Id", grantId);
        }

        return request;
    }

    private static async Task<HttpResponseMessage> ApiAsync(GatewayHarness g, HttpMethod method, string path, string token)
    {
        using var request = new HttpRequestMessage(method, path);
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        return await g.Api.SendAsync(request);
    }

    [Fact]
    public async Task Challenge_ConcurrentIdenticalRequests_PendingLimitQuorumAndListStayConsistent()
    {
        await using var g = await GatewayHarness.StartAsync(Configure, redis: Connection);
        var agent = g.Idp.Token("alice", acr: "urn:aal1", sid: "agent-session-7");

        var challenged = await Task.WhenAll(Enumerable.Range(0, 20).Select(async _ =>
        {
            using var response = await g.Proxy.SendAsync(AgentCall(g, agent, null));
            var problem = await response.ProblemAsync();
            return (response.StatusCode, Reason: problem.GetProperty("reason").GetString(),
                Id: problem.TryGetProperty("grantId", out var id) ? id.GetString() : null);
        }));
        Assert.Equal(3, challenged.Count(c => c.Reason == "assurance_required"));
        Assert.Equal(17, challenged.Count(c => c.StatusCode == HttpStatusCode.TooManyRequests && c.Reason == "too_many_pending"));
        var ids = challenged.Where(c => c.Id is not null).Select(c => c.Id!).ToList();
        Assert.Equal(3, ids.Distinct().Count());

        using (var list = await ApiAsync(g, HttpMethod.Get, "/assurance/v1/grants?status=pending", g.Idp.ApiToken("bob")))
        {
            var listed = (await list.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("grants").EnumerateArray().Select(e => e.GetProperty("id").GetString()).ToHashSet();
            Assert.True(ids.ToHashSet().SetEquals(listed!));
        }

        // Approvers 4 distinct (each twice, concurrently) on the first, deny racing an approval on the second.
        var approvals = await Task.WhenAll(Enumerable.Range(0, 8).Select(async i =>
        {
            using var r = await ApiAsync(g, HttpMethod.Post, $"/assurance/v1/grants/{ids[0]}/approve", g.Idp.ApiToken("lead-" + (i % 4)));
            return r.StatusCode;
        }));
        var first = await g.GetGrantAsync(ids[0]);
        Assert.Equal("active", first.GetProperty("status").GetString());
        Assert.Equal(2, first.GetProperty("approvers").GetArrayLength());
        Assert.Equal(2, first.GetProperty("events").EnumerateArray().Count(e => e.GetProperty("type").GetString() == "approved"));

        var approve = ApiAsync(g, HttpMethod.Post, $"/assurance/v1/grants/{ids[1]}/approve", g.Idp.ApiToken("lead-1"));
        var deny = ApiAsync(g, HttpMethod.Post, $"/assurance/v1/grants/{ids[1]}/deny", g.Idp.ApiToken("lead-2"));
        using (var a = await approve)
        using (var d = await deny)
        {
            var second = await g.GetGrantAsync(ids[1]);
            Assert.Equal("revoked", second.GetProperty("status").GetString());
        }

        // One slot was freed by activation and one by denial: exactly two new challenges are accepted.
        var more = await Task.WhenAll(Enumerable.Range(0, 6).Select(async _ =>
        {
            using var response = await g.Proxy.SendAsync(AgentCall(g, agent, null));
            return await response.ReasonAsync();
        }));
        Assert.Equal(2, more.Count(r => r == "assurance_required"));

        // The active grant: many concurrent uses, exactly one forwarded, one used event.
        var uses = await Task.WhenAll(Enumerable.Range(0, 20).Select(async _ =>
        {
            using var response = await g.Proxy.SendAsync(AgentCall(g, agent, ids[0]));
            return response.StatusCode;
        }));
        Assert.Equal(1, uses.Count(s => s == HttpStatusCode.OK));
        Assert.Equal(1, g.Upstream.Count);
        var used = await g.GetGrantAsync(ids[0]);
        Assert.Single(used.GetProperty("events").EnumerateArray(), e => e.GetProperty("type").GetString() == "used");
        var ats = used.GetProperty("events").EnumerateArray().Select(e => e.GetProperty("at").GetDateTimeOffset()).ToList();
        Assert.Equal(ats.OrderBy(a => a), ats);
    }

    [Fact]
    public async Task MaxUses3_ConcurrentUsesTwoGatewaysOrOne_ExactlyThreeForwardedAndRecorded()
    {
        await using var a = await GatewayHarness.StartAsync(GenerousStoreDeadline, redis: Connection);
        GatewayHarness? b = null;
        if (UseRedis)
        {
            b = await GatewayHarness.CreateAsync();
            var config = JsonNode.Parse(await File.ReadAllTextAsync(a.ConfigPath))!.AsObject();
            await b.StartWithAsync(config);
        }

        try
        {
            var token = a.Idp.Token();
            var svid = a.WorkloadIssuer.Svid();
            var id = await a.CreateGrantAsync(DeployGrant(token, maxUses: 3));
            var revokeAt = 0;
            var responses = await Task.WhenAll(Enumerable.Range(0, 60).Select(async i =>
            {
                using var request = DeployRequest(token, svid, id, out var trace);
                using var response = await ((i % 2 == 0 || b is null) ? a.Proxy : b.Proxy).SendAsync(request);
                return (response.StatusCode, trace);
            }));
            Assert.Equal(3, responses.Count(r => r.StatusCode == HttpStatusCode.OK));
            Assert.Equal(3, a.Upstream.Count + (b?.Upstream.Count ?? 0));
            var record = await a.GetGrantAsync(id);
            var usedEvents = record.GetProperty("events").EnumerateArray().Where(e => e.GetProperty("type").GetString() == "used").ToList();
            Assert.Equal(3, usedEvents.Count);
            var okTraces = responses.Where(r => r.StatusCode == HttpStatusCode.OK).Select(r => r.trace).ToHashSet();
            Assert.True(okTraces.SetEquals(usedEvents.Select(e => e.GetProperty("traceId").GetString()!)));
            _ = revokeAt;
        }
        finally
        {
            if (b is not null)
            {
                await b.DisposeAsync();
            }
        }
    }
}

public sealed class InMemoryConcurrentUseTests : ConcurrentUseTests
{
    protected override bool UseRedis => false;
}

public sealed class RedisConcurrentUseTests : ConcurrentUseTests
{
    protected override bool UseRedis => true;
}
