using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace AssuranceGateway.Testing;

/// <summary>
/// A tiny identity provider on loopback: serves a JWKS at <c>/jwks.json</c> and an OIDC discovery document at
/// <c>/.well-known/openid-configuration</c>, with keys the test can rotate and an outage switch.
/// </summary>
public sealed class JwksServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private volatile string _jwks = """{"keys":[]}""";
    private int _jwksFetches;
    private int _discoveryFetches;

    private JwksServer(WebApplication app, string issuer)
    {
        _app = app;
        Issuer = issuer;
    }

    public string Issuer { get; }

    /// <summary>The base address, e.g. http://127.0.0.1:41234 (no trailing slash): the OIDC authority.</summary>
    public string Address { get; private set; } = string.Empty;

    public string JwksUri => Address + "/jwks.json";

    public int JwksFetches => Volatile.Read(ref _jwksFetches);

    public int DiscoveryFetches => Volatile.Read(ref _discoveryFetches);

    /// <summary>When true, every endpoint answers 503.</summary>
    public bool Down { get; set; }

    public static async Task<JwksServer> StartAsync(string issuer)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        var app = builder.Build();
        var server = new JwksServer(app, issuer);
        app.Run(async context =>
        {
            if (server.Down)
            {
                context.Response.StatusCode = StatusCodes.Status503ServiceUnavailable;
                return;
            }

            context.Response.ContentType = "application/json";
            switch (context.Request.Path.Value)
            {
                case "/jwks.json":
                    Interlocked.Increment(ref server._jwksFetches);
                    await context.Response.WriteAsync(server._jwks);
                    break;
                case "/.well-known/openid-configuration":
                    Interlocked.Increment(ref server._discoveryFetches);
                    await context.Response.WriteAsync(new JsonObject
                    {
                        ["issuer"] = server.Issuer,
                        ["jwks_uri"] = server.JwksUri,
                        ["id_token_signing_alg_values_supported"] = new JsonArray("ES256"),
                    }.ToJsonString());
                    break;
                default:
                    context.Response.StatusCode = StatusCodes.Status404NotFound;
                    break;
            }
        });
        await app.StartAsync();
        server.Address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First().TrimEnd('/');
        return server;
    }

    /// <summary>Publishes exactly these public keys from now on.</summary>
    public void Publish(params (ECDsa Key, string Kid)[] keys)
    {
        var path = Path.GetTempFileName();
        try
        {
            TestIssuer.WriteJwks(path, keys);
            _jwks = File.ReadAllText(path);
        }
        finally
        {
            File.Delete(path);
        }
    }

    public async ValueTask DisposeAsync() => await _app.DisposeAsync();
}
