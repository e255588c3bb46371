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
        var parent = Assert.Single(gateway.Spans.All, s => s.SpanId == span.ParentSpanId);
        Assert.Equal("Microsoft.AspNetCore", parent.Source.Name);
        var client = Assert.Single(gateway.Spans.All, s => s.TraceId.ToHexString() == traceId && s.Source.Name == "System.Net.Http");
        Assert.Equal("Yarp.ReverseProxy", Assert.Single(gateway.Spans.All, s => s.SpanId == client.ParentSpanId).Source.Name);
    }
}
