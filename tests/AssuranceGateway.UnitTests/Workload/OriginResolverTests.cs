using System.Net;
using AssuranceGateway.Workload;
using Microsoft.AspNetCore.Http;

namespace AssuranceGateway.UnitTests.Workload;

public sealed class OriginResolverTests
{
    private static readonly IPNetwork[] Trusted = [IPNetwork.Parse("10.0.0.0/8"), IPNetwork.Parse("127.0.0.1/32")];

    private static IPAddress? Resolve(string peer, string? forwardedFor)
    {
        var context = new DefaultHttpContext();
        context.Connection.RemoteIpAddress = IPAddress.Parse(peer);
        if (forwardedFor is not null)
        {
            context.Request.Headers["X-Forwarded-For"] = forwardedFor;
        }

        return OriginResolver.Resolve(context, Trusted);
    }

    [Theory]
    [InlineData("192.0.2.1", "198.51.100.7", "192.0.2.1")]               // untrusted peer: its header is ignored
    [InlineData("127.0.0.1", "198.51.100.7", "198.51.100.7")]
    [InlineData("127.0.0.1", "203.0.113.9, 198.51.100.7", "198.51.100.7")] // right-most untrusted wins over a forged left
    [InlineData("127.0.0.1", "198.51.100.7, 10.1.1.1, 10.2.2.2", "198.51.100.7")] // trusted hops are skipped
    [InlineData("127.0.0.1", "10.1.1.1", "10.1.1.1")]                     // all trusted: the left-most
    [InlineData("127.0.0.1", null, "127.0.0.1")]
    [InlineData("::ffff:192.0.2.1", null, "192.0.2.1")]                     // IPv4-mapped IPv6 normalised
    [InlineData("127.0.0.1", "[2001:db8::1]:443", "2001:db8::1")]
    public void Resolve_ChoosesTheRightOrigin(string peer, string? forwardedFor, string expected) =>
        Assert.Equal(IPAddress.Parse(expected), Resolve(peer, forwardedFor));

    [Fact]
    public void Resolve_GarbageInChainFromTrustedProxy_Null() =>
        Assert.Null(Resolve("127.0.0.1", "198.51.100.7, not-an-ip"));
}
