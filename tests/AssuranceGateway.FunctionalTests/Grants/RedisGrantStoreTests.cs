using AssuranceGateway.Enforcement;
using AssuranceGateway.Grants;
using AssuranceGateway.Testing;

namespace AssuranceGateway.FunctionalTests.Grants;

/// <summary>
/// The conformance suite against Redis (one private redis-server for the class, a key prefix per test), and what only
/// Redis can show: exactly-once across gateways, one command per consume, key expiry, a self-healing pending index.
/// </summary>
public sealed class RedisGrantStoreTests(RedisServer redis) : GrantStoreConformanceTests, IClassFixture<RedisServer>
{
    private readonly string _prefix = RedisStores.NewPrefix();

    protected override DateTimeOffset Now => DateTimeOffset.FromUnixTimeMilliseconds(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());

    protected override async Task<IGrantStore> CreateStoreAsync() => await RedisStores.StartAsync(RedisStores.Settings(redis, _prefix));

    [Fact]
    public async Task ConsumeAsync_500ConcurrentFromTwoGateways_ExactlyOneOk()
    {
        using var other = await RedisStores.StartAsync(RedisStores.Settings(redis, _prefix));
        var grant = NewGrant();
        await CreateAsync(grant);
        var stores = new[] { Store, other };

        // All 500 wait at one gate (without blocking pool threads), then go at once.
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var attempts = Enumerable.Range(0, 500).Select(async i =>
        {
            await gate.Task;
            return await stores[i % 2].ConsumeAsync(Matching(grant), default);
        }).ToArray();
        gate.SetResult();
        var results = await Task.WhenAll(attempts);

        Assert.Single(results, r => r.Reason == ReasonCodes.Ok);
        Assert.Equal(499, results.Count(r => r.Reason == ReasonCodes.Replayed));
        var stored = await Store.GetAsync(grant.Id, default);
        Assert.Equal(0, stored!.UsesRemaining);
        Assert.Single(stored.Events, e => e.Type == GrantEvent.Used);
        Assert.Equal(results.Single(r => r.Allowed).FirstUse, stored.FirstUse);
    }

    [Fact]
    public async Task ConsumeAsync_ThreeUsesUnderConcurrency_ExactlyThreeOk()
    {
        using var other = await RedisStores.StartAsync(RedisStores.Settings(redis, _prefix));
        var grant = NewGrant() with { MaxUses = 3, UsesRemaining = 3 };
        await CreateAsync(grant);

        var results = await Task.WhenAll(Enumerable.Range(0, 200).Select(i => (i % 2 == 0 ? Store : other).ConsumeAsync(Matching(grant), default)));

        Assert.Equal(3, results.Count(r => r.Allowed));
        Assert.Equal(197, results.Count(r => r.Reason == ReasonCodes.Replayed));
    }

    [Fact]
    public async Task ConsumeAsync_AnyOutcome_OneCommandPerConsume()
    {
        var grants = Enumerable.Range(0, 4).Select(_ => NewGrant()).ToArray();
        foreach (var grant in grants)
        {
            await CreateAsync(grant);
        }

        await Store.ConsumeAsync(Matching(grants[0]), default); // warm: the script is known by now

        await using var monitor = await redis.MonitorAsync();
        await Store.ConsumeAsync(Matching(grants[1]), default); // ok
        await Store.ConsumeAsync(Matching(grants[1]), default); // replayed
        await Store.ConsumeAsync(Matching(grants[2]) with { Workload = "spiffe://x", RevokeOn = [ReasonCodes.WorkloadMismatch] }, default);
        await Store.ConsumeAsync(Matching(grants[3]) with { DryRun = true }, default);
        await Store.ConsumeAsync(Matching(NewGrant()), default); // not found
        await monitor.SyncAsync();

        // Everything a client sent, except the watchdog's PING and INFO and the monitor's own sync marker. Commands the script
        // runs inside Redis show up as client "lua" and are not round trips.
        var sent = monitor.Commands
            .Where(c => c.Client != "lua" && c.Command is not ("PING" or "INFO") && !c.Line.Contains("monitor-sync-", StringComparison.Ordinal))
            .ToList();
        Assert.True(sent.Count == 5, string.Join("\n", sent.Select(c => c.Line)));
        Assert.All(sent, c => Assert.Equal("EVALSHA", c.Command));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ConsumeAsync_RequestMismatch_AskedAgainWithDigests_TheFirstCallWritesNothing(bool dryRun)
    {
        // The digests go to Redis only when a request mismatch needs them: the first call answers that it needs them,
        // and the second decides, records and revokes exactly once.
        var grant = NewGrant();
        await CreateAsync(grant);
        await Store.ConsumeAsync(Matching(NewGrant()), default); // warm: the script is known by now
        var request = Matching(grant) with
        {
            RequestHash = "sha256:other", Digests = Digests with { Body = "sha256:other-body" },
            RevokeOn = [ReasonCodes.RequestMismatch], DryRun = dryRun,
        };

        await using var monitor = await redis.MonitorAsync();
        var result = await Store.ConsumeAsync(request, default);
        await monitor.SyncAsync();

        Assert.Equal(ReasonCodes.RequestMismatch, result.Reason);
        Assert.Equal(["body"], result.Mismatch);
        Assert.True(result.Revoked);
        var sent = monitor.Commands
            .Where(c => c.Client != "lua" && c.Command is not ("PING" or "INFO") && !c.Line.Contains("monitor-sync-", StringComparison.Ordinal))
            .ToList();
        Assert.True(sent.Count == 2 && sent.All(c => c.Command == "EVALSHA"), string.Join("\n", sent.Select(c => c.Line)));
        var stored = (await Store.GetAsync(grant.Id, default))!;
        var written = stored.Events.Where(e => e.Type is not (GrantEvent.Created or GrantEvent.Approved)).ToList();
        if (dryRun)
        {
            Assert.Equal(GrantStatus.Active, stored.Status);
            Assert.Empty(written);
        }
        else
        {
            Assert.Equal(GrantStatus.Revoked, stored.Status);
            Assert.Equal([GrantEvent.Denied, GrantEvent.Revoked], written.Select(e => e.Type));
            Assert.Equal(["body"], written[0].Mismatch);
        }
    }

    /// <summary>
    /// A hand-edited (or damaged) approvers list or approval AAL, read by the consume's approval checks: the grant is
    /// unreadable and never used, and nothing is written. A Lua error instead was a 503 with an unknown outcome queued
    /// for the grant; a JSON string where the list should be passed a quorum of two on its length in characters.
    /// </summary>
    [Theory]
    [InlineData("approvers", "not json", 2, 0, "alice")]
    [InlineData("approvers", "\"mallory-and-friends\"", 2, 0, "alice")]
    [InlineData("approvers", "7", 2, 0, "alice")]
    [InlineData("approvalAal", "abc", 1, 2, "alice")]
    // No subject on the grant: the self-approval check reads the list for the caller's subject.
    [InlineData("approvers", "[\"mallory\"", 1, 0, null)]
    public async Task ConsumeAsync_ApprovalFieldsTheGatewayCannotRead_GrantUnreadableNothingWritten(
        string field, string value, int minimumApprovals, int minimumApprovalAal, string? subject)
    {
        var grant = NewGrant() with { Subject = subject, Approvers = ["bob", "carol"], ApprovalAal = 2 };
        await CreateAsync(grant);
        var keys = new GrantKeys(_prefix);
        var key = (string)keys.Grant(grant.Id)!;
        var events = (string)keys.Events(grant.Id)!;
        await redis.ExecuteAsync("HSET", key, field, value);
        var request = Matching(grant) with
        {
            Subject = subject ?? "mallory", MinimumApprovals = minimumApprovals, MinimumApprovalAal = minimumApprovalAal,
            Required = subject is null ? AllBindings & ~Bindings.Subject : AllBindings,
        };
        var before = await redis.ExecuteAsync("HGETALL", key);
        var eventsBefore = await redis.ExecuteAsync("LRANGE", events, "0", "-1");

        var result = await Store.ConsumeAsync(request, default);

        Assert.Equal(ReasonCodes.GrantUnreadable, result.Reason);
        Assert.Equal(before, await redis.ExecuteAsync("HGETALL", key));
        Assert.Equal(eventsBefore, await redis.ExecuteAsync("LRANGE", events, "0", "-1"));
    }

    /// <summary>
    /// The same damage met by an approval (a hand edit between the API's read of the grant and its approval): refused as
    /// unreadable with nothing written. It was a Lua error, which the API answered as an unavailable store.
    /// </summary>
    [Theory]
    [InlineData("not json", 2)]
    [InlineData("\"bob\"", 2)]
    [InlineData("[\"bob\",7]", 2)]
    [InlineData("{\"first\":\"bob\"}", 2)]
    // The policy in force asks for more approvers than the grant was issued with: the raised quorum is not written either.
    [InlineData("not json", 3)]
    public async Task ApproveAsync_ApproversTheGatewayCannotRead_GrantUnreadableNothingWritten(string approvers, int quorum)
    {
        var grant = NewGrant() with { Status = GrantStatus.Pending, Approvers = ["bob"], ApprovalsRequired = 2 };
        await CreateAsync(grant);
        var keys = new GrantKeys(_prefix);
        var key = (string)keys.Grant(grant.Id)!;
        await redis.ExecuteAsync("HSET", key, "approvers", approvers);
        var before = await redis.ExecuteAsync("HGETALL", key);
        var eventsBefore = await redis.ExecuteAsync("LRANGE", (string)keys.Events(grant.Id)!, "0", "-1");

        await Assert.ThrowsAsync<GrantUnreadableException>(() =>
            Store.ApproveAsync(grant.Id, "carol", 2, new GrantEvent { Type = GrantEvent.Approved }, null, quorum, default));

        Assert.Equal(before, await redis.ExecuteAsync("HGETALL", key));
        Assert.Equal(eventsBefore, await redis.ExecuteAsync("LRANGE", (string)keys.Events(grant.Id)!, "0", "-1"));
    }

    [Fact]
    public async Task ConsumeAsync_Standalone_SentOnTheDedicatedConsumeConnection()
    {
        var grant = NewGrant();
        await CreateAsync(grant);
        var clients = (string)(await redis.ExecuteAsync("CLIENT", "LIST"))!;
        var consumer = clients.Split('\n').Single(line => line.Contains(" name=assurance-gateway-consume ", StringComparison.Ordinal));
        var address = consumer.Split(' ').Single(part => part.StartsWith("addr=", StringComparison.Ordinal))["addr=".Length..];

        await using var monitor = await redis.MonitorAsync();
        var result = await Store.ConsumeAsync(Matching(grant), default);
        await monitor.SyncAsync();

        Assert.True(result.Allowed);
        var evalsha = Assert.Single(monitor.Commands.TakeWhile(c => !c.Line.Contains("monitor-sync-", StringComparison.Ordinal)), c => c.Command == "EVALSHA");
        Assert.Equal(address, evalsha.Client);
    }

    [Fact]
    public async Task ConsumeAsync_RedisForgotTheScripts_SendsTheScriptAndConsumesExactlyOnce()
    {
        var grant = NewGrant() with { MaxUses = 2, UsesRemaining = 2 };
        await CreateAsync(grant);
        Assert.True((await Store.ConsumeAsync(Matching(grant), default)).Allowed);

        // What a Redis restart without persistence of scripts (or an operator) does: EVALSHA now answers NOSCRIPT.
        await redis.ExecuteAsync("SCRIPT", "FLUSH");
        await using var monitor = await redis.MonitorAsync();
        var second = await Store.ConsumeAsync(Matching(grant), default);

        // The watchdog loads the scripts again on its next ping (every 250 ms), so consumes are one EVALSHA again.
#pragma warning disable CA5350 // SHA-1 is how Redis names scripts; computed here independently of the store.
        var sha = Convert.ToHexStringLower(System.Security.Cryptography.SHA1.HashData(System.Text.Encoding.UTF8.GetBytes(RedisGrantStore.Scripts.Consume.Text)));
#pragma warning restore CA5350
        for (var i = 0; i < 100 && ((object?[])(await redis.ExecuteAsync("SCRIPT", "EXISTS", sha))!)[0] is not 1L; i++)
        {
            await Task.Delay(50);
        }

        var third = await Store.ConsumeAsync(Matching(grant), default);
        await monitor.SyncAsync();

        Assert.True(second.Allowed);
        Assert.Equal(0, second.UsesRemaining);
        Assert.Equal(ReasonCodes.Replayed, third.Reason);
        var stored = await Store.GetAsync(grant.Id, default);
        Assert.Equal(2, stored!.Events.Count(e => e.Type == GrantEvent.Used));
        var sent = monitor.Commands
            .TakeWhile(c => !c.Line.Contains("monitor-sync-", StringComparison.Ordinal))
            .Where(c => c.Client != "lua" && c.Command is "EVALSHA" or "EVAL")
            .Select(c => c.Command)
            .ToList();
        // NOSCRIPT, then the script's text once (EVAL), then by digest again. A NOSCRIPT on the dedicated consume
        // connection is followed by one more EVALSHA on the shared one before the text goes.
        Assert.Equal("EVALSHA", sent[0]);
        Assert.Single(sent, c => c == "EVAL");
        Assert.Equal(["EVAL", "EVALSHA"], sent[^2..]);
    }

    [Fact]
    public async Task CreateAsync_Keys_ExpireAtExpiryPlusRetentionAndKeepItThroughUse()
    {
        var settings = RedisStores.Settings(redis, retention: TimeSpan.FromHours(1));
        using var store = await RedisStores.StartAsync(settings);
        var grant = NewGrant() with { MaxUses = 2, UsesRemaining = 2, ExpiresAt = Now.AddMinutes(5) };
        Assert.Equal(GrantChange.Done, (await store.CreateAsync(grant, Created(), 10, default)).Outcome);
        await store.ConsumeAsync(Matching(grant), default);
        await store.ConsumeAsync(Matching(grant) with { Subject = "x" }, default);
        await store.RevokeAsync(grant.Id, Revoked(), default);

        var keys = new GrantKeys(settings.KeyPrefix);
        var expected = (grant.ExpiresAt + TimeSpan.FromHours(1) - DateTimeOffset.UtcNow).TotalMilliseconds;
        foreach (var key in new[] { (string)keys.Grant(grant.Id)!, (string)keys.Events(grant.Id)! })
        {
            var ttl = (long)(await redis.ExecuteAsync("PTTL", key))!;
            Assert.InRange(ttl, expected - 5000, expected + 1000);
        }
    }

    [Fact]
    public async Task CreateAsync_NoRetention_KeysLiveUntilExpiresAtNotAMillisecondLess()
    {
        // EvidenceRetention may be zero: then the keys must still live to the grant's expiresAt (microseconds), not up to
        // a millisecond short of it, when a use the store would still allow would find no grant.
        var settings = RedisStores.Settings(redis, retention: TimeSpan.Zero);
        using var store = await RedisStores.StartAsync(settings);
        var grant = NewGrant() with { ExpiresAt = Now.AddMinutes(5).AddTicks(9990) }; // ...x.999 ms
        Assert.Equal(GrantChange.Done, (await store.CreateAsync(grant, Created(), 10, default)).Outcome);

        var keys = new GrantKeys(settings.KeyPrefix);
        var expiresAtMs = (RedisGrantStore.ToMicros(grant.ExpiresAt) + 999) / 1000;
        foreach (var key in new[] { (string)keys.Grant(grant.Id)!, (string)keys.Events(grant.Id)! })
        {
            Assert.True((long)(await redis.ExecuteAsync("PEXPIRETIME", key))! >= expiresAtMs, key);
        }
    }

    [Fact]
    public async Task CreateAsync_SubjectIndexHoldsStaleMembers_CountsOnlyLivePendingGrants()
    {
        var subject = "alice-" + NewId();
        var live = NewGrant() with { Status = GrantStatus.Pending, Subject = subject };
        await CreateAsync(live, maxPendingPerSubject: 2);

        // Leftovers of clean-up steps that never ran: a grant that no longer exists, one that is active.
        var active = NewGrant() with { Subject = subject };
        await CreateAsync(active);
        var key = (string)new GrantKeys(_prefix).SubjectPending(subject)!;
        var expiry = RedisGrantStore.ToMicros(Now.AddMinutes(5)).ToString(System.Globalization.CultureInfo.InvariantCulture);
        await redis.ExecuteAsync("ZADD", key, expiry, "gone-" + NewId(), expiry, active.Id);

        Assert.Equal(GrantChange.Done, (await Store.CreateAsync(NewGrant() with { Status = GrantStatus.Pending, Subject = subject }, Created(), 2, default)).Outcome);
        Assert.Equal(GrantChange.TooMany, (await Store.CreateAsync(NewGrant() with { Status = GrantStatus.Pending, Subject = subject }, Created(), 2, default)).Outcome);
        Assert.Equal(2L, await redis.ExecuteAsync("ZCARD", key));
    }

    [Fact]
    public async Task ListPendingAsync_IndexHoldsStaleIds_SkipsAndRemovesThem()
    {
        var pending = NewGrant() with { Status = GrantStatus.Pending };
        var active = NewGrant();
        await CreateAsync(pending);
        await CreateAsync(active);
        var keys = new GrantKeys(_prefix);
        var micros = RedisGrantStore.ToMicros(Now).ToString(System.Globalization.CultureInfo.InvariantCulture);
        var later = RedisGrantStore.ToMicros(Now.AddMinutes(5)).ToString(System.Globalization.CultureInfo.InvariantCulture);
        foreach (var id in new[] { active.Id, "gone" })
        {
            await redis.ExecuteAsync("ZADD", (string)keys.PendingByCreation!, micros, id);
            await redis.ExecuteAsync("ZADD", (string)keys.PendingByExpiry!, later, id);
        }

        var listed = await Store.ListPendingAsync(10, null, default);

        Assert.Equal([pending.Id], listed.Select(g => g.Id));
        Assert.Equal(1L, await redis.ExecuteAsync("ZCARD", (string)keys.PendingByCreation!));
        Assert.Equal(1L, await redis.ExecuteAsync("ZCARD", (string)keys.PendingByExpiry!));
    }
}
