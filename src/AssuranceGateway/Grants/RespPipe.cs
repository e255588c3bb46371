using System.Buffers;
using System.Buffers.Text;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace AssuranceGateway.Grants;

/// <summary>An error reply from Redis (<c>-ERR ...</c>, <c>-NOSCRIPT ...</c>, <c>-OOM ...</c>).</summary>
internal sealed record RespError(string Message)
{
    public bool IsNoScript => Message.StartsWith("NOSCRIPT", StringComparison.Ordinal);

    /// <summary>
    /// Refused before anything ran on a server that is not (or not yet) a usable primary: a replica after a failover
    /// (<c>READONLY</c>; a script's first write fails, so nothing was written), a primary loading its data, a replica
    /// whose primary is down.
    /// </summary>
    public bool IsNotPrimary => IsNotPrimaryMessage(Message);

    /// <summary>The same test on an error message, as StackExchange.Redis reports it (<c>RedisServerException</c>).</summary>
    public static bool IsNotPrimaryMessage(string message) =>
        message.StartsWith("READONLY", StringComparison.Ordinal) || message.StartsWith("LOADING", StringComparison.Ordinal)
        || message.StartsWith("MASTERDOWN", StringComparison.Ordinal);

    /// <summary>
    /// Out of memory under noeviction. Redis refuses a script's first write then (a script that has written may go on
    /// writing), and every script of the store reads first and writes last: nothing was written.
    /// </summary>
    public bool IsOutOfMemory => IsOutOfMemoryMessage(Message);

    public static bool IsOutOfMemoryMessage(string message) => message.StartsWith("OOM", StringComparison.Ordinal);

    /// <summary>
    /// A Redis Cluster refusal before the command ran: the cluster is down, a multi-key command's keys are split by a
    /// slot migration in progress (<c>TRYAGAIN</c>), or the slot is served elsewhere (<c>MOVED</c>, <c>ASK</c>).
    /// </summary>
    public static bool IsClusterRefusalMessage(string message) =>
        message.StartsWith("CLUSTERDOWN", StringComparison.Ordinal) || message.StartsWith("TRYAGAIN", StringComparison.Ordinal)
        || message.StartsWith("MOVED", StringComparison.Ordinal) || message.StartsWith("ASK ", StringComparison.Ordinal);
}

/// <summary>
/// One pipelined RESP2 connection to a standalone Redis, for the one command on every allowed request (the consume
/// EVALSHA). StackExchange.Redis 1.2.6 hands each command to a dedicated writer thread and each reply from a reader
/// thread to the thread pool: three thread switches per round trip, measured here as ~100 µs of added latency and a
/// large share of the gateway's CPU on a 2-core VM. Here the caller writes (several concurrent callers' commands go out
/// in one send) and replies are parsed where the socket's receive completes.
/// </summary>
/// <remarks>
/// Failure semantics are those of the store: a command that provably never left is a known failure
/// (<see cref="StoreUnavailableException.OutcomeUnknown"/> false), one that was written and not answered is unknown.
/// Replies come back in order, so when the oldest unanswered command is older than the deadline every later one is too:
/// the connection is given up as a whole (one timer, not one per call) and everything on it fails. A broken pipe is
/// never reused; the store connects a new one.
/// </remarks>
internal sealed class RespPipe : IDisposable
{
    private const int MaxReplyBytes = 16 * 1024 * 1024;
    private const int MaxDepth = 8;

    private readonly Socket _socket;
    private readonly TimeProvider _time;
    private readonly TimeSpan _timeout;
    private readonly string _description;
    private readonly ConcurrentQueue<PendingReply> _outbox = new();
    private readonly ConcurrentQueue<PendingReply> _inflight = new();

    // Taken to match a reply to the oldest in-flight command, and to fail what is in flight once the pipe is broken. The
    // two must not interleave: a reply read after another thread took its command off the queue would be handed to the
    // next command, another caller's request.
    private readonly Lock _matching = new();
    private readonly ArrayBufferWriter<byte> _writeBuffer = new(4096);
    private readonly ITimer _deadline;
    private int _writing;
    private string? _broken;
    private string? _retired;

    private RespPipe(Socket socket, EndPoint endPoint, TimeProvider time, TimeSpan timeout, string description)
    {
        EndPoint = endPoint;
        _socket = socket;
        _time = time;
        _timeout = timeout;
        _description = description;
        var period = TimeSpan.FromMilliseconds(Math.Clamp(timeout.TotalMilliseconds / 4, 10, 250));
        _deadline = time.CreateTimer(static state => ((RespPipe)state!).CheckDeadline(), this, period, period);
    }

    /// <summary>The server this pipe talks to.</summary>
    public EndPoint EndPoint { get; }

    /// <summary>Why the pipe is no longer usable (broken or retired), or null while it is.</summary>
    public string? Broken => Volatile.Read(ref _broken) ?? Volatile.Read(ref _retired);

    /// <summary>
    /// Retired (<see cref="Retire"/>) and not broken otherwise: it closed, or will, only after the replies of what was in
    /// flight, none of them out of step.
    /// </summary>
    public bool RetiredCleanly => Volatile.Read(ref _retired) is { } retired && (Volatile.Read(ref _broken) is not { } broken || ReferenceEquals(broken, retired));

    /// <summary>Connects, authenticates and names the connection; throws when any of it fails within the timeout.</summary>
    public static async Task<RespPipe> ConnectAsync(
        EndPoint endPoint, string? password, int database, string clientName, TimeSpan timeout, TimeProvider time, CancellationToken cancellationToken)
    {
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        RespPipe? pipe = null;
        try
        {
            using (var connecting = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken))
            {
                connecting.CancelAfter(timeout);
                await socket.ConnectAsync(endPoint, connecting.Token).ConfigureAwait(false);
            }

            socket.Blocking = false;
            pipe = new RespPipe(socket, endPoint, time, timeout, endPoint.ToString() ?? "redis");
            _ = pipe.ReadLoopAsync();
            var required = new List<Task<object?>>();
            if (!string.IsNullOrEmpty(password))
            {
                required.Add(pipe.SendAsync(Encode("AUTH", password)));
            }

            if (database > 0)
            {
                required.Add(pipe.SendAsync(Encode("SELECT", database.ToString(System.Globalization.CultureInfo.InvariantCulture))));
            }

            // The name only helps operators (CLIENT LIST); a server that disallows CLIENT is still served.
            var naming = pipe.SendAsync(Encode("CLIENT", "SETNAME", clientName));
            foreach (var reply in await Task.WhenAll(required).ConfigureAwait(false))
            {
                if (reply is RespError error)
                {
                    throw new StoreUnavailableException($"Redis refused the connection setup: {error.Message}", outcomeUnknown: false);
                }
            }

            await naming.ConfigureAwait(false);
            return pipe;
        }
        catch
        {
            if (pipe is null)
            {
                socket.Dispose();
            }
            else
            {
                pipe.Dispose();
            }

            throw;
        }
    }

    /// <summary>
    /// Sends one encoded command. The reply is a string (or null), a long, an object?[] or a <see cref="RespError"/>;
    /// failures of the connection throw <see cref="StoreUnavailableException"/>.
    /// </summary>
    public Task<object?> SendAsync(ReadOnlySpan<byte> command)
    {
        // The command waits in a pooled copy until it is written (the caller's buffer may be reused at once).
        var copy = ArrayPool<byte>.Shared.Rent(command.Length);
        command.CopyTo(copy);
        var reply = new PendingReply(copy, command.Length);
        _outbox.Enqueue(reply);
        if (_inflight.IsEmpty)
        {
            Pump();
        }
        else if (Interlocked.CompareExchange(ref _flushQueued, 1, 0) == 0)
        {
            // Commands are in flight, so this one waits for Redis anyway: let the commands of requests that run
            // meanwhile join it in one send.
            ThreadPool.UnsafeQueueUserWorkItem(static pipe => pipe.FlushQueued(), this, preferLocal: false);
        }

        return reply.Task;
    }

    private int _flushQueued;

    private void FlushQueued()
    {
        // A full fence, not a release store: the emptiness check in Pump must not be read before this is visible, or a
        // sender that saw the flag still set (and so queued no flush) and this flush that saw its command not yet queued
        // would both back off, and the command would wait for the next caller (see also CheckDeadline).
        Interlocked.Exchange(ref _flushQueued, 0);
        Pump();
    }

    public void Dispose() => Break("closed");

    /// <summary>
    /// Closes at once because a reply could not be trusted (a reply that was not the one its caller asked for): every
    /// command in flight fails with an unknown outcome, none is matched to another reply.
    /// </summary>
    public void Abandon(string why) => Break(why);

    /// <summary>
    /// Takes no more commands (they fail as never sent) but lets those in flight get their replies, then closes. For a
    /// server that answered "not the primary": the commands behind that one get the same answer, a known outcome,
    /// where closing at once would leave each of them unknown. The deadline still bounds the wait.
    /// </summary>
    public void Retire(string why)
    {
        Interlocked.CompareExchange(ref _retired, why, null);
        FailUnsent(why);
        CloseIfRetiredAndIdle();
    }

    private void CloseIfRetiredAndIdle()
    {
        if (Volatile.Read(ref _retired) is { } why && _inflight.IsEmpty)
        {
            Break(why);
        }
    }

    /// <summary>RESP2 encoding of one command (an array of bulk strings).</summary>
    public static byte[] Encode(params string[] parts)
    {
        var writer = new ArrayBufferWriter<byte>(64);
        WriteArrayHeader(writer, parts.Length);
        foreach (var part in parts)
        {
            WriteBulk(writer, part);
        }

        return writer.WrittenSpan.ToArray();
    }

    public static void WriteArrayHeader(IBufferWriter<byte> writer, int count) => WriteHeader(writer, (byte)'*', count);

    /// <summary>A string as a bulk string, UTF-8, encoded straight into <paramref name="writer"/>.</summary>
    public static void WriteBulk(IBufferWriter<byte> writer, string value)
    {
        WriteHeader(writer, (byte)'$', Encoding.UTF8.GetByteCount(value));
        Encoding.UTF8.GetBytes(value, writer);
        writer.Write("\r\n"u8);
    }

    /// <summary>Two strings as one bulk string (a key and its suffix), without joining them first.</summary>
    public static void WriteBulk(IBufferWriter<byte> writer, string value, string suffix)
    {
        WriteHeader(writer, (byte)'$', Encoding.UTF8.GetByteCount(value) + Encoding.UTF8.GetByteCount(suffix));
        Encoding.UTF8.GetBytes(value, writer);
        Encoding.UTF8.GetBytes(suffix, writer);
        writer.Write("\r\n"u8);
    }

    public static void WriteBulk(IBufferWriter<byte> writer, ReadOnlySpan<byte> value)
    {
        WriteHeader(writer, (byte)'$', value.Length);
        writer.Write(value);
        writer.Write("\r\n"u8);
    }

    private static void WriteHeader(IBufferWriter<byte> writer, byte type, int value)
    {
        var span = writer.GetSpan(16);
        span[0] = type;
        Utf8Formatter.TryFormat(value, span[1..], out var written);
        span[1 + written] = (byte)'\r';
        span[2 + written] = (byte)'\n';
        writer.Advance(3 + written);
    }

    /// <summary>Writes whatever is queued, unless another caller is writing already (it will take ours too).</summary>
    private void Pump()
    {
        while (!_outbox.IsEmpty && Interlocked.CompareExchange(ref _writing, 1, 0) == 0)
        {
            var sending = false;
            try
            {
                sending = WriteQueued();
            }
            finally
            {
                if (!sending)
                {
                    // A full fence for the same reason as in FlushQueued: the loop's next emptiness check must not
                    // overtake this release.
                    Interlocked.Exchange(ref _writing, 0);
                }
            }

            if (sending)
            {
                return;
            }
        }
    }

    /// <summary>True when a send is still under way asynchronously (it releases the writer flag when done).</summary>
    private bool WriteQueued()
    {
        if (Volatile.Read(ref _broken) is { } why)
        {
            FailAll(why);
            return false;
        }

        if (Volatile.Read(ref _retired) is { } retired)
        {
            FailUnsent(retired);
            return false;
        }

        _writeBuffer.ResetWrittenCount();
        var now = _time.GetTimestamp();
        while (_outbox.TryDequeue(out var reply))
        {
            // In flight before it is on the wire, so that its reply always finds it.
            reply.SentAt = now;
            _writeBuffer.Write(reply.Command.AsSpan(0, reply.CommandLength));
            reply.ReleaseCommand();
            _inflight.Enqueue(reply);
        }

        var data = _writeBuffer.WrittenMemory;
        var sent = 0;
        try
        {
            while (sent < data.Length)
            {
                var n = _socket.Send(data.Span[sent..], SocketFlags.None, out var error);
                if (error == SocketError.WouldBlock)
                {
                    // The socket's buffer is full (Redis reads slowly): finish this send asynchronously.
                    _ = SendRestAsync(data[sent..]);
                    return true;
                }

                if (error != SocketError.Success)
                {
                    Break($"send failed ({error})");
                    return false;
                }

                sent += n;
            }
        }
        catch (ObjectDisposedException)
        {
            Break("closed");
        }

        return false;
    }

    private async Task SendRestAsync(ReadOnlyMemory<byte> rest)
    {
        try
        {
            while (!rest.IsEmpty)
            {
                var n = await _socket.SendAsync(rest, SocketFlags.None).ConfigureAwait(false);
                rest = rest[n..];
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            Break("send failed");
        }
        finally
        {
            Interlocked.Exchange(ref _writing, 0);
        }

        Pump();
    }

    private async Task ReadLoopAsync()
    {
        var buffer = ArrayPool<byte>.Shared.Rent(64 * 1024);
        int start = 0, end = 0;

        // The reply of the current read that is held back to complete on this thread: off the in-flight queue, so when
        // the read fails before it completes it is failed here (Break only sees what is still queued).
        PendingReply? last = null;
        try
        {
            while (Volatile.Read(ref _broken) is null)
            {
                if (end == buffer.Length)
                {
                    if (start > 0)
                    {
                        buffer.AsSpan(start, end - start).CopyTo(buffer);
                        end -= start;
                        start = 0;
                    }
                    else if (buffer.Length >= MaxReplyBytes)
                    {
                        Break("reply too large");
                        return;
                    }
                    else
                    {
                        var larger = ArrayPool<byte>.Shared.Rent(buffer.Length * 2);
                        buffer.AsSpan(0, end).CopyTo(larger);
                        ArrayPool<byte>.Shared.Return(buffer);
                        buffer = larger;
                    }
                }

                var read = await _socket.ReceiveAsync(buffer.AsMemory(end), SocketFlags.None).ConfigureAwait(false);
                if (read == 0)
                {
                    Break("connection closed by Redis");
                    return;
                }

                end += read;
                last = null;
                while (true)
                {
                    var position = start;
                    if (!TryRead(buffer.AsSpan(0, end), ref position, 0, out var value))
                    {
                        break;
                    }

                    start = position;
                    PendingReply? reply;
                    lock (_matching)
                    {
                        // Broken: what is still in flight is failed (or about to be, under this lock), so this reply
                        // no longer has its command in the queue. Nothing more is matched.
                        if (Volatile.Read(ref _broken) is not null)
                        {
                            break;
                        }

                        if (!_inflight.TryDequeue(out reply))
                        {
                            throw new FormatException("a reply nobody asked for");
                        }
                    }

                    reply.Value = value;

                    // Every reply but the last of this read completes on the pool, the last one here: at low load that
                    // is one thread switch per round trip, and under load no caller waits behind another's continuation.
                    if (last is not null)
                    {
                        ThreadPool.UnsafeQueueUserWorkItem(static r => r.Complete(), last, preferLocal: false);
                    }

                    last = reply;
                }

                if (start == end)
                {
                    start = end = 0;
                }

                var completing = last;
                last = null;
                completing?.Complete();
                CloseIfRetiredAndIdle();
            }
        }
#pragma warning disable CA1031 // Whatever ends the reader must break the pipe: a reader gone quiet leaves its callers waiting.
        catch (Exception e)
#pragma warning restore CA1031
        {
            var why = e is FormatException ? $"malformed reply ({e.Message})" : e is SocketException or ObjectDisposedException ? "receive failed" : $"reader failed ({e.GetType().Name})";
            Break(why);
            last?.Fail(new StoreUnavailableException($"Grant store {_description}: {why}.", outcomeUnknown: true));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private void CheckDeadline()
    {
        if (_inflight.TryPeek(out var oldest) && _time.GetElapsedTime(oldest.SentAt) > _timeout)
        {
            Break($"no answer within {_timeout.TotalMilliseconds} ms");
            return;
        }

        // The deadline only sees commands that were written. A command still queued here is waiting for a send that
        // every path should have started; should one ever not have, it goes out now instead of waiting for the next
        // caller (which, on an idle gateway, may never come).
        if (!_outbox.IsEmpty)
        {
            Pump();
        }
    }

    private void Break(string why)
    {
        Interlocked.CompareExchange(ref _broken, why, null);
        _deadline.Dispose();
        _socket.Dispose();
        FailAll(Volatile.Read(ref _broken)!);
    }

    private void FailAll(string why)
    {
        // Written: Redis may have run it. Still queued: it never left. Taken off the queue under the lock the reader
        // matches under, and failed outside it (a caller's continuation may run inline).
        List<PendingReply>? written = null;
        lock (_matching)
        {
            while (_inflight.TryDequeue(out var reply))
            {
                (written ??= []).Add(reply);
            }
        }

        foreach (var reply in written ?? [])
        {
            reply.Fail(new StoreUnavailableException($"Grant store {_description}: {why}.", outcomeUnknown: true));
        }

        FailUnsent(why);
    }

    private void FailUnsent(string why)
    {
        while (_outbox.TryDequeue(out var reply))
        {
            reply.Fail(new StoreUnavailableException($"Grant store {_description}: {why}.", outcomeUnknown: false));
        }
    }

    /// <summary>One RESP2 value at <paramref name="position"/>; false (position unchanged) when it is not all here yet.</summary>
    internal static bool TryRead(ReadOnlySpan<byte> data, ref int position, int depth, out object? value)
    {
        value = null;
        var lineEnd = data[position..].IndexOf("\r\n"u8);
        if (lineEnd < 0)
        {
            return false;
        }

        if (lineEnd == 0)
        {
            throw new FormatException("empty line");
        }

        var type = data[position];
        var line = data.Slice(position + 1, lineEnd - 1);
        var next = position + lineEnd + 2;
        switch (type)
        {
            case (byte)'+':
                value = Encoding.UTF8.GetString(line);
                break;
            case (byte)'-':
                value = new RespError(Encoding.UTF8.GetString(line));
                break;
            case (byte)':':
                value = ParseInteger(line);
                break;
            case (byte)'$':
                var length = ParseInteger(line);
                if (length < -1)
                {
                    throw new FormatException("bad length");
                }

                if (length >= 0)
                {
                    if (length > MaxReplyBytes)
                    {
                        throw new FormatException("bulk string too large");
                    }

                    if (data.Length - next < length + 2)
                    {
                        return false;
                    }

                    if (!data.Slice(next + (int)length, 2).SequenceEqual("\r\n"u8))
                    {
                        // Not where its length says it ends: whatever comes next would be read out of step.
                        throw new FormatException("bulk string not terminated");
                    }

                    value = Encoding.UTF8.GetString(data.Slice(next, (int)length));
                    next += (int)length + 2;
                }

                break;
            case (byte)'*':
                var count = ParseInteger(line);
                if (count < -1)
                {
                    throw new FormatException("bad length");
                }

                if (count >= 0)
                {
                    if (depth >= MaxDepth || count > MaxReplyBytes / 4)
                    {
                        throw new FormatException("array too deep or too long");
                    }

                    var items = new object?[count];
                    for (var i = 0; i < items.Length; i++)
                    {
                        if (!TryRead(data, ref next, depth + 1, out items[i]))
                        {
                            return false;
                        }
                    }

                    value = items;
                }

                break;
            default:
                throw new FormatException("unknown reply type");
        }

        position = next;
        return true;
    }

    private static long ParseInteger(ReadOnlySpan<byte> line) =>
        Utf8Parser.TryParse(line, out long value, out var consumed) && consumed == line.Length
            ? value
            : throw new FormatException("bad integer");

    private sealed class PendingReply(byte[] command, int length) : TaskCompletionSource<object?>
    {
        public byte[] Command { get; private set; } = command;

        public int CommandLength { get; } = length;

        /// <summary>Gives the pooled copy back once it is in the write buffer (a command that never leaves is collected).</summary>
        public void ReleaseCommand()
        {
            ArrayPool<byte>.Shared.Return(Command);
            Command = [];
        }

        public long SentAt;

        public object? Value;

        public void Complete() => TrySetResult(Value);

        public void Fail(Exception exception) => TrySetException(exception);
    }
}
