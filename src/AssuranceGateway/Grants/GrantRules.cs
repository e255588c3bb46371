using System.Net;
using System.Net.Sockets;
using AssuranceGateway.Enforcement;

namespace AssuranceGateway.Grants;

/// <summary>
/// SPEC §2 step 6 as plain code: the reference semantics that the Redis Lua script mirrors line by line
/// (the store conformance tests hold the two to each other).
/// </summary>
internal static class GrantRules
{
    public const int MaxEvents = 256;

    /// <summary>Returns the first failing reason in contract order, or <see cref="ReasonCodes.Ok"/>.</summary>
    public static string Check(GrantRecord grant, ConsumeRequest request, DateTimeOffset now, out List<string> mismatch)
    {
        mismatch = [];
        switch (grant.Status)
        {
            case GrantStatus.Pending:
                return ReasonCodes.GrantPending;
            case GrantStatus.Revoked:
                return ReasonCodes.GrantRevoked;
        }

        if (now >= grant.ExpiresAt)
        {
            return ReasonCodes.GrantExpired;
        }

        if (grant.NotBefore is { } notBefore && now < notBefore)
        {
            return ReasonCodes.GrantNotYetValid;
        }

        if (!string.Equals(grant.Route, request.Route, StringComparison.OrdinalIgnoreCase))
        {
            return ReasonCodes.RouteMismatch;
        }

        // A binding is checked when the policy demands it or when the issuer put it on the grant anyway.
        var check = request.Required | grant.Bound;
        if (Differs(check, Bindings.Subject, grant.Subject, request.Subject))
        {
            return ReasonCodes.SubjectMismatch;
        }

        if (Differs(check, Bindings.Session, grant.Session, request.Session))
        {
            return ReasonCodes.SessionMismatch;
        }

        if (Differs(check, Bindings.Token, grant.TokenHash, request.TokenHash))
        {
            return ReasonCodes.TokenMismatch;
        }

        if (Differs(check, Bindings.Workload, grant.Workload, request.Workload))
        {
            return ReasonCodes.WorkloadMismatch;
        }

        if ((check & Bindings.Origin) != 0 && !OriginAllowed(grant.Origins, request.Origin))
        {
            return ReasonCodes.OriginMismatch;
        }

        if (Differs(check, Bindings.Request, grant.RequestHash, request.RequestHash))
        {
            if (grant.Digests is { } bound && request.Digests is { } presented)
            {
                for (var i = 0; i < RequestDigests.ComponentNames.Length; i++)
                {
                    if (!string.Equals(bound[i], presented[i], StringComparison.Ordinal))
                    {
                        mismatch.Add(RequestDigests.ComponentNames[i]);
                    }
                }
            }

            return ReasonCodes.RequestMismatch;
        }

        return grant.UsesRemaining <= 0 ? ReasonCodes.Replayed : ReasonCodes.Ok;
    }

    private static bool Differs(Bindings check, Bindings binding, string? bound, string? presented) =>
        (check & binding) != 0 && (bound is null || !string.Equals(bound, presented, StringComparison.Ordinal));

    public static bool OriginAllowed(IReadOnlyList<string> origins, IPAddress? origin)
    {
        if (origin is null || origins.Count == 0)
        {
            return false;
        }

        var address = Normalize(origin);
        foreach (var cidr in origins)
        {
            if (IPNetwork.TryParse(cidr, out var network) && network.Contains(address))
            {
                return true;
            }
        }

        return false;
    }

    public static IPAddress Normalize(IPAddress address) =>
        address.AddressFamily == AddressFamily.InterNetworkV6 && address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address;

    /// <summary>Canonical CIDR spelling ("10.1.0.0/16"; a bare address becomes /32 or /128), or null when invalid.</summary>
    public static string? CanonicalCidr(string value)
    {
        if (IPNetwork.TryParse(value, out var network))
        {
            return network.ToString();
        }

        if (IPAddress.TryParse(value, out var address))
        {
            address = Normalize(address);
            return new IPNetwork(address, address.AddressFamily == AddressFamily.InterNetwork ? 32 : 128).ToString();
        }

        return null;
    }
}
