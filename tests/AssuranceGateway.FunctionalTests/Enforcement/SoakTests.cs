using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using AssuranceGateway.Testing;
using Xunit.Abstractions;
using static AssuranceGateway.Testing.GrantHelpers;

namespace AssuranceGateway.FunctionalTests.Enforcement;

/// <summary>
/// Soak: many concurrent clients through the gateway with a real Redis while Redis is paused, killed and restarted
/// and the configuration is reloaded; afterwards the attacker's and the auditor's invariants are checked.
/// </summary>
[Collection("Soak")]
public sealed class SoakTests(ITestOutputHelper output) : IAsyncLifetime
{
    private RedisServer _redis = null!;

    public async Task InitializeAsync() => _redis = await RedisServer.StartAsync();

    public async Task DisposeAsync() => await _redis.DisposeAsync();

    private enum Kind
    {
        Legit,
        Tampered,
        BadToken,
        OtherToken,
    }

    private sealed record Sent(
        string SoakId, Kind Kind, string GrantId, int MaxUses, string TraceId, byte[] Body, int Status, string? MediaType, string? Reason,
        TimeSpan Elapsed, string? Error);

    private sealed record GrantInfo(string Id, int MaxUses, string Body, string Token);

    [Fact]
    public async Task Soak_ChaosUnderConcurrency_InvariantsHold()
    {
        var soakFor = TimeSpan.FromSeconds(double.TryParse(Environment.GetEnvironmentVariable("SOAK_SECONDS"), out var s) ? s : 15);
        await using var gateway = await GatewayHarness.StartAsync(redis: _redis.ConnectionString);
        var baseConfig = JsonNode.Parse(await File.ReadAllTextAsync(gateway.ConfigPath))!.AsObject();
        var changedConfig = baseConfig.DeepClone().AsObject();
        changedConfig["Assurance"]!["Policies"]!["single-use-approval"]!["MaxBodyBytes"] = 8192;
        changedConfig["Assurance"]!["Policies"]!["single-use-approval"]!["MaxTtl"] = "00:06:00";

        var tokens = Enumerable.Range(0, 4).Select(i => gateway.Idp.Token(sid: $"s-{i}")).ToArray();
        var intruderToken = gateway.Idp.Token(subject: "mallory", sid: "s-x");
        using var foreignIssuer = new TestIssuer("https://idp.test", gateway.Directory, "k1");
        var forgedToken = foreignIssuer.Token();
        var svid = gateway.WorkloadIssuer.Svid();
        // One API token for the whole run, as a real client holds one: the verified-token cache then holds it, and the
        // memory check below measures the gateway rather than a verification per call.
        var apiToken = gateway.Idp.ApiToken();

        var sent = new ConcurrentBag<Sent>();
        var grants = new ConcurrentDictionary<string, GrantInfo>();
        var chaosLog = new ConcurrentQueue<string>();
        var clock = Stopwatch.StartNew();
        var grantCounter = 0;
        var createFailures = 0;

        async Task<GrantInfo?> CreateAsync(CancellationToken stop)
        {
            var n = Interlocked.Increment(ref grantCounter);
            var maxUses = 1 + (n % 5);
            var token = tokens[n % tokens.Length];
            var body = $$"""{"release":"5.2","env":"prod","grant":{{n}},"pad":"{{new string('p', n % 50)}}"}""";
            while (!stop.IsCancellationRequested)
            {
                using var response = await gateway.PostGrantAsync(DeployGrant(token, body: body, maxUses: maxUses), apiToken);
                var text = await response.Content.ReadAsStringAsync(CancellationToken.None);
                if (response.StatusCode == HttpStatusCode.Created)
                {
                    var id = JsonDocument.Parse(text).RootElement.GetProperty("id").GetString()!;
                    var info = new GrantInfo(id, maxUses, body, token);
                    grants[id] = info;
                    return info;
                }

                Interlocked.Increment(ref createFailures);
                Assert.True(response.StatusCode == HttpStatusCode.ServiceUnavailable, $"grant create: {(int)response.StatusCode} {text}");
                await Task.Delay(100, CancellationToken.None);
            }

            return null;
        }

        async Task<Sent> SendAsync(GrantInfo grant, Kind kind, int abortAfterMs = 0)
        {
            var soakId = Guid.NewGuid().ToString("N");
            var body = kind == Kind.Tampered ? grant.Body.Replace("prod", "PROD", StringComparison.Ordinal) : grant.Body;
            var token = kind switch
            {
                Kind.BadToken => forgedToken,
                Kind.OtherToken => intruderToken,
                _ => grant.Token,
            };
            using var request = DeployRequest(token, svid, grant.Id, out var trace, body: body);
            request.Headers.TryAddWithoutValidation("X-Soak-Id", soakId);
            var watch = Stopwatch.StartNew();
            try
            {
                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(abortAfterMs > 0 ? abortAfterMs / 1000.0 : 20));
                using var response = await gateway.Proxy.SendAsync(request, cts.Token);
                var text = await response.Content.ReadAsStringAsync(cts.Token);
                string? reason = null;
                if (response.Content.Headers.ContentType?.MediaType == "application/problem+json")
                {
                    try
                    {
                        reason = JsonDocument.Parse(text).RootElement.GetProperty("reason").GetString();
                    }
                    catch (Exception e) when (e is JsonException or KeyNotFoundException)
                    {
                        reason = "unparsable:" + text;
                    }
                }

                return new Sent(soakId, kind, grant.Id, grant.MaxUses, trace, Encoding.UTF8.GetBytes(body), (int)response.StatusCode,
                    response.Content.Headers.ContentType?.MediaType, reason, watch.Elapsed, null);
            }
            catch (OperationCanceledException) when (abortAfterMs > 0)
            {
                return new Sent(soakId, kind, grant.Id, grant.MaxUses, trace, Encoding.UTF8.GetBytes(body), -2, null, null, watch.Elapsed, "client aborted");
            }
            catch (Exception e)
            {
                return new Sent(soakId, kind, grant.Id, grant.MaxUses, trace, Encoding.UTF8.GetBytes(body), -1, null, null, watch.Elapsed, e.GetType().Name + ": " + e.Message);
            }
        }

        async Task WorkerAsync(int worker, TimeSpan duration)
        {
            var random = new Random(worker);
            using var stop = new CancellationTokenSource(duration);
            while (!stop.IsCancellationRequested)
            {
                var grant = await CreateAsync(stop.Token);
                if (grant is null)
                {
                    return;
                }

                // Many clients race for the grant's uses, with tampered bodies, forged and foreign tokens mixed in.
                var attempts = new List<Task<Sent>>();
                var count = grant.MaxUses * 2 + random.Next(4, 10);
                for (var i = 0; i < count; i++)
                {
                    var roll = random.Next(100);
                    var kind = roll < 70 ? Kind.Legit : roll < 85 ? Kind.Tampered : roll < 97 ? Kind.BadToken : Kind.OtherToken;
                    attempts.Add(SendAsync(grant, kind, kind == Kind.Legit && random.Next(100) < 5 ? random.Next(1, 6) : 0));
                }

                foreach (var result in await Task.WhenAll(attempts))
                {
                    sent.Add(result);
                }

                // Replays of a grant that may be used up.
                for (var i = 0; i < 2; i++)
                {
                    sent.Add(await SendAsync(grant, Kind.Legit));
                }
            }
        }

        // Warm-up without chaos, then the baseline sample.
        await Task.WhenAll(Enumerable.Range(0, 8).Select(w => WorkerAsync(1000 + w, TimeSpan.FromSeconds(3))));
        sent.Clear();
        grants.Clear();
        gateway.Upstream.Clear();
        var before = await SampleAsync(gateway);
        output.WriteLine($"before: {before}");

        var workers = Enumerable.Range(0, 12).Select(w => WorkerAsync(w, soakFor)).ToArray();
        var chaos = Task.Run(async () =>
        {
            var deadline = soakFor - TimeSpan.FromSeconds(3);
            var watch = Stopwatch.StartNew();
            var step = 0;
            while (watch.Elapsed < deadline)
            {
                await Task.Delay(1500);
                var t = $"{clock.Elapsed.TotalSeconds:F1}s";
                switch (step++ % 8)
                {
                    case 0:
                        chaosLog.Enqueue($"{t} pause 700ms");
                        await _redis.PauseAsync();
                        try { await Task.Delay(700); } finally { await _redis.ResumeAsync(); }
                        break;
                    case 1:
                        chaosLog.Enqueue($"{t} reload same: {await gateway.ReloadAsync(baseConfig.DeepClone().AsObject())}");
                        break;
                    case 2:
                        chaosLog.Enqueue($"{t} kill+restart");
                        await _redis.RestartAsync();
                        break;
                    case 3:
                        chaosLog.Enqueue($"{t} reload policy change: {await gateway.ReloadAsync(changedConfig.DeepClone().AsObject())}");
                        break;
                    case 4:
                        chaosLog.Enqueue($"{t} pause 1800ms");
                        await _redis.PauseAsync();
                        try { await Task.Delay(1800); } finally { await _redis.ResumeAsync(); }
                        break;
                    case 5:
                        chaosLog.Enqueue($"{t} reload back: {await gateway.ReloadAsync(baseConfig.DeepClone().AsObject())}");
                        break;
                    case 6:
                        chaosLog.Enqueue($"{t} pause 500ms then kill while paused, restart");
                        await _redis.PauseAsync();
                        await Task.Delay(500);
                        await _redis.RestartAsync();
                        break;
                    case 7:
                        chaosLog.Enqueue($"{t} 3 reloads back to back, pauses of 240 and 300 ms");
                        await _redis.PauseAsync();
                        try { await Task.Delay(240); } finally { await _redis.ResumeAsync(); }
                        await Task.Delay(500);
                        await _redis.PauseAsync();
                        try { await Task.Delay(300); } finally { await _redis.ResumeAsync(); }
                        await gateway.ReloadAsync(baseConfig.DeepClone().AsObject());
                        await gateway.ReloadAsync(changedConfig.DeepClone().AsObject());
                        await gateway.ReloadAsync(baseConfig.DeepClone().AsObject());
                        break;
                }
            }
        });

        await Task.WhenAll(workers);
        await chaos;
        foreach (var line in chaosLog)
        {
            output.WriteLine("chaos " + line);
        }

        // Give queued unknown outcomes time to be written.
        await Task.Delay(3000);
        var all = sent.ToList();
        var failures = new List<string>();
        output.WriteLine($"requests {all.Count}, grants {grants.Count}, create-503 {createFailures}; by status: "
            + string.Join(", ", all.GroupBy(r => r.Status).OrderBy(g => g.Key).Select(g => $"{g.Key}={g.Count()}")));
        output.WriteLine("by reason: " + string.Join(", ", all.GroupBy(r => r.Reason ?? "-").OrderBy(g => g.Key).Select(g => $"{g.Key}={g.Count()}")));
        output.WriteLine($"max latency {all.Max(r => r.Elapsed)}; >3s: {all.Count(r => r.Elapsed > TimeSpan.FromSeconds(3))}");

        // (3) No 500, no transport failure, every non-200 a problem+json.
        foreach (var r in all.Where(r => r.Status == -1 || r.Status >= 500 && r.Status != 503 || r.Status is not 200 and not -2 && r.MediaType != "application/problem+json"))
        {
            failures.Add($"(3) bad response {r.Status} {r.MediaType} {r.Reason} {r.Error} kind={r.Kind} grant={r.GrantId} trace={r.TraceId} after {r.Elapsed}");
        }

        foreach (var r in all.Where(r => r.Status == 503 && r.Reason != "store_unavailable"))
        {
            failures.Add($"(3) 503 with reason {r.Reason} trace={r.TraceId}");
        }

        // (1) The upstream got exactly the 200s, byte for byte, never a tampered or foreign one.
        var received = gateway.Upstream.Received.Where(r => r.Headers.ContainsKey("X-Soak-Id")).ToList();
        var bySoakId = all.ToDictionary(r => r.SoakId);
        var receivedIds = new HashSet<string>();
        foreach (var up in received)
        {
            var id = up.Headers["X-Soak-Id"];
            if (!receivedIds.Add(id))
            {
                failures.Add($"(1) upstream received {id} twice");
            }

            if (!bySoakId.TryGetValue(id, out var r))
            {
                continue; // warm-up requests are recorded too
            }

            if (r.Status != 200 && r.Status != -2)
            {
                failures.Add($"(1) upstream received a request answered {r.Status} {r.Reason}: kind={r.Kind} grant={r.GrantId} trace={r.TraceId}");
            }

            if (r.Kind != Kind.Legit)
            {
                failures.Add($"(1) upstream received a {r.Kind} request: grant={r.GrantId} trace={r.TraceId}");
            }

            if (!up.Body.AsSpan().SequenceEqual(r.Body))
            {
                failures.Add($"(1) upstream body differs for trace={r.TraceId}");
            }

            if (up.Headers.ContainsKey("Assurance-Id") || up.Headers.ContainsKey("Workload-Identity"))
            {
                failures.Add($"(1) upstream saw Assurance-Id/Workload-Identity for trace={r.TraceId}");
            }
        }

        foreach (var r in all.Where(r => r.Status == 200 && !receivedIds.Contains(r.SoakId)))
        {
            failures.Add($"(1) 200 without an upstream request: trace={r.TraceId}");
        }

        // (2) Per grant: 200s <= maxUses; used events == 200s (+ unknown outcomes of 503s); unknown outcomes only for 503s.
        var forwardFailedLogged = gateway.Logs.Lines
            .Where(l => l.Contains("[201]", StringComparison.Ordinal))
            .Select(l => l[(l.LastIndexOf("traceId=", StringComparison.Ordinal) + "traceId=".Length)..].Trim())
            .Select(t => (string?)t.Split(' ', ':')[0])
            .ToHashSet();
        var audited = 0;
        var wiped = 0;
        var byTrace = all.ToDictionary(r => r.TraceId);
        var byGrant = all.GroupBy(r => r.GrantId).ToDictionary(g => g.Key, g => g.ToList());
        var unknownSeen = 0;
        var usedWith503 = 0;
        var abortedUsed = 0;
        foreach (var grant in grants.Values)
        {
            var mine = byGrant.TryGetValue(grant.Id, out var m) ? m : [];
            var ok = mine.Where(r => r.Status == 200).ToList();
            if (ok.Count > grant.MaxUses)
            {
                failures.Add($"(2) grant {grant.Id} maxUses {grant.MaxUses} accepted {ok.Count} times");
            }

            using var request = new HttpRequestMessage(HttpMethod.Get, $"/assurance/v1/grants/{grant.Id}");
            request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", apiToken);
            using var response = await gateway.Api.SendAsync(request);
            if (response.StatusCode == HttpStatusCode.NotFound)
            {
                wiped++;
                continue; // lost with a Redis restart (no persistence in the test server)
            }

            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            audited++;
            var view = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
            var events = view["events"]!.AsArray();
            var used = events.Where(e => (string?)e!["type"] == "used").Select(e => (string?)e!["traceId"]).ToList();
            var unknown = events.Where(e => (string?)e!["type"] == "unknown_outcome").Select(e => (string?)e!["traceId"]).ToList();
            var forwardFailed = events.Where(e => (string?)e!["type"] == "forward_failed").Select(e => (string?)e!["traceId"]).ToList();
            // A forward_failed the store could not take (Redis paused or down at that moment) stands in the log (event 201).
            forwardFailed.AddRange(forwardFailedLogged.Where(t => !forwardFailed.Contains(t)));
            var dropped = (long?)view["droppedEvents"] ?? 0;
            if (dropped > 0)
            {
                failures.Add($"(2) grant {grant.Id} dropped {dropped} events ({mine.Count} requests)");
            }

            foreach (var r in mine.Where(r => r.Status == -2 && receivedIds.Contains(r.SoakId) && !used.Contains(r.TraceId)))
            {
                failures.Add($"(2) grant {grant.Id}: client-aborted trace={r.TraceId} reached the upstream without a used event");
            }

            foreach (var r in ok.Where(r => !used.Contains(r.TraceId)))
            {
                failures.Add($"(2) grant {grant.Id}: 200 trace={r.TraceId} has no used event");
            }

            foreach (var u in used)
            {
                if (u is null || !byTrace.TryGetValue(u, out var r))
                {
                    failures.Add($"(2) grant {grant.Id}: used event for unknown trace {u}");
                    continue;
                }

                if (r.Status == -2)
                {
                    abortedUsed++;
                    // A client that went away while its consume was stuck in a paused Redis was given a 503 it never saw:
                    // the use that ran once Redis woke up is recorded as an unknown outcome, not a failed forward.
                    if (!receivedIds.Contains(r.SoakId) && !forwardFailed.Contains(u) && !unknown.Contains(u))
                    {
                        failures.Add($"(2) grant {grant.Id}: used by client-aborted trace={u} that never reached the upstream, and neither "
                            + $"forward_failed nor unknown_outcome says so (after {r.Elapsed.TotalMilliseconds:F0} ms; events {events.ToJsonString()})");
                    }

                    continue;
                }

                if (r.Status != 200 && !(r.Status == 503 && unknown.Contains(u)))
                {
                    failures.Add($"(2) grant {grant.Id}: used event for trace={u} answered {r.Status} {r.Reason} without unknown_outcome (kind {r.Kind}, {r.Elapsed})");
                }
            }

            unknownSeen += unknown.Count;
            usedWith503 += used.Count(u => u is not null && byTrace.TryGetValue(u, out var x) && x.Status == 503);
            foreach (var u in unknown)
            {
                // A client that went away while its consume timed out never sees the 503 it was given.
                if (u is null || !byTrace.TryGetValue(u, out var r) || r.Status is not (503 or -2))
                {
                    failures.Add($"(2) grant {grant.Id}: unknown_outcome for trace={u} that got {(u is not null && byTrace.TryGetValue(u, out var x) ? x.Status : 0)}, not a 503");
                }
            }

            if (used.Count > grant.MaxUses)
            {
                failures.Add($"(2) grant {grant.Id}: {used.Count} used events for maxUses {grant.MaxUses}");
            }

            var remaining = (int)view["usesRemaining"]!;
            if (remaining != grant.MaxUses - used.Count)
            {
                failures.Add($"(2) grant {grant.Id}: usesRemaining {remaining} but {used.Count} used events of {grant.MaxUses}");
            }
        }

        output.WriteLine($"grants audited {audited}, wiped by restarts {wiped}; unknown_outcome events {unknownSeen}, used events of 503s {usedWith503}, of client aborts {abortedUsed}");

        // (4) Still works after the chaos.
        using (var ready = await gateway.Api.GetAsync("/readyz"))
        {
            if (ready.StatusCode != HttpStatusCode.OK)
            {
                failures.Add($"(4) /readyz {(int)ready.StatusCode}");
            }
        }

        var fresh = await gateway.CreateGrantAsync(DeployGrant(tokens[0]));
        using (var response = await gateway.Proxy.SendAsync(DeployRequest(tokens[0], svid, fresh, out _)))
        {
            if (response.StatusCode != HttpStatusCode.OK)
            {
                failures.Add($"(4) fresh grant answered {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
            }
        }

        // (5) No unbounded growth: the test's own records released first.
        all.Clear();
        bySoakId.Clear();
        byTrace.Clear();
        byGrant.Clear();
        received.Clear();
        sent.Clear();
        grants.Clear();
        gateway.Upstream.Clear();
        var after = await SampleAsync(gateway);
        output.WriteLine($"after: {after}");
        if (after.NonPoolThreads > before.NonPoolThreads + 8)
        {
            failures.Add($"(5) non-pool threads grew {before.NonPoolThreads} -> {after.NonPoolThreads}");
        }

        if (after.ManagedBytes > before.ManagedBytes + 64L * 1024 * 1024)
        {
            failures.Add($"(5) managed heap grew {before.ManagedBytes / 1024 / 1024} MB -> {after.ManagedBytes / 1024 / 1024} MB");
        }

        var errors = gateway.Logs.Lines.Where(l => l.StartsWith("Error", StringComparison.Ordinal) || l.StartsWith("Critical", StringComparison.Ordinal)).ToList();
        foreach (var e in errors.Take(10))
        {
            output.WriteLine("log " + e[..Math.Min(e.Length, 600)]);
        }

        foreach (var f in failures.Take(60))
        {
            output.WriteLine(f);
        }

        Assert.True(failures.Count == 0, $"{failures.Count} invariant violations:\n" + string.Join("\n", failures.Take(30)));
    }

    private sealed record Sample(int NonPoolThreads, int PoolThreads, long ManagedBytes, long WorkingSet, string Generations)
    {
        public override string ToString() => $"threads non-pool {NonPoolThreads} pool {PoolThreads}, managed {ManagedBytes / 1024 / 1024} MB, ws {WorkingSet / 1024 / 1024} MB, gens {Generations}";
    }

    private static async Task<Sample> SampleAsync(GatewayHarness gateway)
    {
        gateway.Spans.Clear();
        gateway.Logs.Clear();
        await Task.Delay(500);
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        using var process = Process.GetCurrentProcess();
        var info = GC.GetGCMemoryInfo(GCKind.FullBlocking);
        var gens = string.Join(" ", info.GenerationInfo.ToArray().Select((g, i) => $"g{i}={g.SizeAfterBytes / 1024 / 1024}MB"));
        return new Sample(process.Threads.Count - ThreadPool.ThreadCount, ThreadPool.ThreadCount, GC.GetTotalMemory(forceFullCollection: true), process.WorkingSet64, gens);
    }
}

/// <summary>
/// The soak runs alone: its thread and heap checks read the whole test process, which other test classes running
/// beside it would grow with their own gateways and Redis connections.
/// </summary>
[CollectionDefinition("Soak", DisableParallelization = true)]
public sealed class SoakRunsAlone;
