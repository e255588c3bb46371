using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using AssuranceGateway.Testing;

namespace AssuranceGateway.FunctionalTests.Enforcement;

/// <summary>
/// The approval workflows (SPEC §5.3) from an attacker's and an approver's side: a challenge-created grant binds what
/// its approver is shown, the approver is shown the whole request (its query too), a quorum raised at reload holds for
/// grants already waiting, and no approval is requested for a request that could never be used or sent.
/// </summary>
public sealed class ChallengeWorkflowTests : IAsyncLifetime
{
    private const string ToolCall = """{"tool":"kubectl","args":["rollout","restart","deploy/api"]}""";
    private const string Copilot = "spiffe://prod.test/ns/agents/sa/copilot";
    private GatewayHarness _gateway = null!;

    private static void Configure(JsonObject c, int agentApprovals = 1)
    {
        var routes = c["ReverseProxy"]!["Routes"]!.AsObject();
        routes["claimed"] = TestConfig.Route("/claimed/{**rest}", "claims-challenge");
        routes["shadow-agent"] = TestConfig.Route("/shadow-agent/{**rest}", "shadow-challenge");
        routes["breakglass"] = TestConfig.Route("/breakglass/{**rest}", "two-person");
        var policies = c["Assurance"]!["Policies"]!.AsObject();
        policies["agent-approval"]!["Approvals"] = agentApprovals;
        // A challenge policy that demands workload claims and binds the request, but not the workload itself.
        policies["claims-challenge"] = new JsonObject
        {
            ["Bind"] = new JsonArray("request"),
            ["OnMissing"] = "challenge",
            ["RequireClaims"] = new JsonObject { ["environment"] = "prod" },
            ["MinimumApprovalAal"] = 2,
        };
        policies["two-person"] = new JsonObject
        {
            ["Bind"] = new JsonArray("subject", "request"),
            ["Approvals"] = 2,
            ["MinimumApprovalAal"] = 2,
        };
        policies["shadow-challenge"] = new JsonObject
        {
            ["Bind"] = new JsonArray("session", "workload", "request"),
            ["OnMissing"] = "challenge",
            ["Mode"] = "shadow",
            ["MaxPendingPerSubject"] = 1,
        };
    }

    public async Task InitializeAsync() => _gateway = await GatewayHarness.StartAsync(configure: c => Configure(c));

    public async Task DisposeAsync() => await _gateway.DisposeAsync();

    private HttpRequestMessage Call(HttpMethod method, string target, string token, string? grantId, string? workload = Copilot,
        string body = ToolCall, Action<JsonObject>? svidClaims = null)
    {
        var request = GatewayHarness.Request(method, target, token, out _);
        request.Content = new StringContent(body, Encoding.UTF8);
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        if (workload is not null)
        {
            request.Headers.TryAddWithoutValidation("Workload-Identity", _gateway.WorkloadIssuer.Svid(workload, edit: svidClaims));
        }

        if (grantId is not null)
        {
            request.Headers.TryAddWithoutValidation("Assurance-Id", grantId);
        }

        return request;
    }

    private async Task<string> ChallengeAsync(HttpRequestMessage request)
    {
        using (request)
        using (var challenged = await _gateway.Proxy.SendAsync(request))
        {
            Assert.Equal(HttpStatusCode.Forbidden, challenged.StatusCode);
            var problem = await challenged.ProblemAsync();
            Assert.Equal("assurance_required", problem.GetProperty("reason").GetString());
            return problem.GetProperty("grantId").GetString()!;
        }
    }

    private async Task<HttpResponseMessage> ApiAsync(HttpMethod method, string path, string token)
    {
        using var request = new HttpRequestMessage(method, path);
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        return await _gateway.Api.SendAsync(request);
    }

    /// <summary>Every string value in a JSON document (decoded), wherever it is.</summary>
    private static IEnumerable<string> Strings(JsonElement element) => element.ValueKind switch
    {
        JsonValueKind.String => [element.GetString()!],
        JsonValueKind.Object => element.EnumerateObject().SelectMany(p => Strings(p.Value)),
        JsonValueKind.Array => element.EnumerateArray().SelectMany(Strings),
        _ => [],
    };

    private async Task<JsonElement> PendingEntryAsync(string grantId)
    {
        using var listed = await ApiAsync(HttpMethod.Get, "/assurance/v1/grants?status=pending", _gateway.Idp.ApiToken("bob"));
        Assert.Equal(HttpStatusCode.OK, listed.StatusCode);
        return (await listed.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("grants").EnumerateArray()
            .Single(g => g.GetProperty("id").GetString() == grantId).Clone();
    }

    private async Task<JsonElement> ApproveAsync(string grantId, string approver = "bob")
    {
        using var approved = await ApiAsync(HttpMethod.Post, $"/assurance/v1/grants/{grantId}/approve", _gateway.Idp.ApiToken(approver));
        Assert.Equal(HttpStatusCode.OK, approved.StatusCode);
        return (await approved.Content.ReadFromJsonAsync<JsonElement>()).Clone();
    }

    // The query is part of the bound request (SPEC §4.2) and can carry the whole action: the pending list and the grant
    // show it (they once showed method and path only).
    [Fact]
    public async Task Challenge_QueryOfTheChallengedRequest_ShownToTheApprover()
    {
        var token = _gateway.Idp.Token("alice", acr: "urn:aal1", sid: "agent-session-7");
        const string Query = "namespace=kube-system&force=true";
        var grantId = await ChallengeAsync(Call(HttpMethod.Post, "/agent/tools/exec?" + Query, token, null));

        var listed = await PendingEntryAsync(grantId);
        var shown = await _gateway.GetGrantAsync(grantId);

        Assert.Contains(Strings(listed), v => v.Contains(Query, StringComparison.Ordinal));
        Assert.Contains(Strings(shown), v => v.Contains(Query, StringComparison.Ordinal));
    }

    // The same for a grant the API issues with Approvals 2: the second approver sees the query the first one approved.
    [Fact]
    public async Task PendingApiGrant_QueryOfTheApprovedRequest_ShownToTheSecondApprover()
    {
        const string Query = "host=db-7&mode=drop-replica";
        var id = await _gateway.CreateGrantAsync(new JsonObject
        {
            ["route"] = "breakglass",
            ["subject"] = "oncall",
            ["request"] = new JsonObject { ["method"] = "POST", ["path"] = "/breakglass/shell", ["query"] = Query },
            ["ttlSeconds"] = 120,
            ["reason"] = "INC-42",
        }, _gateway.Idp.ApiToken("lead-1"));

        var listed = await PendingEntryAsync(id);
        var shown = await _gateway.GetGrantAsync(id);

        Assert.Contains(Strings(listed), v => v.Contains(Query, StringComparison.Ordinal));
        Assert.Contains(Strings(shown), v => v.Contains(Query, StringComparison.Ordinal));
    }

    // The pending list shows the workload of the challenging request as part of the action (SPEC §5.3), so it is bound,
    // also on a policy with RequireClaims that does not bind workload (as a grant the API issues with a workload there):
    // another workload with the same claims cannot use the approval.
    [Fact]
    public async Task Challenge_WorkloadShownToTheApprover_IsEnforcedOnUse()
    {
        var token = _gateway.Idp.Token("alice");
        void Prod(JsonObject c) => c["environment"] = "prod";
        var grantId = await ChallengeAsync(Call(HttpMethod.Post, "/claimed/run", token, null, workload: Copilot, svidClaims: Prod));

        Assert.Equal(Copilot, (await PendingEntryAsync(grantId)).GetProperty("workload").GetString());
        await ApproveAsync(grantId);

        using var otherWorkload = await _gateway.Proxy.SendAsync(
            Call(HttpMethod.Post, "/claimed/run", token, grantId, workload: GrantHelpers.OtherWorkload, svidClaims: Prod));

        Assert.Equal(0, _gateway.Upstream.Count);
        Assert.Equal("workload_mismatch", await otherWorkload.ReasonAsync());
    }

    // A challenge-created grant is bound to the subject that asked (the approver is shown who asks, SPEC §5.3), also on a
    // policy whose Bind does not name subject: another caller with the same workload, claims and request cannot use it.
    [Fact]
    public async Task Challenge_ApprovedGrantPresentedByAnotherSubject_SubjectMismatchNothingForwarded()
    {
        void Prod(JsonObject c) => c["environment"] = "prod";
        var grantId = await ChallengeAsync(Call(HttpMethod.Post, "/claimed/run", _gateway.Idp.Token("alice"), null, svidClaims: Prod));
        await ApproveAsync(grantId);

        using var stolen = await _gateway.Proxy.SendAsync(
            Call(HttpMethod.Post, "/claimed/run", _gateway.Idp.Token("mallory"), grantId, svidClaims: Prod));

        Assert.Equal(HttpStatusCode.Forbidden, stolen.StatusCode);
        Assert.Equal("subject_mismatch", await stolen.ReasonAsync());
        Assert.Equal(0, _gateway.Upstream.Count);
        Assert.Equal(1, (await _gateway.GetGrantAsync(grantId)).GetProperty("usesRemaining").GetInt32());
    }

    // Policy tightened to two approvers while a challenge waits: the approval is judged against the policy in force now,
    // its quorum as well as the approver's AAL and the active window, so one approver no longer activates it.
    [Fact]
    public async Task Approve_AfterReloadRaisedApprovals_OneApproverNoLongerActivates()
    {
        var token = _gateway.Idp.Token("alice", acr: "urn:aal1", sid: "agent-session-7");
        var grantId = await ChallengeAsync(Call(HttpMethod.Post, "/agent/tools/exec", token, null));

        var config = _gateway.DefaultConfig();
        Configure(config, agentApprovals: 2);
        Assert.True(await _gateway.ReloadAsync(config), string.Join(Environment.NewLine, _gateway.RefusedReloads()));
        Assert.Equal(2, _gateway.Config.Current.Settings.PolicyForRoute("agent")!.Approvals);

        var first = await ApproveAsync(grantId, "bob");
        using var use = await _gateway.Proxy.SendAsync(Call(HttpMethod.Post, "/agent/tools/exec", token, grantId));

        Assert.Equal("pending", first.GetProperty("status").GetString());
        Assert.Equal(1, first.GetProperty("approvalsRemaining").GetInt32());
        Assert.Equal(0, _gateway.Upstream.Count);
        Assert.Equal("grant_pending", await use.ReasonAsync());
    }

    // A session-binding challenge policy called with a token that has no session: a grant bound to "no session" could
    // never be used (session_mismatch after approval), so none is created, listed or counted against the subject's
    // MaxPendingPerSubject, as the API refuses a grant that lacks a binding its policy names.
    [Fact]
    public async Task Challenge_SessionBindingPolicyTokenWithoutSession_NoUnusablePendingGrant()
    {
        var token = _gateway.Idp.Token("alice", acr: "urn:aal1", sid: null);
        using var challenged = await _gateway.Proxy.SendAsync(Call(HttpMethod.Post, "/agent/tools/exec", token, null));
        var problem = await challenged.ProblemAsync();

        using var listed = await ApiAsync(HttpMethod.Get, "/assurance/v1/grants?status=pending", _gateway.Idp.ApiToken("bob"));
        var pending = (await listed.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("grants").GetArrayLength();

        if (problem.TryGetProperty("grantId", out var id))
        {
            // Show what an approval of it leads to.
            await ApproveAsync(id.GetString()!);
            using var use = await _gateway.Proxy.SendAsync(Call(HttpMethod.Post, "/agent/tools/exec", token, id.GetString()));
            Assert.Fail($"a pending grant was created ({pending} listed); after approval the identical request got '{await use.ReasonAsync()}'");
        }

        Assert.Equal(0, pending);
    }

    // Shadow mode writes nothing: a challenge route in shadow forwards, records the would-be challenge, creates no pending
    // grant and takes no pending slot (MaxPendingPerSubject 1 here: a counted slot would make the spans say too_many_pending).
    [Fact]
    public async Task Shadow_ChallengeRoute_ForwardsAndCreatesNoPendingGrant()
    {
        var token = _gateway.Idp.Token("alice", acr: "urn:aal1", sid: "agent-session-7");
        var traces = new List<string>();
        for (var i = 0; i < 3; i++)
        {
            using var request = Call(HttpMethod.Post, "/shadow-agent/tools/exec", token, null);
            traces.Add(request.Headers.GetValues("traceparent").Single().Split('-')[1]);
            using var response = await _gateway.Proxy.SendAsync(request);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }

        using var listed = await ApiAsync(HttpMethod.Get, "/assurance/v1/grants?status=pending", _gateway.Idp.ApiToken("bob"));
        Assert.Equal(0, (await listed.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("grants").GetArrayLength());
        Assert.Equal(3, _gateway.Upstream.Count);
        // By trace: every gateway in this process hears every other's spans (the ActivitySource is static), and tests of
        // other classes, run in parallel, decide shadow requests without a grant too.
        Assert.All(traces, trace =>
        {
            var span = Assert.Single(_gateway.Spans.Enforce(trace));
            Assert.Equal("assurance_required", span.GetTagItem("assurance.reason"));
            Assert.Equal("shadow", span.GetTagItem("assurance.mode"));
        });
    }

    // A request the gateway refuses to forward even with an approval (CONNECT, which the forwarder cannot send; a header
    // value beyond ASCII, which the upstream connection cannot send) is refused before a challenge: no pending grant is
    // listed to approvers for it, as the API refuses a CONNECT grant.
    [Theory]
    [InlineData("CONNECT", "")]
    [InlineData("POST", "X-Change-Note: caf\u00e9\r\n")]
    public async Task Challenge_RequestThatCanNeverBeForwarded_RefusedWithoutAPendingGrant(string method, string extraHeader)
    {
        var token = _gateway.Idp.Token("alice", acr: "urn:aal1", sid: "agent-session-7");
        var body = Encoding.UTF8.GetBytes(ToolCall);
        string Head(string? grantId) => $"{method} /agent/tools/exec HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {token}\r\n"
            + $"Workload-Identity: {_gateway.WorkloadIssuer.Svid(Copilot)}\r\n" + (grantId is null ? string.Empty : $"Assurance-Id: {grantId}\r\n")
            + $"Content-Type: application/json\r\n{extraHeader}Content-Length: {body.Length}\r\nConnection: close\r\n";

        var (status, content) = await RawHttp.SendAsync(_gateway.ProxyAddress, Head(null), body, Encoding.UTF8);
        using var listed = await ApiAsync(HttpMethod.Get, "/assurance/v1/grants?status=pending", _gateway.Idp.ApiToken("bob"));
        var pending = (await listed.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("grants");

        if (pending.GetArrayLength() > 0)
        {
            var id = pending[0].GetProperty("id").GetString()!;
            await ApproveAsync(id);
            var (repeated, answer) = await RawHttp.SendAsync(_gateway.ProxyAddress, Head(id), body, Encoding.UTF8);
            Assert.Fail($"challenged with {status} and a pending grant; approved, the identical request got {repeated}: {answer}");
        }

        Assert.Equal(400, status);
        Assert.Contains("\"reason\":\"request_ambiguous\"", content, StringComparison.Ordinal);
    }
}
