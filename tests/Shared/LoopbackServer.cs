using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace AssuranceGateway.Testing;

/// <summary>The real Kestrel listener behind the tests' stand-ins (upstream, identity providers, OTLP receiver).</summary>
public static class LoopbackServer
{
    /// <summary>
    /// Starts an app on a free loopback port that answers every request with <paramref name="handler"/>; returns it and
    /// its base address (no trailing slash).
    /// </summary>
    public static async Task<(WebApplication App, string Address)> StartAsync(RequestDelegate handler, Action<IWebHostBuilder>? configure = null)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        configure?.Invoke(builder.WebHost);
        builder.Logging.ClearProviders();
        var app = builder.Build();
        app.Run(handler);
        await app.StartAsync();
        return (app, app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First().TrimEnd('/'));
    }
}
