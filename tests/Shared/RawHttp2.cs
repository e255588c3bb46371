using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;

namespace AssuranceGateway.Testing;

/// <summary>
/// HTTP/2 with prior knowledge (h2c) written by hand, for what HttpClient would normalise or refuse to send: a header
/// field repeated or split, a <c>host</c> beside <c>:authority</c>, DATA that disagrees with <c>content-length</c>,
/// trailers. Header blocks are HPACK literals without indexing or Huffman coding, so any name and value go out as given.
/// </summary>
public static class RawHttp2
{
    private const byte Data = 0x0, Headers = 0x1, RstStream = 0x3, Settings = 0x4, GoAway = 0x7;
    private const byte EndStream = 0x1, EndHeaders = 0x4;

    /// <summary>What came back on stream 1: the status (0 when the stream was reset first), the body, and how it ended.</summary>
    public sealed record Response(int Status, string Content, bool Reset);

    /// <summary>
    /// Sends one request on stream 1: <paramref name="fields"/> (pseudo-headers first, as given), then
    /// <paramref name="body"/> in one DATA frame when it is not null, then <paramref name="trailers"/> when given, and
    /// reads the response.
    /// </summary>
    public static async Task<Response> SendAsync(
        string address, IReadOnlyList<(string Name, string Value)> fields, byte[]? body = null, IReadOnlyList<(string Name, string Value)>? trailers = null)
    {
        var uri = new Uri(address);
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(uri.Host, uri.Port);
        await using var stream = tcp.GetStream();
        using var output = new MemoryStream();
        output.Write("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8);
        WriteFrame(output, Settings, 0, 0, []);
        var endAfterHeaders = body is null && trailers is null;
        WriteFrame(output, Headers, (byte)(EndHeaders | (endAfterHeaders ? EndStream : 0)), 1, Encode(fields));
        if (body is not null)
        {
            WriteFrame(output, Data, trailers is null ? EndStream : (byte)0, 1, body);
        }

        if (trailers is not null)
        {
            WriteFrame(output, Headers, EndHeaders | EndStream, 1, Encode(trailers));
        }

        await stream.WriteAsync(output.ToArray());

        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        var status = 0;
        var content = new MemoryStream();
        var header = new byte[9];
        while (true)
        {
            await stream.ReadExactlyAsync(header, deadline.Token);
            var length = (header[0] << 16) | (header[1] << 8) | header[2];
            var (type, flags) = (header[3], header[4]);
            var id = BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(5)) & 0x7FFFFFFF;
            var payload = new byte[length];
            await stream.ReadExactlyAsync(payload, deadline.Token);
            if (type == Settings && (flags & 0x1) == 0)
            {
                var ack = new MemoryStream();
                WriteFrame(ack, Settings, 0x1, 0, []);
                await stream.WriteAsync(ack.ToArray(), deadline.Token);
            }
            else if (type == GoAway || (type == RstStream && id == 1))
            {
                return new Response(status, Encoding.UTF8.GetString(content.ToArray()), Reset: true);
            }
            else if (id == 1 && type == Headers)
            {
                status = status == 0 ? StatusOf(payload, flags) : status;
                if ((flags & EndStream) != 0)
                {
                    return new Response(status, Encoding.UTF8.GetString(content.ToArray()), Reset: false);
                }
            }
            else if (id == 1 && type == Data)
            {
                content.Write(payload);
                if ((flags & EndStream) != 0)
                {
                    return new Response(status, Encoding.UTF8.GetString(content.ToArray()), Reset: false);
                }
            }
        }
    }

    /// <summary>
    /// The :status of a response header block. Kestrel writes it first: indexed from HPACK's static table (200, 204,
    /// 206, 304, 400, 404, 500) or as a literal with the indexed name :status and a plain three-digit value.
    /// </summary>
    private static int StatusOf(byte[] block, byte flags)
    {
        var offset = (flags & 0x8) != 0 ? 1 : 0; // PADDED
        offset += (flags & 0x20) != 0 ? 5 : 0; // PRIORITY
        var first = block[offset];
        if ((first & 0x80) != 0)
        {
            return (first & 0x7F) switch { 8 => 200, 9 => 204, 10 => 206, 11 => 304, 12 => 400, 13 => 404, 14 => 500, var i => -i };
        }

        // A literal whose name is a static index (4 or 6 bit prefix, small for :status), then a value length and the value.
        var valueLength = block[offset + 1] & 0x7F;
        return int.Parse(Encoding.ASCII.GetString(block, offset + 2, valueLength), System.Globalization.CultureInfo.InvariantCulture);
    }

    private static byte[] Encode(IReadOnlyList<(string Name, string Value)> fields)
    {
        var block = new MemoryStream();
        foreach (var (name, value) in fields)
        {
            block.WriteByte(0x00); // literal without indexing, new name
            WriteString(block, name);
            WriteString(block, value);
        }

        return block.ToArray();
    }

    private static void WriteString(MemoryStream block, string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        WriteInteger(block, bytes.Length, 7, 0x00); // no Huffman
        block.Write(bytes);
    }

    /// <summary>An HPACK integer (RFC 7541 §5.1) with an N-bit prefix.</summary>
    private static void WriteInteger(MemoryStream block, int value, int prefixBits, byte flags)
    {
        var max = (1 << prefixBits) - 1;
        if (value < max)
        {
            block.WriteByte((byte)(flags | value));
            return;
        }

        block.WriteByte((byte)(flags | max));
        value -= max;
        while (value >= 128)
        {
            block.WriteByte((byte)((value % 128) + 128));
            value /= 128;
        }

        block.WriteByte((byte)value);
    }

    private static void WriteFrame(MemoryStream output, byte type, byte flags, int streamId, byte[] payload)
    {
        Span<byte> header = stackalloc byte[9];
        header[0] = (byte)(payload.Length >> 16);
        header[1] = (byte)(payload.Length >> 8);
        header[2] = (byte)payload.Length;
        header[3] = type;
        header[4] = flags;
        BinaryPrimitives.WriteInt32BigEndian(header[5..], streamId);
        output.Write(header);
        output.Write(payload);
    }
}
