using System.Buffers;
using Microsoft.AspNetCore.Http;

namespace AssuranceGateway.Requests;

/// <summary>
/// Reads the request body once, up to a limit, into a pooled buffer, and puts those exact bytes back as the
/// request body: what is hashed is what is forwarded (SPEC §7.4), and the network stream is never read twice.
/// </summary>
internal sealed class RequestBody : IDisposable
{
    internal const int InitialCap = 64 * 1024;

    private byte[]? _buffer;

    private RequestBody(byte[] buffer, int length)
    {
        _buffer = buffer;
        Length = length;
    }

    public int Length { get; }

    public ReadOnlySpan<byte> Span => _buffer.AsSpan(0, Length);

    /// <summary>
    /// Returns null when the body exceeds <paramref name="maxBytes"/>. The bytes read so far are then put back in front
    /// of the unread rest, so that shadow mode can still forward the request intact; enforcement forwards nothing.
    /// </summary>
    public static async ValueTask<RequestBody?> ReadAsync(HttpRequest request, long maxBytes, CancellationToken cancellationToken)
    {
        if (request.ContentLength is { } declared && declared > maxBytes)
        {
            return null;
        }

        // A declared length sizes the first buffer (one byte more, to see a body longer than declared without growing)
        // only up to InitialCap: memory follows the bytes that arrived, not what a client says it will send, or a
        // caller could pin MaxBodyBytes per connection by declaring it and trickling the body.
        var limit = (int)Math.Min(maxBytes, Array.MaxLength - 1);
        var initial = request.ContentLength is { } length ? (int)Math.Min(length + 1, InitialCap) : Math.Min(limit + 1, 4096);
        var buffer = ArrayPool<byte>.Shared.Rent(Math.Max(initial, 256));
        var total = 0;
        try
        {
            while (true)
            {
                if (total == buffer.Length)
                {

                    var larger = ArrayPool<byte>.Shared.Rent((int)Math.Min((long)buffer.Length * 2, (long)limit + 1));
                    buffer.AsSpan(0, total).CopyTo(larger);
                    ArrayPool<byte>.Shared.Return(buffer);
                    buffer = larger;
                }

                var read = await request.Body.ReadAsync(buffer.AsMemory(total), cancellationToken).ConfigureAwait(false);
                if (read == 0)
                {
                    break;
                }

                total += read;
                if (total > limit)
                {
                    var prefix = buffer.AsSpan(0, total).ToArray();
                    ArrayPool<byte>.Shared.Return(buffer);
                    request.Body = new PrefixedStream(prefix, request.Body);
                    return null;
                }
            }
        }
        catch
        {
            ArrayPool<byte>.Shared.Return(buffer);
            throw;
        }

        var body = new RequestBody(buffer, total);
        request.Body = new MemoryStream(buffer, 0, total, writable: false);
        request.HttpContext.Response.RegisterForDispose(body);
        return body;
    }

    public void Dispose()
    {
        // The forwarder has finished with the MemoryStream over this buffer when the response is disposed.
        if (_buffer is { } buffer)
        {
            _buffer = null;
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}

/// <summary>Bytes already read from a request body, followed by the unread rest of it.</summary>
internal sealed class PrefixedStream(byte[] prefix, Stream rest) : Stream
{
    private int _position;

    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => throw new NotSupportedException();

    public override long Position
    {
        get => throw new NotSupportedException();
        set => throw new NotSupportedException();
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        if (_position < prefix.Length)
        {
            var n = Math.Min(buffer.Length, prefix.Length - _position);
            prefix.AsSpan(_position, n).CopyTo(buffer);
            _position += n;
            return n;
        }

        return rest.Read(buffer);
    }

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (_position < prefix.Length)
        {
            var n = Math.Min(buffer.Length, prefix.Length - _position);
            prefix.AsMemory(_position, n).CopyTo(buffer);
            _position += n;
            return n;
        }

        return await rest.ReadAsync(buffer, cancellationToken).ConfigureAwait(false);
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override void Flush()
    {
    }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}
