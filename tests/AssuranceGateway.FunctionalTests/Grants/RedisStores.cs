using System.Diagnostics;
using System.Net;
using AssuranceGateway.Configuration;
using AssuranceGateway.Enforcement;
using AssuranceGateway.Grants;
using AssuranceGateway.Testing;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace AssuranceGateway.FunctionalTests.Grants;

/// <summary>Redis grant stores for tests: a unique key prefix each, ready (answering PING) when returned.</summary>
internal static class RedisStores
{
    static RedisStores()
    {
        // StackExchange.Redis 1.2.6 parks several thread-pool threads per multiplexer (measured here: the first connect
        // in a process stalls every pool continuation for ~1 s on a 2-core machine until the pool grows). Every
        // deadline of the store is a pool continuation, so tests that time them would measure the pool's growth
        // instead. A gateway host should raise the minimum the same way (see the report on RedisGrantStore).
        ThreadPool.GetMinThreads(out var workers, out var completionPorts);
        ThreadPool.SetMinThreads(Math.Max(workers, 32), completionPorts);
    }

    /// <summary>Generous for tests that run many stores in parallel; the failure tests choose their own.</summary>
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(2);

    public static StoreSettings Settings(RedisServer redis, string? prefix = null, TimeSpan? timeout = null, TimeSpan? retention = null) => new()
    {
        Redis = redis.ConnectionString,
        KeyPrefix = prefix ?? NewPrefix(),
        Timeout = timeout ?? DefaultTimeout,
        EvidenceRetention = retention ?? TimeSpan.FromDays(7),
    };

    public static string NewPrefix() => "t" + Guid.NewGuid().ToString("N")[..12] + ":";

    public static RedisGrantStore Create(StoreSettings settings, ILogger<RedisGrantStore>? logger = null) =>
        new(settings, TimeProvider.System, logger ?? NullLogger<RedisGrantStore>.Instance);

    /// <summary>
    /// How long a new store may take to reach its Redis before the tests give it up for a fresh one. Fresh-clone CI runs
    /// had, about once a run, one store among the ~80 a class starts (the others answer in ~30 ms) still not answering
    /// after 10 s, and once after 30 s. One cause was found (session 15, through the notes below): on the three-master
    /// cluster a link to one node stuck while the watchdog's PING went elsewhere; the watchdog now pings every node. Others
    /// may remain: the tests still start a second store instead, and say what the first one logged.
    /// </summary>
    private static readonly TimeSpan StartLimit = TimeSpan.FromSeconds(15);

    public static async Task<RedisGrantStore> StartAsync(StoreSettings settings, ILogger<RedisGrantStore>? logger = null)
    {
        string? firstAttempt = null;
        for (var attempt = 1; ; attempt++)
        {
            // What the store logs, and each change in what it says while it is waited for: if it is given up, the
            // next person sees what its watchdog did (the cause of these stalls was never caught in the act).
            var collector = new LogCollector();
            var store = Create(settings, logger ?? new CollectedLogger(collector.CreateLogger(nameof(RedisGrantStore))));
            var clock = Stopwatch.StartNew();
            var said = new List<string>();
            string? why = null;
            try
            {
                // Answering is enough here: a test may ask for more replica acknowledgements than it has replicas.
                await WaitUntilAsync(
                    async () =>
                    {
                        var now = await store.NotReadyAsync(default);
                        if (said.Count == 0 || !string.Equals(now, why, StringComparison.Ordinal))
                        {
                            said.Add($"{clock.ElapsedMilliseconds} ms: {now ?? "ready"}");
                        }

                        why = now;
                        return now is null || !now.StartsWith("does not answer", StringComparison.Ordinal);
                    },
                    StartLimit,
                    "the store to answer");
                if (!store.IsCluster)
                {
                    // Standalone: consumes go over the dedicated connection once the watchdog has opened it; tests that
                    // consume should exercise that path, not the shared connection that stands in until then.
                    await WaitUntilAsync(() => Task.FromResult(store.ConsumesOnDedicatedConnection), StartLimit, "the consume connection");
                }

                return store;
            }
            catch (TimeoutException e)
            {
                store.Dispose();
                var report = $"store {settings.KeyPrefix} given up after {clock.Elapsed.TotalSeconds:F1} s (attempt {attempt}); it said: "
                    + string.Join("; ", said) + Environment.NewLine + "  its log:" + Environment.NewLine + "    "
                    + string.Join(Environment.NewLine + "    ", collector.Lines);
                Note(report);
                if (attempt == 2)
                {
                    throw new TimeoutException($"{e.Message} Twice, each with a new store; the last said: {why ?? "ready"}.{Environment.NewLine}{firstAttempt}{Environment.NewLine}{report}", e);
                }

                firstAttempt = report;
            }
            catch
            {
                store.Dispose();
                throw;
            }
        }
    }

    /// <summary>
    /// Appends to the file named by AGW_TEST_NOTES, which tests/run.sh prints before its summary: what a test worked
    /// around without failing is still seen in the run's output.
    /// </summary>
    private static void Note(string text)
    {
        if (Environment.GetEnvironmentVariable("AGW_TEST_NOTES") is { Length: > 0 } path)
        {
            lock (NoteLock)
            {
                File.AppendAllText(path, text + Environment.NewLine);
            }
        }
    }

    private static readonly Lock NoteLock = new();

    /// <summary>The store's own logger, into a <see cref="LogCollector"/> (Debug and up: the watchdog's steps).</summary>
    internal sealed class CollectedLogger(ILogger inner) : ILogger<RedisGrantStore>
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => inner.BeginScope(state);

        public bool IsEnabled(LogLevel logLevel) => inner.IsEnabled(logLevel);

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            inner.Log(logLevel, eventId, state, exception, formatter);
    }

    /// <summary>Polls every 20 ms; returns how long it took, or throws with <paramref name="what"/> once the time is up.</summary>
    public static async Task<TimeSpan> WaitUntilAsync(Func<Task<bool>> condition, TimeSpan limit, string what)
    {
        var clock = Stopwatch.StartNew();
        while (!await condition())
        {
            if (clock.Elapsed > limit)
            {
                throw new TimeoutException($"Waited {limit} for {what}.");
            }

            await Task.Delay(20);
        }

        return clock.Elapsed;
    }

    /// <summary>An active single-use grant bound to a token hash only (a fresh id unless given).</summary>
    public static GrantRecord TokenGrant(string? id = null) => new()
    {
        Id = id ?? Guid.NewGuid().ToString("N"),
        Route = "deploy",
        Status = GrantStatus.Active,
        TokenHash = "sha256:token",
        MaxUses = 1,
        UsesRemaining = 1,
        ExpiresAt = DateTimeOffset.UtcNow.AddMinutes(5),
    };

    /// <summary>A consume that matches a <see cref="TokenGrant"/>, with a trace id of its own.</summary>
    public static ConsumeRequest MatchingToken(GrantRecord grant) => new()
    {
        GrantId = grant.Id,
        Route = grant.Route,
        Required = Bindings.Token,
        TokenHash = grant.TokenHash,
        Origin = IPAddress.Loopback,
        TraceId = "trace-" + Guid.NewGuid().ToString("N"),
    };

    public static GrantEvent CreatedBy(string actor = "bob") => new() { Type = GrantEvent.Created, Actor = actor };
}
