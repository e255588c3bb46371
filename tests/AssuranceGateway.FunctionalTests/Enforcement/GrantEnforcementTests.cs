using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using AssuranceGateway.Testing;
using static AssuranceGateway.Testing.GrantHelpers;

namespace AssuranceGateway.FunctionalTests.Enforcement;

/// <summary>
/// SPEC §2 steps 3–7 through the real pipeline, from the attacker's side. Every denial also asserts that nothing
/// reached the upstream. Runs against each store (see the subclasses at the end).
/// </summary>
public abstract class GrantEnforcementTests : IAsyncLifetime
{
    private GatewayHarness _gateway = null!;

    protected abstract Task<string?> StoreConnectionAsync();

    protected GatewayHarness Gateway => _gateway;

    public async Task InitializeAsync()
    {
        var redis = await StoreConnectionAsync();
        _gateway = await GatewayHarness.StartAsync(redis: redis, configure: c =>
        {
            // Nothing here is about the store's deadline: one slow Redis call on a loaded CI machine must not turn an
            // enforcement test into a 503 (StoreReadinessTests and the resilience tests judge the 250 ms bound itself).
            c["Assurance"]!["Store"]!["Timeout"] = "00:00:02";
            // An origin-bound route behind a trusted proxy (loopback plays the proxy).
            var routes = c["ReverseProxy"]!["Routes"]!.AsObject();
            routes["backup"] = TestConfig.Route("/backup/{**rest}", "origin-bound");
            var policies = c["Assurance"]!["Policies"]!.AsObject();
            policies["origin-bound"] = new JsonObject
            {
                ["Bind"] = new JsonArray("subject", "origin", "request"),
                ["RevokeOn"] = new JsonArray("origin_mismatch"),
            };
            c["Assurance"]!["Workload"]!["TrustedProxies"] = new JsonArray("127.0.0.1/32");
            // The deploy policy again in shadow mode, burning a grant on a workload mismatch.
            routes["shadowed"] = TestConfig.Route("/shadowed/{**rest}", "shadow-approval");
            policies["shadow-approval"] = new JsonObject
            {
                ["Bind"] = new JsonArray("token", "workload", "request"),
                ["Mode"] = "shadow",
                ["BoundHeaders"] = new JsonArray("content-type"),
                ["RevokeOn"] = new JsonArray("workload_mismatch"),
            };
            // Two approvers: the second one's subject reaches the approver list through the store's approve step.
            routes["quorum"] = TestConfig.Route("/quorum/{**rest}", "quorum");
            policies["quorum"] = new JsonObject
            {
                ["Bind"] = new JsonArray("token", "workload", "request"),
                ["BoundHeaders"] = new JsonArray("content-type"),
                ["Approvals"] = 2,
            };
        });
    }

    public virtual async Task DisposeAsync() => await _gateway.DisposeAsync();

    [Fact]
    public async Task Use_BoundRequest_ForwardsExactBytesOnceThenReplayIsDenied()
    {
        var token = _gateway.Idp.Token();
        var svid = _gateway.WorkloadIssuer.Svid();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token));

        using var first = await _gateway.Proxy.SendAsync(DeployRequest(token, svid, id, out var firstTrace));
        using var replay = await _gateway.Proxy.SendAsync(DeployRequest(token, svid, id, out var replayTrace));

        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        var received = Assert.Single(_gateway.Upstream.Received);
        Assert.Equal(ReleaseBody, Encoding.UTF8.GetString(received.Body));
        Assert.False(received.Headers.ContainsKey("Assurance-Id"));
        Assert.False(received.Headers.ContainsKey("Workload-Identity"));
        Assert.Equal(HttpStatusCode.Forbidden, replay.StatusCode);
        var problem = await replay.ProblemAsync();
        Assert.Equal("replayed", problem.GetProperty("reason").GetString());
        Assert.Equal(id, problem.GetProperty("assuranceId").GetString());
        Assert.Equal(replayTrace, problem.GetProperty("traceId").GetString());
        Assert.Equal(1, _gateway.Upstream.Count);

        var grant = await _gateway.GetGrantAsync(id);
        Assert.Equal("consumed", grant.GetProperty("status").GetString());
        Assert.Equal(0, grant.GetProperty("usesRemaining").GetInt32());
        Assert.Equal(firstTrace, grant.GetProperty("firstUse").GetProperty("traceId").GetString());
        var events = grant.GetProperty("events").EnumerateArray().Select(e => e.GetProperty("type").GetString()!).ToArray();
        // The creator counts as the first approver (SPEC §5.1), so its approval is on the record too.
        Assert.Equal(["created", "approved", "used", "denied"], events);
        var denied = grant.GetProperty("events")[3];
        Assert.Equal("replayed", denied.GetProperty("reason").GetString());
        Assert.Equal(replayTrace, denied.GetProperty("traceId").GetString());
        Assert.Equal(Deployer, denied.GetProperty("workload").GetString());
    }

    /// <summary>
    /// The operator raises the deploy policy's quorum (a config reload) after a grant was used up: presenting it again is a
    /// replay, as before the reload, not grant_pending, which told the caller to go and collect approvals for a grant
    /// that can never be used again. A grant with a use left is still short of the new quorum.
    /// </summary>
    [Fact]
    public async Task Use_UsedUpGrantAfterReloadRaisedTheQuorum_ReplayedNotPending()
    {
        var token = _gateway.Idp.Token();
        var svid = _gateway.WorkloadIssuer.Svid();
        var spent = await _gateway.CreateGrantAsync(DeployGrant(token));
        var unused = await _gateway.CreateGrantAsync(DeployGrant(token));
        using (var first = await _gateway.Proxy.SendAsync(DeployRequest(token, svid, spent, out _)))
        {
            Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        }

        var config = JsonNode.Parse(await File.ReadAllTextAsync(_gateway.ConfigPath))!.AsObject();
        config["Assurance"]!["Policies"]!["single-use-approval"]!["Approvals"] = 2;
        Assert.True(await _gateway.ReloadAsync(config), string.Join(Environment.NewLine, _gateway.RefusedReloads()));

        using var replay = await _gateway.Proxy.SendAsync(DeployRequest(token, svid, spent, out _));
        using var shortOfQuorum = await _gateway.Proxy.SendAsync(DeployRequest(token, svid, unused, out _));

        Assert.Equal(HttpStatusCode.Forbidden, replay.StatusCode);
        var problem = await replay.ProblemAsync();
        Assert.Equal("replayed", problem.GetProperty("reason").GetString());
        Assert.Equal("this approval has no uses left", problem.GetProperty("detail").GetString());
        Assert.Equal("grant_pending", await shortOfQuorum.ReasonAsync());
        Assert.Equal(1, _gateway.Upstream.Count);
        var denied = (await _gateway.GetGrantAsync(spent)).GetProperty("events").EnumerateArray().Last();
        Assert.Equal("replayed", denied.GetProperty("reason").GetString());
    }

    [Fact]
    public async Task Use_MaxUsesThree_AcceptsExactlyThree()
    {
        var token = _gateway.Idp.Token();
        var svid = _gateway.WorkloadIssuer.Svid();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token, maxUses: 3));

        var statuses = new List<HttpStatusCode>();
        for (var i = 0; i < 5; i++)
        {
            using var response = await _gateway.Proxy.SendAsync(DeployRequest(token, svid, id, out _));
            statuses.Add(response.StatusCode);
        }

        Assert.Equal([HttpStatusCode.OK, HttpStatusCode.OK, HttpStatusCode.OK, HttpStatusCode.Forbidden, HttpStatusCode.Forbidden], statuses);
        Assert.Equal(3, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task Use_FromOtherWorkload_DeniedAndGrantBurnedForItsOwner()
    {
        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token));

        using var stolen = await _gateway.Proxy.SendAsync(DeployRequest(token, _gateway.WorkloadIssuer.Svid(OtherWorkload), id, out var trace));
        using var owner = await _gateway.Proxy.SendAsync(DeployRequest(token, _gateway.WorkloadIssuer.Svid(), id, out _));

        Assert.Equal(HttpStatusCode.Forbidden, stolen.StatusCode);
        Assert.Equal("workload_mismatch", await stolen.ReasonAsync());
        Assert.Equal("grant_revoked", await owner.ReasonAsync());
        Assert.Equal(0, _gateway.Upstream.Count);
        var span = Assert.Single(_gateway.Spans.Enforce(trace));
        Assert.Contains(span.Events, e => e.Name == "assurance.grant.revoked");
        Assert.Equal(OtherWorkload, span.GetTagItem("assurance.workload.id"));
    }

    [Fact]
    public async Task Use_WithAnotherTokenOfSameSubject_TokenMismatch()
    {
        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token));
        var otherToken = _gateway.Idp.Token();

        using var response = await _gateway.Proxy.SendAsync(DeployRequest(otherToken, _gateway.WorkloadIssuer.Svid(), id, out _));

        Assert.Equal("token_mismatch", await response.ReasonAsync());
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task Use_TamperedBodyOrHeader_RequestMismatchNamesComponent_ThenApprovedRequestPasses()
    {
        var token = _gateway.Idp.Token();
        var svid = _gateway.WorkloadIssuer.Svid();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token));

        using var tamperedBody = await _gateway.Proxy.SendAsync(DeployRequest(token, svid, id, out _, body: """{"release":"6.6","env":"prod"}"""));
        using var tamperedHeader = await _gateway.Proxy.SendAsync(DeployRequest(token, svid, id, out _, contentType: "text/plain"));
        using var otherPath = await _gateway.Proxy.SendAsync(DeployRequest(token, svid, id, out _, path: "/deploy/v1/rollbacks"));
        Assert.Equal(0, _gateway.Upstream.Count);
        using var approved = await _gateway.Proxy.SendAsync(DeployRequest(token, svid, id, out _));

        var body = await tamperedBody.ProblemAsync();
        Assert.Equal("request_mismatch", body.GetProperty("reason").GetString());
        Assert.Equal(["body"], body.GetProperty("mismatch").EnumerateArray().Select(e => e.GetString()!).ToArray());
        var header = await tamperedHeader.ProblemAsync();
        Assert.Equal(["headers"], header.GetProperty("mismatch").EnumerateArray().Select(e => e.GetString()!).ToArray());
        var path = await otherPath.ProblemAsync();
        Assert.Equal(["path"], path.GetProperty("mismatch").EnumerateArray().Select(e => e.GetString()!).ToArray());
        Assert.Equal(HttpStatusCode.OK, approved.StatusCode);
        Assert.Equal(1, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task Use_GrantOfAnotherRoute_RouteMismatch()
    {
        var token = _gateway.Idp.Token();
        var svid = _gateway.WorkloadIssuer.Svid();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token));

        using var request = DeployRequest(token, svid, id, out _, path: "/agent/tools/run");
        using var response = await _gateway.Proxy.SendAsync(request);

        Assert.Equal("route_mismatch", await response.ReasonAsync());
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task Use_ExpiredGrant_GrantExpired()
    {
        var token = _gateway.Idp.Token();
        var grant = DeployGrant(token);
        grant["ttlSeconds"] = 1;
        var id = await _gateway.CreateGrantAsync(grant);

        await Task.Delay(1200);
        using var response = await _gateway.Proxy.SendAsync(DeployRequest(token, _gateway.WorkloadIssuer.Svid(), id, out _));

        Assert.Equal("grant_expired", await response.ReasonAsync());
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task Use_BeforeNotBefore_GrantNotYetValid_ThenAllowedInWindow()
    {
        var token = _gateway.Idp.Token();
        var svid = _gateway.WorkloadIssuer.Svid();
        var grant = DeployGrant(token);
        // Far enough ahead that creating the grant and the early use fit before it on a loaded machine (1.5 s left
        // little room); GrantClockTests judges the window's edges to the millisecond on a clock the test sets.
        var opens = DateTimeOffset.UtcNow.AddSeconds(5);
        grant["notBefore"] = opens.ToString("O");
        var id = await _gateway.CreateGrantAsync(grant);

        using var early = await _gateway.Proxy.SendAsync(DeployRequest(token, svid, id, out _));
        Assert.Equal("grant_not_yet_valid", await early.ReasonAsync());
        Assert.Equal(0, _gateway.Upstream.Count);
        var wait = opens - DateTimeOffset.UtcNow + TimeSpan.FromMilliseconds(200);
        if (wait > TimeSpan.Zero)
        {
            await Task.Delay(wait);
        }

        using var inWindow = await _gateway.Proxy.SendAsync(DeployRequest(token, svid, id, out _));

        Assert.Equal(HttpStatusCode.OK, inWindow.StatusCode);
        Assert.Equal(1, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task Use_RevokedByApi_GrantRevoked()
    {
        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token));
        using var revoke = new HttpRequestMessage(HttpMethod.Delete, $"/assurance/v1/grants/{id}");
        revoke.Headers.Authorization = new("Bearer", _gateway.Idp.ApiToken("security-officer"));

        using var revoked = await _gateway.Api.SendAsync(revoke);
        using var response = await _gateway.Proxy.SendAsync(DeployRequest(token, _gateway.WorkloadIssuer.Svid(), id, out _));

        Assert.Equal(HttpStatusCode.NoContent, revoked.StatusCode);
        Assert.Equal("grant_revoked", await response.ReasonAsync());
        Assert.Equal(0, _gateway.Upstream.Count);
        var grant = await _gateway.GetGrantAsync(id);
        var revokedEvent = grant.GetProperty("events").EnumerateArray().Single(e => e.GetProperty("type").GetString() == "revoked");
        Assert.Equal("security-officer", revokedEvent.GetProperty("actor").GetString());
    }

    [Theory]
    [InlineData(null, "assurance_required", 403)]
    [InlineData("not a valid id!", "assurance_malformed", 400)]
    [InlineData("unknownButWellFormed", "grant_not_found", 403)]
    public async Task Use_MissingOrBadAssuranceId_Denied(string? grantId, string reason, int status)
    {
        using var response = await _gateway.Proxy.SendAsync(DeployRequest(_gateway.Idp.Token(), _gateway.WorkloadIssuer.Svid(), grantId, out _));

        Assert.Equal(status, (int)response.StatusCode);
        Assert.Equal(reason, await response.ReasonAsync());
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task Use_BodyOverLimit_413BeforeTheGrantIsTouched()
    {
        var token = _gateway.Idp.Token();
        var svid = _gateway.WorkloadIssuer.Svid();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token));

        using var large = await _gateway.Proxy.SendAsync(DeployRequest(token, svid, id, out _, body: new string('x', 5000)));

        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, large.StatusCode);
        Assert.Equal("body_too_large", await large.ReasonAsync());
        Assert.Equal(0, _gateway.Upstream.Count);
        var grant = await _gateway.GetGrantAsync(id);
        Assert.Equal(1, grant.GetProperty("usesRemaining").GetInt32());
        Assert.Equal("active", grant.GetProperty("status").GetString());
        // No use spent; the attempt is on the record (SPEC §2: the grant's record shows the reason).
        Assert.DoesNotContain(grant.GetProperty("events").EnumerateArray(), e => e.GetProperty("type").GetString() == "used");
        var denied = Assert.Single(grant.GetProperty("events").EnumerateArray(), e => e.GetProperty("type").GetString() == "denied");
        Assert.Equal("body_too_large", denied.GetProperty("reason").GetString());
    }

    [Fact]
    public async Task EarlyDenial_WellFormedAssuranceId_ProblemSpanAndGrantRecordNameIt()
    {
        // Denied before the store is asked (steps 2 and 3), each for a request that names a real grant: the client, the
        // span and the grant's own record all say which grant the attempt was made with (SPEC §2, §4.3).
        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token));

        using var weak = await _gateway.Proxy.SendAsync(DeployRequest(_gateway.Idp.Token(acr: "urn:aal1"), _gateway.WorkloadIssuer.Svid(), id, out var weakTrace));
        using var anonymous = await _gateway.Proxy.SendAsync(DeployRequest(token, null, id, out var anonymousTrace));

        foreach (var (response, trace, reason) in new[] { (weak, weakTrace, "insufficient_aal"), (anonymous, anonymousTrace, "workload_unidentified") })
        {
            Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
            var problem = await response.ProblemAsync();
            Assert.Equal(reason, problem.GetProperty("reason").GetString());
            Assert.Equal(id, problem.GetProperty("assuranceId").GetString());
            Assert.Equal(id, Assert.Single(_gateway.Spans.Enforce(trace)).GetTagItem("assurance.grant.id"));
        }

        Assert.Equal(0, _gateway.Upstream.Count);
        var grant = await _gateway.GetGrantAsync(id);
        Assert.Equal(1, grant.GetProperty("usesRemaining").GetInt32());
        var denials = grant.GetProperty("events").EnumerateArray().Where(e => e.GetProperty("type").GetString() == "denied").ToList();
        Assert.Equal(["insufficient_aal", "workload_unidentified"], denials.Select(e => e.GetProperty("reason").GetString()));
        Assert.Equal([weakTrace, anonymousTrace], denials.Select(e => e.GetProperty("traceId").GetString()));
        Assert.All(denials, e => Assert.Equal("127.0.0.1", e.GetProperty("origin").GetString()));
    }

    [Fact]
    public async Task EarlyDenial_WithoutAValidToken_NamesTheGrantButNeverWritesToTheStore()
    {
        // Anyone can send a grant id with a forged token: the store is not written for an unauthenticated caller (it
        // would be a write at line rate for free). The span and the problem still name the grant.
        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token));
        var forged = token[..^4] + (token[^4..] == "AAAA" ? "BBBB" : "AAAA");

        using var response = await _gateway.Proxy.SendAsync(DeployRequest(forged, _gateway.WorkloadIssuer.Svid(), id, out var trace));

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        var problem = await response.ProblemAsync();
        Assert.Equal("token_invalid", problem.GetProperty("reason").GetString());
        Assert.Equal(id, problem.GetProperty("assuranceId").GetString());
        Assert.Equal(id, Assert.Single(_gateway.Spans.Enforce(trace)).GetTagItem("assurance.grant.id"));
        Assert.Equal(0, _gateway.Upstream.Count);
        var events = (await _gateway.GetGrantAsync(id)).GetProperty("events").EnumerateArray().Select(e => e.GetProperty("type").GetString());
        Assert.Equal(["created", "approved"], events);
    }

    [Theory]
    [InlineData("approver")]
    [InlineData("ops/lead+1@corp.example")] // written differently by the two JSON encoders of the approver list ('/', '+')
    [InlineData("\u00e9quipe \"a\"")]
    public async Task SelfApproval_GrantWithoutSubjectUsedByItsCreator_403AndNothingForwarded(string approver)
    {
        // The approver leaves "subject" out (the deploy policy does not bind it), binds the grant to its own access
        // token and uses it: the four-eyes rule of SPEC §5.1 was checked on subject only.
        var own = _gateway.Idp.Token(approver);
        var grant = DeployGrant(own);
        grant.Remove("subject");
        var id = await _gateway.CreateGrantAsync(grant, _gateway.Idp.ApiToken(approver));

        using var response = await _gateway.Proxy.SendAsync(DeployRequest(own, _gateway.WorkloadIssuer.Svid(), id, out _));

        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        Assert.Equal("self_approval", await response.ReasonAsync());
        Assert.Equal(0, _gateway.Upstream.Count);
        var record = await _gateway.GetGrantAsync(id);
        Assert.Equal(1, record.GetProperty("usesRemaining").GetInt32());
        Assert.Equal("self_approval", record.GetProperty("events").EnumerateArray().Last().GetProperty("reason").GetString());

        // Control: the same kind of grant, approved for someone else's token, is theirs to use.
        var bobs = _gateway.Idp.Token("bob");
        var forBob = DeployGrant(bobs);
        forBob.Remove("subject");
        var bobsId = await _gateway.CreateGrantAsync(forBob, _gateway.Idp.ApiToken(approver));
        using var used = await _gateway.Proxy.SendAsync(DeployRequest(bobs, _gateway.WorkloadIssuer.Svid(), bobsId, out _));
        Assert.Equal(HttpStatusCode.OK, used.StatusCode);
        Assert.Equal(1, _gateway.Upstream.Count);
    }

    [Theory]
    [InlineData("bob")]
    [InlineData("ops/lead+1@corp.example")]
    [InlineData("a\\b")]
    [InlineData("\U0001F600 emoji")]
    [InlineData("<b>&'`")]
    public async Task SelfApproval_SecondApproverUsesASubjectlessGrant_403AndNothingForwarded(string second)
    {
        // The first approver's list entry is written when the grant is created, the second's by the store's approve step
        // (in Redis by another JSON encoder): either way the second approver may not perform the action.
        var own = _gateway.Idp.Token(second);
        var grant = DeployGrant(own, path: "/quorum/v1/releases");
        grant["route"] = "quorum";
        grant.Remove("subject");
        var id = await _gateway.CreateGrantAsync(grant, _gateway.Idp.ApiToken("first-approver"));
        using (var approve = new HttpRequestMessage(HttpMethod.Post, $"/assurance/v1/grants/{id}/approve"))
        {
            approve.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", _gateway.Idp.ApiToken(second));
            using var approved = await _gateway.Api.SendAsync(approve);
            Assert.True(approved.IsSuccessStatusCode, $"approve: {(int)approved.StatusCode} {await approved.Content.ReadAsStringAsync()}");
        }

        using var response = await _gateway.Proxy.SendAsync(DeployRequest(own, _gateway.WorkloadIssuer.Svid(), id, out _, path: "/quorum/v1/releases"));

        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        Assert.Equal("self_approval", await response.ReasonAsync());
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task SelfApproval_ApproverPresentsAGrantBoundToAnotherToken_TokenMismatchBurnsIt()
    {
        // Every binding comes first: the grant is not hers to use, whoever approved it, and RevokeOn burns the leaked id.
        var bobs = _gateway.Idp.Token("bob");
        var grant = DeployGrant(bobs);
        grant.Remove("subject");
        var id = await _gateway.CreateGrantAsync(grant, _gateway.Idp.ApiToken("approver"));

        using var response = await _gateway.Proxy.SendAsync(DeployRequest(_gateway.Idp.Token("approver"), _gateway.WorkloadIssuer.Svid(), id, out _));

        Assert.Equal("token_mismatch", await response.ReasonAsync());
        Assert.Equal("revoked", (await _gateway.GetGrantAsync(id)).GetProperty("status").GetString());
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task EarlyDenials_OfAWeakCaller_CannotPushTheRealMisuseOffTheGrantRecord()
    {
        // Any valid token (AAL1, no workload) can be denied before the store with someone's grant id. Those denials have
        // a smaller cap than the store's own: the leaked grant tried with its token from another workload is still recorded.
        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token));
        var weak = _gateway.Idp.Token("mallory", acr: "urn:aal1");
        for (var i = 0; i < 270; i++)
        {
            using var junk = await _gateway.Proxy.SendAsync(DeployRequest(weak, null, id, out _));
            Assert.Equal(HttpStatusCode.Unauthorized, junk.StatusCode);
        }

        using var misuse = await _gateway.Proxy.SendAsync(DeployRequest(token, _gateway.WorkloadIssuer.Svid(OtherWorkload), id, out var trace));

        Assert.Equal("workload_mismatch", await misuse.ReasonAsync());
        var record = await _gateway.GetGrantAsync(id);
        var events = record.GetProperty("events").EnumerateArray().ToList();
        Assert.Contains(events, e => e.GetProperty("type").GetString() == "denied" && e.GetProperty("traceId").GetString() == trace);
        Assert.Contains(events, e => e.GetProperty("type").GetString() == "revoked");
        Assert.True(events.Count(e => e.TryGetProperty("reason", out var r) && r.GetString() == "insufficient_aal") < 64);
        Assert.True(record.GetProperty("droppedEvents").GetInt32() > 200);
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task RequestMismatch_GrantIssuedWithRequestHashOnly_ProblemHasAnEmptyMismatchList()
    {
        // Without digests nothing says which part differs, but the member is there as SPEC §4.3 has it.
        var token = _gateway.Idp.Token();
        var grant = DeployGrant(token);
        grant.Remove("request");
        grant["requestHash"] = AssuranceGateway.Requests.CanonicalRequest.Compute("POST", "/deploy/v1/releases", string.Empty, ["content-type"],
            n => n == "content-type" ? "application/json" : default, Encoding.UTF8.GetBytes(ReleaseBody)).Hash;
        var id = await _gateway.CreateGrantAsync(grant);

        using var response = await _gateway.Proxy.SendAsync(DeployRequest(token, _gateway.WorkloadIssuer.Svid(), id, out _, body: """{"release":"6.6"}"""));

        var problem = await response.ProblemAsync();
        Assert.Equal("request_mismatch", problem.GetProperty("reason").GetString());
        Assert.Equal(JsonValueKind.Array, problem.GetProperty("mismatch").ValueKind);
        Assert.Equal(0, problem.GetProperty("mismatch").GetArrayLength());
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task Shadow_DenyThatWouldRevoke_SpanIsAnErrorAndSaysSoWhileTheGrantIsUntouched()
    {
        // Shadow mode decides as enforcement would, forwards anyway, and records what enforcement would have done:
        // a denial (span status Error, SPEC §6) that would have burned the grant (RevokeOn).
        var token = _gateway.Idp.Token();
        var grant = DeployGrant(token, path: "/shadowed/v1/releases");
        grant["route"] = "shadowed";
        var id = await _gateway.CreateGrantAsync(grant);

        using var response = await _gateway.Proxy.SendAsync(
            DeployRequest(token, _gateway.WorkloadIssuer.Svid(OtherWorkload), id, out var trace, path: "/shadowed/v1/releases"));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var span = Assert.Single(_gateway.Spans.Enforce(trace));
        Assert.Equal("deny", span.GetTagItem("assurance.decision"));
        Assert.Equal("workload_mismatch", span.GetTagItem("assurance.reason"));
        Assert.Equal("shadow", span.GetTagItem("assurance.mode"));
        Assert.Equal(System.Diagnostics.ActivityStatusCode.Error, span.Status);
        Assert.Equal("workload_mismatch", span.StatusDescription);
        Assert.Equal("revoked", span.GetTagItem("assurance.grant.status"));
        Assert.Contains(span.Events, e => e.Name == "assurance.grant.revoked");
        var record = await _gateway.GetGrantAsync(id);
        Assert.Equal("active", record.GetProperty("status").GetString());
        Assert.Equal(1, record.GetProperty("usesRemaining").GetInt32());
        Assert.Equal(["created", "approved"], record.GetProperty("events").EnumerateArray().Select(e => e.GetProperty("type").GetString()));
    }

    [Theory]
    [InlineData("/deploy/v1/releases/%2e%2e/admin", "")] // the upstream would get /deploy/v1/admin
    [InlineData("/deploy/v1/releases/../admin", "")]
    [InlineData("/deploy/v1/releases/./x", "")]
    [InlineData("/deploy/v1/%72eleases", "")] // an encoded unreserved character: decoded on the way
    [InlineData("/deploy/v1/a%2Fb", "")] // an encoded slash: double-encoded on the way
    [InlineData("/deploy/v1/releases", "env=%70rod")] // the query's unreserved escapes are decoded on the way
    public async Task Use_ApprovedTargetTheUpstreamWouldReceiveDifferently_400RequestAmbiguous(string path, string query)
    {
        // The attacker gets a grant for exactly the raw target it will send (an approver sees that text), so the hash
        // would match; but the upstream would run another path or query than the one approved. The API refuses such a
        // path given as a request, so the grant carries its hash, which the API cannot look into.
        var token = _gateway.Idp.Token();
        if (AssuranceGateway.Requests.CanonicalRequest.PathProblem(path) is not null)
        {
            using var refused = await _gateway.PostGrantAsync(DeployGrant(token, path: path));
            Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
            Assert.StartsWith("request.path: ", (await refused.ProblemAsync()).GetProperty("detail").GetString(), StringComparison.Ordinal);
        }

        var grant = DeployGrant(token);
        grant.Remove("request");
        grant["requestHash"] = AssuranceGateway.Requests.CanonicalRequest.Compute("POST", path, query, ["content-type"],
            n => n == "content-type" ? "application/json" : default, Encoding.UTF8.GetBytes(ReleaseBody)).Hash;
        var id = await _gateway.CreateGrantAsync(grant);

        var (status, problem) = await SendRawDeployAsync(path + (query.Length > 0 ? "?" + query : string.Empty), token, id);

        Assert.Equal(400, status);
        Assert.Equal("request_ambiguous", problem.GetProperty("reason").GetString());
        Assert.Equal(0, _gateway.Upstream.Count);
        var stored = await _gateway.GetGrantAsync(id);
        Assert.Equal(1, stored.GetProperty("usesRemaining").GetInt32());
    }

    [Fact]
    public async Task Use_PercentEncodedTargetTheUpstreamReceivesAsIs_Allowed()
    {
        // Encoding is not refused as such: a space in a path segment goes through exactly as approved.
        const string path = "/deploy/v1/releases/5.2%20hotfix";
        var token = _gateway.Idp.Token();
        var grant = DeployGrant(token, path: path);
        grant["request"]!["query"] = "note=a%26b";
        var id = await _gateway.CreateGrantAsync(grant);

        var (status, _) = await SendRawDeployAsync(path + "?note=a%26b", token, id);

        Assert.Equal(200, status);
        var received = Assert.Single(_gateway.Upstream.Received);
        Assert.Equal(path, received.Path);
        Assert.Equal("note=a%26b", received.Query.TrimStart('?'));
    }

    [Fact]
    public async Task Use_MethodNotInUpperCase_400RequestAmbiguous()
    {
        // The hash upper-cases the method, YARP forwards an unknown method as sent: approved PURGE, upstream gets Purge.
        var token = _gateway.Idp.Token();
        var grant = DeployGrant(token);
        grant["request"]!["method"] = "PURGE";
        var id = await _gateway.CreateGrantAsync(grant);

        var (status, problem) = await SendRawDeployAsync("/deploy/v1/releases", token, id, method: "Purge");

        Assert.Equal(400, status);
        Assert.Equal("request_ambiguous", problem.GetProperty("reason").GetString());
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task Use_WebSocketUpgradeOnARequestBoundRoute_400RequestAmbiguous()
    {
        // A grant approved for one GET must not open a connection whose later traffic no hash covers.
        var token = _gateway.Idp.Token();
        var grant = DeployGrant(token, body: string.Empty);
        grant["request"]!["method"] = "GET";
        var id = await _gateway.CreateGrantAsync(grant);

        var (status, problem) = await SendRawDeployAsync(
            "/deploy/v1/releases", token, id, method: "GET", body: string.Empty,
            extraHeaders: "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n");

        Assert.Equal(400, status);
        Assert.Equal("request_ambiguous", problem.GetProperty("reason").GetString());
        Assert.Equal(0, _gateway.Upstream.Count);
        Assert.Equal(1, (await _gateway.GetGrantAsync(id)).GetProperty("usesRemaining").GetInt32());
    }

    [Theory]
    [InlineData("zz\r\nnot-a-chunk\r\n0\r\n\r\n")]                          // a chunk size that is not hex
    [InlineData("5\r\n{\"a\":1}\r\n0\r\n\r\n")]                              // a chunk longer than it says
    public async Task Use_BodyFramingKestrelCannotRead_400RequestAmbiguousWithEvidenceNothingForwarded(string framing)
    {
        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token));

        var (status, problem) = await SendRawDeployAsync("/deploy/v1/releases", token, id, chunked: framing);

        Assert.Equal(400, status);
        Assert.Equal("request_ambiguous", problem.GetProperty("reason").GetString());
        Assert.Equal(0, _gateway.Upstream.Count);
        Assert.Equal(1, (await _gateway.GetGrantAsync(id)).GetProperty("usesRemaining").GetInt32());

        // The evidence span carries the decision like any other denial.
        var span = Assert.Single(_gateway.Spans.Enforce(problem.GetProperty("traceId").GetString()!));
        Assert.Equal("deny", span.GetTagItem("assurance.decision"));
        Assert.Equal("request_ambiguous", span.GetTagItem("assurance.reason"));
    }

    [Theory]
    [InlineData("application/json\v")]
    [InlineData("\fapplication/json")]
    public async Task Use_BoundHeaderWithWhitespaceBeyondSpaceAndTab_403RequestMismatchNothingForwarded(string sent)
    {
        // Only spaces and tabs around a value are insignificant (RFC 9110 OWS). Anything else the upstream receives as
        // sent, so it cannot hash like the approved value.
        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token));

        var (status, problem) = await SendRawDeployAsync("/deploy/v1/releases", token, id, contentType: sent);

        Assert.Equal(403, status);
        Assert.Equal("request_mismatch", problem.GetProperty("reason").GetString());
        Assert.Equal("headers", Assert.Single(problem.GetProperty("mismatch").EnumerateArray()).GetString());
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task Use_AssuranceIdHeaderRepeated_400AssuranceMalformedAndNoGrantSpent()
    {
        // Two Assurance-Id header lines, the first naming a grant that matches this exact request: which one the caller
        // means is not for the gateway to guess (SPEC §2 step 5), so neither is used.
        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token));
        var other = await _gateway.CreateGrantAsync(DeployGrant(token));

        var (status, problem) = await SendRawDeployAsync("/deploy/v1/releases", token, id, extraHeaders: $"Assurance-Id: {other}\r\nConnection: close\r\n");

        Assert.Equal(400, status);
        Assert.Equal("assurance_malformed", problem.GetProperty("reason").GetString());
        Assert.Equal(0, _gateway.Upstream.Count);
        // Neither grant was the one named: neither record changes (no use, no denial on either).
        foreach (var named in new[] { id, other })
        {
            var record = await _gateway.GetGrantAsync(named);
            Assert.Equal(1, record.GetProperty("usesRemaining").GetInt32());
            Assert.Equal(["created", "approved"], record.GetProperty("events").EnumerateArray().Select(e => e.GetProperty("type").GetString()));
        }
    }

    /// <summary>HttpClient would normalise the target (dot segments, escapes): this request is written by hand.</summary>
    private async Task<(int Status, System.Text.Json.JsonElement Problem)> SendRawDeployAsync(
        string target, string token, string grantId, string method = "POST", string body = ReleaseBody, string extraHeaders = "", string? chunked = null,
        string contentType = "application/json")
    {
        var bytes = Encoding.UTF8.GetBytes(body);
        var head = $"{method} {target} HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {token}\r\n"
            + $"Workload-Identity: {_gateway.WorkloadIssuer.Svid()}\r\nAssurance-Id: {grantId}\r\n"
            + $"Content-Type: {contentType}\r\n"
            + (chunked is not null ? "Transfer-Encoding: chunked\r\n" : bytes.Length > 0 ? $"Content-Length: {bytes.Length}\r\n" : string.Empty)
            + (extraHeaders.Length > 0 ? extraHeaders : "Connection: close\r\n");
        var (status, content) = await RawHttp.SendAsync(_gateway.ProxyAddress, head, chunked is not null ? Encoding.ASCII.GetBytes(chunked) : bytes);
        using var json = System.Text.Json.JsonDocument.Parse(content.StartsWith('{') ? content : "{}");
        return (status, json.RootElement.Clone());
    }

    [Fact]
    public async Task Use_ChunkedBody_HashedAndForwardedExactly()
    {
        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token));
        using var request = DeployRequest(token, _gateway.WorkloadIssuer.Svid(), id, out _);
        request.Content = new StreamContent(new MemoryStream(Encoding.UTF8.GetBytes(ReleaseBody)));
        request.Content.Headers.TryAddWithoutValidation("Content-Type", "application/json");
        request.Headers.TransferEncodingChunked = true;

        using var response = await _gateway.Proxy.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(ReleaseBody, Encoding.UTF8.GetString(Assert.Single(_gateway.Upstream.Received).Body));
    }

    [Fact]
    public async Task Use_NoWorkloadIdentity_WorkloadUnidentified()
    {
        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token));

        using var response = await _gateway.Proxy.SendAsync(DeployRequest(token, svid: null, id, out _));

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("workload_unidentified", await response.ReasonAsync());
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task Use_ForgedWorkloadJwt_WorkloadInvalidNeverFallsThrough()
    {
        // The access token's azp would identify the deployer via the 'claim' source; the forged header must not be skipped.
        var token = _gateway.Idp.Token(edit: c => c["azp"] = Deployer);
        var id = await _gateway.CreateGrantAsync(DeployGrant(token));
        using var attacker = System.Security.Cryptography.ECDsa.Create(System.Security.Cryptography.ECCurve.NamedCurves.nistP256);
        var forged = _gateway.WorkloadIssuer.Sign(_gateway.WorkloadIssuer.Header("JWT"),
            new JsonObject { ["iss"] = _gateway.WorkloadIssuer.Issuer, ["sub"] = Deployer, ["aud"] = "gateway", ["exp"] = DateTimeOffset.UtcNow.AddMinutes(5).ToUnixTimeSeconds() }.ToJsonString(),
            attacker);

        using var response = await _gateway.Proxy.SendAsync(DeployRequest(token, forged, id, out _));

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("workload_invalid", await response.ReasonAsync());
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task Use_SourcesNameDifferentWorkloads_WorkloadInvalid()
    {
        var token = _gateway.Idp.Token(edit: c => c["azp"] = OtherWorkload);
        var id = await _gateway.CreateGrantAsync(DeployGrant(token));

        using var response = await _gateway.Proxy.SendAsync(DeployRequest(token, _gateway.WorkloadIssuer.Svid(), id, out _));

        Assert.Equal("workload_invalid", await response.ReasonAsync());
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task Use_ForgedClientCertHeaderFromUntrustedPeer_NeverForwarded()
    {
        // The passthrough route forwards, but a client-certificate header from an untrusted hop is stripped.
        await using var gateway = await GatewayHarness.StartAsync();
        using var request = GatewayHarness.Request(HttpMethod.Get, "/public/x", token: null, out _);
        request.Headers.TryAddWithoutValidation("X-Forwarded-Client-Cert", "URI=spiffe://prod.test/ns/ci/sa/deployer");
        request.Headers.TryAddWithoutValidation("Assurance-Evidence", "forged");

        using var response = await gateway.Proxy.SendAsync(request);

        var received = Assert.Single(gateway.Upstream.Received);
        Assert.False(received.Headers.ContainsKey("X-Forwarded-Client-Cert"));
        Assert.False(received.Headers.ContainsKey("Assurance-Evidence"));
    }

    [Fact]
    public async Task Use_OriginBound_RightmostUntrustedForwardedForDecides()
    {
        var token = _gateway.Idp.Token();
        var grant = new JsonObject
        {
            ["route"] = "backup",
            ["subject"] = "alice",
            ["origin"] = new JsonArray("10.1.0.0/16"),
            ["request"] = new JsonObject { ["method"] = "POST", ["path"] = "/backup/run" },
            ["maxUses"] = 1,
        };
        var id = await _gateway.CreateGrantAsync(grant);

        HttpRequestMessage Backup(string forwardedFor)
        {
            var request = GatewayHarness.Request(HttpMethod.Post, "/backup/run", token, out _);
            request.Headers.TryAddWithoutValidation("Assurance-Id", id);
            request.Headers.TryAddWithoutValidation("X-Forwarded-For", forwardedFor);
            return request;
        }

        // The client forged "10.1.9.9" on the left; the trusted proxy (loopback) saw it come from 192.0.2.7.
        using var spoofed = await _gateway.Proxy.SendAsync(Backup("10.1.9.9, 192.0.2.7"));
        Assert.Equal("origin_mismatch", await spoofed.ReasonAsync());
        Assert.Equal(0, _gateway.Upstream.Count);
        using var afterBurn = await _gateway.Proxy.SendAsync(Backup("10.1.2.3"));

        Assert.Equal("grant_revoked", await afterBurn.ReasonAsync());
        Assert.Equal(0, _gateway.Upstream.Count);
        var fresh = await _gateway.CreateGrantAsync(grant);
        using var fromInside = GatewayHarness.Request(HttpMethod.Post, "/backup/run", token, out _);
        fromInside.Headers.TryAddWithoutValidation("Assurance-Id", fresh);
        fromInside.Headers.TryAddWithoutValidation("X-Forwarded-For", "203.0.113.1, 10.1.2.3");
        using var allowed = await _gateway.Proxy.SendAsync(fromInside);
        Assert.Equal(HttpStatusCode.OK, allowed.StatusCode);
        Assert.Equal(1, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task Replay_EvidenceLinksToFirstUse()
    {
        var token = _gateway.Idp.Token();
        var svid = _gateway.WorkloadIssuer.Svid();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token));

        using var first = await _gateway.Proxy.SendAsync(DeployRequest(token, svid, id, out var firstTrace));
        using var replay = await _gateway.Proxy.SendAsync(DeployRequest(token, svid, id, out var replayTrace));

        var firstSpan = Assert.Single(_gateway.Spans.Enforce(firstTrace));
        var replaySpan = Assert.Single(_gateway.Spans.Enforce(replayTrace));
        Assert.Equal("allow", firstSpan.GetTagItem("assurance.decision"));
        Assert.Equal(id, firstSpan.GetTagItem("assurance.grant.id"));
        Assert.Equal(0, firstSpan.GetTagItem("assurance.grant.uses_remaining"));
        Assert.StartsWith("sha256:", (string)firstSpan.GetTagItem("assurance.request.hash")!, StringComparison.Ordinal);
        Assert.Equal("replayed", replaySpan.GetTagItem("assurance.reason"));
        Assert.Equal(firstTrace, replaySpan.GetTagItem("assurance.first_use.trace_id"));
        Assert.Equal(Deployer, replaySpan.GetTagItem("assurance.first_use.workload"));
        var link = Assert.Single(replaySpan.Links);
        Assert.Equal(firstSpan.TraceId, link.Context.TraceId);
        Assert.Equal(firstSpan.SpanId, link.Context.SpanId);
    }
}

public sealed class InMemoryGrantEnforcementTests : GrantEnforcementTests
{
    protected override Task<string?> StoreConnectionAsync() => Task.FromResult<string?>(null);
}
