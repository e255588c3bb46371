using System.Security.Cryptography;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace AssuranceGateway.Testing;

/// <summary>
/// A tiny identity provider on loopback: serves a JWKS at <c>/jwks.json</c> and an OIDC discovery document at
/// <c>/.well-known/openid-configuration</c>, with keys the test can rotate and an outage switch.
/// </summary>
public sealed class JwksServer : IAsyncDisposable
{
    private volatile string _jwks = """{"keys":[]}""";
    private WebApplication _app = null!;
    private int _jwksFetches;
    private int _discoveryFetches;

    private JwksServer(string issuer) => Issuer = issuer;

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
        var server = new JwksServer(issuer);
        (server._app, server.Address) = await LoopbackServer.StartAsync(server.ServeAsync);
        return server;
    }

    private async Task ServeAsync(HttpContext context)
    {
        if (Down)
        {
            context.Response.StatusCode = StatusCodes.Status503ServiceUnavailable;
            return;
        }

        context.Response.ContentType = "application/json";
        switch (context.Request.Path.Value)
        {
            case "/jwks.json":
                Interlocked.Increment(ref _jwksFetches);
                await context.Response.WriteAsync(_jwks);
                break;
            case "/.well-known/openid-configuration":
                Interlocked.Increment(ref _discoveryFetches);
                await context.Response.WriteAsync(new JsonObject
                {
                    ["issuer"] = Issuer,
                    ["jwks_uri"] = JwksUri,
                    ["id_token_signing_alg_values_supported"] = new JsonArray("ES256"),
                }.ToJsonString());
                break;
            default:
                context.Response.StatusCode = StatusCodes.Status404NotFound;
                break;
        }
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
