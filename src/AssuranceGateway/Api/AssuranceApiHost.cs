using AssuranceGateway.Configuration;
using AssuranceGateway.Enforcement;
using AssuranceGateway.Grants;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace AssuranceGateway.Api;

/// <summary>
/// The assurance API on its own Kestrel listener (<c>Assurance:Api:Url</c>). It is a separate web application
/// sharing the gateway's singletons, so no route of the API can ever be reached on the proxy listener, whatever
/// the proxy's routes match.
/// </summary>
public sealed partial class AssuranceApiHost(IServiceProvider gatewayServices, ILogger<AssuranceApiHost> logger) : IHostedService, IAsyncDisposable
{
    private WebApplication? _app;

    /// <summary>The addresses the API listens on (resolved ports when the configured port is 0).</summary>
    public IReadOnlyList<string> Addresses { get; private set; } = [];

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var config = gatewayServices.GetRequiredService<GatewayConfigState>();
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [], ApplicationName = typeof(AssuranceApiHost).Assembly.GetName().Name });
        // The builder reads the environment and the working directory's appsettings.json like any host, and Kestrel
        // listens where "Kestrel:Endpoints" says in preference to UseUrls: an endpoint meant for the proxy
        // (Kestrel__Endpoints__proxy__Url) would be bound by the API too. It listens on Assurance:Api:Url and nothing else.
        builder.Configuration.Sources.Clear();
        builder.Configuration.AddInMemoryCollection();
        builder.WebHost.UseUrls(config.Current.Settings.Api.Url);
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(gatewayServices.GetRequiredService<ILoggerFactory>());
        builder.Services.AddSingleton(config);
        builder.Services.AddSingleton(gatewayServices.GetRequiredService<IGrantStore>());
        builder.Services.AddSingleton(gatewayServices.GetRequiredService<TimeProvider>());
        if (gatewayServices.GetService<IEvidenceSigner>() is { } signer)
        {
            builder.Services.AddSingleton(signer);
        }

        builder.Services.ConfigureHttpJsonOptions(o => ApiJson.Configure(o.SerializerOptions));
        _app = builder.Build();
        _app.UseStatusCodePages(async context =>
        {
            // Unmatched paths and methods answer problem+json too.
            var http = context.HttpContext;
            await (http.Response.StatusCode == StatusCodes.Status405MethodNotAllowed
                ? ProblemResponses.WriteAsync(http, ReasonCodes.MethodNotAllowed, $"this endpoint does not take {http.Request.Method} (Allow: {http.Response.Headers.Allow})", null)
                : ProblemResponses.WriteAsync(http, ReasonCodes.UnknownRoute, "no such endpoint on the assurance API", null)).ConfigureAwait(false);
        });
        // The proxy's listener stops first (the web host is the last hosted service to start) and drains for up to the
        // host's ShutdownTimeout while this one still answers: readiness must say "stopping" from the signal on, or a
        // load balancer keeps sending to a listener that is about to close.
        HealthEndpoints.Map(_app, gatewayServices.GetRequiredService<IHostApplicationLifetime>().ApplicationStopping);
        GrantEndpoints.Map(_app);
        await _app.StartAsync(cancellationToken).ConfigureAwait(false);
        Addresses = _app.Services.GetRequiredService<Microsoft.AspNetCore.Hosting.Server.IServer>()
            .Features.Get<IServerAddressesFeature>()?.Addresses.ToList() ?? [];
        Log.Listening(logger, Addresses);
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_app is not null)
        {
            await _app.StopAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_app is not null)
        {
            await _app.DisposeAsync().ConfigureAwait(false);
            _app = null;
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 300, Level = LogLevel.Information, Message = "Assurance API listening on {Addresses}")]
        public static partial void Listening(ILogger logger, IReadOnlyList<string> addresses);
    }
}

internal static class HealthEndpoints
{
    public static void Map(WebApplication app, CancellationToken stopping)
    {
        // HEAD as well as GET (RFC 9110 §9.3.2): load balancers and uptime checks often probe with HEAD; the server
        // sends the same status and headers without the body.
        string[] probe = [HttpMethods.Get, HttpMethods.Head];
        app.MapMethods("/healthz", probe, () => Results.Text("ok"));
        // The signer publishes, as it alone knows which keys signed evidence that has not expired yet (a key rotated
        // out by a reload stays until then). Without a signer nothing is signed: an empty set.
        app.MapGet("/.well-known/jwks.json", (GatewayConfigState config, HttpContext context) =>
            Results.Json(context.RequestServices.GetService<IEvidenceSigner>()?.PublicJwks(config.Current.Settings)
                ?? new Dictionary<string, object> { ["keys"] = Array.Empty<object>() }));
        app.MapMethods("/readyz", probe, async (IGrantStore store, GatewayConfigState config, HttpContext context) =>
        {
            if (stopping.IsCancellationRequested)
            {
                context.Response.StatusCode = StatusCodes.Status503ServiceUnavailable;
                await ProblemResponses.WriteAsync(context, ReasonCodes.ShuttingDown,
                    "the gateway is stopping: it finishes the requests it accepted and takes no new ones", null).ConfigureAwait(false);
                return Results.Empty;
            }

            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted);
            timeout.CancelAfter(config.Current.Settings.Store.Timeout * 4);
            string? problem;
            try
            {
                problem = await store.NotReadyAsync(timeout.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or StoreUnavailableException)
            {
                problem = "does not answer";
            }

            if (problem is null)
            {
                return Results.Text("ready");
            }

            context.Response.StatusCode = StatusCodes.Status503ServiceUnavailable;
            context.Response.Headers.RetryAfter = "1";
            await ProblemResponses.WriteAsync(context, ReasonCodes.StoreUnavailable, $"the grant store ({store.Description}) {problem}", null).ConfigureAwait(false);
            return Results.Empty;
        });
    }
}
