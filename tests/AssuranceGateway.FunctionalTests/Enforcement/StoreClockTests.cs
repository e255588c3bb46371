using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using AssuranceGateway.Testing;
using Microsoft.Extensions.DependencyInjection;
using static AssuranceGateway.Testing.GrantHelpers;

namespace AssuranceGateway.FunctionalTests.Enforcement;

/// <summary>
/// SPEC §2: a grant's window is the store's, not the issuing gateway's. Two gateways share one real Redis; one runs ten
/// minutes ahead (its host's clock is off). A grant issued through it once lived ten minutes past its ttl, usable through
/// the other gateway long after Redis's clock said it was over.
/// </summary>
public sealed class StoreClockTests : IAsyncLifetime
{
    private static readonly TimeSpan Ahead = TimeSpan.FromMinutes(10);
    private static readonly TimeSpan Slack = TimeSpan.FromSeconds(1);
    private RedisServer _redis = null!;
    private GatewayHarness _fast = null!;
    private GatewayHarness _other = null!;

    public async Task InitializeAsync()
    {
        _redis = await RedisServer.StartAsync();
        _fast = await GatewayHarness.StartAsync(
            c => c["Assurance"]!["Policies"]!["agent-approval"]!["PendingTtl"] = "00:00:02",
            s => s.AddSingleton<TimeProvider>(new SkewedTime(Ahead)),
            redis: _redis.ConnectionString);
        _other = await GatewayHarness.CreateAsync();
        await _other.StartWithAsync(JsonNode.Parse(await File.ReadAllTextAsync(_fast.ConfigPath))!.AsObject());
    }

    public async Task DisposeAsync()
    {
        await _other.DisposeAsync();
        await _fast.DisposeAsync();
        await _redis.DisposeAsync();
    }

    [Fact]
    public async Task GatewayTenMinutesAhead_IssuesGrant_ItExpiresByRedisClockOnAnyGateway()
    {
        var token = _fast.Idp.Token();
        var body = DeployGrant(token);
        body["ttlSeconds"] = 2;
        var before = DateTimeOffset.UtcNow;
        using var created = await _fast.PostGrantAsync(body, FastApiToken());
        var after = DateTimeOffset.UtcNow;
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var reply = await created.Content.ReadFromJsonAsync<JsonElement>();
        var id = reply.GetProperty("id").GetString()!;
        var expiresAt = reply.GetProperty("expiresAt").GetDateTimeOffset();

        // Redis's clock (the host's here) plus the ttl, not the fast gateway's.
        Assert.InRange(expiresAt, before + TimeSpan.FromSeconds(2) - Slack, after + TimeSpan.FromSeconds(2) + Slack);
        Assert.Equal(expiresAt, (await OtherGrantAsync(id)).GetProperty("expiresAt").GetDateTimeOffset());

        await WaitUntilAsync(expiresAt);
        using var late = await _other.Proxy.SendAsync(DeployRequest(token, _fast.WorkloadIssuer.Svid(), id, out _));
        Assert.Equal(HttpStatusCode.Forbidden, late.StatusCode);
        Assert.Equal("grant_expired", await late.ReasonAsync());
        Assert.Equal(0, _fast.Upstream.Count);
    }

    [Fact]
    public async Task GatewayTenMinutesAhead_NotBeforePassed_WindowOpensAtRedisNow()
    {
        // A notBefore already passed opens the window now, by Redis's clock: the grant never has more than its ttl left.
        var token = _fast.Idp.Token();
        var body = DeployGrant(token);
        body["ttlSeconds"] = 2;
        body["notBefore"] = DateTimeOffset.UtcNow.AddSeconds(-30).ToString("O");
        var before = DateTimeOffset.UtcNow;
        using var created = await _fast.PostGrantAsync(body, FastApiToken());
        var after = DateTimeOffset.UtcNow;
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var expiresAt = (await created.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("expiresAt").GetDateTimeOffset();

        Assert.InRange(expiresAt, before + TimeSpan.FromSeconds(2) - Slack, after + TimeSpan.FromSeconds(2) + Slack);
    }

    [Fact]
    public async Task GatewayTenMinutesAhead_NotBeforeItBelievesPassed_WindowIsNotBeforePlusTtl()
    {
        // Five minutes from now is five minutes in the fast gateway's past. The caller chose that instant: the window opens
        // then, by Redis's clock, and lasts the ttl (it once opened at the fast gateway's "now", five minutes too late,
        // and lasted until then).
        var token = _fast.Idp.Token();
        var body = DeployGrant(token);
        var notBefore = DateTimeOffset.FromUnixTimeSeconds(DateTimeOffset.UtcNow.AddMinutes(5).ToUnixTimeSeconds());
        body["ttlSeconds"] = 60;
        body["notBefore"] = notBefore.ToString("O");
        using var created = await _fast.PostGrantAsync(body, FastApiToken());
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var reply = await created.Content.ReadFromJsonAsync<JsonElement>();

        Assert.Equal(notBefore.AddSeconds(60), reply.GetProperty("expiresAt").GetDateTimeOffset());
        using var early = await _other.Proxy.SendAsync(DeployRequest(token, _fast.WorkloadIssuer.Svid(), reply.GetProperty("id").GetString()!, out _));
        Assert.Equal("grant_not_yet_valid", await early.ReasonAsync());
        Assert.Equal(0, _fast.Upstream.Count);
    }

    [Fact]
    public async Task GatewayTenMinutesAhead_ChallengesForApproval_PendingGrantExpiresByRedisClock()
    {
        var agentToken = _fast.Idp.Token("agent-7", edit: Shift);
        var before = DateTimeOffset.UtcNow;
        using var challenged = await _fast.Proxy.SendAsync(AgentCall(agentToken));
        var after = DateTimeOffset.UtcNow;
        var problem = await challenged.ProblemAsync();
        Assert.Equal("assurance_required", problem.GetProperty("reason").GetString());
        var id = problem.GetProperty("grantId").GetString()!;

        var expiresAt = (await OtherGrantAsync(id)).GetProperty("expiresAt").GetDateTimeOffset();
        Assert.InRange(expiresAt, before + TimeSpan.FromSeconds(2) - Slack, after + TimeSpan.FromSeconds(2) + Slack);
        Assert.Contains(id, await PendingIdsAsync(_other, _fast.Idp.ApiToken()));

        await WaitUntilAsync(expiresAt);
        Assert.DoesNotContain(id, await PendingIdsAsync(_other, _fast.Idp.ApiToken()));
        Assert.DoesNotContain(id, await PendingIdsAsync(_fast, FastApiToken()));
        Assert.Equal(0, _fast.Upstream.Count);
    }

    /// <summary>Claims as the fast gateway's clock sees them (it refuses a token issued ten minutes in its past).</summary>
    private static void Shift(JsonObject claims)
    {
        foreach (var name in new[] { "iat", "nbf", "exp" })
        {
            if (claims[name] is { } value)
            {
                claims[name] = value.GetValue<long>() + (long)Ahead.TotalSeconds;
            }
        }
    }

    private string FastApiToken() =>
        _fast.Idp.Token("approver", TestConfig.ApiAudience, "urn:aal2", edit: c =>
        {
            c["scope"] = AllScopes;
            Shift(c);
        });

    private HttpRequestMessage AgentCall(string token)
    {
        var request = GatewayHarness.Request(HttpMethod.Post, "/agent/tools/exec", token, out _);
        request.Content = new StringContent("""{"tool":"kubectl"}""", Encoding.UTF8);
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        request.Headers.TryAddWithoutValidation(
            "Workload-Identity", _fast.WorkloadIssuer.Svid("spiffe://prod.test/ns/agents/sa/copilot", edit: Shift));
        return request;
    }

    private static async Task<List<string>> PendingIdsAsync(GatewayHarness gateway, string apiToken)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, "/assurance/v1/grants?status=pending");
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", apiToken);
        using var response = await gateway.Api.SendAsync(request);
        response.EnsureSuccessStatusCode();
        var list = await response.Content.ReadFromJsonAsync<JsonElement>();
        var items = list.ValueKind == JsonValueKind.Array ? list : list.GetProperty("grants");
        return [.. items.EnumerateArray().Select(g => g.GetProperty("id").GetString()!)];
    }

    /// <summary>The grant as the other gateway's API shows it (its issuers are the fast one's: one configuration).</summary>
    private async Task<JsonElement> OtherGrantAsync(string id)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, $"/assurance/v1/grants/{id}");
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _fast.Idp.ApiToken());
        using var response = await _other.Api.SendAsync(request);
        response.EnsureSuccessStatusCode();
        return (await response.Content.ReadFromJsonAsync<JsonElement>()).Clone();
    }

    private static async Task WaitUntilAsync(DateTimeOffset instant)
    {
        var wait = instant - DateTimeOffset.UtcNow + TimeSpan.FromMilliseconds(300);
        if (wait > TimeSpan.Zero)
        {
            await Task.Delay(wait);
        }
    }
}
