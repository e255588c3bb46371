using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using AssuranceGateway.Testing;
using static AssuranceGateway.Testing.GrantHelpers;

namespace AssuranceGateway.FunctionalTests.Enforcement;

/// <summary>SPEC §5.3 and the policy fields behind the seed stories: challenge, quorum, claims, shadow mode.</summary>
public sealed class ApprovalWorkflowTests : IAsyncLifetime
{
    private const string ToolCall = """{"tool":"kubectl","args":["rollout","restart","deploy/api"]}""";
    private GatewayHarness _gateway = null!;

    public async Task InitializeAsync() => _gateway = await GatewayHarness.StartAsync(configure: c =>
    {
        var routes = c["ReverseProxy"]!["Routes"]!.AsObject();
        routes["breakglass"] = TestConfig.Route("/breakglass/{**rest}", "two-person");
        routes["prod"] = TestConfig.Route("/prod/{**rest}", "prod-workload");
        routes["shadowed"] = TestConfig.Route("/shadowed/{**rest}", "shadow-approval");
        routes["uploads"] = TestConfig.Route("/uploads/{**rest}", "large-upload");
        var policies = c["Assurance"]!["Policies"]!.AsObject();
        policies["agent-approval"]!["MaxPendingPerSubject"] = 3;
        policies["two-person"] = new JsonObject
        {
            ["Bind"] = new JsonArray("subject", "request"),
            ["Approvals"] = 2,
            ["MinimumApprovalAal"] = 2,
        };
        policies["prod-workload"] = new JsonObject
        {
            ["Bind"] = new JsonArray("workload"),
            ["RequiresGrant"] = false,
            ["RequireClaims"] = new JsonObject { ["environment"] = new JsonArray("prod"), ["repository"] = "org/app" },
        };
        policies["large-upload"] = new JsonObject
        {
            ["Bind"] = new JsonArray("token", "request"),
            ["MaxBodyBytes"] = 64 * 1024 * 1024,
        };
        policies["shadow-approval"] = new JsonObject
        {
            ["Bind"] = new JsonArray("token", "workload", "request"),
            ["Mode"] = "shadow",
            ["MaxBodyBytes"] = 64,
            ["BoundHeaders"] = new JsonArray("content-type"),
            ["RevokeOn"] = new JsonArray("workload_mismatch"),
        };
    });

    public async Task DisposeAsync() => await _gateway.DisposeAsync();

    private HttpRequestMessage AgentCall(string token, string? grantId, out string traceId)
    {
        var request = GatewayHarness.Request(HttpMethod.Post, "/agent/tools/exec", token, out traceId);
        request.Content = new StringContent(ToolCall, Encoding.UTF8);
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        request.Headers.TryAddWithoutValidation("Workload-Identity", _gateway.WorkloadIssuer.Svid("spiffe://prod.test/ns/agents/sa/copilot"));
        if (grantId is not null)
        {
            request.Headers.TryAddWithoutValidation("Assurance-Id", grantId);
        }

        return request;
    }

    private async Task<HttpResponseMessage> ApiAsync(HttpMethod method, string path, string token)
    {
        using var request = new HttpRequestMessage(method, path);
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        return await _gateway.Api.SendAsync(request);
    }

    [Fact]
    public async Task ListPending_MoreThanTheLimit_ShowsTheOldestAndSaysTruncated()
    {
        var agentToken = _gateway.Idp.Token("alice", acr: "urn:aal1", sid: "agent-session-7");
        var ids = new List<string>();
        for (var i = 0; i < 3; i++)
        {
            using var challenged = await _gateway.Proxy.SendAsync(AgentCall(agentToken, null, out _));
            ids.Add((await challenged.ProblemAsync()).GetProperty("grantId").GetString()!);
        }

        var bob = _gateway.Idp.ApiToken("bob");
        using var two = await ApiAsync(HttpMethod.Get, "/assurance/v1/grants?status=pending&limit=2", bob);
        var page = await two.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(ids.Take(2), page.GetProperty("grants").EnumerateArray().Select(g => g.GetProperty("id").GetString()));
        Assert.True(page.GetProperty("truncated").GetBoolean());

        using var all = await ApiAsync(HttpMethod.Get, "/assurance/v1/grants?status=pending", bob);
        var whole = await all.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(3, whole.GetProperty("grants").GetArrayLength());
        Assert.False(whole.GetProperty("truncated").GetBoolean());

        foreach (var bad in new[] { "0", "501", "ten", "-1" })
        {
            using var refused = await ApiAsync(HttpMethod.Get, "/assurance/v1/grants?status=pending&limit=" + bad, bob);
            Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
        }
    }

    // The list was one queue for every route, oldest first, at most 500: an approver who owns one route could not see its
    // requests behind other routes' (a burst of challenges elsewhere pushed them past the limit). `route` narrows it; a
    // route the gateway does not have is refused, since an empty list for a misspelt name would read as "nothing waits".
    [Fact]
    public async Task ListPending_ByRoute_OnlyThatRoutesOldestFirst_UnknownRouteRefused()
    {
        var older = await _gateway.CreateGrantAsync(new JsonObject
        {
            ["route"] = "breakglass",
            ["subject"] = "oncall",
            ["request"] = new JsonObject { ["method"] = "POST", ["path"] = "/breakglass/db-7/shell" },
            ["reason"] = "INC-43",
        }, _gateway.Idp.ApiToken("lead-1"));
        var agentToken = _gateway.Idp.Token("carol", acr: "urn:aal1", sid: "agent-session-9");
        var agent = new List<string>();
        for (var i = 0; i < 2; i++)
        {
            using var challenged = await _gateway.Proxy.SendAsync(AgentCall(agentToken, null, out _));
            agent.Add((await challenged.ProblemAsync()).GetProperty("grantId").GetString()!);
        }

        var bob = _gateway.Idp.ApiToken("bob");
        async Task<(string[] Ids, bool Truncated)> ListAsync(string query)
        {
            using var response = await ApiAsync(HttpMethod.Get, "/assurance/v1/grants?status=pending" + query, bob);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            var page = await response.Content.ReadFromJsonAsync<JsonElement>();
            return ([.. page.GetProperty("grants").EnumerateArray().Select(g => g.GetProperty("id").GetString()!)], page.GetProperty("truncated").GetBoolean());
        }

        Assert.Equal(older, (await ListAsync("&limit=1")).Ids.Single()); // all routes: the breakglass grant is the oldest
        Assert.Equal((agent[0], true), ((await ListAsync("&route=agent&limit=1")).Ids.Single(), (await ListAsync("&route=agent&limit=1")).Truncated));
        Assert.Equal(agent, (await ListAsync("&route=agent")).Ids);
        Assert.False((await ListAsync("&route=agent")).Truncated);
        Assert.Equal([older], (await ListAsync("&route=breakglass")).Ids);
        Assert.Empty((await ListAsync("&route=status")).Ids);

        foreach (var bad in new[] { "&route=agnet", "&route=", "&route=agent&route=breakglass" })
        {
            using var refused = await ApiAsync(HttpMethod.Get, "/assurance/v1/grants?status=pending" + bad, bob);
            Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
            Assert.Equal("invalid_request", await refused.ReasonAsync());
        }

        using var misspelt = await ApiAsync(HttpMethod.Get, "/assurance/v1/grants?status=pending&route=agnet", bob);
        Assert.Contains("unknown route 'agnet'", (await misspelt.ProblemAsync()).GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    // The gateway's routes ignore case (a grant may be created for "BreakGlass" on route "breakglass", and is used on
    // it): the list accepted "BREAKGLASS" as a known route and then answered an empty list, as if nothing waited.
    [Fact]
    public async Task ListPending_ByRouteSpeltInAnotherCase_ListsThatRoutesGrants()
    {
        var created = await _gateway.CreateGrantAsync(new JsonObject
        {
            ["route"] = "BreakGlass",
            ["subject"] = "oncall",
            ["request"] = new JsonObject { ["method"] = "POST", ["path"] = "/breakglass/db-7/shell" },
            ["reason"] = "INC-44",
        }, _gateway.Idp.ApiToken("lead-1"));

        foreach (var spelling in new[] { "breakglass", "BREAKGLASS", "BreakGlass" })
        {
            using var response = await ApiAsync(HttpMethod.Get, "/assurance/v1/grants?status=pending&route=" + spelling, _gateway.Idp.ApiToken("bob"));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            var page = await response.Content.ReadFromJsonAsync<JsonElement>();
            Assert.Equal([created], page.GetProperty("grants").EnumerateArray().Select(g => g.GetProperty("id").GetString()!));
        }

        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task AgentToolCall_ChallengedApprovedByHumanThenUsedOnceWithRefreshedToken()
    {
        var agentToken = _gateway.Idp.Token("alice", acr: "urn:aal1", sid: "agent-session-7");

        // 1. The agent calls the tool without an approval: a pending grant is created for exactly this call.
        using var challenged = await _gateway.Proxy.SendAsync(AgentCall(agentToken, null, out _));
        Assert.Equal(HttpStatusCode.Forbidden, challenged.StatusCode);
        var problem = await challenged.ProblemAsync();
        Assert.Equal("assurance_required", problem.GetProperty("reason").GetString());
        Assert.Equal("pending", problem.GetProperty("grantStatus").GetString());
        var grantId = problem.GetProperty("grantId").GetString()!;

        // 2. Used before approval: grant_pending.
        using var early = await _gateway.Proxy.SendAsync(AgentCall(agentToken, grantId, out _));
        Assert.Equal("grant_pending", await early.ReasonAsync());

        // 3. The approver sees what is asked.
        using var listed = await ApiAsync(HttpMethod.Get, "/assurance/v1/grants?status=pending", _gateway.Idp.ApiToken("bob"));
        var pending = (await listed.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("grants").EnumerateArray().Single(g => g.GetProperty("id").GetString() == grantId);
        Assert.Equal("agent", pending.GetProperty("route").GetString());
        Assert.Equal("POST", pending.GetProperty("method").GetString());
        Assert.Equal("/agent/tools/exec", pending.GetProperty("path").GetString());
        Assert.Equal("alice", pending.GetProperty("subject").GetString());
        Assert.Equal("spiffe://prod.test/ns/agents/sa/copilot", pending.GetProperty("workload").GetString());
        Assert.Equal(1, pending.GetProperty("approvalsRemaining").GetInt32());

        // 4. alice cannot approve her own agent's call; a weakly authenticated approver cannot either.
        using var self = await ApiAsync(HttpMethod.Post, $"/assurance/v1/grants/{grantId}/approve", _gateway.Idp.ApiToken("alice"));
        Assert.Equal(HttpStatusCode.Forbidden, self.StatusCode);
        Assert.Equal("self_approval", await self.ReasonAsync());
        using var weak = await ApiAsync(HttpMethod.Post, $"/assurance/v1/grants/{grantId}/approve", _gateway.Idp.ApiToken("bob", acr: "urn:aal1"));
        Assert.Equal(HttpStatusCode.Unauthorized, weak.StatusCode);
        Assert.Equal("insufficient_aal", await weak.ReasonAsync());

        // 5. bob, strongly authenticated, approves.
        using var approved = await ApiAsync(HttpMethod.Post, $"/assurance/v1/grants/{grantId}/approve", _gateway.Idp.ApiToken("bob"));
        Assert.Equal(HttpStatusCode.OK, approved.StatusCode);
        Assert.Equal("active", (await approved.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("status").GetString());
        Assert.Equal(0, _gateway.Upstream.Count);

        // 6. The agent repeats the identical call with a refreshed token of the same session: allowed, once.
        var refreshed = _gateway.Idp.Token("alice", acr: "urn:aal1", sid: "agent-session-7");
        using var allowed = await _gateway.Proxy.SendAsync(AgentCall(refreshed, grantId, out _));
        using var replay = await _gateway.Proxy.SendAsync(AgentCall(refreshed, grantId, out _));

        Assert.Equal(HttpStatusCode.OK, allowed.StatusCode);
        Assert.Equal("replayed", await replay.ReasonAsync());
        Assert.Equal(ToolCall, Encoding.UTF8.GetString(Assert.Single(_gateway.Upstream.Received).Body));
        var grant = await _gateway.GetGrantAsync(grantId);
        var types = grant.GetProperty("events").EnumerateArray().Select(e => e.GetProperty("type").GetString()!).ToArray();
        Assert.Equal(["created", "denied", "approved", "used", "denied"], types);
        Assert.Equal("bob", grant.GetProperty("events")[2].GetProperty("actor").GetString());
    }

    [Fact]
    public async Task AgentToolCall_ApprovedCallFromAnotherSession_SessionMismatch()
    {
        using var challenged = await _gateway.Proxy.SendAsync(AgentCall(_gateway.Idp.Token("alice", acr: "urn:aal1", sid: "s-a"), null, out _));
        var grantId = (await challenged.ProblemAsync()).GetProperty("grantId").GetString()!;
        using var approved = await ApiAsync(HttpMethod.Post, $"/assurance/v1/grants/{grantId}/approve", _gateway.Idp.ApiToken("bob"));

        using var otherSession = await _gateway.Proxy.SendAsync(AgentCall(_gateway.Idp.Token("alice", acr: "urn:aal1", sid: "s-b"), grantId, out _));

        Assert.Equal("session_mismatch", await otherSession.ReasonAsync());
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task Challenge_BeyondPendingLimitPerSubject_429()
    {
        var token = _gateway.Idp.Token("carol", acr: "urn:aal1");
        for (var i = 0; i < 3; i++)
        {
            using var challenged = await _gateway.Proxy.SendAsync(AgentCall(token, null, out _));
            Assert.Equal("assurance_required", await challenged.ReasonAsync());
        }

        using var refused = await _gateway.Proxy.SendAsync(AgentCall(token, null, out _));
        using var otherSubject = await _gateway.Proxy.SendAsync(AgentCall(_gateway.Idp.Token("dave", acr: "urn:aal1"), null, out _));

        Assert.Equal(HttpStatusCode.TooManyRequests, refused.StatusCode);
        Assert.Equal("too_many_pending", await refused.ReasonAsync());
        Assert.Equal("assurance_required", await otherSubject.ReasonAsync());
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task BreakGlass_TwoDistinctApproversNeeded_OneApproverTwiceStillOne()
    {
        var grant = new JsonObject
        {
            ["route"] = "breakglass",
            ["subject"] = "oncall",
            ["request"] = new JsonObject { ["method"] = "POST", ["path"] = "/breakglass/db-7/shell" },
            ["ttlSeconds"] = 120,
            ["reason"] = "INC-42 database 7 unreachable",
        };
        var id = await _gateway.CreateGrantAsync(grant, _gateway.Idp.ApiToken("lead-1"));
        HttpRequestMessage Shell()
        {
            var request = GatewayHarness.Request(HttpMethod.Post, "/breakglass/db-7/shell", _gateway.Idp.Token("oncall"), out _);
            request.Headers.TryAddWithoutValidation("Assurance-Id", id);
            return request;
        }

        using var beforeQuorum = await _gateway.Proxy.SendAsync(Shell());
        Assert.Equal("grant_pending", await beforeQuorum.ReasonAsync());
        using var again = await ApiAsync(HttpMethod.Post, $"/assurance/v1/grants/{id}/approve", _gateway.Idp.ApiToken("lead-1"));
        var againBody = await again.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal("pending", againBody.GetProperty("status").GetString());
        Assert.Equal(1, againBody.GetProperty("approvalsRemaining").GetInt32());
        using var stillPending = await _gateway.Proxy.SendAsync(Shell());
        Assert.Equal("grant_pending", await stillPending.ReasonAsync());
        Assert.Equal(0, _gateway.Upstream.Count);

        using var second = await ApiAsync(HttpMethod.Post, $"/assurance/v1/grants/{id}/approve", _gateway.Idp.ApiToken("lead-2"));
        Assert.Equal("active", (await second.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("status").GetString());
        using var allowed = await _gateway.Proxy.SendAsync(Shell());

        Assert.Equal(HttpStatusCode.OK, allowed.StatusCode);
        Assert.Equal(1, _gateway.Upstream.Count);
        var record = await _gateway.GetGrantAsync(id);
        Assert.Equal(["lead-1", "lead-2"], record.GetProperty("approvers").EnumerateArray().Select(a => a.GetString()!).ToArray());
    }

    // The store refuses an expired pending grant (its stored status stays pending): the approver was told
    // "only a pending, unexpired grant can be approved (this one is pending)".
    [Fact]
    public async Task Approve_ExpiredPendingGrant_409SaysItExpired()
    {
        var grant = new JsonObject
        {
            ["route"] = "breakglass",
            ["subject"] = "oncall",
            ["request"] = new JsonObject { ["method"] = "POST", ["path"] = "/breakglass/db-7/shell" },
            ["ttlSeconds"] = 1,
        };
        var id = await _gateway.CreateGrantAsync(grant, _gateway.Idp.ApiToken("lead-1"));
        await Task.Delay(TimeSpan.FromMilliseconds(1500));

        using var approve = await ApiAsync(HttpMethod.Post, $"/assurance/v1/grants/{id}/approve", _gateway.Idp.ApiToken("lead-2"));

        Assert.Equal(HttpStatusCode.Conflict, approve.StatusCode);
        Assert.EndsWith("(this one is expired)", (await approve.ProblemAsync()).GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Deny_PendingGrant_RevokesIt()
    {
        using var challenged = await _gateway.Proxy.SendAsync(AgentCall(_gateway.Idp.Token("erin", acr: "urn:aal1"), null, out _));
        var grantId = (await challenged.ProblemAsync()).GetProperty("grantId").GetString()!;

        using var denied = await ApiAsync(HttpMethod.Post, $"/assurance/v1/grants/{grantId}/deny", _gateway.Idp.ApiToken("bob"));
        using var approveAfter = await ApiAsync(HttpMethod.Post, $"/assurance/v1/grants/{grantId}/approve", _gateway.Idp.ApiToken("bob"));
        using var use = await _gateway.Proxy.SendAsync(AgentCall(_gateway.Idp.Token("erin", acr: "urn:aal1"), grantId, out _));

        Assert.Equal(HttpStatusCode.OK, denied.StatusCode);
        Assert.Equal(HttpStatusCode.Conflict, approveAfter.StatusCode);
        Assert.Equal("grant_revoked", await use.ReasonAsync());
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Theory]
    [InlineData("prod", "org/app", HttpStatusCode.OK)]
    [InlineData("dev", "org/app", HttpStatusCode.Forbidden)]
    [InlineData("prod", "org/other", HttpStatusCode.Forbidden)]
    public async Task ProdDeploy_RequireClaimsOnWorkloadJwt(string environment, string repository, HttpStatusCode expected)
    {
        using var request = GatewayHarness.Request(HttpMethod.Post, "/prod/deploy", _gateway.Idp.Token(), out _);
        request.Headers.TryAddWithoutValidation("Workload-Identity", _gateway.WorkloadIssuer.Svid(Deployer, edit: c =>
        {
            c["environment"] = environment;
            c["repository"] = repository;
        }));

        using var response = await _gateway.Proxy.SendAsync(request);

        Assert.Equal(expected, response.StatusCode);
        if (expected == HttpStatusCode.Forbidden)
        {
            Assert.Equal("claims_mismatch", await response.ReasonAsync());
            Assert.Equal(0, _gateway.Upstream.Count);
        }
        else
        {
            Assert.Equal(1, _gateway.Upstream.Count);
        }
    }

    [Fact]
    public async Task Shadow_ForwardsWhatEnforceWouldDenyAndLeavesGrantsUntouched()
    {
        var token = _gateway.Idp.Token();
        var grant = DeployGrant(token, path: "/shadowed/v1/releases");
        grant["route"] = "shadowed";
        var id = await _gateway.CreateGrantAsync(grant);
        HttpRequestMessage Call(string? grantId, string workload, string body, out string trace)
        {
            var request = DeployRequest(token, _gateway.WorkloadIssuer.Svid(workload), grantId, out trace, body: body, path: "/shadowed/v1/releases");
            return request;
        }

        using var noGrant = await _gateway.Proxy.SendAsync(Call(null, Deployer, ReleaseBody, out var noGrantTrace));
        using var stolen = await _gateway.Proxy.SendAsync(Call(id, OtherWorkload, ReleaseBody, out var stolenTrace));
        using var tooLarge = await _gateway.Proxy.SendAsync(Call(id, Deployer, new string('z', 500), out _));
        using var valid1 = await _gateway.Proxy.SendAsync(Call(id, Deployer, ReleaseBody, out var validTrace));
        using var valid2 = await _gateway.Proxy.SendAsync(Call(id, Deployer, ReleaseBody, out _));

        Assert.All(new[] { noGrant, stolen, tooLarge, valid1, valid2 }, r => Assert.Equal(HttpStatusCode.OK, r.StatusCode));
        Assert.Equal(5, _gateway.Upstream.Count);
        Assert.Equal(500, _gateway.Upstream.Received[2].Body.Length);
        var noGrantSpan = Assert.Single(_gateway.Spans.Enforce(noGrantTrace));
        Assert.Equal("deny", noGrantSpan.GetTagItem("assurance.decision"));
        Assert.Equal("assurance_required", noGrantSpan.GetTagItem("assurance.reason"));
        Assert.Equal("shadow", noGrantSpan.GetTagItem("assurance.mode"));
        Assert.Equal("workload_mismatch", Assert.Single(_gateway.Spans.Enforce(stolenTrace)).GetTagItem("assurance.reason"));
        Assert.Equal("allow", Assert.Single(_gateway.Spans.Enforce(validTrace)).GetTagItem("assurance.decision"));
        var record = await _gateway.GetGrantAsync(id);
        Assert.Equal("active", record.GetProperty("status").GetString());
        Assert.Equal(1, record.GetProperty("usesRemaining").GetInt32());
        Assert.DoesNotContain(record.GetProperty("events").EnumerateArray(), e => e.GetProperty("type").GetString() is "used" or "denied" or "revoked");
    }

    [Fact]
    public async Task Use_BodyAboveKestrelsDefaultLimitButWithinMaxBodyBytes_ForwardedWhole()
    {
        // Kestrel stops bodies at 30,000,000 bytes by default; the policy allows 64 MiB and must be what rules.
        var body = new byte[31_000_000];
        Random.Shared.NextBytes(body);
        var token = _gateway.Idp.Token();
        var hash = Requests.CanonicalRequest.Compute("POST", "/uploads/image", string.Empty, [], _ => default, body).Hash;
        var id = await _gateway.CreateGrantAsync(new JsonObject
        {
            ["route"] = "uploads",
            ["tokenHash"] = TokenHash(token),
            ["requestHash"] = hash,
            ["maxUses"] = 1,
            ["ttlSeconds"] = 300,
            ["reason"] = "a large upload",
        });

        using var request = GatewayHarness.Request(HttpMethod.Post, "/uploads/image", token, out _);
        request.Headers.TryAddWithoutValidation("Assurance-Id", id);
        request.Content = new ByteArrayContent(body);
        using var response = await _gateway.Proxy.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.True(body.AsSpan().SequenceEqual(Assert.Single(_gateway.Upstream.Received).Body));
    }
}
