using System.Diagnostics;
using AssuranceGateway.Api;
using AssuranceGateway.Configuration;
using AssuranceGateway.Diagnostics;
using AssuranceGateway.Enforcement;
using AssuranceGateway.Grants;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using Yarp.ReverseProxy.Configuration;

namespace AssuranceGateway.Hosting;

/// <summary>The one way in: <c>builder.AddGateway()</c>, then <c>app.MapGateway()</c>.</summary>
public static partial class GatewayHostingExtensions
{
    /// <summary>
    /// Reads the gateway configuration (<c>config/gateway.json</c>, or <c>--config</c> / <c>GATEWAY_CONFIG</c>) and
    /// registers the proxy, the enforcement pipeline, the grant store, telemetry and the assurance API.
    /// </summary>
    /// <exception cref="GatewayConfigurationException">The configuration is invalid; the message names every problem.</exception>
    public static WebApplicationBuilder AddGateway(this WebApplicationBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        var contentRoot = builder.Environment.ContentRootPath;
        var file = GatewayConfigFile.Add(builder.Configuration, builder.Configuration, contentRoot);

        // Validate before anything starts, with YARP's own validator for routes and clusters, so that one run names
        // every problem (ours and YARP's) and the process exits without listening.
        GatewaySettings initial;
        using (var validation = new ServiceCollection().AddLogging().AddReverseProxy().Services.BuildServiceProvider())
        {
            using var probe = new GatewayConfigState(builder.Configuration, file, contentRoot,
                validation.GetRequiredService<IConfigValidator>(), new InMemoryConfigProvider([], []), TimeProvider.System,
                NullLogger<GatewayConfigState>.Instance, watch: false);
            initial = probe.Current.Settings;
        }

        // The mtls workload source: HTTPS endpoints of the proxy ask for a client certificate and accept any (the
        // resolver decides what it proves). Plain HTTP endpoints are unaffected. The API app has its own Kestrel.
        // Kestrel reads its endpoints from the configuration the gateway applied, not from the file: a change the gateway
        // refuses does not move a listener either. Its reload stays on: it rebinds an applied change of endpoints and
        // serves a renewed certificate file (cert-manager, certbot) without a restart.
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.Configure(kestrel.ApplicationServices.GetRequiredService<GatewayConfigState>().Listeners.Root.GetSection("Kestrel"), reloadOnChange: true);
            kestrel.ConfigureHttpsDefaults(https =>
            {
                https.ClientCertificateMode = Microsoft.AspNetCore.Server.Kestrel.Https.ClientCertificateMode.AllowCertificate;
                https.ClientCertificateValidation = Workload.ClientCertificateChain.Accept; // any certificate, as AllowAnyClientCertificate
                https.OnAuthenticate = Workload.ClientCertificateChain.BeginHandshake;
            });
        });

        var services = builder.Services;
        var logging = new AppliedSection(initial, static s => s.Logging);
        ReadLoggingFromAppliedConfiguration(builder.Logging, logging.Root);

        // Before anything can log: Kestrel's bad-request log would write raw credential lines at Debug (SPEC §6).
        KestrelBadRequestLog.Hold(services);
        services.TryAddSingleton(TimeProvider.System);
        services.AddReverseProxy().LoadFromMemory([], []);
        services.TryAddSingleton(sp => new GatewayConfigState(
            builder.Configuration, file, contentRoot, sp.GetRequiredService<IConfigValidator>(),
            sp.GetRequiredService<InMemoryConfigProvider>(), sp.GetRequiredService<TimeProvider>(),
            sp.GetRequiredService<ILogger<GatewayConfigState>>(), initial: initial, logging: logging,
            fileCheck: sp.GetService<SourceFileCheckInterval>()));
        services.TryAddSingleton<IGrantStore>(sp => GrantStoreFactory.Create(
            sp.GetRequiredService<GatewayConfigState>().Current.Settings.Store, sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<ILoggerFactory>()));
        services.TryAddSingleton(sp => new GatewayTelemetry(sp.GetServices<BaseProcessor<Activity>>(), sp.GetServices<MetricReader>()));
        services.TryAddSingleton<IEvidenceSigner, Evidence.EvidenceSigner>();
        services.TryAddSingleton<AssuranceApiHost>();
        services.AddHostedService(sp => sp.GetRequiredService<AssuranceApiHost>());
        return builder;
    }

    /// <summary>
    /// The host reads the <c>Logging</c> section of its configuration, the file's, on its own (levels, and every provider's
    /// options: the console logger's and its formatters'), and rereads it at each change of the file, whatever the
    /// gateway made of the change. A change the gateway refused still reached the logging: a console option it cannot
    /// bind left its options unreadable, and every logger created afterwards threw. Its registrations of the file's
    /// section are replaced by the same ones over the section the gateway applied (<see cref="AppliedSection"/>),
    /// as Kestrel reads its endpoints. Levels and filters added in code stay.
    /// </summary>
    private static void ReadLoggingFromAppliedConfiguration(ILoggingBuilder logging, IConfiguration applied)
    {
        var services = logging.Services;
        for (var i = services.Count - 1; i >= 0; i--)
        {
            var service = services[i];
            if (service.IsKeyedService)
            {
                continue;
            }

            // What AddConfiguration(IConfiguration) registers for a configuration (the host's: the file's Logging section).
            if (string.Equals(service.ServiceType.FullName, "Microsoft.Extensions.Logging.Configuration.LoggingConfiguration", StringComparison.Ordinal)
                || (service.ServiceType == typeof(IConfigureOptions<LoggerFilterOptions>)
                    && string.Equals(service.ImplementationInstance?.GetType().FullName, "Microsoft.Extensions.Logging.LoggerFilterConfigureOptions", StringComparison.Ordinal))
                || (service.ServiceType == typeof(IOptionsChangeTokenSource<LoggerFilterOptions>)
                    && service.ImplementationInstance is ConfigurationChangeTokenSource<LoggerFilterOptions>))
            {
                services.RemoveAt(i);
            }
        }

        logging.AddConfiguration(applied.GetSection("Logging"));
    }

    /// <summary>Maps the reverse proxy with assurance enforcement in front of forwarding, and starts evidence telemetry.</summary>
    public static WebApplication MapGateway(this WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);

        // Resolve now: telemetry must listen before the first request, and the config state must push the routes
        // into YARP's provider before YARP builds its endpoints. The store first: the container disposes singletons in
        // the reverse order of their creation, so on a graceful stop the evidence of the last requests is flushed
        // (telemetry disposed) before the store closes, whose close may wait on a Redis that does not answer.
        var store = app.Services.GetRequiredService<IGrantStore>();
        app.Services.GetRequiredService<GatewayTelemetry>();
        Log.StoreSelected(app.Logger, store.Description);
        var config = app.Services.GetRequiredService<GatewayConfigState>();
        var inForce = config.Summary();
        Log.ConfigurationInForce(app.Logger, config.FilePath ?? "(no file)", inForce);
        // Read the logging configuration now (the logger factory applies it lazily) so the line below reflects it.
        _ = app.Services.GetRequiredService<Microsoft.Extensions.Options.IOptionsMonitor<LoggerFilterOptions>>().CurrentValue;
        if (app.Services.GetRequiredService<KestrelBadRequestLog>().Overridden)
        {
            Log.BadRequestLogHeld(app.Logger, KestrelBadRequestLog.Category);
        }

        var shutdownTimeout = app.Services.GetRequiredService<IOptions<HostOptions>>().Value.ShutdownTimeout;
        app.Lifetime.ApplicationStopping.Register(() => Log.Stopping(app.Logger, shutdownTimeout));

        app.MapReverseProxy(proxy =>
        {
            proxy.UseMiddleware<AssuranceMiddleware>();
            proxy.UseSessionAffinity();
            proxy.UseLoadBalancing();
            proxy.UsePassiveHealthChecks();
        });

        // Between routing and the endpoints (WebApplication runs routing before the middleware added here): a request no
        // route matches gets problem+json like every other refusal, not an empty 404, so a caller can tell a wrong path
        // from a refusal and quote its trace id. Not a fallback endpoint: one takes every method, so a route restricted
        // to some methods (Match.Methods) answered another method 404 no_route instead of routing's 405 with Allow, and
        // MapFallback's {*path:nonfile} left paths whose last segment has a dot to routing's empty 404. A route's request
        // goes straight on (no wrapper on the hot path).
        app.Use(static (context, next) => context.GetEndpoint() switch
        {
            null => NoRouteAsync(context),
            RouteEndpoint => next(context),
            _ => MethodNotAllowedAsync(context, next),
        });
        return app;
    }

    private static Task NoRouteAsync(HttpContext context)
    {
        context.Response.StatusCode = StatusCodes.Status404NotFound;
        return ProblemResponses.WriteAsync(context, ReasonCodes.NoRoute, "no route of this gateway matches the request's path, method or host", null);
    }

    /// <summary>
    /// An endpoint of routing's own, not a route's: the 405 it picks when the path matches routes that take other methods
    /// sets the status and <c>Allow</c> (RFC 9110 §15.5.6) and writes no body; the body is the problem+json every
    /// refusal carries. A route's endpoint never comes here, so an upstream's own 405 is forwarded as it came; nothing
    /// reaches an upstream either way.
    /// </summary>
    private static async Task MethodNotAllowedAsync(HttpContext context, RequestDelegate next)
    {
        await next(context).ConfigureAwait(false);
        if (context.Response.StatusCode == StatusCodes.Status405MethodNotAllowed && !context.Response.HasStarted)
        {
            await ProblemResponses.WriteAsync(context, ReasonCodes.MethodNotAllowed,
                $"the routes of this path do not take {context.Request.Method} (Allow: {context.Response.Headers.Allow})", null).ConfigureAwait(false);
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 1, Level = LogLevel.Information, Message = "Grant store: {Store}")]
        public static partial void StoreSelected(ILogger logger, string store);

        [LoggerMessage(EventId = 3, Level = LogLevel.Information, Message = "Configuration {File}: {InForce}")]
        public static partial void ConfigurationInForce(ILogger logger, string file, string inForce);

        [LoggerMessage(EventId = 4, Level = LogLevel.Warning, Message = "Logging: {Category} is held at Information although the configuration asks for "
            + "Debug or Trace: at those levels Kestrel writes the raw lines of the requests it refuses, credentials included")]
        public static partial void BadRequestLogHeld(ILogger logger, string category);

        [LoggerMessage(EventId = 5, Level = LogLevel.Information, Message = "Stopping: /readyz answers 503 (shutting_down), the proxy takes no new "
            + "connections and lets the requests it accepted finish for up to {ShutdownTimeout}; then evidence is flushed and the grant store closed")]
        public static partial void Stopping(ILogger logger, TimeSpan shutdownTimeout);
    }
}
