using System.Net;
using System.Text.Json.Nodes;
using AssuranceGateway.Testing;
using Xunit.Abstractions;
using static AssuranceGateway.Testing.GrantHelpers;

namespace AssuranceGateway.FunctionalTests.Enforcement;

/// <summary>
/// What the grant's record says when a consumed use is not delivered, and that a flood of foreign denials cannot push
/// the real uses out of it (found by a chaos soak of the Redis-backed gateway).
/// </summary>
public sealed class ForwardFailureTests(ITestOutputHelper output) : IAsyncLifetime
{
    private RedisServer _redis = null!;

    public async Task InitializeAsync() => _redis = await RedisServer.StartAsync();

    public async Task DisposeAsync() => await _redis.DisposeAsync();

    /// <summary>
    /// Auditor's side: every 200 has its 'used' event on the grant. Denials that anyone holding the grant id (any valid
    /// token and workload: route_mismatch is judged before every binding, and does not revoke) can cause fill the
    /// event list first; the legitimate uses that followed were only counted as "dropped".
    /// </summary>
    [Fact]
    public async Task Use_AfterTheEventListFilledWithForeignDenials_EveryUseStillRecorded()
    {
        await using var gateway = await GatewayHarness.StartAsync(redis: _redis.ConnectionString);
        var token = gateway.Idp.Token();
        var svid = gateway.WorkloadIssuer.Svid();
        var id = await gateway.CreateGrantAsync(DeployGrant(token, maxUses: 3));

        // Someone else (another subject, another workload) who learned the grant id sends it to another protected route.
        var mallory = gateway.Idp.Token(subject: "mallory", sid: "s-m");
        var intruder = gateway.WorkloadIssuer.Svid(OtherWorkload);
        for (var i = 0; i < 260; i++)
        {
            using var request = GatewayHarness.Request(HttpMethod.Post, "/agent/tools/x", mallory, out _);
            request.Headers.TryAddWithoutValidation("Workload-Identity", intruder);
            request.Headers.TryAddWithoutValidation("Assurance-Id", id);
            using var response = await gateway.Proxy.SendAsync(request);
            Assert.Equal("route_mismatch", await response.ReasonAsync());
        }

        var traces = new List<string>();
        for (var i = 0; i < 3; i++)
        {
            using var response = await gateway.Proxy.SendAsync(DeployRequest(token, svid, id, out var trace));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            traces.Add(trace);
        }

        var grant = JsonNode.Parse((await gateway.GetGrantAsync(id)).GetRawText())!;
        var used = grant["events"]!.AsArray().Where(e => (string?)e!["type"] == "used").Select(e => (string?)e!["traceId"]).ToList();
        output.WriteLine($"status {grant["status"]}, usesRemaining {grant["usesRemaining"]}, events {grant["events"]!.AsArray().Count}, dropped {grant["droppedEvents"]}");
        Assert.True(traces.All(used.Contains), $"200s {traces.Count}, used events on the grant {used.Count}, droppedEvents {grant["droppedEvents"]}");
    }

    /// <summary>
    /// The grant is consumed, then the upstream cannot be reached: the client got YARP's bare 502 (not problem+json), and
    /// the grant recorded 'used' for an action that never reached the upstream, with nothing that said so.
    /// </summary>
    [Fact]
    public async Task Use_UpstreamUnreachableAfterTheConsume_ProblemJsonAndTheGrantSaysForwardFailed()
    {
        await using var gateway = await GatewayHarness.StartAsync(redis: _redis.ConnectionString);
        var token = gateway.Idp.Token();
        var svid = gateway.WorkloadIssuer.Svid();
        var id = await gateway.CreateGrantAsync(DeployGrant(token));
        await gateway.Upstream.DisposeAsync();

        using var response = await gateway.Proxy.SendAsync(DeployRequest(token, svid, id, out var trace));
        var body = await response.Content.ReadAsStringAsync();
        var grant = JsonNode.Parse((await gateway.GetGrantAsync(id)).GetRawText())!;
        var events = grant["events"]!.AsArray().Where(e => (string?)e!["traceId"] == trace).Select(e => (string?)e!["type"]).ToList();
        output.WriteLine($"{(int)response.StatusCode} '{response.Content.Headers.ContentType}' body '{body}'; grant {grant["status"]}, events of this trace: {string.Join(",", events)}");

        Assert.Equal(HttpStatusCode.BadGateway, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal("upstream_failed", await response.ReasonAsync());
        Assert.Equal(["used", "forward_failed"], events);
        Assert.Equal("request", (string?)grant["events"]!.AsArray().Single(e => (string?)e!["type"] == "forward_failed")!["reason"]);
        Assert.Contains(gateway.Logs.Lines, l => l.Contains("[201]", StringComparison.Ordinal) && l.Contains(trace, StringComparison.Ordinal));
    }

    /// <summary>
    /// The client goes away while its consume is in Redis (a slow store, under Store:Timeout): the consume succeeds (it
    /// is deliberately not cancellable), the forwarder then does not send the aborted request, and the grant's record
    /// said 'used' for an action the upstream never received, with nothing that said otherwise.
    /// </summary>
    [Fact]
    public async Task Use_ClientGoneWhileItsConsumeWasInFlight_TheGrantSaysForwardFailed()
    {
        await using var gateway = await GatewayHarness.StartAsync(redis: _redis.ConnectionString);
        var token = gateway.Idp.Token();
        var svid = gateway.WorkloadIssuer.Svid();
        using (var warm = await gateway.Proxy.SendAsync(DeployRequest(token, svid, "warmup", out _)))
        {
        }

        // A few tries: on a busy machine the forwarder may still get the request out before it sees the abort.
        string trace = string.Empty;
        string id = string.Empty;
        for (var attempt = 0; attempt < 5; attempt++)
        {
            gateway.Upstream.Clear();
            id = await gateway.CreateGrantAsync(DeployGrant(token));
            await _redis.PauseAsync();
            try
            {
                using var cts = new CancellationTokenSource();
                var sending = gateway.Proxy.SendAsync(DeployRequest(token, svid, id, out trace), cts.Token);
                await Task.Delay(80);
                await cts.CancelAsync();
                await Assert.ThrowsAnyAsync<OperationCanceledException>(() => sending);
            }
            finally
            {
                await _redis.ResumeAsync();
            }

            await Task.Delay(1000);
            if (gateway.Upstream.Count == 0)
            {
                break;
            }
        }

        var grant = JsonNode.Parse((await gateway.GetGrantAsync(id)).GetRawText())!;
        var events = grant["events"]!.AsArray().Where(e => (string?)e!["traceId"] == trace).Select(e => (string?)e!["type"]).ToList();
        output.WriteLine($"upstream received {gateway.Upstream.Count}; grant {grant["status"]} usesRemaining {grant["usesRemaining"]}; events of this trace: {string.Join(",", events)}");
        Assert.Equal(0, gateway.Upstream.Count);
        Assert.Equal(["used", "forward_failed"], events);
    }
}
