using Microsoft.AspNetCore.Http;

namespace AssuranceGateway.Enforcement;

/// <summary>
/// Closes a tunnel (an upgraded connection or an HTTP/2 extended CONNECT stream) when the credentials that opened it
/// stop being accepted: the access token's <c>exp</c> (and the workload JWT's, when one was checked) plus the clock skew
/// the gateway allows. A token-only route checks the token once, at the upgrade; without this a WebSocket opened a minute
/// before the token expired carried traffic for as long as both ends kept it open, long after any new request with that
/// token would have been refused.
/// Disarmed when the request ends: Kestrel reuses an HTTP/2 stream's context for the next stream, and an abort after the
/// end would reach whoever holds it then. The lock orders the two, so an abort never follows the end.
/// </summary>
internal sealed class TunnelDeadline : IDisposable
{
    private readonly object _gate = new();
    private readonly HttpContext _context;
    private readonly Action _closed;
    private ITimer? _timer;
    private bool _over;

    private TunnelDeadline(HttpContext context, Action closed)
    {
        _context = context;
        _closed = closed;
    }

    /// <summary>Arms the deadline for this request; <paramref name="closed"/> is called once if it closes the tunnel.</summary>
    public static void Arm(HttpContext context, DateTimeOffset closeAt, TimeProvider time, Action closed)
    {
        var deadline = new TunnelDeadline(context, closed);
        var due = closeAt - time.GetUtcNow();
        deadline._timer = time.CreateTimer(static s => ((TunnelDeadline)s!).Close(), deadline, due > TimeSpan.Zero ? due : TimeSpan.Zero, Timeout.InfiniteTimeSpan);
        context.Response.RegisterForDispose(deadline);
    }

    private void Close()
    {
        lock (_gate)
        {
            if (_over)
            {
                return;
            }

            _over = true;
            _context.Abort();
        }

        _closed();
    }

    public void Dispose()
    {
        lock (_gate)
        {
            _over = true;
        }

        _timer?.Dispose();
    }
}
