using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace AssuranceGateway.Testing;

/// <summary>
/// An upstream on a raw loopback socket that accepts every protocol upgrade: it records each request head it receives,
/// answers one that carries <c>Upgrade</c> with <c>101 Switching Protocols</c>, then records what comes through the
/// tunnel and echoes the first chunk back before it closes. Anything else gets a plain 200. RecordingUpstream (Kestrel)
/// cannot answer 101 to a proxy, so a tunnel opened through the gateway would go unseen there.
/// </summary>
public sealed class TunnelUpstream : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly CancellationTokenSource _stop = new();
    private readonly ConcurrentQueue<string> _heads = new();
    private readonly ConcurrentQueue<string> _tunnelled = new();
    private readonly Task _accepting;
    private readonly bool _keepOpen;

    private TunnelUpstream(bool keepOpen)
    {
        _keepOpen = keepOpen;
        _listener.Start();
        _accepting = AcceptAsync();
    }

    public string Address => $"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port.ToString(CultureInfo.InvariantCulture)}";

    /// <summary>Request heads received, in order (request line and header lines).</summary>
    public IReadOnlyCollection<string> Requests => _heads;

    /// <summary>What arrived after a 101, one entry per read.</summary>
    public IReadOnlyCollection<string> Tunnelled => _tunnelled;

    /// <param name="keepOpen">Echo everything until the other end closes the tunnel; by default the tunnel is closed after
    /// the first echo (a client that reads to the end, as over HTTP/2, then gets its end).</param>
    public static TunnelUpstream Start(bool keepOpen = false) => new(keepOpen);

    /// <summary>
    /// Sends <paramref name="head"/> (without the empty line) over HTTP/1.1; on a 101 sends <paramref name="tunnel"/>
    /// through the upgraded connection and reads its echo. Returns the status and either the echo or the response body.
    /// <paramref name="body"/>, when given, follows the head as the request's body.
    /// </summary>
    public static async Task<(int Status, string Content)> UpgradeAsync(string address, string head, string tunnel, string? body = null)
    {
        var uri = new Uri(address);
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(uri.Host, uri.Port);
        await using var stream = tcp.GetStream();
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        await stream.WriteAsync(Encoding.ASCII.GetBytes(head + "\r\n" + body), deadline.Token);
        var (responseHead, rest) = await ReadHeadAsync(stream, deadline.Token);
        var status = int.Parse(responseHead.AsSpan(9, 3), CultureInfo.InvariantCulture);
        if (status == 101)
        {
            await stream.WriteAsync(Encoding.ASCII.GetBytes(tunnel), deadline.Token);
            var echo = new byte[4096];
            var n = await stream.ReadAsync(echo, deadline.Token);
            return (status, Encoding.ASCII.GetString(echo, 0, n));
        }

        var length = responseHead.Split("\r\n").FirstOrDefault(l => l.StartsWith("content-length:", StringComparison.OrdinalIgnoreCase)) is { } line
            ? int.Parse(line.AsSpan(15).Trim(), CultureInfo.InvariantCulture)
            : 0;
        var content = new List<byte>(rest);
        var buffer = new byte[4096];
        while (content.Count < length)
        {
            var n = await stream.ReadAsync(buffer, deadline.Token);
            if (n == 0)
            {
                break;
            }

            content.AddRange(buffer.AsSpan(0, n));
        }

        return (status, Encoding.UTF8.GetString([.. content]));
    }

    /// <summary>
    /// Sends <paramref name="head"/> over HTTP/1.1 and keeps the connection: on a 101 it is a tunnel the caller talks
    /// through (<see cref="OpenTunnel.EchoAsync"/>) and watches for the gateway closing it.
    /// </summary>
    public static async Task<OpenTunnel> OpenAsync(string address, string head)
    {
        var uri = new Uri(address);
        var tcp = new TcpClient();
        try
        {
            await tcp.ConnectAsync(uri.Host, uri.Port);
            var stream = tcp.GetStream();
            using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            await stream.WriteAsync(Encoding.ASCII.GetBytes(head + "\r\n"), deadline.Token);
            var (responseHead, _) = await ReadHeadAsync(stream, deadline.Token);
            return new OpenTunnel(tcp, stream, int.Parse(responseHead.AsSpan(9, 3), CultureInfo.InvariantCulture));
        }
        catch
        {
            tcp.Dispose();
            throw;
        }
    }

    /// <summary>An upgraded connection held open by a test.</summary>
    public sealed class OpenTunnel(TcpClient tcp, NetworkStream stream, int status) : IDisposable
    {
        public int Status { get; } = status;

        /// <summary>Sends <paramref name="text"/> and reads the echo; null when the connection is closed instead.</summary>
        public async Task<string?> EchoAsync(string text)
        {
            using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            try
            {
                await stream.WriteAsync(Encoding.ASCII.GetBytes(text), deadline.Token);
                var buffer = new byte[4096];
                var n = await stream.ReadAsync(buffer, deadline.Token);
                return n == 0 ? null : Encoding.ASCII.GetString(buffer, 0, n);
            }
            catch (IOException)
            {
                return null;
            }
        }

        /// <summary>How long until the other end closes the connection (throws after <paramref name="limit"/>).</summary>
        public async Task<TimeSpan> ClosedWithinAsync(TimeSpan limit)
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            using var deadline = new CancellationTokenSource(limit);
            try
            {
                var buffer = new byte[4096];
                while (await stream.ReadAsync(buffer, deadline.Token) > 0)
                {
                }
            }
            catch (IOException)
            {
                // Reset rather than closed: closed all the same.
            }

            return clock.Elapsed;
        }

        public void Dispose()
        {
            stream.Dispose();
            tcp.Dispose();
        }
    }

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient client;
            try
            {
                client = await _listener.AcceptTcpClientAsync(_stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                return;
            }

            _ = ServeAsync(client);
        }
    }

    private async Task ServeAsync(TcpClient client)
    {
        using (client)
        {
            try
            {
                await using var stream = client.GetStream();
                using var deadline = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
                deadline.CancelAfter(TimeSpan.FromSeconds(15));
                var (head, rest) = await ReadHeadAsync(stream, deadline.Token);
                _heads.Enqueue(head);
                var upgrade = head.Split("\r\n").FirstOrDefault(l => l.StartsWith("upgrade:", StringComparison.OrdinalIgnoreCase));
                if (upgrade is null)
                {
                    await stream.WriteAsync("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"u8.ToArray(), deadline.Token);
                    return;
                }

                // RFC 6455 §4.2.2: a WebSocket handshake is answered with the key's accept value (YARP checks it when it
                // turns an HTTP/2 WebSocket into an HTTP/1.1 upgrade).
#pragma warning disable CA5350 // SHA-1 is what RFC 6455 prescribes for the accept value; no security rests on it here
                var key = head.Split("\r\n").FirstOrDefault(l => l.StartsWith("sec-websocket-key:", StringComparison.OrdinalIgnoreCase));
                var accept = key is null
                    ? string.Empty
                    : "Sec-WebSocket-Accept: " + Convert.ToBase64String(System.Security.Cryptography.SHA1.HashData(
                        Encoding.ASCII.GetBytes(key[18..].Trim() + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))) + "\r\n";
#pragma warning restore CA5350
                await stream.WriteAsync(Encoding.ASCII.GetBytes($"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n{upgrade}\r\n{accept}\r\n"), deadline.Token);
                // Echoes what comes through the tunnel: once, or until the other end closes it (or the deadline).
                var received = rest;
                var buffer = new byte[4096];
                while (true)
                {
                    if (received.Length == 0)
                    {
                        var n = await stream.ReadAsync(buffer, deadline.Token);
                        if (n == 0)
                        {
                            break;
                        }

                        received = buffer[..n];
                    }

                    _tunnelled.Enqueue(Encoding.ASCII.GetString(received));
                    await stream.WriteAsync(received, deadline.Token);
                    received = [];
                    if (!_keepOpen)
                    {
                        break;
                    }
                }
            }
            catch (Exception e) when (e is IOException or OperationCanceledException or SocketException)
            {
                // The gateway went away: what was recorded stands.
            }
        }
    }

    private static async Task<(string Head, byte[] Remainder)> ReadHeadAsync(Stream stream, CancellationToken cancellationToken)
    {
        var received = new List<byte>();
        var buffer = new byte[4096];
        int end;
        while ((end = Encoding.ASCII.GetString([.. received]).IndexOf("\r\n\r\n", StringComparison.Ordinal)) < 0)
        {
            var n = await stream.ReadAsync(buffer, cancellationToken);
            if (n == 0)
            {
                throw new IOException("the connection closed before a whole head");
            }

            received.AddRange(buffer.AsSpan(0, n));
        }

        var all = received.ToArray();
        return (Encoding.ASCII.GetString(all, 0, end), all[(end + 4)..]);
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        await _accepting;
        _stop.Dispose();
    }
}
