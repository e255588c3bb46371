using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json;
using AssuranceGateway.Testing;
using Xunit.Abstractions;
using static AssuranceGateway.Testing.GrantHelpers;

namespace AssuranceGateway.FunctionalTests.Evidence;

/// <summary>What the evidence says about a request: where it came from, which span decided, and no secret on the way.</summary>
public sealed class EvidenceContextTests(ITestOutputHelper output)
{
    [Fact]
    public async Task ReloadWithUnparsableRedisConnectionString_PasswordNeverLogged()
    {
        await using var gateway = await GatewayHarness.StartAsync();
        var config = gateway.DefaultConfig();
        // An operator's typo in another option of a connection string that holds the Redis password.
        config["Assurance"]!["Store"]!["Redis"] = "127.0.0.1:6379,password=hunter2-secret,ssl=maybe";

        Assert.False(await gateway.ReloadAsync(config));

        var refused = Assert.Single(gateway.Logs.Lines, l => l.Contains("[100]", StringComparison.Ordinal));
        output.WriteLine(refused);
        Assert.Contains("Assurance:Store:Redis", refused, StringComparison.Ordinal);
        Assert.DoesNotContain("hunter2-secret", refused, StringComparison.Ordinal);
    }

    [Fact]
    public async Task TokenStageDenials_SpanAndLogCarryTheOrigin()
    {
        // Evidence for a burst of missing, forged or weak tokens must say where they came from: the origin is known
        // from the connection before any token is read (the passthrough span records it).
        await using var gateway = await GatewayHarness.StartAsync();
        var cases = new (string? Token, string Reason)[]
        {
            (null, "token_missing"),
            (gateway.Idp.Token() + "x", "token_invalid"),
        };
        foreach (var (token, reason) in cases)
        {
            using var request = GatewayHarness.Request(HttpMethod.Get, "/status", token, out var trace);
            using var response = await gateway.Proxy.SendAsync(request);
            Assert.Equal(reason, await response.ReasonAsync());
            var span = Assert.Single(gateway.Spans.Enforce(trace));
            Assert.Equal("127.0.0.1", span.GetTagItem("assurance.origin"));
            var line = Assert.Single(gateway.Logs.Lines, l => l.Contains("[200]", StringComparison.Ordinal) && l.Contains(trace, StringComparison.Ordinal));
            Assert.Contains("Origin=127.0.0.1", line, StringComparison.Ordinal);
        }

        using var weak = DeployRequest(gateway.Idp.Token(acr: "urn:aal1"), gateway.WorkloadIssuer.Svid(), "g1", out var weakTrace);
        using var weakResponse = await gateway.Proxy.SendAsync(weak);
        Assert.Equal("insufficient_aal", await weakResponse.ReasonAsync());
        Assert.Equal("127.0.0.1", Assert.Single(gateway.Spans.Enforce(weakTrace)).GetTagItem("assurance.origin"));
        Assert.Equal(0, gateway.Upstream.Count);
    }

    [Fact]
    public async Task ClientReusesAnotherRequestsTraceId_TheSpanIdTellsTheDecisionsApart()
    {
        // The trace id follows the caller's traceparent (W3C), so mallory can file her attempt under the victim's trace
        // id. The span id is the gateway's own: the denial names it, and the grant's events carry it.
        await using var gateway = await GatewayHarness.StartAsync();
        var token = gateway.Idp.Token();
        var id = await gateway.CreateGrantAsync(DeployGrant(token));
        using var used = await gateway.Proxy.SendAsync(DeployRequest(token, gateway.WorkloadIssuer.Svid(), id, out var victimTrace));
        Assert.Equal(HttpStatusCode.OK, used.StatusCode);

        var mallory = gateway.Idp.Token(subject: "mallory", sid: "s-m");
        using var forged = DeployRequest(mallory, gateway.WorkloadIssuer.Svid(OtherWorkload), id, out _);
        forged.Headers.Remove("traceparent");
        forged.Headers.TryAddWithoutValidation("traceparent", $"00-{victimTrace}-{ActivitySpanId.CreateRandom().ToHexString()}-01");
        using var denied = await gateway.Proxy.SendAsync(forged);
        Assert.Equal(HttpStatusCode.Forbidden, denied.StatusCode);
        Assert.Equal(1, gateway.Upstream.Count);

        var problemSpan = (await denied.ProblemAsync()).GetProperty("spanId").GetString();
        var spans = gateway.Spans.Enforce(victimTrace);
        Assert.Equal(2, spans.Count);
        var deniedSpan = Assert.Single(spans, s => s.GetTagItem("assurance.reason") is "subject_mismatch" or "workload_mismatch");
        Assert.Equal(deniedSpan.SpanId.ToHexString(), problemSpan);
        var events = (await gateway.GetGrantAsync(id)).GetProperty("events").EnumerateArray().ToList();
        var usedEvent = Assert.Single(events, e => e.GetProperty("type").GetString() == "used");
        var deniedEvent = Assert.Single(events, e => e.GetProperty("type").GetString() == "denied");
        Assert.Equal(victimTrace, usedEvent.GetProperty("traceId").GetString());
        Assert.Equal(victimTrace, deniedEvent.GetProperty("traceId").GetString());
        Assert.Equal(problemSpan, deniedEvent.GetProperty("spanId").GetString());
        Assert.NotEqual(problemSpan, usedEvent.GetProperty("spanId").GetString());
        output.WriteLine($"trace {victimTrace}: used by span {usedEvent.GetProperty("spanId")}, denied by span {problemSpan}");
    }

    [Fact]
    public async Task EvidenceSpan_IsChildOfTheAspNetCoreServerSpan_AndTheUpstreamCallStaysUnderYarp()
    {
        // SPEC §6: "child of the ASP.NET Core server span". YARP's own proxy.forwarder activity is also of kind Server,
        // so the kind alone does not tell them apart: check the source.
        await using var gateway = await GatewayHarness.StartAsync();
        using var request = GatewayHarness.Request(HttpMethod.Get, "/status", gateway.Idp.Token(), out var traceId);
        using var response = await gateway.Proxy.SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);

        var span = Assert.Single(gateway.Spans.Enforce(traceId));
        // The server span and YARP's end after the client has its response: waited for, not read at once.
        var parent = await gateway.Spans.WaitForSingleAsync(s => s.SpanId == span.ParentSpanId, "the evidence span's parent");
        Assert.Equal("Microsoft.AspNetCore", parent.Source.Name);
        var client = await gateway.Spans.WaitForSingleAsync(s => s.TraceId.ToHexString() == traceId && s.Source.Name == "System.Net.Http", "the upstream call");
        Assert.Equal("Yarp.ReverseProxy", (await gateway.Spans.WaitForSingleAsync(s => s.SpanId == client.ParentSpanId, "the upstream call's parent")).Source.Name);
    }

    /// <summary>
    /// The trace id is the caller's (W3C traceparent), so a caller can file any number of denials under a victim's trace
    /// id. The deny log line (200) carried only the trace id: without a trace backend nobody could tell which line was
    /// which decision. Each line names the span id of its own decision, the one its problem response gives.
    /// </summary>
    [Fact]
    public async Task DenyLogLine_TraceIdReusedByTheCaller_EachLineNamesTheSpanOfItsDecision()
    {
        await using var gateway = await GatewayHarness.StartAsync();
        var traceId = ActivityTraceId.CreateRandom().ToHexString();
        var spanIds = new List<string>();
        foreach (var grant in new[] { "firstUnknown", "secondUnknown" })
        {
            using var request = DeployRequest(gateway.Idp.Token(), gateway.WorkloadIssuer.Svid(), grant, out _);
            request.Headers.Remove("traceparent");
            request.Headers.TryAddWithoutValidation("traceparent", $"00-{traceId}-{ActivitySpanId.CreateRandom().ToHexString()}-01");
            using var response = await gateway.Proxy.SendAsync(request);
            spanIds.Add((await response.ProblemAsync()).GetProperty("spanId").GetString()!);
        }

        Assert.Equal(0, gateway.Upstream.Count);
        var lines = gateway.Logs.Lines.Where(l => l.Contains("[200]", StringComparison.Ordinal) && l.Contains(traceId, StringComparison.Ordinal)).ToList();
        Assert.Equal(2, lines.Count);
        Assert.NotEqual(spanIds[0], spanIds[1]);
        foreach (var spanId in spanIds)
        {
            Assert.Single(lines, l => l.Contains($"traceId={traceId} spanId={spanId}", StringComparison.Ordinal));
        }
    }

    /// <summary>
    /// SPEC §5.2: events carry, where known, workload, origin and actor. The API knows its caller's address and its own
    /// span, but the created, approved and revoked events it writes (create, approve, deny, DELETE) recorded the actor and
    /// trace id only, and the gateway's challenge-created event had no span id: "who approved this, from where, in which
    /// request" could not be answered from the grant's record.
    /// </summary>
    [Fact]
    public async Task ApiAndChallengeWrittenEvents_CarryTheCallersOriginAndTheSpanId()
    {
        await using var gateway = await GatewayHarness.StartAsync();
        async Task<(string Id, string SpanId)> ChallengeAsync()
        {
            using var request = GatewayHarness.Request(HttpMethod.Post, "/agent/tools/exec", gateway.Idp.Token(acr: "urn:aal1"), out _);
            request.Content = new StringContent("""{"tool":"kubectl"}""", Encoding.UTF8, "application/json");
            request.Headers.TryAddWithoutValidation("Workload-Identity", gateway.WorkloadIssuer.Svid());
            using var response = await gateway.Proxy.SendAsync(request);
            var problem = await response.ProblemAsync();
            return (problem.GetProperty("grantId").GetString()!, problem.GetProperty("spanId").GetString()!);
        }

        async Task CallAsync(HttpMethod method, string path, string caller)
        {
            using var call = new HttpRequestMessage(method, path);
            call.Headers.Authorization = new("Bearer", gateway.Idp.ApiToken(caller));
            using var answer = await gateway.Api.SendAsync(call);
            Assert.True(answer.IsSuccessStatusCode, $"{method} {path}: {(int)answer.StatusCode} {await answer.Content.ReadAsStringAsync()}");
        }

        var (approvedId, challengeSpan) = await ChallengeAsync();
        var (deniedId, _) = await ChallengeAsync();
        var deletedId = await gateway.CreateGrantAsync(DeployGrant(gateway.Idp.Token()));
        await CallAsync(HttpMethod.Post, $"/assurance/v1/grants/{approvedId}/approve", "lead-2");
        await CallAsync(HttpMethod.Post, $"/assurance/v1/grants/{deniedId}/deny", "lead-2");
        await CallAsync(HttpMethod.Delete, $"/assurance/v1/grants/{deletedId}", "security-officer");

        Assert.Equal(0, gateway.Upstream.Count);
        var approvedEvents = (await gateway.GetGrantAsync(approvedId)).GetProperty("events").EnumerateArray().ToList();
        var challengeCreated = Assert.Single(approvedEvents, e => e.GetProperty("type").GetString() == "created");
        Assert.True(challengeCreated.TryGetProperty("spanId", out var createdSpan) && createdSpan.GetString() == challengeSpan, "challenge created: " + challengeCreated.GetRawText());
        var apiEvents = approvedEvents.Where(e => e.GetProperty("type").GetString() == "approved")
            .Concat((await gateway.GetGrantAsync(deniedId)).GetProperty("events").EnumerateArray().Where(e => e.GetProperty("type").GetString() == "revoked"))
            .Concat((await gateway.GetGrantAsync(deletedId)).GetProperty("events").EnumerateArray())
            .ToList();
        // The deleted grant's creator counts as its first approver: that approval is the creating request's, span and all.
        Assert.Equal(["approved", "revoked", "created", "approved", "revoked"], apiEvents.Select(e => e.GetProperty("type").GetString()));
        Assert.Equal(apiEvents[2].GetProperty("spanId").GetString(), apiEvents[3].GetProperty("spanId").GetString());
        foreach (var e in apiEvents)
        {
            output.WriteLine(e.GetRawText());
            Assert.True(e.TryGetProperty("origin", out var origin) && origin.GetString() == "127.0.0.1", "no origin: " + e.GetRawText());
            Assert.True(e.TryGetProperty("spanId", out var span) && span.GetString() is { Length: 16 }, "no span id: " + e.GetRawText());
        }

        // Three API requests, three spans: the approval, the denial and the revocation each name their own.
        Assert.Equal(3, new[] { apiEvents[0], apiEvents[1], apiEvents[4] }.Select(e => e.GetProperty("spanId").GetString()).Distinct().Count());
    }
}
