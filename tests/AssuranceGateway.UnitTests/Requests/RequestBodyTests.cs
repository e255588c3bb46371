using AssuranceGateway.Requests;
using Microsoft.AspNetCore.Http;

namespace AssuranceGateway.UnitTests.Requests;

/// <summary>The single bounded body read: what it holds in memory, and what it hands on.</summary>
public sealed class RequestBodyTests
{
    /// <summary>A body stream that sends <paramref name="data"/> and notes the size of every buffer it is asked to fill.</summary>
    private sealed class RecordingBody(byte[] data) : MemoryStream(data)
    {
        public List<int> Offered { get; } = [];

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            Offered.Add(buffer.Length);
            return base.ReadAsync(buffer, cancellationToken);
        }
    }

    /// <summary>
    /// A client that declares a large Content-Length and trickles the body (no grant needed: the body is read before the
    /// grant is looked at) must not make the gateway reserve the declared size: memory follows the bytes that arrive.
    /// </summary>
    [Fact]
    public async Task DeclaredLengthFarAboveWhatArrived_BufferFollowsTheBytesReceived()
    {
        const long declared = 64L * 1024 * 1024;
        var context = new DefaultHttpContext();
        var sent = "{\"chunk\":0}"u8.ToArray();
        var stream = new RecordingBody(sent);
        context.Request.Body = stream;
        context.Request.ContentLength = declared;

        using var body = await RequestBody.ReadAsync(context.Request, declared, CancellationToken.None);

        Assert.NotNull(body);
        Assert.Equal(sent, body.Span.ToArray());
        Assert.All(stream.Offered, size => Assert.True(size <= 2 * RequestBody.InitialCap, $"a {size}-byte buffer for {sent.Length} bytes received"));
    }

    /// <summary>A body that really is large grows into a larger buffer and arrives whole, byte for byte.</summary>
    [Fact]
    public async Task BodyAboveTheInitialBuffer_ReadWhole()
    {
        var data = new byte[(3 * RequestBody.InitialCap) + 17];
        Random.Shared.NextBytes(data);
        var context = new DefaultHttpContext();
        context.Request.Body = new MemoryStream(data);
        context.Request.ContentLength = data.Length;

        using var body = await RequestBody.ReadAsync(context.Request, data.Length, CancellationToken.None);

        Assert.Equal(data, body!.Span.ToArray());
        Assert.Equal(data, ((MemoryStream)context.Request.Body).ToArray());
    }
}
