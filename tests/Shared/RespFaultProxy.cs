using System.Net;
using System.Net.Sockets;
using System.Text;

namespace AssuranceGateway.Testing;

/// <summary>
/// A loopback forwarder between the gateway and a real redis-server that misbehaves on cue, on the dedicated consume
/// connection only (the one that names itself "...-consume"); every other connection is forwarded untouched. Replies
/// from Redis are cut into whole RESP values, so a fault can be placed between two replies: held back until the client
/// has sent a number of EVALSHAs (so that a batch is in flight), cut into one-byte fragments, duplicated, followed by
/// injected bytes, or the connection dropped after some of them.
/// </summary>
public sealed class RespFaultProxy : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly int _target;
    private readonly CancellationTokenSource _stopping = new();
    private readonly List<TcpClient> _clients = [];
    private readonly Task _accepting;
    private int _arrayReplies;
    private int _commands;

    private RespFaultProxy(int target)
    {
        _target = target;
        _listener.Start();
        _accepting = AcceptAsync();
    }

    public static RespFaultProxy Start(int redisPort) => new(redisPort);

    public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

    public string ConnectionString => $"127.0.0.1:{Port}";

    /// <summary>Replies are forwarded only once the consume connection has sent this many EVALSHAs in all.</summary>
    public int HoldRepliesUntilCommands { get; set; }

    /// <summary>Each reply is written one byte at a time (each byte its own segment), with a pause every few bytes.</summary>
    public bool Fragment { get; set; }

    /// <summary>Called for every array reply (the consume's replies) in order, numbered from 0 across all consume
    /// connections: what to write instead of it (null: the reply as it is; empty: close the connection).</summary>
    public Func<int, byte[], byte[][]?>? OnArrayReply { get; set; }

    /// <summary>How long to hold an array reply (by number) before writing it; later replies wait behind it.</summary>
    public Func<int, TimeSpan>? DelayArrayReply { get; set; }

    /// <summary>Array replies seen so far (the number the next one gets).</summary>
    public int ArrayReplies => Volatile.Read(ref _arrayReplies);

    /// <summary>EVALSHAs the consume connections have sent.</summary>
    public int Commands => Volatile.Read(ref _commands);

    /// <summary>Consume connections accepted.</summary>
    public int ConsumeConnections { get; private set; }

    private async Task AcceptAsync()
    {
        try
        {
            while (true)
            {
                var client = await _listener.AcceptTcpClientAsync(_stopping.Token);
                client.NoDelay = true;
                var server = new TcpClient { NoDelay = true };
                await server.ConnectAsync(IPAddress.Loopback, _target, _stopping.Token);
                lock (_clients)
                {
                    _clients.Add(client);
                    _clients.Add(server);
                }

                var connection = new Connection(this, client, server);
                _ = connection.ClientToServerAsync();
                _ = connection.ServerToClientAsync();
            }
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
        {
            // Stopped.
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync();
        _listener.Stop();
        lock (_clients)
        {
            foreach (var client in _clients)
            {
                client.Dispose();
            }
        }

        await _accepting;
        _stopping.Dispose();
    }

    /// <summary>The length of the RESP value at the start of <paramref name="data"/>, or -1 when it is not all there.</summary>
    private static int FrameLength(ReadOnlySpan<byte> data, int position = 0)
    {
        var lineEnd = data[position..].IndexOf("\r\n"u8);
        if (lineEnd < 1)
        {
            return lineEnd < 0 ? -1 : 2;
        }

        var next = position + lineEnd + 2;
        var type = data[position];
        if (type is (byte)'$' or (byte)'*')
        {
            var count = int.Parse(Encoding.ASCII.GetString(data.Slice(position + 1, lineEnd - 1)), System.Globalization.CultureInfo.InvariantCulture);
            if (type == (byte)'$' && count >= 0)
            {
                return data.Length - next < count + 2 ? -1 : next + count + 2 - position;
            }

            for (var i = 0; i < count; i++)
            {
                var item = FrameLength(data, next);
                if (item < 0)
                {
                    return -1;
                }

                next += item;
            }
        }

        return next - position;
    }

    private sealed class Connection(RespFaultProxy proxy, TcpClient client, TcpClient server)
    {
        private readonly TaskCompletionSource _isConsume = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private volatile bool _consume;

        public async Task ClientToServerAsync()
        {
            var buffer = new byte[64 * 1024];
            var tail = string.Empty;
            try
            {
                var from = client.GetStream();
                var to = server.GetStream();
                while (true)
                {
                    var n = await from.ReadAsync(buffer, proxy._stopping.Token);
                    if (n == 0)
                    {
                        break;
                    }

                    var text = tail + Encoding.Latin1.GetString(buffer, 0, n);
                    if (!_consume && text.Contains("-consume", StringComparison.Ordinal))
                    {
                        _consume = true;
                        proxy.ConsumeConnections++;
                        _isConsume.TrySetResult();
                    }

                    // Redis answers only what was asked: by the time it replies, the first command told what this is.
                    _isConsume.TrySetResult();

                    if (_consume)
                    {
                        for (var i = text.IndexOf("EVALSHA", StringComparison.Ordinal); i >= 0; i = text.IndexOf("EVALSHA", i + 1, StringComparison.Ordinal))
                        {
                            if (i + 7 > tail.Length)
                            {
                                Interlocked.Increment(ref proxy._commands);
                            }
                        }
                    }

                    tail = text.Length > 8 ? text[^8..] : text;
                    await to.WriteAsync(buffer.AsMemory(0, n), proxy._stopping.Token);
                }
            }
            catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException or OperationCanceledException)
            {
                // Dropped by a fault or the other side.
            }
            finally
            {
                _isConsume.TrySetResult();
                client.Dispose();
                server.Dispose();
            }
        }

        public async Task ServerToClientAsync()
        {
            var buffer = new byte[256 * 1024];
            var length = 0;
            try
            {
                var from = server.GetStream();
                var to = client.GetStream();
                while (true)
                {
                    var n = await from.ReadAsync(buffer.AsMemory(length), proxy._stopping.Token);
                    if (n == 0)
                    {
                        break;
                    }

                    await _isConsume.Task;
                    if (!_consume)
                    {
                        await to.WriteAsync(buffer.AsMemory(0, n), proxy._stopping.Token);
                        continue;
                    }

                    length += n;
                    var start = 0;
                    int frame;
                    while (start < length && (frame = FrameLength(buffer.AsSpan(start, length - start))) > 0)
                    {
                        var reply = buffer.AsSpan(start, frame).ToArray();
                        start += frame;
                        if (!await ForwardAsync(reply, to))
                        {
                            client.Client.LingerState = new LingerOption(true, 0);
                            client.Dispose();
                            server.Dispose();
                            return;
                        }
                    }

                    buffer.AsSpan(start, length - start).CopyTo(buffer);
                    length -= start;
                }
            }
            catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException or OperationCanceledException)
            {
                // Dropped by a fault or the other side.
            }
            finally
            {
                client.Dispose();
                server.Dispose();
            }
        }

        private async Task<bool> ForwardAsync(byte[] reply, NetworkStream to)
        {
            byte[][] writes = [reply];
            if (reply[0] == (byte)'*')
            {
                while (proxy.Commands < proxy.HoldRepliesUntilCommands)
                {
                    await Task.Delay(5, proxy._stopping.Token);
                }

                var number = Interlocked.Increment(ref proxy._arrayReplies) - 1;
                if (proxy.DelayArrayReply?.Invoke(number) is { } delay && delay > TimeSpan.Zero)
                {
                    await Task.Delay(delay, proxy._stopping.Token);
                }

                if (proxy.OnArrayReply?.Invoke(number, reply) is { } instead)
                {
                    if (instead.Length == 0)
                    {
                        return false;
                    }

                    writes = instead;
                }
            }

            foreach (var write in writes)
            {
                if (!proxy.Fragment)
                {
                    await to.WriteAsync(write, proxy._stopping.Token);
                    continue;
                }

                for (var i = 0; i < write.Length; i++)
                {
                    await to.WriteAsync(write.AsMemory(i, 1), proxy._stopping.Token);
                    if (i % 16 == 15)
                    {
                        await Task.Delay(1, proxy._stopping.Token);
                    }
                }
            }

            return true;
        }
    }
}
