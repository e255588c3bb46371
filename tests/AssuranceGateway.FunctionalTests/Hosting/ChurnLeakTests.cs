using System.Diagnostics;
using System.Net;
using System.Runtime.CompilerServices;
using AssuranceGateway.FunctionalTests.Grants;
using AssuranceGateway.Grants;
using AssuranceGateway.Testing;
using Microsoft.Extensions.DependencyInjection;
using Xunit.Abstractions;

namespace AssuranceGateway.FunctionalTests.Hosting;

/// <summary>
/// A gateway runs for weeks through config reloads, key file rotations and Redis restarts: each
/// churn is repeated here many times and what it could leave behind (file descriptors, threads, timers, old
/// configuration generations) must stay within a small constant of what it was after a warm-up. Process-wide counts,
/// so the collection runs alone.
/// </summary>
[Collection("Churn")]
public sealed class ChurnLeakTests(ITestOutputHelper output)
{
    [Fact]
    public async Task ConfigReloads_ManyWithChangingKeyFiles_DescriptorsTimersAndOldGenerationsStayBounded()
    {
        await using var gateway = await GatewayHarness.StartAsync();
        var config = gateway.DefaultConfig();
        // Two places for the issuer's key file, alternated: each reload then names another set of key files, so the
        // key file watch (one watcher per directory) is replaced every time.
        var other = Path.Combine(gateway.Directory, "alt");
        Directory.CreateDirectory(other);
        var otherJwks = Path.Combine(other, "idp.jwks.json");
        File.Copy(gateway.Idp.JwksPath, otherJwks);
        var n = 0;

        async Task ReloadOnceAsync()
        {
            n++;
            config["Assurance"]!["Policies"]!["single-use-approval"]!["MaxBodyBytes"] = 4096 + n;
            config["Assurance"]!["Tokens"]!["Issuers"]![0]!["JwksFile"] = n % 2 == 0 ? gateway.Idp.JwksPath : otherJwks;
            Assert.True(await gateway.ReloadAsync(config), string.Join("; ", gateway.RefusedReloads()));
        }

        for (var i = 0; i < 20; i++)
        {
            await ReloadOnceAsync();
        }

        var before = Resources.Measure(gateway);
        var early = WeakRuntime(gateway);
        for (var i = 0; i < 40; i++)
        {
            await ReloadOnceAsync();
        }

        Assert.Equal(HttpStatusCode.OK, (await gateway.StatusAndDetailAsync(gateway.Idp.Token())).Status);
        await Resources.AssertSettlesWithinAsync(gateway, before, output);

        // A watch left behind by a reload need not show in the descriptors (the runtime shares one inotify instance among
        // its watchers) but still listens: one key file change would then reload once per leftover.
        var generation = gateway.Config.Generation;
        Assert.True(await gateway.ReplaceKeyFileAsync(gateway.WorkloadIssuer.JwksPath, await File.ReadAllTextAsync(gateway.WorkloadIssuer.JwksPath)));
        await Task.Delay(1000);
        Assert.InRange(gateway.Config.Generation - generation, 1, 2);
        // Four generations are kept for requests YARP already routed; one 40 reloads old must be gone.
        Assert.False(IsAlive(early), "a configuration generation 40 reloads old is still reachable");
    }

    [Fact]
    public async Task RedisRestarts_StoreRebuildsEachTime_DescriptorsThreadsAndTimersStayBounded()
    {
        await using var redis = await RedisServer.StartAsync();
        await using var gateway = await GatewayHarness.StartAsync(redis: redis.ConnectionString);
        var store = (RedisGrantStore)gateway.Services.GetRequiredService<IGrantStore>();

        // Down long enough each time for the watchdog to give the multiplexer up and build another (RebuildAfter),
        // then back: the consume connection (RespPipe) broke with it and is replaced too.
        async Task RestartOnceAsync()
        {
            var rebuilds = gateway.Logs.Lines.Count(l => l.Contains("[3103]", StringComparison.Ordinal));
            await redis.KillAsync();
            await RedisStores.WaitUntilAsync(
                () => Task.FromResult(gateway.Logs.Lines.Count(l => l.Contains("[3103]", StringComparison.Ordinal)) > rebuilds),
                TimeSpan.FromSeconds(10), "a rebuilt multiplexer");
            await redis.StartAsync();
            await RedisStores.WaitUntilAsync(
                async () => store.ConsumesOnDedicatedConnection && await store.NotReadyAsync(default) is null,
                TimeSpan.FromSeconds(10), "the store ready again with its consume connection");
        }

        await RestartOnceAsync();
        var before = Resources.Measure(gateway);
        for (var i = 0; i < 7; i++)
        {
            await RestartOnceAsync();
        }

        await Resources.AssertSettlesWithinAsync(gateway, before, output);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static WeakReference WeakRuntime(GatewayHarness gateway) => new(gateway.Config.Current);

    private static bool IsAlive(WeakReference reference)
    {
        for (var i = 0; i < 3; i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }

        return reference.IsAlive;
    }
}

/// <summary>What a churn could leak, process-wide.</summary>
internal sealed record Resources(int Descriptors, int Threads, long Timers, long ManagedBytes)
{
    /// <summary>Measured with the harness's captured logs and spans dropped: they grow with every request and reload.</summary>
    public static Resources Measure(GatewayHarness gateway)
    {
        gateway.Logs.Clear();
        gateway.Spans.Clear();
        for (var i = 0; i < 3; i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }

        using var process = Process.GetCurrentProcess();
        return new Resources(Directory.GetFileSystemEntries("/proc/self/fd").Length, process.Threads.Count, Timer.ActiveCount, GC.GetTotalMemory(forceFullCollection: true));
    }

    /// <summary>
    /// Measures until the growth from <paramref name="baseline"/> is within the bounds (connections the churn's clients
    /// dropped close a moment later), for up to 5 s, then asserts it: a leak stays.
    /// </summary>
    public static async Task AssertSettlesWithinAsync(
        GatewayHarness gateway, Resources baseline, ITestOutputHelper output, int descriptors = 10, int threads = 12, int timers = 10, long bytes = 8 << 20)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            var now = Measure(gateway);
            var problems = new List<string>();
            Check(now.Descriptors - baseline.Descriptors < descriptors, $"file descriptors grew from {baseline.Descriptors} to {now.Descriptors}");
            Check(now.Timers - baseline.Timers < timers, $"timers grew from {baseline.Timers} to {now.Timers}");
            Check(now.Threads - baseline.Threads < threads, $"threads grew from {baseline.Threads} to {now.Threads}");
            Check(now.ManagedBytes - baseline.ManagedBytes < bytes, $"managed memory grew from {baseline.ManagedBytes} to {now.ManagedBytes}");
            if (problems.Count == 0 || clock.Elapsed > TimeSpan.FromSeconds(5))
            {
                output.WriteLine($"before {baseline}; after {now}");
                Assert.True(problems.Count == 0, string.Join("; ", problems));
                return;
            }

            await Task.Delay(250);

            void Check(bool within, string problem)
            {
                if (!within)
                {
                    problems.Add(problem);
                }
            }
        }
    }
}

[CollectionDefinition("Churn", DisableParallelization = true)]
public sealed class ChurnRunsAlone;
