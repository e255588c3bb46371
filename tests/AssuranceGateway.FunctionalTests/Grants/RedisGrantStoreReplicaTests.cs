using System.Globalization;
using System.Net;
using AssuranceGateway.Enforcement;
using AssuranceGateway.Grants;
using AssuranceGateway.Testing;

namespace AssuranceGateway.FunctionalTests.Grants;

/// <summary>
/// SPEC §7.6: with <c>RequireReplicaAcks</c> N, a use counts only once N replicas have it; otherwise the request is
/// denied. A primary and one replica of its own per test; a paused replica is always resumed in a finally.
/// </summary>
public sealed class RedisGrantStoreReplicaTests
{
    [Fact]
    public async Task ConsumeAsync_ReplicaAcknowledges_OkAndTheReplicaAlreadyHasTheUse()
    {
        await using var primary = await StartPrimaryAsync();
        await using var replica = await StartReplicaAsync(primary);
        var settings = RedisStores.Settings(primary) with { RequireReplicaAcks = 1 };
        using var store = await RedisStores.StartAsync(settings);
        var grant = RedisStores.TokenGrant();
        await store.CreateAsync(grant, RedisStores.CreatedBy(), 10, default);

        await using var monitor = await primary.MonitorAsync();
        var result = await store.ConsumeAsync(RedisStores.MatchingToken(grant), default);
        await monitor.SyncAsync();

        Assert.Equal(ReasonCodes.Ok, result.Reason);

        // WAIT returned only once the replica had the write: read it there, straight away.
        Assert.Equal("0", await replica.ExecuteAsync("HGET", new GrantKeys(settings.KeyPrefix).Grant(grant.Id)!, "uses"));

        // One round trip: the script and the WAIT after it, nothing else. (The client library may send a SELECT ahead of
        // them in the same write: its own bookkeeping, no round trip.)
        var sent = monitor.Commands
            .Where(c => c.Client != "lua" && c.Command is not ("PING" or "INFO" or "REPLCONF" or "SELECT") && !c.Line.Contains("monitor-sync-", StringComparison.Ordinal))
            .Select(c => c.Command)
            .ToList();
        Assert.Equal(["EVALSHA", "WAIT"], sent);
    }

    // Readiness is probed often and by anyone (/readyz takes no token): while replicas are short it must say so without
    // a WAIT, which would block the shared connection and time out every read, grant and approval queued behind it.
    [Fact]
    public async Task NotReadyAsync_ReplicasShort_NotReadyWithoutHoldingUpTheSharedConnection()
    {
        await using var primary = await StartPrimaryAsync();
        using var store = await RedisStores.StartAsync(RedisStores.Settings(primary, timeout: TimeSpan.FromMilliseconds(400)) with { RequireReplicaAcks = 1 });
        var grant = RedisStores.TokenGrant();
        await store.CreateAsync(grant, RedisStores.CreatedBy(), 10, default);

        var probes = Enumerable.Range(0, 4).Select(_ => Task.Run(() => store.NotReadyAsync(default))).ToArray();
        await Task.Delay(50);
        var read = await Record.ExceptionAsync(() => store.GetAsync(grant.Id, default));
        var answers = await Task.WhenAll(probes);

        Assert.All(answers, a => Assert.Contains("0 connected replicas", a, StringComparison.Ordinal));
        Assert.Null(read);
    }

    [Fact]
    public async Task ConsumeAsync_ReplicaPaused_DeniedAsUnavailableAndUnknownOutcomeRecorded()
    {
        await using var primary = await StartPrimaryAsync();
        await using var replica = await StartReplicaAsync(primary);
        using var store = await RedisStores.StartAsync(RedisStores.Settings(primary, timeout: TimeSpan.FromMilliseconds(400)) with { RequireReplicaAcks = 1 });
        var grant = RedisStores.TokenGrant();
        await store.CreateAsync(grant, RedisStores.CreatedBy(), 10, default);
        var request = RedisStores.MatchingToken(grant);

        StoreUnavailableException failure;
        await replica.PauseAsync();
        try
        {
            failure = await Assert.ThrowsAsync<StoreUnavailableException>(() => store.ConsumeAsync(request, default));
        }
        finally
        {
            await replica.ResumeAsync();
        }

        Assert.True(failure.OutcomeUnknown);

        // The primary took the use, but it was never acknowledged: the request was denied, and the grant says why.
        await RedisStores.WaitUntilAsync(
            async () => (await store.GetAsync(grant.Id, default))!.Events.Any(e => e.Type == GrantEvent.UnknownOutcome && e.TraceId == request.TraceId),
            TimeSpan.FromSeconds(10),
            "the unknown_outcome event");
        var stored = await store.GetAsync(grant.Id, default);
        Assert.Equal(0, stored!.UsesRemaining);
        Assert.Equal(ReasonCodes.Replayed, (await store.ConsumeAsync(RedisStores.MatchingToken(grant), default)).Reason);
    }

    [Fact]
    public async Task ConsumeAsync_MoreAcksRequiredThanReplicas_NeverAllowsButStillDenies()
    {
        await using var primary = await StartPrimaryAsync();
        await using var replica = await StartReplicaAsync(primary);
        using var store = await RedisStores.StartAsync(RedisStores.Settings(primary, timeout: TimeSpan.FromMilliseconds(300)) with { RequireReplicaAcks = 2 });
        var grant = RedisStores.TokenGrant();
        await store.CreateAsync(grant, RedisStores.CreatedBy(), 10, default);

        await Assert.ThrowsAsync<StoreUnavailableException>(() => store.ConsumeAsync(RedisStores.MatchingToken(grant), default));

        // A denial needs no acknowledgement: it lets nothing through.
        Assert.Equal(ReasonCodes.GrantNotFound, (await store.ConsumeAsync(RedisStores.MatchingToken(RedisStores.TokenGrant()), default)).Reason);
        Assert.Equal(ReasonCodes.Replayed, (await store.ConsumeAsync(RedisStores.MatchingToken(grant), default)).Reason);
    }

    // Redis 7 waits 5 s before a diskless full sync, in case more replicas come: none will.
    [Fact]
    public async Task ConsumeAsync_PrimaryBecameAReplica_NothingWrittenDedicatedConnectionDroppedThenBackWhenPrimaryAgain()
    {
        await using var primary = await StartPrimaryAsync();
        await using var other = await StartReplicaAsync(primary);
        var settings = RedisStores.Settings(primary, timeout: TimeSpan.FromMilliseconds(500));
        using var store = await RedisStores.StartAsync(settings);
        var grant = RedisStores.TokenGrant();
        await store.CreateAsync(grant, RedisStores.CreatedBy(), 10, default);
        var key = (string)new GrantKeys(settings.KeyPrefix).Grant(grant.Id)!;
        Assert.True(store.ConsumesOnDedicatedConnection);

        // Replication is asynchronous: promoted before it has the grant, the other server would hand ours an empty
        // dataset, and the consume would read "grant_not_found" on the demoted server (a read writes nothing, so no
        // READONLY) instead of being refused.
        await RedisStores.WaitUntilAsync(
            async () => await other.ExecuteAsync("EXISTS", key) is 1L, TimeSpan.FromSeconds(5), "the grant to reach the replica");

        // A failover the gateway was not told about: the other server is promoted, ours follows it.
        await other.ExecuteAsync("REPLICAOF", "NO", "ONE");
        await primary.ExecuteAsync("REPLICAOF", "127.0.0.1", other.Port.ToString(CultureInfo.InvariantCulture));
        await RedisStores.WaitUntilAsync(
            async () => ((string?)await primary.ExecuteAsync("INFO", "replication"))?.Contains("master_link_status:up", StringComparison.Ordinal) == true,
            TimeSpan.FromSeconds(10),
            "the old primary to follow the new one");

        // Refused before anything was written, on the consume connection and then on the shared one: a known failure,
        // so no unknown_outcome is recorded on the grant.
        var refused = await Assert.ThrowsAsync<StoreUnavailableException>(() => store.ConsumeAsync(RedisStores.MatchingToken(grant), default));
        Assert.False(refused.OutcomeUnknown, refused.Message);
        Assert.Equal(0, store.UnknownOutcomesPending);

        Assert.False(store.ConsumesOnDedicatedConnection);
        Assert.Equal("1", await other.ExecuteAsync("HGET", key, "uses"));

        // Ours is the primary again: the watchdog reopens the consume connection and the use goes through once.
        await other.ExecuteAsync("REPLICAOF", "127.0.0.1", primary.Port.ToString(CultureInfo.InvariantCulture));
        await primary.ExecuteAsync("REPLICAOF", "NO", "ONE");
        await RedisStores.WaitUntilAsync(() => Task.FromResult(store.ConsumesOnDedicatedConnection), TimeSpan.FromSeconds(10), "the consume connection");
        Assert.Equal(ReasonCodes.Ok, (await store.ConsumeAsync(RedisStores.MatchingToken(grant), default)).Reason);
        Assert.Equal("0", await primary.ExecuteAsync("HGET", key, "uses"));
    }

    // After a failover that lost the grant (asynchronous replication), the demoted server has no such key: a consume
    // that only read would answer grant_not_found, a 403 that blames the caller's grant id, while the truth is that
    // this server cannot decide anything. It must be refused as a store failure, like any write would be.
    [Fact]
    public async Task ConsumeAsync_GrantMissingOnAServerThatIsNowAReplica_StoreUnavailableNotGrantNotFound()
    {
        await using var primary = await StartPrimaryAsync();
        await using var other = await RedisServer.StartAsync();
        var settings = RedisStores.Settings(primary, timeout: TimeSpan.FromMilliseconds(500));
        using var store = await RedisStores.StartAsync(settings);
        var grant = RedisStores.TokenGrant();
        await store.CreateAsync(grant, RedisStores.CreatedBy(), 10, default);

        // Ours follows a server that never had the grant: the full sync empties ours.
        await primary.ExecuteAsync("REPLICAOF", "127.0.0.1", other.Port.ToString(CultureInfo.InvariantCulture));
        var key = (string)new GrantKeys(settings.KeyPrefix).Grant(grant.Id)!;
        await RedisStores.WaitUntilAsync(
            async () => await primary.ExecuteAsync("EXISTS", key) is 0L, TimeSpan.FromSeconds(10), "the sync to empty the old primary");

        var refused = await Assert.ThrowsAsync<StoreUnavailableException>(() => store.ConsumeAsync(RedisStores.MatchingToken(grant), default));
        Assert.False(refused.OutcomeUnknown, refused.Message);

        // And the same for an id nobody ever issued: this server cannot say it does not exist.
        var unknown = RedisStores.MatchingToken(grant) with { GrantId = Guid.NewGuid().ToString("N") };
        await Assert.ThrowsAsync<StoreUnavailableException>(() => store.ConsumeAsync(unknown, default));
    }

    // Concurrent consumes in flight on the consume connection when the server turns out to be a replica: each of them
    // gets its own READONLY (nothing ran), so none may be recorded as an unknown outcome. Dropping the connection at
    // the first READONLY would fail the others as "sent, not answered".
    [Fact]
    public async Task ConsumeAsync_ManyInFlightWhenThePrimaryBecameAReplica_AllKnownFailuresNoneUnknown()
    {
        await using var primary = await StartPrimaryAsync();
        await using var other = await RedisServer.StartAsync();
        var settings = RedisStores.Settings(primary, timeout: TimeSpan.FromSeconds(2));
        using var store = await RedisStores.StartAsync(settings);
        var grants = Enumerable.Range(0, 200).Select(_ => RedisStores.TokenGrant() with { MaxUses = 5, UsesRemaining = 5 }).ToArray();
        foreach (var grant in grants)
        {
            await store.CreateAsync(grant, RedisStores.CreatedBy(), 10, default);
        }

        Assert.True(store.ConsumesOnDedicatedConnection);
        await primary.ExecuteAsync("REPLICAOF", "127.0.0.1", other.Port.ToString(CultureInfo.InvariantCulture));
        await RedisStores.WaitUntilAsync(
            async () => ((string?)await primary.ExecuteAsync("INFO", "replication"))?.Contains("master_link_status:up", StringComparison.Ordinal) == true,
            TimeSpan.FromSeconds(10),
            "the old primary to follow the other server");

        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var consumes = grants.Select(async grant =>
        {
            await gate.Task;
            return await Record.ExceptionAsync(() => store.ConsumeAsync(RedisStores.MatchingToken(grant), default));
        }).ToArray();
        gate.SetResult();
        var failures = await Task.WhenAll(consumes);

        Assert.All(failures, f => Assert.False(Assert.IsType<StoreUnavailableException>(f).OutcomeUnknown, f!.Message));
        Assert.Equal(0, store.UnknownOutcomesPending);
    }

    private static Task<RedisServer> StartPrimaryAsync() => RedisServer.StartAsync("--repl-diskless-sync-delay", "0");

    private static async Task<RedisServer> StartReplicaAsync(RedisServer primary)
    {
        var replica = await RedisServer.StartAsync("--replicaof", "127.0.0.1", primary.Port.ToString(CultureInfo.InvariantCulture));
        try
        {
            await RedisStores.WaitUntilAsync(
                async () => ((string?)await replica.ExecuteAsync("INFO", "replication"))?.Contains("master_link_status:up", StringComparison.Ordinal) == true,
                TimeSpan.FromSeconds(10),
                "the replica to sync");
            return replica;
        }
        catch
        {
            await replica.DisposeAsync();
            throw;
        }
    }
}
