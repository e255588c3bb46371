using System.Collections.Concurrent;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace AssuranceGateway.Testing;

/// <summary>What the upstream received: the test's proof of what crossed the gateway.</summary>
public sealed record ReceivedRequest(string Method, string Path, string Query, IReadOnlyDictionary<string, string> Headers, byte[] Body);

/// <summary>A real upstream on a loopback Kestrel listener that records every request it receives.</summary>
public sealed class RecordingUpstream : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly ConcurrentQueue<ReceivedRequest> _received = new();

    private RecordingUpstream(WebApplication app) => _app = app;

    public string Address { get; private set; } = string.Empty;

    public IReadOnlyList<ReceivedRequest> Received => [.. _received];

    public int Count => _received.Count;

    public static async Task<RecordingUpstream> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");

        // Records whatever the gateway forwards: no server-side body limit of its own in the way.
        builder.WebHost.ConfigureKestrel(kestrel => kestrel.Limits.MaxRequestBodySize = null);
        builder.Logging.ClearProviders();
        var app = builder.Build();
        var upstream = new RecordingUpstream(app);
        app.Run(async context =>
        {
            using var body = new MemoryStream();
            await context.Request.Body.CopyToAsync(body);
            var raw = context.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpRequestFeature>()!.RawTarget;
            var q = raw.IndexOf('?', StringComparison.Ordinal);
            upstream._received.Enqueue(new ReceivedRequest(
                context.Request.Method,
                q < 0 ? raw : raw[..q],
                q < 0 ? string.Empty : raw[(q + 1)..],
                context.Request.Headers.ToDictionary(h => h.Key, h => h.Value.ToString(), StringComparer.OrdinalIgnoreCase),
                body.ToArray()));
            context.Response.StatusCode = 200;
            await context.Response.WriteAsync("upstream-ok");
        });
        await app.StartAsync();
        upstream.Address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return upstream;
    }

    public void Clear() => _received.Clear();

    public async ValueTask DisposeAsync() => await _app.DisposeAsync();
}
