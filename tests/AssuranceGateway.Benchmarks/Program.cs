using System.Globalization;
using System.Security.Claims;
using System.Security.Cryptography;
using AssuranceGateway.Benchmarks;
using BenchmarkDotNet.Running;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;
using Yarp.ReverseProxy.Configuration;

// Modes, used by deploy/bench/run.sh:
//   upstream   --urls URL                    a cheap upstream: reads the body, answers 200 "ok"
//   plain-yarp --urls URL --upstream URL     plain YARP, same version and settings as the gateway, one catch-all route
//   mint       --key JWK --count N --out F   N distinct access tokens (fresh-token scenarios), ES256 or RS256 by the key
//   rsa-key    --private F --public F        an RSA-2048 signing key as JWKs (the RS256 fresh-token scenario)
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
        // An RSA key (from rsa-key) signs RS256, an EC key ES256. Both sign in parallel: a run takes up to ~600,000 tokens,
        // and one RS256 signature costs ~0.26 ms here.
        var key = new JsonWebKey(await File.ReadAllTextAsync(Arg("--key", "config/keys/idp.private.jwk.json")));
        var count = int.Parse(Arg("--count", "1000"), CultureInfo.InvariantCulture);
        var credentials = key.Kty == JsonWebAlgorithmsKeyTypes.RSA
            ? new SigningCredentials(new RsaSecurityKey(RSA.Create(new RSAParameters
            {
                Modulus = Base64UrlEncoder.DecodeBytes(key.N), Exponent = Base64UrlEncoder.DecodeBytes(key.E),
                D = Base64UrlEncoder.DecodeBytes(key.D), P = Base64UrlEncoder.DecodeBytes(key.P), Q = Base64UrlEncoder.DecodeBytes(key.Q),
                DP = Base64UrlEncoder.DecodeBytes(key.DP), DQ = Base64UrlEncoder.DecodeBytes(key.DQ), InverseQ = Base64UrlEncoder.DecodeBytes(key.QI),
            })) { KeyId = key.Kid }, SecurityAlgorithms.RsaSha256)
            : new SigningCredentials(key, SecurityAlgorithms.EcdsaSha256);
        var now = DateTime.UtcNow;
        var tokens = new string[count];
        Parallel.For(0, count, () => new JsonWebTokenHandler { SetDefaultTimesOnTokenCreation = false }, (i, _, handler) =>
        {
            tokens[i] = handler.CreateToken(new SecurityTokenDescriptor
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
            });
            return handler;
        }, _ => { });
        await File.WriteAllLinesAsync(Arg("--out", "tokens.txt"), tokens);
        return 0;
    }

    case "rsa-key":
    {
        // An RSA-2048 signing key for the RS256 fresh-token scenario: the private JWK, and the public one to add to the
        // issuer's JWKS (most IdPs sign access tokens with RS256 by default).
        using var rsa = RSA.Create(2048);
        var p = rsa.ExportParameters(true);
        string B(byte[]? bytes) => Base64UrlEncoder.Encode(bytes);
        var kid = Arg("--kid", "bench-rs256");
        var publicJwk = $$"""{"kty":"RSA","kid":"{{kid}}","use":"sig","alg":"RS256","n":"{{B(p.Modulus)}}","e":"{{B(p.Exponent)}}"}""";
        await File.WriteAllTextAsync(Arg("--public", "rsa.public.jwk.json"), publicJwk);
        await File.WriteAllTextAsync(Arg("--private", "rsa.private.jwk.json"), publicJwk[..^1]
            + $$""","d":"{{B(p.D)}}","p":"{{B(p.P)}}","q":"{{B(p.Q)}}","dp":"{{B(p.DP)}}","dq":"{{B(p.DQ)}}","qi":"{{B(p.InverseQ)}}"}""");
        return 0;
    }

    case "redis-rtt":
    {
        // One call at a time: what StackExchange.Redis 1.2.6, and the store around it, add to a Redis round trip.
        static async Task<string> TimeAsync(Func<Task> call, int count, int warmup)
        {
            var times = new List<double>(count);
            for (var i = 0; i < warmup + count; i++)
            {
                var start = System.Diagnostics.Stopwatch.GetTimestamp();
                await call();
                if (i >= warmup)
                {
                    times.Add(System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalMicroseconds);
                }
            }

            times.Sort();
            return string.Create(CultureInfo.InvariantCulture, $"p50 {times[times.Count / 2]:F0} µs, p99 {times[times.Count * 99 / 100]:F0} µs");
        }

        var options = StackExchange.Redis.ConfigurationOptions.Parse(Arg("--redis", "127.0.0.1:6379"));
        options.AbortOnConnectFail = false;
        using var redis = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(options);
        redis.PreserveAsyncOrder = false;
        var db = redis.GetDatabase();
        Console.WriteLine("StackExchange.Redis 1.2.6 EVALSHA, one at a time: " + await TimeAsync(() => db.ScriptEvaluateAsync("return 1", [], []), 5000, 1000));
        Console.WriteLine("  the same with WaitAsync(timeout, TimeProvider): " + await TimeAsync(
            () => db.ScriptEvaluateAsync("return 1", [], []).WaitAsync(TimeSpan.FromSeconds(1), TimeProvider.System, CancellationToken.None), 5000, 1000));

        // The gateway's own consume (the full step-6 script, events included) through RedisGrantStore.
        using var store = new AssuranceGateway.Grants.RedisGrantStore(
            new AssuranceGateway.Configuration.StoreSettings { Redis = Arg("--redis", "127.0.0.1:6379"), KeyPrefix = "rtt:", Timeout = TimeSpan.FromSeconds(1) },
            TimeProvider.System, Microsoft.Extensions.Logging.Abstractions.NullLogger<AssuranceGateway.Grants.RedisGrantStore>.Instance);
        while (await store.NotReadyAsync(default) is not null)
        {
            await Task.Delay(50);
        }

        var bound = AssuranceGateway.Enforcement.Bindings.Token | AssuranceGateway.Enforcement.Bindings.Workload | AssuranceGateway.Enforcement.Bindings.Request;
        var tokenHash = "sha256:" + new string('A', 43);
        var hash = AssuranceGateway.Requests.CanonicalRequest.Compute("POST", "/bound/x", "", [], _ => default, new byte[1024]);
        var grantId = AssuranceGateway.Grants.GrantIds.New();
        await store.CreateAsync(new AssuranceGateway.Grants.GrantRecord
        {
            Id = grantId, Route = "bound", Status = AssuranceGateway.Grants.GrantStatus.Active, TokenHash = tokenHash,
            Workload = "spiffe://bench/w", RequestHash = hash.Hash, Digests = hash.Digests, MaxUses = 1000000, UsesRemaining = 1000000,
            ExpiresAt = DateTimeOffset.UtcNow.AddHours(1), Bound = bound,
        }, new AssuranceGateway.Grants.GrantEvent { Type = "created" }, 10, default);
        foreach (var dryRun in new[] { true, false })
        {
            var request = new AssuranceGateway.Grants.ConsumeRequest
            {
                GrantId = grantId, Route = "bound", TokenHash = tokenHash, Workload = "spiffe://bench/w", RequestHash = hash.Hash,
                Digests = hash.Digests, DryRun = dryRun, TraceId = new string('a', 32), SpanId = new string('b', 16), Required = bound,
            };
            Console.WriteLine($"RedisGrantStore.ConsumeAsync (dry run {dryRun}): " + await TimeAsync(() => store.ConsumeAsync(request, default), 3500, 500));
        }

        // The trivial call again, now that the store's multiplexer and watchdog run in the same process.
        Console.WriteLine("trivial EVALSHA again, with the store alive: " + await TimeAsync(() => db.ScriptEvaluateAsync("return 1", [], []), 5000, 1000));
        return 0;
    }

    default:
    {
        // In process: BenchmarkDotNet's default toolchain builds this project again under a generated assembly name, which
        // the gateway's InternalsVisibleTo cannot name (the shared test helpers compiled in here use its internals).
        var benchmarkArgs = args.Length > 0 && args[0] == "micro" ? args[1..] : args;
        if (!benchmarkArgs.Contains("--inProcess", StringComparer.OrdinalIgnoreCase))
        {
            benchmarkArgs = [.. benchmarkArgs, "--inProcess"];
        }

        BenchmarkSwitcher.FromAssembly(typeof(PipelineBenchmarks).Assembly).Run(benchmarkArgs);
        return 0;
    }
}
