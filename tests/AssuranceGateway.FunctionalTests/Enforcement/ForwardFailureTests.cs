using System.Net;
using System.Text.Json.Nodes;
using AssuranceGateway.Testing;
using Microsoft.Extensions.DependencyInjection;
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
    /// Shadow mode writes nothing and spends nothing: when the forward of a shadow request that names a grant fails, the
    /// grant's record gets no forward_failed event (no use was spent to fail) and the client is not told that an
    /// approval's use was spent: it gets the proxy's own 502.
    /// </summary>
    [Fact]
    public async Task Shadow_UpstreamUnreachable_GrantRecordUntouchedAndNoUseClaimedSpent()
    {
        await using var gateway = await GatewayHarness.StartAsync(redis: _redis.ConnectionString, configure: c =>
        {
            c["ReverseProxy"]!["Routes"]!.AsObject()["shadowed"] = TestConfig.Route("/shadowed/{**rest}", "shadow-approval");
            c["Assurance"]!["Policies"]!.AsObject()["shadow-approval"] = new JsonObject
            {
                ["Bind"] = new JsonArray("token", "workload", "request"),
                ["Mode"] = "shadow",
                ["BoundHeaders"] = new JsonArray("content-type"),
            };
        });
        var token = gateway.Idp.Token();
        var grant = DeployGrant(token, path: "/shadowed/v1/releases");
        grant["route"] = "shadowed";
        var id = await gateway.CreateGrantAsync(grant);
        await gateway.Upstream.DisposeAsync();

        using var response = await gateway.Proxy.SendAsync(DeployRequest(token, gateway.WorkloadIssuer.Svid(), id, out var trace, path: "/shadowed/v1/releases"));

        Assert.Equal(HttpStatusCode.BadGateway, response.StatusCode);
        Assert.NotEqual("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal("allow", Assert.Single(gateway.Spans.Enforce(trace)).GetTagItem("assurance.decision"));
        var record = JsonNode.Parse((await gateway.GetGrantAsync(id)).GetRawText())!;
        Assert.Equal(1, (int)record["usesRemaining"]!);
        Assert.Equal(["created", "approved"], record["events"]!.AsArray().Select(e => (string?)e!["type"]));
    }

    /// <summary>
    /// The client goes away while its consume is in Redis (a slow store, under Store:Timeout): the consume succeeds (it
    /// is deliberately not cancellable), the forwarder then does not send the aborted request, and the grant's record
    /// said 'used' for an action the upstream never received, with nothing that said otherwise.
    /// </summary>
    [Fact]
    public async Task Use_ClientGoneWhileItsConsumeWasInFlight_TheGrantSaysForwardFailed()
    {
        // The consume must outlast the pause and still answer: the pause is ended by a `kill -CONT` the test starts
        // after the cancel, which a loaded machine can run later than the tests' 250 ms Store:Timeout (the consume then
        // timed out, an unknown outcome instead of the 'used' this test is about).
        await using var gateway = await GatewayHarness.StartAsync(c => c["Assurance"]!["Store"]!["Timeout"] = "00:00:05", redis: _redis.ConnectionString);
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

            // The server span ends once the gateway is done with the request, its forward_failed written or not.
            await gateway.Spans.WaitForSingleAsync(
                s => s.TraceId.ToHexString() == trace && s.Source.Name == "Microsoft.AspNetCore", "this request's server span");
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

    /// <summary>
    /// 'used' is stamped with Redis TIME, and the append script puts an event before every event whose "at" is later:
    /// forward_failed stamped with a gateway clock a little behind Redis (another host) went before the use it reports
    /// on. The store stamps it now.
    /// </summary>
    [Fact]
    public async Task Use_UpstreamUnreachable_GatewayClockBehindRedis_ForwardFailedStillComesAfterTheUse()
    {
        await using var gateway = await GatewayHarness.StartAsync(
            redis: _redis.ConnectionString,
            services: s => s.AddSingleton<TimeProvider>(new SkewedTime(TimeSpan.FromMilliseconds(-100))));
        var token = gateway.Idp.Token();
        var svid = gateway.WorkloadIssuer.Svid();
        var id = await gateway.CreateGrantAsync(DeployGrant(token));
        await gateway.Upstream.DisposeAsync();

        using var response = await gateway.Proxy.SendAsync(DeployRequest(token, svid, id, out var trace));
        var grant = JsonNode.Parse((await gateway.GetGrantAsync(id)).GetRawText())!;
        var events = grant["events"]!.AsArray().Where(e => (string?)e!["traceId"] == trace).Select(e => (string?)e!["type"]).ToList();
        output.WriteLine($"{(int)response.StatusCode}; events of this trace: {string.Join(",", events)}");
        Assert.Equal(["used", "forward_failed"], events);
        Assert.Contains("may or may not have received the request", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
    }

    /// <summary>
    /// The upstream received the whole request and answered 200 (headers), then its body broke off before a byte
    /// reached the client: YARP reports response_body_destination with the response not started. The client was told
    /// the request "could not be forwarded" although the upstream acted on it, and might have repeated the action.
    /// </summary>
    [Fact]
    public async Task Use_UpstreamAnsweredThenItsBodyBrokeOff_ClientIsNotToldTheRequestWasNotForwarded()
    {
        var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        var port = ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
        var served = Task.Run(async () =>
        {
            using var client = await listener.AcceptTcpClientAsync();
            var stream = client.GetStream();
            var received = new List<byte>();
            var buffer = new byte[8192];
            while (!System.Text.Encoding.ASCII.GetString([.. received]).Contains(ReleaseBody, StringComparison.Ordinal))
            {
                var n = await stream.ReadAsync(buffer);
                if (n == 0)
                {
                    return;
                }

                received.AddRange(buffer.AsSpan(0, n));
            }

            await stream.WriteAsync(System.Text.Encoding.ASCII.GetBytes("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"));
            await stream.FlushAsync();
            client.Client.Shutdown(System.Net.Sockets.SocketShutdown.Both);
        });

        await using var gateway = await GatewayHarness.StartAsync(
            configure: c => c["ReverseProxy"]!["Clusters"]!["upstream"]!["Destinations"]!["d1"]!["Address"] = $"http://127.0.0.1:{port}",
            redis: _redis.ConnectionString);
        var token = gateway.Idp.Token();
        var svid = gateway.WorkloadIssuer.Svid();
        var id = await gateway.CreateGrantAsync(DeployGrant(token));

        using var response = await gateway.Proxy.SendAsync(DeployRequest(token, svid, id, out var trace));
        var body = await response.Content.ReadAsStringAsync();
        await served;
        listener.Stop();
        var grant = JsonNode.Parse((await gateway.GetGrantAsync(id)).GetRawText())!;
        var failed = grant["events"]!.AsArray().Where(e => (string?)e!["type"] == "forward_failed").Select(e => (string?)e!["reason"]).ToList();
        output.WriteLine($"{(int)response.StatusCode} body '{body}'; forward_failed reasons: {string.Join(",", failed)}");
        Assert.Equal(HttpStatusCode.BadGateway, response.StatusCode);
        Assert.Contains("\"reason\":\"upstream_failed\"", body, StringComparison.Ordinal);
        Assert.Contains("the upstream received the request and answered", body, StringComparison.Ordinal);
        Assert.Equal(["response_body_destination"], failed);
    }
}
