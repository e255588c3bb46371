using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using AssuranceGateway.Testing;

namespace AssuranceGateway.FunctionalTests.Tokens;

/// <summary>
/// Two trusted token issuers that can both say <c>sub: alice</c>: the attacker holds tokens of the second issuer
/// (https://partner.test) and tries to act, or approve, as a user of the first (https://idp.test). Each issuer names
/// its subjects with its own SubjectPrefix ('idp:', 'partner:'), which the gateway requires once it trusts two.
/// </summary>
public sealed class IssuerConfusionTests : IAsyncLifetime
{
    private const string BackupBody = """{"db":"orders"}""";
    private GatewayHarness _gateway = null!;
    private TestIssuer _partner = null!;
    private JsonObject _config = null!;

    // What the first issuer's users are called in grants, events and evidence.
    private static string AtIdp(string sub) => "idp:" + sub;

    public async Task InitializeAsync()
    {
        _gateway = await GatewayHarness.CreateAsync();
        _partner = new TestIssuer("https://partner.test", _gateway.Directory, "p1");
        var config = _gateway.DefaultConfig();
        var routes = config["ReverseProxy"]!["Routes"]!.AsObject();
        routes["backup"] = TestConfig.Route("/backup/{**rest}", "subject-bound");
        routes["session"] = TestConfig.Route("/session/{**rest}", "session-bound");
        routes["breakglass"] = TestConfig.Route("/breakglass/{**rest}", "two-person");
        routes["ci"] = TestConfig.Route("/ci/{**rest}", "workload-bound");
        var policies = config["Assurance"]!["Policies"]!.AsObject();
        policies["subject-bound"] = Policy("subject", "request");
        policies["session-bound"] = Policy("session", "request");
        policies["workload-bound"] = Policy("workload", "request");
        policies["two-person"] = Policy("subject", "request");
        policies["two-person"]!["Approvals"] = 2;
        policies["agent-approval"]!["MaxPendingPerSubject"] = 2;
        var issuers = config["Assurance"]!["Tokens"]!["Issuers"]!.AsArray();
        issuers[0]!["SubjectPrefix"] = "idp:";
        issuers.Add(new JsonObject
        {
            ["Issuer"] = _partner.Issuer,
            ["Audiences"] = new JsonArray(TestConfig.Audience),
            ["JwksFile"] = _partner.JwksPath,
            ["Algorithms"] = new JsonArray("ES256"),
            ["SubjectPrefix"] = "partner:",
        });
        _config = config;
        await _gateway.StartWithAsync(config);
    }

    public async Task DisposeAsync()
    {
        await _gateway.DisposeAsync();
        _partner.Dispose();
    }

    private static JsonObject Policy(params string[] bind) => new()
    {
        ["Bind"] = new JsonArray([.. bind.Select(b => (JsonNode)b)]),
        ["MinimumAal"] = 1,
        ["MinimumApprovalAal"] = 2,
        ["MaxTtl"] = "00:05:00",
        ["BoundHeaders"] = new JsonArray("content-type"),
    };

    private static JsonObject Grant(string route, string path, Action<JsonObject> bindings)
    {
        var grant = new JsonObject
        {
            ["route"] = route,
            ["request"] = new JsonObject
            {
                ["method"] = "POST", ["path"] = path, ["query"] = string.Empty,
                ["headers"] = new JsonObject { ["content-type"] = "application/json" },
                ["body"] = Convert.ToBase64String(Encoding.UTF8.GetBytes(BackupBody)),
            },
            ["maxUses"] = 1,
            ["ttlSeconds"] = 300,
            ["reason"] = "CHG-77",
        };
        bindings(grant);
        return grant;
    }

    private static HttpRequestMessage Call(string path, string token, string? grantId, out string traceId)
    {
        var request = GatewayHarness.Request(HttpMethod.Post, path, token, out traceId);
        request.Content = new StringContent(BackupBody, Encoding.UTF8);
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        if (grantId is not null)
        {
            request.Headers.TryAddWithoutValidation("Assurance-Id", grantId);
        }

        return request;
    }

    private async Task<HttpResponseMessage> ApproveAsync(string id, string apiToken)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, $"/assurance/v1/grants/{id}/approve");
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", apiToken);
        return await _gateway.Api.SendAsync(request);
    }

    [Fact]
    public async Task SubjectBinding_AliceOfTheOtherIssuer_CannotUseAGrantIssuedForAlice()
    {
        var id = await _gateway.CreateGrantAsync(Grant("backup", "/backup/run", g => g["subject"] = AtIdp("alice")),
            _gateway.Idp.ApiToken("release-manager"));

        using var response = await _gateway.Proxy.SendAsync(Call("/backup/run", _partner.Token("alice"), id, out var traceId));

        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        Assert.Equal("subject_mismatch", await response.ReasonAsync());
        Assert.Equal(0, _gateway.Upstream.Count);
        // The SRE reads which alice it was.
        var span = await _gateway.Spans.WaitForEnforceAsync(traceId);
        Assert.Equal("partner:alice", span.GetTagItem("assurance.subject"));
        var denied = (await _gateway.GetGrantAsync(id)).GetProperty("events").EnumerateArray().Last();
        Assert.Equal("subject_mismatch", denied.GetProperty("reason").GetString());

        // The alice the grant was issued for still can.
        using var own = await _gateway.Proxy.SendAsync(Call("/backup/run", _gateway.Idp.Token("alice"), id, out _));
        Assert.Equal(HttpStatusCode.OK, own.StatusCode);
        Assert.Equal(1, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task SessionBinding_TheSameSidFromTheOtherIssuer_IsNotTheSession()
    {
        var id = await _gateway.CreateGrantAsync(Grant("session", "/session/run", g => g["session"] = AtIdp("agent-session-7")),
            _gateway.Idp.ApiToken("release-manager"));

        using var response = await _gateway.Proxy.SendAsync(Call("/session/run", _partner.Token("mallory", sid: "agent-session-7"), id, out _));

        Assert.Equal("session_mismatch", await response.ReasonAsync());
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task ClaimWorkload_TheOtherIssuersClientOfTheSameName_IsNotTheWorkload()
    {
        var id = await _gateway.CreateGrantAsync(Grant("ci", "/ci/run", g => g["workload"] = AtIdp("ci-deployer")),
            _gateway.Idp.ApiToken("release-manager"));

        using var response = await _gateway.Proxy.SendAsync(Call("/ci/run", _partner.Token("mallory", edit: c => c["azp"] = "ci-deployer"), id, out _));

        Assert.Equal("workload_mismatch", await response.ReasonAsync());
        Assert.Equal(0, _gateway.Upstream.Count);

        using var own = await _gateway.Proxy.SendAsync(Call("/ci/run", _gateway.Idp.Token("svc", edit: c => c["azp"] = "ci-deployer"), id, out _));
        Assert.Equal(HttpStatusCode.OK, own.StatusCode);
    }

    [Fact]
    public async Task Quorum_BobOfEachIssuer_AreTwoApproversNamedApart()
    {
        var id = await _gateway.CreateGrantAsync(Grant("breakglass", "/breakglass/run", g => g["subject"] = AtIdp("oncall")),
            _gateway.Idp.ApiToken("bob"));

        // The same bob again counts once.
        using (var again = await ApproveAsync(id, _gateway.Idp.ApiToken("bob")))
        {
            Assert.Equal(1, (await again.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("approvalsRemaining").GetInt32());
        }

        using var pending = await _gateway.Proxy.SendAsync(Call("/breakglass/run", _gateway.Idp.Token("oncall"), id, out _));
        Assert.Equal("grant_pending", await pending.ReasonAsync());
        Assert.Equal(0, _gateway.Upstream.Count);

        // The other issuer's bob is another person: the record and the evidence say which is which.
        using var second = await ApproveAsync(id, _partner.ApiToken("bob"));
        Assert.Equal(HttpStatusCode.OK, second.StatusCode);
        var grant = await _gateway.GetGrantAsync(id);
        Assert.Equal("active", grant.GetProperty("status").GetString());
        Assert.Equal(["idp:bob", "partner:bob"], grant.GetProperty("approvers").EnumerateArray().Select(a => a.GetString()));
        Assert.Contains(grant.GetProperty("events").EnumerateArray(),
            e => e.GetProperty("type").GetString() == "approved" && e.GetProperty("actor").GetString() == "partner:bob");
    }

    [Fact]
    public async Task SelfApproval_IsJudgedOnTheIssuersName()
    {
        var id = await _gateway.CreateGrantAsync(Grant("breakglass", "/breakglass/run", g => g["subject"] = AtIdp("carol")),
            _gateway.Idp.ApiToken("lead-1"));

        using var sameCarol = await ApproveAsync(id, _gateway.Idp.ApiToken("carol"));
        Assert.Equal(HttpStatusCode.Forbidden, sameCarol.StatusCode);
        Assert.Equal("self_approval", await sameCarol.ReasonAsync());

        // Nor by naming her subject without its prefix: no token's subject is unprefixed, and the API says so.
        using var unprefixed = await _gateway.PostGrantAsync(Grant("backup", "/backup/run", g => g["subject"] = "carol"), _gateway.Idp.ApiToken("carol"));
        Assert.Equal(HttpStatusCode.BadRequest, unprefixed.StatusCode);
        Assert.Contains("SubjectPrefix", (await unprefixed.ProblemAsync()).GetProperty("detail").GetString(), StringComparison.Ordinal);

        // carol of the other issuer is not the subject: her approval counts.
        using var otherCarol = await ApproveAsync(id, _partner.ApiToken("carol"));
        Assert.Equal(HttpStatusCode.OK, otherCarol.StatusCode);
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task PendingQuota_AliceOfTheOtherIssuer_CannotExhaustAlicesQuota()
    {
        var svid = _gateway.WorkloadIssuer.Svid("spiffe://prod.test/ns/agents/sa/copilot");
        HttpRequestMessage AgentCall(string token, string body)
        {
            var request = GatewayHarness.Request(HttpMethod.Post, "/agent/tools/exec", token, out _);
            request.Content = new StringContent(body, Encoding.UTF8);
            request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
            request.Headers.TryAddWithoutValidation("Workload-Identity", svid);
            return request;
        }

        for (var i = 0; i < 2; i++)
        {
            using var flood = await _gateway.Proxy.SendAsync(AgentCall(_partner.Token("alice", acr: "urn:aal1", sid: "x"), $"{{\"n\":{i}}}"));
            Assert.Equal("assurance_required", await flood.ReasonAsync());
        }

        using var alice = await _gateway.Proxy.SendAsync(AgentCall(_gateway.Idp.Token("alice", acr: "urn:aal1", sid: "s-7"), "{\"n\":9}"));

        Assert.Equal("assurance_required", await alice.ReasonAsync());
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task Reload_ThatDropsAnIssuersSubjectPrefix_IsRefusedAndTheNamespacesStay()
    {
        var id = await _gateway.CreateGrantAsync(Grant("backup", "/backup/run", g => g["subject"] = AtIdp("alice")),
            _gateway.Idp.ApiToken("release-manager"));
        var config = (JsonObject)_config.DeepClone();
        ((JsonObject)config["Assurance"]!["Tokens"]!["Issuers"]![1]!).Remove("SubjectPrefix");

        Assert.False(await _gateway.ReloadAsync(config));
        Assert.Contains(_gateway.Logs.Lines, l => l.Contains("Assurance:Tokens:Issuers:1:SubjectPrefix: required", StringComparison.Ordinal));

        using var response = await _gateway.Proxy.SendAsync(Call("/backup/run", _partner.Token("alice"), id, out _));
        Assert.Equal("subject_mismatch", await response.ReasonAsync());
        Assert.Equal(0, _gateway.Upstream.Count);
    }
}
