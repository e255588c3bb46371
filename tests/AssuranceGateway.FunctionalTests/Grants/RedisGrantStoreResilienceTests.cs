using System.Diagnostics;
using System.Net;
using AssuranceGateway.Enforcement;
using AssuranceGateway.Grants;
using AssuranceGateway.Testing;
using Microsoft.Extensions.Logging;
using Xunit.Abstractions;

namespace AssuranceGateway.FunctionalTests.Grants;

/// <summary>
/// SPEC §2 "store unavailable" and §7.3: a frozen, killed or absent Redis. Each test owns its redis-server, so
/// pausing or killing it disturbs no other test; a paused server is always resumed in a finally.
/// </summary>
public sealed class RedisGrantStoreResilienceTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Timeout = TimeSpan.FromMilliseconds(250);
    private readonly TestOutputLogger<RedisGrantStore> _log = new(output);

    [Fact]
    public async Task ConsumeAsync_RedisPaused_FailsWithinTimeoutAndRecordsUnknownOutcomeOnceBack()
    {
        await using var redis = await RedisServer.StartAsync();
        using var store = await RedisStores.StartAsync(RedisStores.Settings(redis, timeout: Timeout), _log);
        var grant = Grant();
        Assert.Equal(GrantChange.Done, (await store.CreateAsync(grant, Created(), 10, default)).Outcome);
        var request = Matching(grant);

        StoreUnavailableException failure;
        TimeSpan took;
        bool pingWhilePaused;
        await redis.PauseAsync();
        try
        {
            // Timed off the test framework's synchronization context (as in ASP.NET Core): what is measured is the
            // store's own deadline, not how busy the test runner's threads are.
            (failure, took) = await Task.Run(async () =>
            {
                var clock = Stopwatch.StartNew();
                var thrown = await Assert.ThrowsAsync<StoreUnavailableException>(() => store.ConsumeAsync(request, default));
                return (thrown, clock.Elapsed);
            });
            pingWhilePaused = await store.NotReadyAsync(default) is null;
        }
        finally
        {
            await redis.ResumeAsync();
        }

        output.WriteLine($"consume against a paused Redis failed after {took.TotalMilliseconds:F0} ms");
        Assert.True(failure.OutcomeUnknown);
        Assert.InRange(took, Timeout - TimeSpan.FromMilliseconds(20), Timeout + TimeSpan.FromMilliseconds(300));
        Assert.False(pingWhilePaused);

        // Once Redis answers again, the grant says that this trace's consume has an unknown outcome.
        await RedisStores.WaitUntilAsync(
            async () => (await store.GetAsync(grant.Id, default))?.Events.Any(e => e.Type == GrantEvent.UnknownOutcome) == true,
            TimeSpan.FromSeconds(10),
            "the unknown_outcome event");
        var stored = await store.GetAsync(grant.Id, default);
        var unknown = Assert.Single(stored!.Events, e => e.Type == GrantEvent.UnknownOutcome);
        Assert.Equal(request.TraceId, unknown.TraceId);
        Assert.Equal(request.SpanId, unknown.SpanId);
        Assert.Equal(request.Workload, unknown.Workload);
        Assert.Equal("10.1.2.3", unknown.Origin);
        Assert.Equal(ReasonCodes.StoreUnavailable, unknown.Reason);
        await RedisStores.WaitUntilAsync(() => Task.FromResult(store.UnknownOutcomesPending == 0), TimeSpan.FromSeconds(1), "the queue to drain");
    }

    [Fact]
    public async Task ConsumeAsync_AfterTheStoreIsDisposed_KnownFailureNotACrash()
    {
        // A request that races the host's shutdown must be denied as store_unavailable, not end in a 500.
        await using var redis = await RedisServer.StartAsync();
        var settings = RedisStores.Settings(redis, timeout: Timeout);
        var store = await RedisStores.StartAsync(settings, _log);
        var grant = Grant();
        await store.CreateAsync(grant, Created(), 10, default);
        store.Dispose();

        var failure = await Assert.ThrowsAsync<StoreUnavailableException>(() => store.ConsumeAsync(Matching(grant), default));

        Assert.False(failure.OutcomeUnknown);
        Assert.Equal(0, store.UnknownOutcomesPending);
        Assert.Equal("1", await redis.ExecuteAsync("HGET", (string)new GrantKeys(settings.KeyPrefix).Grant(grant.Id)!, "uses"));
    }

    [Fact]
    public async Task Dispose_UnknownOutcomeNotRecordedAndRedisStillSilent_EachOneLoggedWithGrantTraceAndSpan()
    {
        // A gateway stopped (rolling restart, SIGTERM) while Redis stalls: the unknown outcome cannot reach the grant,
        // and the queue is in memory. The log must say which grant and which request, not only how many were lost,
        // so that an SRE can record it on the grant by hand.
        await using var redis = await RedisServer.StartAsync();
        using var logs = new LogCollector();
        using var factory = LoggerFactory.Create(b => b.AddProvider(logs).SetMinimumLevel(LogLevel.Debug));
        var store = await RedisStores.StartAsync(RedisStores.Settings(redis, timeout: Timeout), factory.CreateLogger<RedisGrantStore>());
        var grant = Grant();
        Assert.Equal(GrantChange.Done, (await store.CreateAsync(grant, Created(), 10, default)).Outcome);
        var request = Matching(grant);
        await redis.PauseAsync();
        try
        {
            var failure = await Assert.ThrowsAsync<StoreUnavailableException>(() => Task.Run(() => store.ConsumeAsync(request, default)));
            Assert.True(failure.OutcomeUnknown);
            store.Dispose();
        }
        finally
        {
            await redis.ResumeAsync();
        }

        var lost = Assert.Single(logs.Lines, l => l.Contains("[3124]", StringComparison.Ordinal));
        Assert.StartsWith("Error ", lost, StringComparison.Ordinal);
        Assert.Contains(grant.Id, lost, StringComparison.Ordinal);
        Assert.Contains(request.TraceId!, lost, StringComparison.Ordinal);
        Assert.Contains(request.SpanId!, lost, StringComparison.Ordinal);
        Assert.Contains(GrantEvent.UnknownOutcome, lost, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Dispose_RedisAnswersAgainJustBeforeTheStop_UnknownOutcomeWrittenBeforeClosing()
    {
        // The usual case of a rolling restart: Redis stalled for a moment and answers again, and the background writer
        // (which retries every 200 ms once the connection is judged healthy) has not written the record yet.
        await using var redis = await RedisServer.StartAsync();
        var settings = RedisStores.Settings(redis, timeout: Timeout);
        var store = await RedisStores.StartAsync(settings, _log);
        var grant = Grant();
        Assert.Equal(GrantChange.Done, (await store.CreateAsync(grant, Created(), 10, default)).Outcome);
        var request = Matching(grant);
        await redis.PauseAsync();
        try
        {
            await Assert.ThrowsAsync<StoreUnavailableException>(() => Task.Run(() => store.ConsumeAsync(request, default)));
        }
        finally
        {
            await redis.ResumeAsync();
        }

        store.Dispose();

        using var reader = await RedisStores.StartAsync(settings, _log);
        var stored = await reader.GetAsync(grant.Id, default);
        var unknown = Assert.Single(stored!.Events, e => e.Type == GrantEvent.UnknownOutcome);
        Assert.Equal(request.TraceId, unknown.TraceId);
    }

    [Fact]
    public async Task ConsumeAsync_RedisOutOfMemory_KnownFailureNothingWrittenNoUnknownOutcome()
    {
        // Under noeviction Redis refuses a script's first write when memory is full, and every script writes last: the
        // consume did not happen, so the grant must not be told that its outcome is unknown.
        await using var redis = await RedisServer.StartAsync("--maxmemory-policy", "noeviction");
        var settings = RedisStores.Settings(redis, timeout: Timeout);
        using var store = await RedisStores.StartAsync(settings, _log);
        var grant = Grant();
        await store.CreateAsync(grant, Created(), 10, default);
        var keys = new GrantKeys(settings.KeyPrefix);
        var key = (string)keys.Grant(grant.Id)!;
        var eventsKey = (string)keys.Events(grant.Id)!;
        var events = await redis.ExecuteAsync("LLEN", eventsKey);
        await redis.ExecuteAsync("CONFIG", "SET", "maxmemory", "1");
        try
        {
            // Twice: on the consume connection, and on the shared one should the first fall back.
            for (var i = 0; i < 2; i++)
            {
                var failure = await Assert.ThrowsAsync<StoreUnavailableException>(() => store.ConsumeAsync(Matching(grant), default));
                Assert.False(failure.OutcomeUnknown, failure.Message);
            }

            Assert.Equal(0, store.UnknownOutcomesPending);
        }
        finally
        {
            await redis.ExecuteAsync("CONFIG", "SET", "maxmemory", "0");
        }

        Assert.Equal("1", await redis.ExecuteAsync("HGET", key, "uses"));
        Assert.Equal(events, await redis.ExecuteAsync("LLEN", eventsKey));
    }

    [Fact]
    public async Task ConsumeAsync_DryRunWhileRedisPaused_FailsButRecordsNothing()
    {
        await using var redis = await RedisServer.StartAsync();
        using var store = await RedisStores.StartAsync(RedisStores.Settings(redis, timeout: Timeout), _log);
        var grant = Grant();
        await store.CreateAsync(grant, Created(), 10, default);

        await redis.PauseAsync();
        try
        {
            await Assert.ThrowsAsync<StoreUnavailableException>(() => store.ConsumeAsync(Matching(grant) with { DryRun = true }, default));
        }
        finally
        {
            await redis.ResumeAsync();
        }

        // A shadow decision writes nothing, so there is no outcome to be unsure about.
        Assert.Equal(0, store.UnknownOutcomesPending);
        await RedisStores.WaitUntilAsync(async () => await store.NotReadyAsync(default) is null, TimeSpan.FromSeconds(5), "the store to answer again");
        Assert.DoesNotContain((await store.GetAsync(grant.Id, default))!.Events, e => e.Type == GrantEvent.UnknownOutcome);
    }

    [Fact]
    public async Task Store_RedisKilledAndRestartedOnSamePort_ServesAgainWithinTwoSeconds()
    {
        await using var redis = await RedisServer.StartAsync();
        using var store = await RedisStores.StartAsync(RedisStores.Settings(redis, timeout: Timeout), _log);
        var before = Grant();
        Assert.Equal(GrantChange.Done, (await store.CreateAsync(before, Created(), 10, default)).Outcome);

        await redis.KillAsync();
        Assert.NotNull(await store.NotReadyAsync(default));
        await Assert.ThrowsAsync<StoreUnavailableException>(() => store.ConsumeAsync(Matching(before), default));

        // Down long enough for the watchdog to give up on the old connection and rebuild it.
        await Task.Delay(TimeSpan.FromSeconds(1.5));
        await redis.StartAsync();
        var recovery = await RedisStores.WaitUntilAsync(async () => await store.NotReadyAsync(default) is null, TimeSpan.FromSeconds(5), "the store to answer again");

        output.WriteLine($"serving again {recovery.TotalMilliseconds:F0} ms after the restart");
        Assert.True(recovery < TimeSpan.FromSeconds(2), $"recovered after {recovery}");
        var after = Grant(); // the restarted server is empty (no persistence in tests)
        Assert.Equal(GrantChange.Done, (await store.CreateAsync(after, Created(), 10, default)).Outcome);
        Assert.Equal(ReasonCodes.Ok, (await store.ConsumeAsync(Matching(after), default)).Reason);
        Assert.Equal(ReasonCodes.Replayed, (await store.ConsumeAsync(Matching(after), default)).Reason);
    }

    [Fact]
    public async Task Store_ConstructedWhileRedisDown_PingFalseThenServesOnceRedisStarts()
    {
        await using var redis = new RedisServer(); // a port, no server yet
        var clock = Stopwatch.StartNew();
        using var store = RedisStores.Create(RedisStores.Settings(redis, timeout: Timeout), _log);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(1), $"constructor took {clock.Elapsed}");

        Assert.NotNull(await store.NotReadyAsync(default));
        await Assert.ThrowsAsync<StoreUnavailableException>(() => store.CreateAsync(Grant(), Created(), 10, default));

        await redis.StartAsync();
        var ready = await RedisStores.WaitUntilAsync(async () => await store.NotReadyAsync(default) is null, TimeSpan.FromSeconds(5), "the store to connect");

        output.WriteLine($"serving {ready.TotalMilliseconds:F0} ms after Redis started");
        Assert.True(ready < TimeSpan.FromSeconds(2), $"connected after {ready}");
        var grant = Grant();
        Assert.Equal(GrantChange.Done, (await store.CreateAsync(grant, Created(), 10, default)).Outcome);
        Assert.Equal(ReasonCodes.Ok, (await store.ConsumeAsync(Matching(grant), default)).Reason);
    }

    [Fact]
    public async Task Store_RedisPausedLongerThanTheWatchdogWaits_ServesAgainAfterResume()
    {
        await using var redis = await RedisServer.StartAsync();
        using var store = await RedisStores.StartAsync(RedisStores.Settings(redis, timeout: Timeout), _log);

        await redis.PauseAsync();
        try
        {
            // Long enough for the watchdog to rebuild the multiplexer against a frozen server.
            await Task.Delay(TimeSpan.FromSeconds(1.6));
            Assert.NotNull(await store.NotReadyAsync(default));
        }
        finally
        {
            await redis.ResumeAsync();
        }

        var recovery = await RedisStores.WaitUntilAsync(async () => await store.NotReadyAsync(default) is null, TimeSpan.FromSeconds(5), "the store to answer again");
        output.WriteLine($"serving again {recovery.TotalMilliseconds:F0} ms after the resume");
        Assert.True(recovery < TimeSpan.FromSeconds(2), $"recovered after {recovery}");
        var grant = Grant();
        Assert.Equal(GrantChange.Done, (await store.CreateAsync(grant, Created(), 10, default)).Outcome);
        Assert.Equal(ReasonCodes.Ok, (await store.ConsumeAsync(Matching(grant), default)).Reason);
    }

    /// <summary>
    /// A forward_failed the store could not take when it happened (Redis paused) reaches the grant once Redis answers
    /// again, as an unknown outcome does: a spent use that was not delivered must be on the record, not only in the log.
    /// </summary>
    [Fact]
    public async Task AppendForwardFailed_WhileRedisIsPaused_RecordedOnceItAnswersAgain()
    {
        await using var redis = await RedisServer.StartAsync();
        using var store = await RedisStores.StartAsync(RedisStores.Settings(redis, timeout: Timeout), _log);
        var grant = Grant();
        Assert.Equal(GrantChange.Done, (await store.CreateAsync(grant, Created(), 10, default)).Outcome);
        Assert.Equal(ReasonCodes.Ok, (await store.ConsumeAsync(Matching(grant) with { TraceId = "the-use" }, default)).Reason);

        await redis.PauseAsync();
        try
        {
            var failed = new GrantEvent { Type = GrantEvent.ForwardFailed, TraceId = "the-use", Reason = "request" };
            await Assert.ThrowsAsync<StoreUnavailableException>(() => store.AppendEventAsync(grant.Id, failed, default));
        }
        finally
        {
            await redis.ResumeAsync();
        }

        await RedisStores.WaitUntilAsync(
            async () => (await store.GetAsync(grant.Id, default))!.Events.Any(e => e.Type == GrantEvent.ForwardFailed && e.TraceId == "the-use"),
            TimeSpan.FromSeconds(10),
            "the forward_failed on the grant");
        var events = (await store.GetAsync(grant.Id, default))!.Events;
        Assert.Equal([GrantEvent.Used, GrantEvent.ForwardFailed], events.TakeLast(2).Select(e => e.Type));
        Assert.Single(events, e => e.Type == GrantEvent.ForwardFailed);
    }

    /// <summary>
    /// Denials are kept only below 256 events so that outsiders presenting a grant id cannot push its real uses out of
    /// the record. An outsider's consume that times out is recorded as unknown_outcome: counted toward the 1,024 cap,
    /// a flood while Redis was slow filled the list and the owner's use left no used event. They share the 256 cap now.
    /// </summary>
    [Fact]
    public async Task UnknownOutcomes_OfForeignConsumes_CannotPushTheOwnersUseOutOfTheRecord()
    {
        await using var redis = await RedisServer.StartAsync();
        using var store = await RedisStores.StartAsync(RedisStores.Settings(redis, timeout: Timeout), _log);
        var grant = Grant();
        Assert.Equal(GrantChange.Done, (await store.CreateAsync(grant, Created(), 10, default)).Outcome);

        // Someone else with the grant id sends it to another route while Redis stalls (route_mismatch does not revoke).
        var outsider = Matching(grant) with { Route = "other", Subject = "mallory", Workload = "spiffe://prod.example/ns/dev/sa/x" };
        await redis.PauseAsync();
        try
        {
            await Task.Run(() => Task.WhenAll(Enumerable.Range(0, GrantRules.MaxEventsAnyKind + 20).Select(async i =>
            {
                try
                {
                    await store.ConsumeAsync(outsider with { TraceId = "flood-" + i }, default);
                }
                catch (StoreUnavailableException)
                {
                }
            })));
        }
        finally
        {
            await redis.ResumeAsync();
        }

        await RedisStores.WaitUntilAsync(async () => store.UnknownOutcomesPending == 0 && await store.NotReadyAsync(default) is null, TimeSpan.FromSeconds(60), "the queue to drain");
        var use = Matching(grant) with { TraceId = "the-real-use" };
        Assert.Equal(ReasonCodes.Ok, (await store.ConsumeAsync(use, default)).Reason);

        var stored = await store.GetAsync(grant.Id, default);
        output.WriteLine($"events {stored!.Events.Count} (denied {stored.Events.Count(e => e.Type == GrantEvent.Denied)}, "
            + $"unknown_outcome {stored.Events.Count(e => e.Type == GrantEvent.UnknownOutcome)}), dropped {stored.DroppedEvents}");
        Assert.Contains(stored.Events, e => e.Type == GrantEvent.Used && e.TraceId == "the-real-use");
    }

    /// <summary>
    /// The owner's consume times out while Redis stalls (it may run when Redis wakes up), then someone else with a valid
    /// token sends more made-up grant ids than the queue holds during the same stall: each timed-out consume is queued
    /// like a real one. The owner's unknown outcome must still reach the grant.
    /// </summary>
    [Fact]
    public async Task UnknownOutcome_ThenABurstOfMadeUpIdsFromAnotherCaller_OwnersUnknownOutcomeStillRecorded()
    {
        await using var redis = await RedisServer.StartAsync();
        using var store = await RedisStores.StartAsync(RedisStores.Settings(redis, timeout: Timeout), _log);
        var grant = Grant();
        Assert.Equal(GrantChange.Done, (await store.CreateAsync(grant, Created(), 10, default)).Outcome);
        var owner = Matching(grant);

        var queued = 0;
        await redis.PauseAsync();
        try
        {
            await Task.Delay(600); // the stall has lasted a moment (the watchdog has seen it) when the owner's request comes
            var failure = await Task.Run(() => Assert.ThrowsAsync<StoreUnavailableException>(() => store.ConsumeAsync(owner, default)));
            Assert.True(failure.OutcomeUnknown);
            var made = Matching(grant) with { Subject = "mallory", Workload = "spiffe://prod.example/ns/dev/sa/x" };
            await Task.Run(() => Task.WhenAll(Enumerable.Range(0, 1500).Select(async i =>
            {
                try
                {
                    await store.ConsumeAsync(made with { GrantId = $"madeup{i}", TraceId = $"flood-{i}" }, default);
                }
                catch (StoreUnavailableException e)
                {
                    if (e.OutcomeUnknown)
                    {
                        Interlocked.Increment(ref queued);
                    }
                }
            })));
        }
        finally
        {
            await redis.ResumeAsync();
        }

        await RedisStores.WaitUntilAsync(async () => store.UnknownOutcomesPending == 0 && await store.NotReadyAsync(default) is null, TimeSpan.FromSeconds(60), "the queue to drain");
        var stored = await store.GetAsync(grant.Id, default);
        output.WriteLine($"{queued} made-up consumes had an unknown outcome");
        Assert.True(queued > 1024, $"only {queued} made-up consumes were queued: the queue never filled");
        Assert.Contains(stored!.Events, e => e.Type == GrantEvent.UnknownOutcome && e.TraceId == owner.TraceId);
    }

    // The eviction judgement used to be made by the watchdog after the connection was already serving (the first
    // connect released waiting callers, then PING, the consume connection, and only then INFO): the first grants a
    // gateway created, and the first uses it consumed, on a Redis that evicts keys were written and allowed.
    [Fact]
    public async Task EvictingRedis_FirstCallsAfterStart_RefusedBeforeAnythingIsWritten()
    {
        await using var redis = await RedisServer.StartAsync("--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru");
        for (var i = 0; i < 3; i++)
        {
            var settings = RedisStores.Settings(redis, timeout: Timeout);
            using var store = RedisStores.Create(settings, _log);
            var grant = Grant();

            var failure = await Assert.ThrowsAsync<StoreUnavailableException>(() => store.CreateAsync(grant, Created(), 10, default));
            Assert.False(failure.OutcomeUnknown, failure.Message);
            Assert.Contains("maxmemory-policy allkeys-lru", failure.Message, StringComparison.Ordinal);
            Assert.Equal(0L, await redis.ExecuteAsync("EXISTS", (string)new GrantKeys(settings.KeyPrefix).Grant(grant.Id)!));
        }
    }

    // A Redis user without INFO (an ACL with -@dangerous, the usual hardening, takes INFO away) made every eviction
    // check fail, logged at Debug only, and "no risk" stayed in force for good: grants were created and used on a Redis
    // that evicts them, and nothing an operator sees said that the check never ran.
    [Fact]
    public async Task RedisRefusingInfo_EvictionCannotBeJudged_UsesAndGrantsRefused_ReadinessSaysWhy()
    {
        await using var redis = await RedisServer.StartAsync("--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru");
        await redis.ExecuteAsync("ACL", "SETUSER", "default", "-info");
        var settings = RedisStores.Settings(redis, timeout: Timeout);
        using var store = RedisStores.Create(settings, _log);
        await RedisStores.WaitUntilAsync(async () => await store.NotReadyAsync(default) is { } why && why.Contains("INFO", StringComparison.Ordinal), TimeSpan.FromSeconds(10), "readiness to name INFO");

        var grant = Grant();
        var failure = await Assert.ThrowsAsync<StoreUnavailableException>(() => store.CreateAsync(grant, Created(), 10, default));
        Assert.False(failure.OutcomeUnknown, failure.Message);
        Assert.Equal(0L, await redis.ExecuteAsync("EXISTS", (string)new GrantKeys(settings.KeyPrefix).Grant(grant.Id)!));
        var consume = await Assert.ThrowsAsync<StoreUnavailableException>(() => store.ConsumeAsync(Matching(grant), default));
        Assert.False(consume.OutcomeUnknown, consume.Message);

        // INFO allowed again: judged on the next round, and a Redis that does not evict is served.
        await redis.ExecuteAsync("ACL", "SETUSER", "default", "+info");
        await redis.ExecuteAsync("CONFIG", "SET", "maxmemory-policy", "noeviction");
        await RedisStores.WaitUntilAsync(async () => await store.NotReadyAsync(default) is null, TimeSpan.FromSeconds(15), "the store to be ready");
        Assert.Equal(GrantChange.Done, (await store.CreateAsync(grant, Created(), 10, default)).Outcome);
    }

    private static GrantRecord Grant() => new()
    {
        Id = Guid.NewGuid().ToString("N"),
        Route = "deploy",
        Status = GrantStatus.Active,
        Subject = "alice",
        TokenHash = "sha256:token",
        Workload = "spiffe://prod.example/ns/ci/sa/deployer",
        Origins = ["10.1.0.0/16"],
        MaxUses = 1,
        UsesRemaining = 1,
        ExpiresAt = DateTimeOffset.UtcNow.AddMinutes(5),
    };

    private static ConsumeRequest Matching(GrantRecord grant) => new()
    {
        GrantId = grant.Id,
        Route = grant.Route,
        Required = Bindings.Subject | Bindings.Token | Bindings.Workload | Bindings.Origin,
        Subject = grant.Subject,
        TokenHash = grant.TokenHash,
        Workload = grant.Workload,
        Origin = IPAddress.Parse("::ffff:10.1.2.3"),
        TraceId = "trace-" + Guid.NewGuid().ToString("N"),
        SpanId = Guid.NewGuid().ToString("N")[..16],
    };

    private static GrantEvent Created() => new() { Type = GrantEvent.Created, Actor = "bob" };
}
