using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json;
using AssuranceGateway.Testing;
using static AssuranceGateway.Testing.GrantHelpers;

namespace AssuranceGateway.FunctionalTests.Evidence;

/// <summary>SPEC §6: one evidence span per decision, never sampled away, and never holding a secret.</summary>
public sealed class EvidenceSpanTests : IAsyncLifetime
{
    private GatewayHarness _gateway = null!;

    public async Task InitializeAsync() => _gateway = await GatewayHarness.StartAsync();

    public async Task DisposeAsync() => await _gateway.DisposeAsync();

    [Fact]
    public async Task ForwardedRequest_UpstreamsParentSpanIsOneTheGatewayRecorded()
    {
        // An SRE follows the trace from the gateway into the upstream: the traceparent the upstream receives must name
        // a span the gateway records (and exports), not a phantom the trace backend never sees.
        using var request = GatewayHarness.Request(HttpMethod.Get, "/status", _gateway.Idp.Token(), out var traceId);

        using var response = await _gateway.Proxy.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var traceparent = Assert.Single(_gateway.Upstream.Received).Headers["traceparent"].Split('-');
        Assert.Equal(traceId, traceparent[1]);
        Assert.Equal("01", traceparent[3]);
        var parent = await EventuallyAsync(() => _gateway.Spans.All.FirstOrDefault(
            s => s.TraceId.ToHexString() == traceId && s.SpanId.ToHexString() == traceparent[2]));
        Assert.True(parent.Recorded);
        Assert.Equal(ActivityKind.Client, parent.Kind);
    }

    private static async Task<Activity> EventuallyAsync(Func<Activity?> find)
    {
        // Spans reach the collector when they end, which for the client span is just after the response is sent.
        for (var i = 0; i < 100; i++)
        {
            if (find() is { } found)
            {
                return found;
            }

            await Task.Delay(20);
        }

        throw new Xunit.Sdk.XunitException("no recorded span has the upstream's parent span id");
    }

    [Fact]
    public async Task ParentSampledOut_EvidenceSpanStillRecordedAsChildOfServerSpan()
    {
        var traceId = ActivityTraceId.CreateRandom().ToHexString();
        using var request = new HttpRequestMessage(HttpMethod.Get, "/status");
        request.Headers.TryAddWithoutValidation("traceparent", $"00-{traceId}-{ActivitySpanId.CreateRandom().ToHexString()}-00");

        using var response = await _gateway.Proxy.SendAsync(request);

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal(0, _gateway.Upstream.Count);
        var span = Assert.Single(_gateway.Spans.Enforce(traceId));
        Assert.True(span.Recorded);
        Assert.Equal("token_missing", span.GetTagItem("assurance.reason"));
        Assert.Equal(traceId, (await response.ProblemAsync()).GetProperty("traceId").GetString());
        // The parent is the ASP.NET Core server span of this request (itself sampled out, so not exported).
        Assert.NotEqual(default, span.ParentSpanId);
        Assert.DoesNotContain(_gateway.Spans.All, s => s.SpanId == span.ParentSpanId && s.Recorded);
    }

    [Fact]
    public async Task ParentSampledIn_EvidenceSpanIsChildOfServerSpan()
    {
        using var request = GatewayHarness.Request(HttpMethod.Get, "/status", _gateway.Idp.Token(), out var traceId);

        using var response = await _gateway.Proxy.SendAsync(request);

        var span = Assert.Single(_gateway.Spans.Enforce(traceId));
        // The server span ends after the client has its response: waited for, not read at once.
        var server = await _gateway.Spans.WaitForSingleAsync(s => s.SpanId == span.ParentSpanId, "the evidence span's parent");
        Assert.Equal(ActivityKind.Server, server.Kind);
    }

    [Fact]
    public async Task AllDecisionClasses_NoRawTokenWorkloadJwtOrBodyInSpansLogsOrStore()
    {
        var token = _gateway.Idp.Token();
        var svid = _gateway.WorkloadIssuer.Svid();
        var otherSvid = _gateway.WorkloadIssuer.Svid(OtherWorkload);
        var apiToken = _gateway.Idp.ApiToken();
        var lowAal = _gateway.Idp.Token(acr: "urn:aal1");
        var expired = _gateway.Idp.Token(edit: c => c["exp"] = DateTimeOffset.UtcNow.AddHours(-1).ToUnixTimeSeconds());
        var id = await _gateway.CreateGrantAsync(DeployGrant(token, maxUses: 2), apiToken);
        var secrets = new[] { token, svid, otherSvid, apiToken, lowAal, expired, ReleaseBody, "tampered-body-secret" };

        (await _gateway.Proxy.SendAsync(DeployRequest(token, svid, id, out _))).Dispose();
        (await _gateway.Proxy.SendAsync(DeployRequest(token, svid, id, out _, body: "tampered-body-secret"))).Dispose();
        (await _gateway.Proxy.SendAsync(DeployRequest(lowAal, svid, id, out _))).Dispose();
        (await _gateway.Proxy.SendAsync(DeployRequest(expired, svid, id, out _))).Dispose();
        (await _gateway.Proxy.SendAsync(DeployRequest(token, "garbage." + svid, id, out _))).Dispose();
        (await _gateway.Proxy.SendAsync(DeployRequest(token, otherSvid, id, out _))).Dispose();
        (await _gateway.Proxy.SendAsync(DeployRequest(token, svid, id, out _))).Dispose();

        var spanText = new StringBuilder();
        foreach (var span in _gateway.Spans.All)
        {
            foreach (var tag in span.TagObjects)
            {
                spanText.Append(tag.Key).Append('=').Append(tag.Value).Append('\n');
            }

            foreach (var e in span.Events)
            {
                spanText.Append(e.Name).Append(string.Join(',', e.Tags.Select(t => $"{t.Key}={t.Value}"))).Append('\n');
            }
        }

        var logs = string.Join('\n', _gateway.Logs.Lines);
        var stored = (await _gateway.GetGrantAsync(id)).GetRawText();
        Assert.Contains("assurance.token.hash=sha256:", spanText.ToString(), StringComparison.Ordinal);
        Assert.Contains("Denied", logs, StringComparison.Ordinal);
        foreach (var secret in secrets)
        {
            Assert.DoesNotContain(secret, spanText.ToString(), StringComparison.Ordinal);
            Assert.DoesNotContain(secret, logs, StringComparison.Ordinal);
            Assert.DoesNotContain(secret, stored, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task Deny_OneStructuredLogLineWithTheSpanFields()
    {
        using var response = await _gateway.Proxy.SendAsync(DeployRequest(_gateway.Idp.Token(), _gateway.WorkloadIssuer.Svid(), "missingGrant", out var trace));

        Assert.Equal(0, _gateway.Upstream.Count);
        var line = Assert.Single(_gateway.Logs.Lines, l => l.Contains("[200]", StringComparison.Ordinal) && l.Contains(trace, StringComparison.Ordinal));
        Assert.Contains("Reason=grant_not_found", line, StringComparison.Ordinal);
        Assert.Contains("Route=deploy", line, StringComparison.Ordinal);
        Assert.Contains("GrantId=missingGrant", line, StringComparison.Ordinal);
        Assert.Contains("Workload=" + Deployer, line, StringComparison.Ordinal);
        Assert.Contains("TokenHash=sha256:", line, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ReplayedDeny_LogLineCarriesFirstUseAndSessionLikeTheSpan()
    {
        var token = _gateway.Idp.Token(sid: "s-replay");
        var svid = _gateway.WorkloadIssuer.Svid();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token));

        using var first = await _gateway.Proxy.SendAsync(DeployRequest(token, svid, id, out var firstTrace));
        using var replay = await _gateway.Proxy.SendAsync(DeployRequest(token, svid, id, out var replayTrace));

        Assert.Equal(HttpStatusCode.Forbidden, replay.StatusCode);
        var span = Assert.Single(_gateway.Spans.Enforce(replayTrace));
        Assert.Equal(firstTrace, span.GetTagItem("assurance.first_use.trace_id"));
        var line = Assert.Single(_gateway.Logs.Lines, l => l.Contains("[200]", StringComparison.Ordinal) && l.Contains(replayTrace, StringComparison.Ordinal));
        Assert.Contains("Reason=replayed", line, StringComparison.Ordinal);
        Assert.Contains("FirstUseTraceId=" + firstTrace, line, StringComparison.Ordinal);
        Assert.Contains("FirstUseAt=" + span.GetTagItem("assurance.first_use.at"), line, StringComparison.Ordinal);
        Assert.Contains("FirstUseWorkload=" + Deployer, line, StringComparison.Ordinal);
        Assert.Contains("Session=s-replay", line, StringComparison.Ordinal);
        Assert.Contains("Aal=2", line, StringComparison.Ordinal);
        Assert.Contains("WorkloadSource=" + span.GetTagItem("assurance.workload.source"), line, StringComparison.Ordinal);
        Assert.Contains("GrantStatus=" + span.GetTagItem("assurance.grant.status"), line, StringComparison.Ordinal);
        Assert.Contains("UsesRemaining=0", line, StringComparison.Ordinal);
        Assert.Contains("Approver=approver", line, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ChallengeDeny_LogLineCarriesTheChallengeGrantId()
    {
        using var request = GatewayHarness.Request(HttpMethod.Post, "/agent/tools/exec", _gateway.Idp.Token(acr: "urn:aal1"), out var trace);
        request.Content = new StringContent("""{"tool":"kubectl"}""", Encoding.UTF8, "application/json");
        request.Headers.TryAddWithoutValidation("Workload-Identity", _gateway.WorkloadIssuer.Svid());
        using var response = await _gateway.Proxy.SendAsync(request);

        var grantId = (await response.ProblemAsync()).GetProperty("grantId").GetString()!;
        Assert.Equal(grantId, Assert.Single(_gateway.Spans.Enforce(trace)).GetTagItem("assurance.grant.id"));
        var line = Assert.Single(_gateway.Logs.Lines, l => l.Contains("[200]", StringComparison.Ordinal) && l.Contains(trace, StringComparison.Ordinal));
        Assert.Contains("GrantId=" + grantId + " ", line, StringComparison.Ordinal);
        Assert.Contains("GrantStatus=pending", line, StringComparison.Ordinal);
    }

    [Fact]
    public async Task RequestMismatchDeny_LogLineNamesTheDifferingComponents()
    {
        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token, maxUses: 2));

        using var response = await _gateway.Proxy.SendAsync(DeployRequest(token, _gateway.WorkloadIssuer.Svid(), id, out var trace, body: """{"release":"6.0"}"""));

        Assert.Equal("request_mismatch", await response.ReasonAsync());
        var line = Assert.Single(_gateway.Logs.Lines, l => l.Contains("[200]", StringComparison.Ordinal) && l.Contains(trace, StringComparison.Ordinal));
        Assert.Contains("Mismatch=body", line, StringComparison.Ordinal);
        Assert.DoesNotContain("6.0", line, StringComparison.Ordinal);
    }

    /// <summary>
    /// CWE-117: the deny line wrote the token's sub and sid, a claim-sourced workload and the approver (an API caller's
    /// sub) as they were, so a CR/LF in a signed claim started a forged log line and an ESC sequence rewrote the
    /// operator's terminal. They are escaped (\uXXXX, still readable as evidence) and capped in length.
    /// </summary>
    [Fact]
    public async Task DenyLogLine_ClaimsAndApproverWithLineBreaksOrEscapes_AreEscapedAndCapped()
    {
        const string Forged = "\r\nWarning AssuranceGateway.Enforcement.AssuranceMiddleware[200] Denied ok route=deploy subject=root";
        var id = await _gateway.CreateGrantAsync(DeployGrant(_gateway.Idp.Token()), _gateway.Idp.ApiToken("lead\nforged"));
        var token = _gateway.Idp.Token(subject: "alice" + Forged + new string('x', 400), sid: "s-1\u001b[2J\u0085",
            edit: c => c["azp"] = "spiffe://prod.test/ci\nforged");

        using var response = await _gateway.Proxy.SendAsync(DeployRequest(token, null, id, out var trace));

        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        Assert.Equal(0, _gateway.Upstream.Count);
        var line = Assert.Single(_gateway.Logs.Lines, l => l.Contains("[200]", StringComparison.Ordinal) && l.Contains(trace, StringComparison.Ordinal));
        Assert.False(line.AsSpan().ContainsAnyInRange('\0', '\x1f') || line.AsSpan().ContainsAnyInRange('\x7f', '\x9f'), "control characters in: " + line);
        Assert.Contains(@"subject=alice\u000D\u000AWarning AssuranceGateway", line, StringComparison.Ordinal);
        Assert.Contains(@"session=s-1\u001B[2J\u0085 ", line, StringComparison.Ordinal);
        Assert.Contains(@"workload=spiffe://prod.test/ci\u000Aforged ", line, StringComparison.Ordinal);
        Assert.Contains(@"approver=lead\u000Aforged ", line, StringComparison.Ordinal);
        Assert.Contains("xx... ", line, StringComparison.Ordinal);
        Assert.DoesNotContain(new string('x', 300), line, StringComparison.Ordinal);
    }

    /// <summary>
    /// SPEC §5.2: an event carries, where known, workload and origin. forward_failed is written by the gateway with both
    /// at hand (the used event just before it has them), yet recorded neither; and its log line (201) named only the
    /// trace id, which the caller chooses, not the span of the decision.
    /// </summary>
    [Fact]
    public async Task ForwardFailed_EventCarriesWorkloadOriginAndSpan_AndTheLogLineNamesTheSpan()
    {
        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token));
        await _gateway.Upstream.DisposeAsync();

        using var response = await _gateway.Proxy.SendAsync(DeployRequest(token, _gateway.WorkloadIssuer.Svid(), id, out var trace));

        Assert.Equal("upstream_failed", await response.ReasonAsync());
        Assert.Equal(0, _gateway.Upstream.Count);
        var events = (await _gateway.GetGrantAsync(id)).GetProperty("events").EnumerateArray().ToList();
        var used = Assert.Single(events, e => e.GetProperty("type").GetString() == "used");
        var failed = Assert.Single(events, e => e.GetProperty("type").GetString() == "forward_failed");
        var spanId = used.GetProperty("spanId").GetString();
        Assert.Equal(spanId, failed.GetProperty("spanId").GetString());
        Assert.Equal(Deployer, Property(failed, "workload"));
        Assert.Equal("127.0.0.1", Property(failed, "origin"));
        var line = Assert.Single(_gateway.Logs.Lines, l => l.Contains("[201]", StringComparison.Ordinal) && l.Contains(trace, StringComparison.Ordinal));
        Assert.Contains("spanId=" + spanId, line, StringComparison.Ordinal);
    }

    /// <summary>
    /// SPEC §6 assurance.token.hash: a well-formed token that fails validation (here the very token a grant is bound to,
    /// used after it expired) was hashed by the validator (its cache key), but the span and the deny line dropped the hash,
    /// so the refused token could not be matched to the grant's tokenHash or a burst of one stolen token grouped. A hash of
    /// what the client sent is no secret; the token itself stays out.
    /// </summary>
    [Fact]
    public async Task TokenInvalid_WellFormedTokenThatFailed_SpanAndLogCarryItsHashNotTheToken()
    {
        var expired = _gateway.Idp.Token(edit: c =>
        {
            var past = DateTimeOffset.UtcNow.AddMinutes(-10).ToUnixTimeSeconds();
            (c["iat"], c["nbf"], c["exp"]) = (past - 300, past - 300, past);
        });

        using var response = await _gateway.Proxy.SendAsync(DeployRequest(expired, _gateway.WorkloadIssuer.Svid(), "grantOfThatToken", out var trace));

        Assert.Equal("token_invalid", await response.ReasonAsync());
        Assert.Equal(0, _gateway.Upstream.Count);
        Assert.Equal(TokenHash(expired), Assert.Single(_gateway.Spans.Enforce(trace)).GetTagItem("assurance.token.hash"));
        var line = Assert.Single(_gateway.Logs.Lines, l => l.Contains("[200]", StringComparison.Ordinal) && l.Contains(trace, StringComparison.Ordinal));
        Assert.Contains("TokenHash=" + TokenHash(expired) + " ", line, StringComparison.Ordinal);
        Assert.DoesNotContain(expired, line, StringComparison.Ordinal);
    }

    private static string? Property(JsonElement element, string name) => element.TryGetProperty(name, out var value) ? value.GetString() : null;
}
