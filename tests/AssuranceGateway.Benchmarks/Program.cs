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

    default:
        BenchmarkSwitcher.FromAssembly(typeof(PipelineBenchmarks).Assembly).Run(args.Length > 0 && args[0] == "micro" ? args[1..] : args);
        return 0;
}
