using AssuranceGateway.Grants;
using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Nodes;
using AssuranceGateway.Testing;
using static AssuranceGateway.Testing.GrantHelpers;

namespace AssuranceGateway.FunctionalTests.Enforcement;

/// <summary>The whole enforcement suite again, with the grants in a real redis-server.</summary>
public sealed class RedisGrantEnforcementTests : GrantEnforcementTests
{
    private RedisServer? _redis;

    protected override async Task<string?> StoreConnectionAsync()
    {
        _redis = await RedisServer.StartAsync();
        return $"127.0.0.1:{_redis.Port}";
    }

    public override async Task DisposeAsync()
    {
        await base.DisposeAsync();
        if (_redis is not null)
        {
            await _redis.DisposeAsync();
        }
    }
}

/// <summary>SPEC §7 invariants 2, 3 and 5 through the real pipeline with a real Redis.</summary>
public sealed class RedisGatewayTests : IAsyncLifetime
{
    private RedisServer _redis = null!;

    public async Task InitializeAsync() => _redis = await RedisServer.StartAsync();

    public async Task DisposeAsync() => await _redis.DisposeAsync();

    private string Connection => $"127.0.0.1:{_redis.Port}";

    [Fact]
    public async Task StoreStall_EarlyDenialsInBulk_DoNotEvictTheUnknownOutcomesOfSpentUses()
    {
        // While Redis stalls, the records still owed to grants (unknown outcomes) wait in a bounded queue. A caller with
        // any valid token, denied before the store with made-up grant ids, once filled that queue with its denials and
        // pushed the unknown outcomes of real, spent uses out of it.
        await using var gateway = await GatewayHarness.StartAsync(redis: Connection);
        var token = gateway.Idp.Token();
        var svid = gateway.WorkloadIssuer.Svid();
        var ids = new List<string>();
        for (var i = 0; i < 5; i++)
        {
            ids.Add(await gateway.CreateGrantAsync(DeployGrant(token)));
        }

        var weak = gateway.Idp.Token("mallory", acr: "urn:aal1");
        await _redis.PauseAsync();
        try
        {
            var spent = await Task.WhenAll(ids.Select(async id =>
            {
                using var response = await gateway.Proxy.SendAsync(DeployRequest(token, svid, id, out _));
                return response.StatusCode;
            }));
            Assert.All(spent, s => Assert.Equal(HttpStatusCode.ServiceUnavailable, s));

            using var gate = new SemaphoreSlim(64);
            await Task.WhenAll(Enumerable.Range(0, 1200).Select(async i =>
            {
                await gate.WaitAsync();
                try
                {
                    using var response = await gateway.Proxy.SendAsync(DeployRequest(weak, svid, $"made-up-{i}", out _));
                    Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
                }
                finally
                {
                    gate.Release();
                }
            }));
        }
        finally
        {
            await _redis.ResumeAsync();
        }

        var missing = new List<string>(ids);
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (missing.Count > 0 && DateTime.UtcNow < deadline)
        {
            foreach (var id in missing.ToList())
            {
                try
                {
                    var grant = await gateway.GetGrantAsync(id);
                    if (grant.GetProperty("events").EnumerateArray().Any(e => e.GetProperty("type").GetString() == "unknown_outcome"))
                    {
                        missing.Remove(id);
                    }
                }
                catch (HttpRequestException)
                {
                    // 503 while the store's connections come back after the stall
                }
            }

            await Task.Delay(250);
        }

        Assert.Empty(missing);
        Assert.Equal(0, gateway.Upstream.Count);
    }

    /// <summary>
    /// A status this gateway does not know (an operator's hand-written "suspended" during an incident, a newer version's
    /// write during a rolling upgrade), a binding it has no name for (the same), a count that is not a number or an approvers
    /// list that is not a list of names: the grant is never used, nothing is written to it (its events neither), and both
    /// the proxy and the API say so in problem+json instead of forwarding or failing with a bare 500.
    /// </summary>
    [Theory]
    [InlineData("status", "suspended")]
    [InlineData("uses", "abc")]
    [InlineData("expiresAt", "")]
    // A binding a newer version added (a bit this version has no name for) on a token + workload + request grant: this
    // version cannot check it, so it must not use the grant as if the binding were not there.
    [InlineData("bound", "108")]
    [InlineData("bound", "abc")]
    // Read by the approval checks of the policy in force (its MinimumApprovalAal): a Lua error was a 503 and an unknown outcome.
    [InlineData("approvalAal", "abc")]
    // Numbers to Lua's tonumber, not to the C# reader: a comparison with NaN is false whichever way it is written, so an
    // expiry or notBefore of "nan" never came, a "nan" approval AAL met every MinimumApprovalAal, and "nan" or "inf" uses
    // were never spent (the gateway then failed on its own reply). Hex, exponents and fractions are no counts either.
    [InlineData("expiresAt", "nan")]
    [InlineData("expiresAt", "inf")]
    [InlineData("expiresAt", "1e300")]
    [InlineData("expiresAt", "9000000000000000000")]
    [InlineData("notBefore", "nan")]
    [InlineData("uses", "nan")]
    [InlineData("uses", "-nan")]
    [InlineData("uses", "inf")]
    [InlineData("uses", "0x10")]
    [InlineData("uses", "1e3")]
    [InlineData("uses", "2.5")]
    [InlineData("uses", "99999999999")]
    [InlineData("approvalAal", "nan")]
    [InlineData("bound", "nan")]
    [InlineData("bound", "0x34")]
    // A damaged approver list on a grant whose policy asks for one approver (the deploy policy): the consume script read
    // the list only for a quorum above one, so it spent the use, and the gateway then either failed on its own reply (a
    // 500, nothing forwarded but the use gone) or took a JSON scalar or object for "no approvers" and forwarded.
    [InlineData("approvers", "not json")]
    [InlineData("approvers", "\"approver\"")]
    [InlineData("approvers", "7")]
    [InlineData("approvers", "[\"approver\",7]")]
    [InlineData("approvers", "{\"first\":\"approver\"}")]
    [InlineData("approvers", "[\"approver\"")]
    [InlineData("approvers", "[\"approver\"] and more")]
    public async Task GrantRecordTheGatewayCannotRead_NeverUsedNothingWritten_ProxyAndApiSaySo(string field, string value)
    {
        await using var gateway = await GatewayHarness.StartAsync(redis: Connection);
        Assert.Equal(1, gateway.Config.Current.Settings.PolicyForRoute("deploy")!.Approvals);
        var token = gateway.Idp.Token();
        var id = await gateway.CreateGrantAsync(DeployGrant(token, maxUses: 2));
        var keys = new GrantKeys(gateway.Config.Current.Settings.Store.KeyPrefix);
        var key = (string)keys.Grant(id)!;
        await _redis.ExecuteAsync("HSET", key, field, value);
        var before = await _redis.ExecuteAsync("HGETALL", key);
        var eventsBefore = await _redis.ExecuteAsync("LRANGE", (string)keys.Events(id)!, "0", "-1");

        using var response = await gateway.Proxy.SendAsync(DeployRequest(token, gateway.WorkloadIssuer.Svid(), id, out _));
        using var read = new HttpRequestMessage(HttpMethod.Get, $"/assurance/v1/grants/{id}");
        read.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", gateway.Idp.ApiToken());
        using var shown = await gateway.Api.SendAsync(read);

        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        Assert.Equal("grant_unreadable", await response.ReasonAsync());
        Assert.Equal(0, gateway.Upstream.Count);
        Assert.Equal(before, await _redis.ExecuteAsync("HGETALL", key));
        Assert.Equal(eventsBefore, await _redis.ExecuteAsync("LRANGE", (string)keys.Events(id)!, "0", "-1"));
        Assert.Equal(HttpStatusCode.Conflict, shown.StatusCode);
        Assert.Equal("grant_unreadable", await shown.ReasonAsync());
    }


    /// <summary>
    /// One pending grant with a damaged record among others: the approvers' list answered 409 as a whole, without naming
    /// the grant, so one hand edit hid every request waiting for approval. The others are listed; the damaged one is
    /// left out (it can be neither approved nor used), named in the log (event 3125), and its GET and approval say why.
    /// </summary>
    [Fact]
    public async Task ListPending_OneRecordUnreadable_OthersListed_ItsGetAndApprovalSaySo()
    {
        await using var gateway = await GatewayHarness.StartAsync(
            c => c["Assurance"]!["Policies"]!["single-use-approval"]!["Approvals"] = 2, redis: Connection);
        var token = gateway.Idp.Token();
        var damaged = await gateway.CreateGrantAsync(DeployGrant(token));
        var sound = await gateway.CreateGrantAsync(DeployGrant(token));
        var key = (string)new GrantKeys(gateway.Config.Current.Settings.Store.KeyPrefix).Grant(damaged)!;
        await _redis.ExecuteAsync("HSET", key, "approvers", "not json");

        async Task<HttpResponseMessage> ApiAsync(HttpMethod method, string path, string subject)
        {
            using var request = new HttpRequestMessage(method, path);
            request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", gateway.Idp.ApiToken(subject));
            return await gateway.Api.SendAsync(request);
        }

        using var listed = await ApiAsync(HttpMethod.Get, "/assurance/v1/grants?status=pending", "carol");
        using var approved = await ApiAsync(HttpMethod.Post, $"/assurance/v1/grants/{damaged}/approve", "carol");
        using var shown = await ApiAsync(HttpMethod.Get, $"/assurance/v1/grants/{damaged}", "carol");

        Assert.Equal(HttpStatusCode.OK, listed.StatusCode);
        var grants = (await listed.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("grants");
        Assert.Equal([sound], grants.EnumerateArray().Select(g => g.GetProperty("id").GetString()));
        Assert.Contains(gateway.Logs.Lines, l => l.Contains("[3125]", StringComparison.Ordinal) && l.Contains(damaged, StringComparison.Ordinal));
        Assert.Equal(HttpStatusCode.Conflict, approved.StatusCode);
        Assert.Equal("grant_unreadable", await approved.ReasonAsync());
        Assert.Equal(HttpStatusCode.Conflict, shown.StatusCode);
        Assert.Equal("grant_unreadable", await shown.ReasonAsync());
        Assert.Equal(0, gateway.Upstream.Count);
    }

    [Fact]
    public async Task ExactlyOnce_200ConcurrentUsesAcrossTwoGateways_OneForwarded()
    {
        // 200 consumes at once on two loaded cores can take longer than the harness's 250 ms store timeout, and a 503
        // (fail closed) is not what this test is about: a timeout the burst cannot reach.
        await using var a = await GatewayHarness.StartAsync(c => c["Assurance"]!["Store"]!["Timeout"] = "00:00:10", redis: Connection);
        // The second instance shares the store, the key prefix, the issuers and the upstream of the first.
        await using var b = await GatewayHarness.CreateAsync();
        var config = JsonNode.Parse(await File.ReadAllTextAsync(a.ConfigPath))!.AsObject();
        await b.StartWithAsync(config);
        var token = a.Idp.Token();
        var svid = a.WorkloadIssuer.Svid();
        var id = await a.CreateGrantAsync(DeployGrant(token));

        var responses = await Task.WhenAll(Enumerable.Range(0, 200).Select(async i =>
        {
            using var request = DeployRequest(token, svid, id, out _);
            using var response = await (i % 2 == 0 ? a.Proxy : b.Proxy).SendAsync(request);
            return response.StatusCode;
        }));

        Assert.Equal(1, responses.Count(s => s == HttpStatusCode.OK));
        Assert.Equal(199, responses.Count(s => s == HttpStatusCode.Forbidden));
        Assert.Equal(1, a.Upstream.Count);
        Assert.Equal(0, b.Upstream.Count);
    }

    /// <summary>
    /// What an SRE runs: several gateways on one Redis. A use through one is a replay through the other, with the first
    /// use named; a revocation through one API holds at the other at once; a gateway with another KeyPrefix on the same
    /// Redis sees none of the first's grants.
    /// </summary>
    [Fact]
    public async Task TwoGatewaysOneRedis_ReplayAndRevokeHoldAcrossThem_AnotherKeyPrefixSeesNoGrant()
    {
        await using var a = await GatewayHarness.StartAsync(redis: Connection);
        var config = JsonNode.Parse(await File.ReadAllTextAsync(a.ConfigPath))!.AsObject();
        await using var b = await GatewayHarness.CreateAsync();
        await b.StartWithAsync(config.DeepClone().AsObject());
        var isolated = config.DeepClone().AsObject();
        isolated["Assurance"]!["Store"]!["KeyPrefix"] = "tenant-2:";
        await using var c = await GatewayHarness.CreateAsync();
        await c.StartWithAsync(isolated);
        var token = a.Idp.Token();
        var svid = a.WorkloadIssuer.Svid();
        var used = await a.CreateGrantAsync(DeployGrant(token));
        var revoked = await a.CreateGrantAsync(DeployGrant(token));

        using (var first = await a.Proxy.SendAsync(DeployRequest(token, svid, used, out var firstTrace)))
        {
            Assert.Equal(HttpStatusCode.OK, first.StatusCode);
            using var replay = await b.Proxy.SendAsync(DeployRequest(token, svid, used, out _));
            Assert.Equal(HttpStatusCode.Forbidden, replay.StatusCode);
            Assert.Equal("replayed", await replay.ReasonAsync());
            var shown = await a.GetGrantAsync(used);
            Assert.Equal(firstTrace, shown.GetProperty("firstUse").GetProperty("traceId").GetString());
        }

        using (var delete = new HttpRequestMessage(HttpMethod.Delete, $"/assurance/v1/grants/{revoked}"))
        {
            delete.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", a.Idp.ApiToken());
            using var response = await b.Api.SendAsync(delete);
            Assert.Equal(HttpStatusCode.NoContent, response.StatusCode);
        }

        using (var afterRevoke = await a.Proxy.SendAsync(DeployRequest(token, svid, revoked, out _)))
        {
            Assert.Equal("grant_revoked", await afterRevoke.ReasonAsync());
        }

        var other = await a.CreateGrantAsync(DeployGrant(token));
        using (var elsewhere = await c.Proxy.SendAsync(DeployRequest(token, svid, other, out _)))
        {
            Assert.Equal("grant_not_found", await elsewhere.ReasonAsync());
        }

        // One request reached the upstream (all three gateways forward to a's): the first use.
        Assert.Equal(1, a.Upstream.Count);
    }

    [Fact]
    public async Task AllowedRequest_ExactlyOneRedisCommand()
    {
        await using var gateway = await GatewayHarness.StartAsync(redis: Connection);
        var token = gateway.Idp.Token();
        var svid = gateway.WorkloadIssuer.Svid();
        var id = await gateway.CreateGrantAsync(DeployGrant(token, maxUses: 5));
        using (var warm = await gateway.Proxy.SendAsync(DeployRequest(token, svid, id, out _)))
        {
            Assert.Equal(HttpStatusCode.OK, warm.StatusCode);
        }

        // What the gateway sent while serving three allowed requests. Commands a script runs inside Redis show up
        // as client "lua" and are not round trips; the watchdog's PING is not part of a request.
        await using var monitor = await _redis.MonitorAsync();
        for (var i = 0; i < 3; i++)
        {
            using var response = await gateway.Proxy.SendAsync(DeployRequest(token, svid, id, out _));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }

        await monitor.SyncAsync();
        var sent = monitor.Commands
            .Where(c => c.Client != "lua" && c.Command is not ("PING" or "INFO") && !c.Line.Contains("monitor-sync-", StringComparison.Ordinal))
            .ToList();
        Assert.True(sent.Count == 3, string.Join("\n", sent.Select(c => c.Line)));
        Assert.All(sent, c => Assert.Equal("EVALSHA", c.Command));
    }

    [Fact]
    public async Task RedisPaused_503WithinTimeout_NothingForwarded_UnknownOutcomeRecordedAfterwards()
    {
        await using var gateway = await GatewayHarness.StartAsync(redis: Connection);
        var token = gateway.Idp.Token();
        var svid = gateway.WorkloadIssuer.Svid();
        var id = await gateway.CreateGrantAsync(DeployGrant(token));

        HttpStatusCode status;
        string reason;
        TimeSpan elapsed;
        await _redis.PauseAsync();
        try
        {
            var watch = Stopwatch.StartNew();
            using var response = await gateway.Proxy.SendAsync(DeployRequest(token, svid, id, out _));
            elapsed = watch.Elapsed;
            status = response.StatusCode;
            reason = await response.ReasonAsync();
        }
        finally
        {
            await _redis.ResumeAsync();
        }

        Assert.Equal(HttpStatusCode.ServiceUnavailable, status);
        Assert.Equal("store_unavailable", reason);
        Assert.True(elapsed < TimeSpan.FromSeconds(2), $"answered after {elapsed}");
        Assert.Equal(0, gateway.Upstream.Count);

        // The paused EVAL ran when Redis resumed; the grant says the outcome of that attempt is unknown.
        var deadline = DateTime.UtcNow.AddSeconds(10);
        JsonNode? grant = null;
        while (DateTime.UtcNow < deadline)
        {
            grant = JsonNode.Parse((await gateway.GetGrantAsync(id)).GetRawText());
            if (grant!["events"]!.AsArray().Any(e => (string?)e!["type"] == "unknown_outcome"))
            {
                break;
            }

            await Task.Delay(200);
        }

        Assert.Contains(grant!["events"]!.AsArray(), e => (string?)e!["type"] == "unknown_outcome");
        Assert.Equal(0, gateway.Upstream.Count);
    }

    [Fact]
    public async Task RedisKilledAndRestarted_ServiceResumesWithoutRestartingTheGateway()
    {
        await using var gateway = await GatewayHarness.StartAsync(redis: Connection);
        var token = gateway.Idp.Token();
        var svid = gateway.WorkloadIssuer.Svid();

        await _redis.KillAsync();
        using (var down = await gateway.Proxy.SendAsync(DeployRequest(token, svid, "anyGrant", out _)))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, down.StatusCode);
        }

        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await gateway.Api.GetAsync("/readyz")).StatusCode);
        await _redis.RestartAsync();
        var restarted = Stopwatch.StartNew();
        while (restarted.Elapsed < TimeSpan.FromSeconds(10) && (await gateway.Api.GetAsync("/readyz")).StatusCode != HttpStatusCode.OK)
        {
            await Task.Delay(100);
        }

        Assert.True(restarted.Elapsed < TimeSpan.FromSeconds(5), $"ready again after {restarted.Elapsed}");
        var id = await gateway.CreateGrantAsync(DeployGrant(token));
        using var up = await gateway.Proxy.SendAsync(DeployRequest(token, svid, id, out _));
        Assert.Equal(HttpStatusCode.OK, up.StatusCode);
        Assert.Equal(1, gateway.Upstream.Count);
    }

    [Fact]
    public async Task GatewayStartedWhileRedisDown_StartsNotReady_ThenServes()
    {
        await _redis.KillAsync();
        await using var gateway = await GatewayHarness.StartAsync(redis: Connection);

        Assert.Equal(HttpStatusCode.OK, (await gateway.Api.GetAsync("/healthz")).StatusCode);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await gateway.Api.GetAsync("/readyz")).StatusCode);
        using (var down = await gateway.Proxy.SendAsync(DeployRequest(gateway.Idp.Token(), gateway.WorkloadIssuer.Svid(), "anyGrant", out _)))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, down.StatusCode);
            Assert.Equal(0, gateway.Upstream.Count);
        }

        await _redis.RestartAsync();
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < TimeSpan.FromSeconds(10) && (await gateway.Api.GetAsync("/readyz")).StatusCode != HttpStatusCode.OK)
        {
            await Task.Delay(100);
        }

        var token = gateway.Idp.Token();
        var id = await gateway.CreateGrantAsync(DeployGrant(token));
        using var up = await gateway.Proxy.SendAsync(DeployRequest(token, gateway.WorkloadIssuer.Svid(), id, out _));
        Assert.Equal(HttpStatusCode.OK, up.StatusCode);
    }
}
