using System.Collections.Concurrent;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;

namespace AssuranceGateway.Testing;

/// <summary>What the upstream received: the test's proof of what crossed the gateway.</summary>
public sealed record ReceivedRequest(string Method, string Path, string Query, IReadOnlyDictionary<string, string> Headers, byte[] Body);

/// <summary>A real upstream on a loopback Kestrel listener that records every request it receives.</summary>
public sealed class RecordingUpstream : IAsyncDisposable
{
    private readonly ConcurrentQueue<ReceivedRequest> _received = new();
    private WebApplication _app = null!;

    public string Address { get; private set; } = string.Empty;

    public IReadOnlyList<ReceivedRequest> Received => [.. _received];

    public int Count => _received.Count;

    /// <summary>Request trailers the upstream received (chunked or HTTP/2), one entry per request that had any.</summary>
    public IReadOnlyList<IReadOnlyDictionary<string, string>> Trailers => [.. _trailers];

    private readonly ConcurrentQueue<IReadOnlyDictionary<string, string>> _trailers = new();

    public static async Task<RecordingUpstream> StartAsync()
    {
        var upstream = new RecordingUpstream();

        // Records whatever the gateway forwards: no server-side body limit of its own in the way.
        (upstream._app, upstream.Address) = await LoopbackServer.StartAsync(upstream.RecordAsync, web => web.ConfigureKestrel(kestrel => kestrel.Limits.MaxRequestBodySize = null));
        return upstream;
    }

    private async Task RecordAsync(HttpContext context)
    {
        using var body = new MemoryStream();
        await context.Request.Body.CopyToAsync(body);
        if (context.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpRequestTrailersFeature>() is { Available: true } trailers && trailers.Trailers.Count > 0)
        {
            _trailers.Enqueue(trailers.Trailers.ToDictionary(h => h.Key, h => h.Value.ToString(), StringComparer.OrdinalIgnoreCase));
        }

        var raw = context.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpRequestFeature>()!.RawTarget;
        var q = raw.IndexOf('?', StringComparison.Ordinal);
        _received.Enqueue(new ReceivedRequest(
            context.Request.Method,
            q < 0 ? raw : raw[..q],
            q < 0 ? string.Empty : raw[(q + 1)..],
            context.Request.Headers.ToDictionary(h => h.Key, h => h.Value.ToString(), StringComparer.OrdinalIgnoreCase),
            body.ToArray()));
        context.Response.StatusCode = 200;
        await context.Response.WriteAsync("upstream-ok");
    }

    public void Clear() => _received.Clear();

    public async ValueTask DisposeAsync() => await _app.DisposeAsync();
}
