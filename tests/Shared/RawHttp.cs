using System.Globalization;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;

namespace AssuranceGateway.Testing;

/// <summary>
/// HTTP/1.1 written by hand, for what HttpClient would normalise or refuse to send: dot segments and escapes in the
/// target, repeated header lines, odd white space, broken chunked framing.
/// </summary>
public static partial class RawHttp
{
    /// <summary>
    /// Sends <paramref name="head"/> (request line and header lines, each ending in CRLF, without the empty line) and
    /// <paramref name="body"/>, and reads one response by its Content-Length (an upgrade request keeps the connection
    /// open, so the response is not read to the end of the stream). <paramref name="headEncoding"/> (ASCII unless given)
    /// writes the head: UTF-8 for header values beyond ASCII.
    /// </summary>
    public static async Task<(int Status, string Content)> SendAsync(string address, string head, ReadOnlyMemory<byte> body, Encoding? headEncoding = null)
    {
        var uri = new Uri(address);
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(uri.Host, uri.Port);
        await using var stream = tcp.GetStream();
        await stream.WriteAsync((headEncoding ?? Encoding.ASCII).GetBytes(head + "\r\n"));
        await stream.WriteAsync(body);

        var received = new List<byte>();
        var buffer = new byte[4096];
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        int headerEnd;
        while ((headerEnd = Encoding.ASCII.GetString([.. received]).IndexOf("\r\n\r\n", StringComparison.Ordinal)) < 0)
        {
            var n = await stream.ReadAsync(buffer, deadline.Token);
            if (n == 0)
            {
                throw new IOException("the connection closed before a response");
            }

            received.AddRange(buffer.AsSpan(0, n));
        }

        var responseHead = Encoding.ASCII.GetString([.. received])[..headerEnd];
        var length = ContentLength().Match(responseHead) is { Success: true } m
            ? int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture)
            : 0;
        while (received.Count < headerEnd + 4 + length)
        {
            var n = await stream.ReadAsync(buffer, deadline.Token);
            if (n == 0)
            {
                throw new IOException("the connection closed before the whole response");
            }

            received.AddRange(buffer.AsSpan(0, n));
        }

        var status = int.Parse(responseHead.AsSpan(9, 3), CultureInfo.InvariantCulture);
        return (status, Encoding.UTF8.GetString([.. received], headerEnd + 4, length));
    }

    [GeneratedRegex(@"(?im)^content-length:\s*(\d+)")]
    private static partial Regex ContentLength();
}
