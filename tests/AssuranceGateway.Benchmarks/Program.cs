using System.Globalization;
using System.Security.Claims;
using AssuranceGateway.Benchmarks;
using BenchmarkDotNet.Running;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;
using Yarp.ReverseProxy.Configuration;

// Modes, used by deploy/bench/run.sh:
//   upstream   --urls URL                    a cheap upstream: reads the body, answers 200 "ok"
//   plain-yarp --urls URL --upstream URL     plain YARP, same version and settings as the gateway, one catch-all route
//   mint       --key JWK --count N --out F   N distinct access tokens (fresh-token scenario)
//   micro      [BenchmarkDotNet arguments]   the microbenchmarks
var mode = args.Length > 0 ? args[0] : "micro";
string Arg(string name, string fallback)
{
    var i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
}

switch (mode)
{
    case "upstream":
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls(Arg("--urls", "http://127.0.0.1:5101"));
        builder.Logging.ClearProviders();
        var app = builder.Build();
        app.Run(async context =>
        {
            var buffer = new byte[8192];
            while (await context.Request.Body.ReadAsync(buffer) > 0)
            {
            }

            context.Response.ContentLength = 2;
            await context.Response.Body.WriteAsync("ok"u8.ToArray());
        });
        await app.RunAsync();
        return 0;
    }

    case "plain-yarp":
    {
        var builder = WebApplication.CreateBuilder();
        builder.WebHost.UseUrls(Arg("--urls", "http://127.0.0.1:5102"));
        builder.Logging.ClearProviders();
        builder.Services.AddReverseProxy().LoadFromMemory(
            [new RouteConfig { RouteId = "all", ClusterId = "upstream", Match = new RouteMatch { Path = "/{**rest}" } }],
            [new ClusterConfig { ClusterId = "upstream", Destinations = new Dictionary<string, DestinationConfig> { ["d1"] = new() { Address = Arg("--upstream", "http://127.0.0.1:5101") } } }]);
        var app = builder.Build();
        app.MapReverseProxy(proxy =>
        {
            // The gateway's proxy pipeline without the assurance step.
            proxy.UseSessionAffinity();
            proxy.UseLoadBalancing();
            proxy.UsePassiveHealthChecks();
        });
        await app.RunAsync();
        return 0;
    }

    case "mint":
    {
        var key = new JsonWebKey(await File.ReadAllTextAsync(Arg("--key", "config/keys/idp.private.jwk.json")));
        var count = int.Parse(Arg("--count", "1000"), CultureInfo.InvariantCulture);
        var handler = new JsonWebTokenHandler { SetDefaultTimesOnTokenCreation = false };
        var credentials = new SigningCredentials(key, SecurityAlgorithms.EcdsaSha256);
        var now = DateTime.UtcNow;
        await using var output = new StreamWriter(Arg("--out", "tokens.txt"));
        for (var i = 0; i < count; i++)
        {
            await output.WriteLineAsync(handler.CreateToken(new SecurityTokenDescriptor
            {
                Issuer = Arg("--iss", "https://idp.example"),
                Audience = Arg("--aud", "gateway"),
                Subject = new ClaimsIdentity([new Claim("sub", Arg("--sub", "bench"))]),
                IssuedAt = now,
                NotBefore = now,
                Expires = now.AddMinutes(30),
                Claims = new Dictionary<string, object> { ["jti"] = i.ToString(CultureInfo.InvariantCulture), ["acr"] = "urn:aal2" },
                TokenType = "at+jwt",
                SigningCredentials = credentials,
            }));
        }

        return 0;
    }

    case "redis-rtt":
    {
        // One connection, one call at a time: what StackExchange.Redis 1.2.6 adds to a Redis round trip.
        var options = StackExchange.Redis.ConfigurationOptions.Parse(Arg("--redis", "127.0.0.1:6379"));
        options.AbortOnConnectFail = false;
        using var redis = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(options);
        redis.PreserveAsyncOrder = false;
        var db = redis.GetDatabase();
        var times = new List<double>();
        for (var i = 0; i < 6000; i++)
        {
            var start = System.Diagnostics.Stopwatch.GetTimestamp();
            await db.ScriptEvaluateAsync("return 1", [], []);
            if (i >= 1000)
            {
                times.Add(System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalMicroseconds);
            }
        }

        times.Sort();
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"StackExchange.Redis 1.2.6 EVALSHA, one at a time: p50 {times[times.Count / 2]:F0} µs, p99 {times[times.Count * 99 / 100]:F0} µs"));
        times.Clear();
        for (var i = 0; i < 6000; i++)
        {
            var start = System.Diagnostics.Stopwatch.GetTimestamp();
            await db.ScriptEvaluateAsync("return 1", [], []).WaitAsync(TimeSpan.FromSeconds(1), TimeProvider.System, CancellationToken.None);
            if (i >= 1000)
            {
                times.Add(System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalMicroseconds);
            }
        }

        times.Sort();
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  the same with WaitAsync(timeout, TimeProvider): p50 {times[times.Count / 2]:F0} µs, p99 {times[times.Count * 99 / 100]:F0} µs"));

        // The gateway's own consume (the full step-6 script, events included) through RedisGrantStore.
        using var store = new AssuranceGateway.Grants.RedisGrantStore(
            new AssuranceGateway.Configuration.StoreSettings { Redis = Arg("--redis", "127.0.0.1:6379"), KeyPrefix = "rtt:", Timeout = TimeSpan.FromSeconds(1) },
            TimeProvider.System, Microsoft.Extensions.Logging.Abstractions.NullLogger<AssuranceGateway.Grants.RedisGrantStore>.Instance);
        while (!await store.PingAsync(default))
        {
            await Task.Delay(50);
        }

        var hash = AssuranceGateway.Requests.CanonicalRequest.Compute("POST", "/bound/x", "", [], _ => default, new byte[1024]);
        var grantId = AssuranceGateway.Grants.GrantIds.New();
        await store.CreateAsync(new AssuranceGateway.Grants.GrantRecord
        {
            Id = grantId, Route = "bound", Status = AssuranceGateway.Grants.GrantStatus.Active, TokenHash = "sha256:" + new string('A', 43),
            Workload = "spiffe://bench/w", RequestHash = hash.Hash, Digests = hash.Digests, MaxUses = 1000000, UsesRemaining = 1000000,
            ExpiresAt = DateTimeOffset.UtcNow.AddHours(1),
            Bound = AssuranceGateway.Enforcement.Bindings.Token | AssuranceGateway.Enforcement.Bindings.Workload | AssuranceGateway.Enforcement.Bindings.Request,
        }, new AssuranceGateway.Grants.GrantEvent { Type = "created" }, 10, default);
        foreach (var dryRun in new[] { true, false })
        {
            times.Clear();
            for (var i = 0; i < 4000; i++)
            {
                var start = System.Diagnostics.Stopwatch.GetTimestamp();
                var result = await store.ConsumeAsync(new AssuranceGateway.Grants.ConsumeRequest
                {
                    GrantId = grantId, Route = "bound", TokenHash = "sha256:" + new string('A', 43), Workload = "spiffe://bench/w",
                    RequestHash = hash.Hash, Digests = hash.Digests, DryRun = dryRun, TraceId = new string('a', 32), SpanId = new string('b', 16),
                    Required = AssuranceGateway.Enforcement.Bindings.Token | AssuranceGateway.Enforcement.Bindings.Workload | AssuranceGateway.Enforcement.Bindings.Request,
                }, default);
                if (i >= 500)
                {
                    times.Add(System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalMicroseconds);
                }
            }

            times.Sort();
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"RedisGrantStore.ConsumeAsync (dry run {dryRun}): p50 {times[times.Count / 2]:F0} µs, p99 {times[times.Count * 99 / 100]:F0} µs"));
        }

        // The trivial call again, now that the store's multiplexer and watchdog run in the same process.
        times.Clear();
        for (var i = 0; i < 6000; i++)
        {
            var start = System.Diagnostics.Stopwatch.GetTimestamp();
            await db.ScriptEvaluateAsync("return 1", [], []);
            if (i >= 1000)
            {
                times.Add(System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalMicroseconds);
            }
        }

        times.Sort();
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"trivial EVALSHA again, with the store alive: p50 {times[times.Count / 2]:F0} µs, p99 {times[times.Count * 99 / 100]:F0} µs"));

        return 0;
    }

    default:
        BenchmarkSwitcher.FromAssembly(typeof(PipelineBenchmarks).Assembly).Run(args.Length > 0 && args[0] == "micro" ? args[1..] : args);
        return 0;
}
