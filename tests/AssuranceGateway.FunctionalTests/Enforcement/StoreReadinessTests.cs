using System.Diagnostics;
using System.Globalization;
using System.Net;
using AssuranceGateway.Testing;
using Microsoft.Extensions.DependencyInjection;
using static AssuranceGateway.Testing.GrantHelpers;

namespace AssuranceGateway.FunctionalTests.Enforcement;

/// <summary>
/// SPEC §5.5 as an SRE reads it in an incident: /readyz says whether this gateway can serve enforced requests, not only
/// whether Redis answers, and the operator's log (Warning and above) says why it cannot. Each case is a Redis that
/// answers PING but refuses every consume and every new grant: a read-only replica (the address names one, or a
/// failover demoted it), memory full under the noeviction policy the deploy files use, too few replicas for
/// RequireReplicaAcks; and a password the gateway lacks, where the connection's failure names the cause.
/// </summary>
public sealed class StoreReadinessTests
{
    private static async Task<(HttpStatusCode Status, string? Detail)> ReadyAsync(GatewayHarness gateway)
    {
        using var response = await gateway.Api.GetAsync("/readyz");
        return (response.StatusCode, response.StatusCode == HttpStatusCode.OK ? null : (await response.ProblemAsync()).GetProperty("detail").GetString());
    }

    private static async Task<(HttpStatusCode Status, string? Reason, string? Detail)> DeployAsync(GatewayHarness gateway, string token, string id)
    {
        using var response = await gateway.Proxy.SendAsync(DeployRequest(token, gateway.WorkloadIssuer.Svid(), id, out _));
        if (response.Content.Headers.ContentType?.MediaType != "application/problem+json")
        {
            return (response.StatusCode, null, null);
        }

        var problem = await response.ProblemAsync();
        return (response.StatusCode, problem.GetProperty("reason").GetString(), problem.GetProperty("detail").GetString());
    }

    /// <summary>What an operator running at the shipped log levels (Information, Warning for frameworks) sees.</summary>
    private static string OperatorLog(GatewayHarness gateway) =>
        string.Join('\n', gateway.Logs.Lines.Where(l => l.StartsWith("Warning ", StringComparison.Ordinal)
            || l.StartsWith("Error ", StringComparison.Ordinal) || l.StartsWith("Critical ", StringComparison.Ordinal)
            || l.StartsWith("Information AssuranceGateway.", StringComparison.Ordinal)));

    private static void AssertDeniedAndNamed(GatewayHarness gateway, (HttpStatusCode Status, string? Reason, string? Detail) denied, HttpStatusCode created,
        (HttpStatusCode Status, string? Detail) ready, string cause)
    {
        Assert.Equal((HttpStatusCode.ServiceUnavailable, "store_unavailable"), (denied.Status, denied.Reason));
        Assert.DoesNotContain("unreachable", denied.Detail, StringComparison.Ordinal); // Redis answers
        Assert.Equal(HttpStatusCode.ServiceUnavailable, created);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, ready.Status);
        Assert.Contains(cause, ready.Detail, StringComparison.Ordinal);
        var log = OperatorLog(gateway);
        Assert.True(log.Contains(cause, StringComparison.Ordinal), $"the log at Warning does not say '{cause}':\n{log}");
        Assert.Equal(0, gateway.Upstream.Count);
    }

    [Fact]
    public async Task RedisDownAtStart_NotReadyThenReadyWithoutRestart_LogSaysEachOnce()
    {
        // A rolling restart where the gateway comes up before its Redis (or while Redis restarts): it must start, say
        // not-ready, become ready by itself once Redis answers, and say each change once, not once per probe.
        await using var redis = RedisServer.Create(); // a port, no server yet
        await using var gateway = await GatewayHarness.StartAsync(redis: redis.ConnectionString);
        var token = gateway.Idp.Token();
        for (var i = 0; i < 6; i++)
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, (await ReadyAsync(gateway)).Status);
            await Task.Delay(250);
        }

        var (denied, reason, _) = await DeployAsync(gateway, token, "any-grant");
        Assert.Equal((HttpStatusCode.ServiceUnavailable, "store_unavailable"), (denied, reason));

        await redis.StartAsync();
        var clock = Stopwatch.StartNew();
        while ((await ReadyAsync(gateway)).Status != HttpStatusCode.OK)
        {
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), "not ready 10 s after Redis started");
            await Task.Delay(100);
        }

        var id = await gateway.CreateGrantAsync(DeployGrant(token));
        Assert.Equal(HttpStatusCode.OK, (await DeployAsync(gateway, token, id)).Status);
        for (var i = 0; i < 4; i++)
        {
            Assert.Equal(HttpStatusCode.OK, (await ReadyAsync(gateway)).Status);
        }

        var log = OperatorLog(gateway);
        var lines = log.Split('\n');
        Assert.True(lines.Count(l => l.Contains("[3114]", StringComparison.Ordinal) || l.Contains("[3101]", StringComparison.Ordinal)) is >= 1 and <= 2,
            $"the outage should be said once (3114, with the cause in 3101):\n{log}");
        Assert.True(lines.Count(l => l.Contains("[3115]", StringComparison.Ordinal)) == 1, $"the recovery should be said once (3115):\n{log}");
        Assert.Equal(1, gateway.Upstream.Count);
    }

    [Fact]
    public async Task ReadOnlyReplica_UsesAndGrants503_ReadyzAndLogSayItIsAReplica()
    {
        await using var primary = await RedisServer.StartAsync();
        await using var replica = await RedisServer.StartAsync("--replicaof", "127.0.0.1", primary.Port.ToString(CultureInfo.InvariantCulture));
        await using var gateway = await GatewayHarness.StartAsync(redis: replica.ConnectionString);
        await Task.Delay(1500);
        var token = gateway.Idp.Token();

        var denied = await DeployAsync(gateway, token, "someGrant");
        using var create = await gateway.PostGrantAsync(DeployGrant(token));

        AssertDeniedAndNamed(gateway, denied, create.StatusCode, await ReadyAsync(gateway), "READONLY");
    }

    [Fact]
    public async Task OutOfMemoryUnderNoeviction_UsesAndGrants503_ReadyzAndLogSaySo_ReadyAgainOnceItHasRoom()
    {
        await using var redis = await RedisServer.StartAsync("--maxmemory-policy", "noeviction");
        await using var gateway = await GatewayHarness.StartAsync(redis: redis.ConnectionString);
        var token = gateway.Idp.Token();
        var id = await gateway.CreateGrantAsync(DeployGrant(token, maxUses: 3));
        Assert.Equal(HttpStatusCode.OK, (await DeployAsync(gateway, token, id)).Status);

        await redis.ExecuteAsync("CONFIG", "SET", "maxmemory", "1");
        try
        {
            var denied = await DeployAsync(gateway, token, id);
            using var create = await gateway.PostGrantAsync(DeployGrant(token));

            gateway.Upstream.Clear();
            AssertDeniedAndNamed(gateway, denied, create.StatusCode, await ReadyAsync(gateway), "out of memory");
        }
        finally
        {
            await redis.ExecuteAsync("CONFIG", "SET", "maxmemory", "0");
        }

        Assert.Equal(HttpStatusCode.OK, (await ReadyAsync(gateway)).Status);
        Assert.Equal(HttpStatusCode.OK, (await DeployAsync(gateway, token, id)).Status);
    }

    /// <summary>
    /// A Redis with a memory limit and an evicting policy (allkeys-*, volatile-*: every key of the gateway has a TTL)
    /// drops grants and their event lists when it is full: a used grant's record, the evidence of who used it, a
    /// revoked grant's state, an approval just given. Anyone with a valid token can fill it (denials on a grant id they
    /// hold, pending grants in challenge mode), so eviction is also a way to erase the evidence of one's own use. The
    /// gateway fails closed on such a store, as on one out of memory under noeviction: no use and no new grant until the
    /// policy is noeviction again, /readyz and the operator's log name the policy.
    /// </summary>
    [Theory]
    [InlineData("allkeys-lru")]
    [InlineData("volatile-ttl")]
    public async Task EvictingMaxmemoryPolicy_UsesAndGrants503_ReadyzAndLogNameThePolicy_ServesAgainUnderNoeviction(string policy)
    {
        await using var redis = await RedisServer.StartAsync("--maxmemory", "100mb", "--maxmemory-policy", "noeviction");
        await using var gateway = await GatewayHarness.StartAsync(redis: redis.ConnectionString);
        var token = gateway.Idp.Token();
        var id = await gateway.CreateGrantAsync(DeployGrant(token, maxUses: 3));
        Assert.Equal(HttpStatusCode.OK, (await DeployAsync(gateway, token, id)).Status);

        await redis.ExecuteAsync("CONFIG", "SET", "maxmemory-policy", policy);
        var ready = await ReadyAsync(gateway);
        for (var deadline = DateTime.UtcNow.AddSeconds(20); ready.Status == HttpStatusCode.OK && DateTime.UtcNow < deadline;)
        {
            await Task.Delay(200);
            ready = await ReadyAsync(gateway);
        }

        gateway.Upstream.Clear();
        var denied = await DeployAsync(gateway, token, id);
        using var create = await gateway.PostGrantAsync(DeployGrant(token));
        AssertDeniedAndNamed(gateway, denied, create.StatusCode, ready, "maxmemory-policy " + policy);

        await redis.ExecuteAsync("CONFIG", "SET", "maxmemory-policy", "noeviction");
        for (var deadline = DateTime.UtcNow.AddSeconds(20); (await ReadyAsync(gateway)).Status != HttpStatusCode.OK && DateTime.UtcNow < deadline;)
        {
            await Task.Delay(200);
        }

        Assert.Equal(HttpStatusCode.OK, (await ReadyAsync(gateway)).Status);
        Assert.Equal(HttpStatusCode.OK, (await DeployAsync(gateway, token, id)).Status);
    }

    [Fact]
    public async Task EvictingMaxmemoryPolicyAtStart_NotReadyAndNothingForwarded_NoLimitMeansNoEviction()
    {
        await using var evicting = await RedisServer.StartAsync("--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru");
        await using var gateway = await GatewayHarness.StartAsync(redis: evicting.ConnectionString);
        var token = gateway.Idp.Token();
        using var create = await gateway.PostGrantAsync(DeployGrant(token));
        var denied = await DeployAsync(gateway, token, "someGrant");

        AssertDeniedAndNamed(gateway, denied, create.StatusCode, await ReadyAsync(gateway), "maxmemory-policy allkeys-lru");

        // Without a memory limit nothing is ever evicted, whatever the policy says: served.
        await using var unlimited = await RedisServer.StartAsync("--maxmemory", "0", "--maxmemory-policy", "allkeys-lru");
        await using var served = await GatewayHarness.StartAsync(redis: unlimited.ConnectionString);
        var servedToken = served.Idp.Token();
        var id = await served.CreateGrantAsync(DeployGrant(servedToken));
        Assert.Equal(HttpStatusCode.OK, (await ReadyAsync(served)).Status);
        Assert.Equal(HttpStatusCode.OK, (await DeployAsync(served, servedToken, id)).Status);
    }

    // Two clocks decide: Redis's sets and judges a grant's window (StoreClockTests), the gateway's judges tokens and
    // stamps evidence. A gateway 30 s ahead of Redis (which once gave every grant 30 s more than its ttl) said nothing.
    // The watchdog's INFO (server_time_usec) is compared with the gateway's clock: said once with how far and which way,
    // and once when the clocks agree again (NTP corrected the host). It is a warning, not a refusal: requests are still
    // served.
    [Fact]
    public async Task GatewayClockApartFromRedis_SaidOnceWithHowFarAndWhichWay_AndWhenCorrected()
    {
        await using var redis = await RedisServer.StartAsync();
        var clock = new SkewedTime(TimeSpan.FromSeconds(30));
        await using var skewed = await GatewayHarness.StartAsync(redis: redis.ConnectionString, services: s => s.AddSingleton<TimeProvider>(clock));
        await using var agreeing = await GatewayHarness.StartAsync(redis: redis.ConnectionString);
        string[] Said(GatewayHarness gateway, int eventId) => [.. gateway.Logs.Lines.Where(l => l.Contains($"[{eventId}]", StringComparison.Ordinal))];

        var watch = Stopwatch.StartNew();
        while (Said(skewed, 3122).Length == 0 && watch.Elapsed < TimeSpan.FromSeconds(15))
        {
            await Task.Delay(50);
        }

        var warning = Assert.Single(Said(skewed, 3122));
        Assert.StartsWith("Warning ", warning, StringComparison.Ordinal);
        Assert.Matches(@"Redis's clock is (29\.\d|30(\.0)?) s behind this gateway's", warning);
        Assert.Empty(Said(agreeing, 3122));
        var token = skewed.Idp.Token();
        var id = await skewed.CreateGrantAsync(DeployGrant(token));
        Assert.Equal(HttpStatusCode.OK, (await DeployAsync(skewed, token, id)).Status);

        clock.Offset = TimeSpan.Zero;
        while (Said(skewed, 3123).Length == 0 && watch.Elapsed < TimeSpan.FromSeconds(30))
        {
            await Task.Delay(50);
        }

        Assert.Single(Said(skewed, 3123));
        Assert.Single(Said(skewed, 3122)); // said once, not every 5 s while it lasted
    }

    [Fact]
    public async Task RequireReplicaAcks_ReplicaGone_Uses503AndNotReady()
    {
        await using var primary = await RedisServer.StartAsync();
        var replica = await RedisServer.StartAsync("--replicaof", "127.0.0.1", primary.Port.ToString(CultureInfo.InvariantCulture));
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < TimeSpan.FromSeconds(10)
            && !((string?)await replica.ExecuteAsync("INFO", "replication"))!.Contains("master_link_status:up", StringComparison.Ordinal))
        {
            await Task.Delay(50);
        }

        // A generous timeout: WAIT gets half of it, and this test is not about a slow replica.
        await using var gateway = await GatewayHarness.StartAsync(redis: primary.ConnectionString, configure: c =>
        {
            c["Assurance"]!["Store"]!["RequireReplicaAcks"] = 1;
            c["Assurance"]!["Store"]!["Timeout"] = "00:00:01";
        });
        var token = gateway.Idp.Token();
        while (watch.Elapsed < TimeSpan.FromSeconds(10) && (await ReadyAsync(gateway)).Status != HttpStatusCode.OK)
        {
            await Task.Delay(50);
        }

        var first = await gateway.CreateGrantAsync(DeployGrant(token));
        Assert.Equal(HttpStatusCode.OK, (await DeployAsync(gateway, token, first)).Status);

        await replica.DisposeAsync();
        await Task.Delay(1500);
        var id = await gateway.CreateGrantAsync(DeployGrant(token));
        var (status, reason, _) = await DeployAsync(gateway, token, id);
        var ready = await ReadyAsync(gateway);

        Assert.Equal((HttpStatusCode.ServiceUnavailable, "store_unavailable"), (status, reason));
        Assert.Equal(HttpStatusCode.ServiceUnavailable, ready.Status);
        Assert.Contains("fewer than the 1 that Store:RequireReplicaAcks asks for", ready.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task PasswordTheGatewayLacks_NotReadyAndLogSaysAuthentication()
    {
        await using var redis = await RedisServer.StartAsync();
        await redis.ExecuteAsync("CONFIG", "SET", "requirepass", "s3cret-pw");
        await using var gateway = await GatewayHarness.StartAsync(redis: redis.ConnectionString);
        await Task.Delay(1500);

        var denied = await DeployAsync(gateway, gateway.Idp.Token(), "someGrant");
        var ready = await ReadyAsync(gateway);

        Assert.Equal("store_unavailable", denied.Reason);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, ready.Status);
        Assert.Equal(0, gateway.Upstream.Count);
        // The client reports the failed connection from its own thread, which a loaded machine may run late (a fixed 1.5 s
        // wait failed under CI load): wait for the line, within a bound.
        for (var deadline = DateTime.UtcNow.AddSeconds(15); !OperatorLog(gateway).Contains("AuthenticationFailure", StringComparison.Ordinal) && DateTime.UtcNow < deadline;)
        {
            await Task.Delay(100);
        }

        Assert.Contains("AuthenticationFailure", OperatorLog(gateway), StringComparison.Ordinal);
        Assert.DoesNotContain("s3cret-pw", string.Join('\n', gateway.Logs.Lines), StringComparison.Ordinal);
    }
}
