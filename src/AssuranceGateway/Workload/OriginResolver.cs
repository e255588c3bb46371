using System.Net;
using AssuranceGateway.Grants;
using Microsoft.AspNetCore.Http;

namespace AssuranceGateway.Workload;

/// <summary>
/// The network origin of a request: the peer address, or, when the peer is a trusted proxy, the right-most
/// <c>X-Forwarded-For</c> entry that is not itself a trusted proxy. Right-most, because every entry to the left
/// of the first untrusted hop was written by that untrusted hop and can be anything it likes.
/// </summary>
public static class OriginResolver
{
    public const string ForwardedForHeader = "X-Forwarded-For";

    public static bool IsTrusted(IReadOnlyList<IPNetwork> trusted, IPAddress? address)
    {
        if (address is null)
        {
            return false;
        }

        address = GrantRules.Normalize(address);
        foreach (var network in trusted)
        {
            if (network.Contains(address))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Null when the forwarded chain is malformed: an origin binding then cannot match.</summary>
    public static IPAddress? Resolve(HttpContext context, IReadOnlyList<IPNetwork> trusted)
    {
        var peer = context.Connection.RemoteIpAddress;
        if (peer is null)
        {
            return null;
        }

        peer = GrantRules.Normalize(peer);
        if (!IsTrusted(trusted, peer))
        {
            return peer;
        }

        var values = context.Request.Headers[ForwardedForHeader];
        if (values.Count == 0)
        {
            return peer;
        }

        var entries = string.Join(',', values.ToArray()).Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        IPAddress? leftmost = null;
        for (var i = entries.Length - 1; i >= 0; i--)
        {
            if (!TryParseEntry(entries[i], out var address))
            {
                return null;
            }

            leftmost = address;
            if (!IsTrusted(trusted, address))
            {
                return address;
            }
        }

        return leftmost ?? peer;
    }

    private static bool TryParseEntry(string entry, out IPAddress address)
    {
        // Accept "1.2.3.4", "[2001:db8::1]", "1.2.3.4:5678" and "[2001:db8::1]:443".
        if (IPAddress.TryParse(entry, out address!))
        {
            address = GrantRules.Normalize(address);
            return true;
        }

        if (IPEndPoint.TryParse(entry, out var endpoint))
        {
            address = GrantRules.Normalize(endpoint.Address);
            return true;
        }

        address = IPAddress.None;
        return false;
    }
}
