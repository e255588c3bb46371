using System.Globalization;
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
    /// <summary>
    /// Denied events are kept while the grant's event list holds fewer than this many events; later denials are only
    /// counted (<c>droppedEvents</c>). Anyone with a valid token can present a grant id it does not own and be denied:
    /// such denials must not push out the record of the grant's real uses.
    /// </summary>
    public const int MaxEvents = 256;

    /// <summary>
    /// Every other event (created, approved, used, revoked, forward_failed) is kept up to this many. Unknown outcomes
    /// share the denials' cap: anyone can cause one by presenting the grant id while the store is slow, and a use that
    /// did happen writes its own used event.
    /// </summary>
    public static readonly int MaxEventsAnyKind = int.Parse(MaxEventsAnyKindText, CultureInfo.InvariantCulture);

    /// <summary>The same, as text for the Lua scripts (const interpolation).</summary>
    public const string MaxEventsAnyKindText = "1024";

    /// <summary>
    /// A denial decided before the store was asked (weak authentication, no workload, claims, body, an ambiguous request:
    /// any caller with a valid token can cause one for any grant id it knows) is kept while the list holds fewer than
    /// this many events: such denials cannot take the room of the store's own denials (a leaked grant tried elsewhere).
    /// </summary>
    public const int MaxEarlyDenials = 64;

    /// <summary>The list length up to which this event is kept.</summary>
    public static int CapFor(GrantEvent grantEvent) => grantEvent.Type switch
    {
        GrantEvent.Denied when grantEvent.Reason is { } reason && DecidedBeforeTheStore(reason) => MaxEarlyDenials,
        GrantEvent.Denied or GrantEvent.UnknownOutcome => MaxEvents,
        _ => MaxEventsAnyKind,
    };

    /// <summary>Reasons of SPEC §2 steps 1-5 (and the gateway's own request checks): decided without the grant.</summary>
    public static bool DecidedBeforeTheStore(string reason) => reason is ReasonCodes.TokenMissing or ReasonCodes.TokenInvalid
        or ReasonCodes.InsufficientAal or ReasonCodes.WorkloadUnidentified or ReasonCodes.WorkloadInvalid or ReasonCodes.ClaimsMismatch
        or ReasonCodes.BodyTooLarge or ReasonCodes.RequestAmbiguous or ReasonCodes.AssuranceRequired or ReasonCodes.AssuranceMalformed;

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

        // After every binding: a grant presented with someone else's token is a mismatch (and burned by RevokeOn), whoever
        // approved it.
        if (SelfApproved(grant, request.Subject))
        {
            return ReasonCodes.SelfApproval;
        }

        // A grant with no uses left is a replay whatever the approval rule in force: a reload that raised the quorum must not
        // turn a spent grant into grant_pending, which sends its caller to collect approvals for a grant that can never be
        // used again (and the replay's evidence points at the first use).
        if (grant.UsesRemaining <= 0)
        {
            return ReasonCodes.Replayed;
        }

        // After every binding too (a leaked grant is still a mismatch, and burned by RevokeOn). Pending by the rule in force:
        // the quorum and the approvers' strength are the route's policy's now, not the issuing replica's or generation's.
        return ShortOfApprovals(grant, request) ? ReasonCodes.GrantPending : ReasonCodes.Ok;
    }

    /// <summary>
    /// SPEC §5.1/§5.3: whoever approved an action may not be the one who performs it. A grant with a subject has that
    /// checked by the API (the subject is no approver) and the subject binding above; one issued without a subject (bound
    /// to a token or a workload only) can only be checked here, when the caller's subject is known: one of its
    /// approvers, the creator included, may not use it.
    /// </summary>
    private static bool SelfApproved(GrantRecord grant, string? subject)
    {
        if (grant.Subject is not null || subject is null)
        {
            return false;
        }

        foreach (var approver in grant.Approvers)
        {
            if (string.Equals(approver, subject, StringComparison.Ordinal))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Fewer approvers, or a weaker one, than the policy in force asks for (one approver always suffices for 1).</summary>
    public static bool ShortOfApprovals(GrantRecord grant, ConsumeRequest request) =>
        (request.MinimumApprovals > 1 && grant.Approvers.Count < request.MinimumApprovals) || grant.ApprovalAal < request.MinimumApprovalAal;

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

    /// <summary>The one-address network of a client address ("10.1.2.3/32"), IPv4-mapped made IPv4, zone dropped.</summary>
    public static string CidrOf(IPAddress address)
    {
        var plain = new IPAddress(Normalize(address).GetAddressBytes());
        return new IPNetwork(plain, plain.AddressFamily == AddressFamily.InterNetwork ? 32 : 128).ToString();
    }

    /// <summary>
    /// An address or CIDR range written by a person (a grant's <c>origin</c>, <c>Workload:TrustedProxies</c>), read
    /// strictly. IPAddress.TryParse reads IPv4 as inet_aton does ("010.1.0.0" is octal 8.1.0.0, "10.1" is 10.0.0.1,
    /// "0x0a.1.2.3" and "167838211" are 10.1.2.3) and IPNetwork drops host bits ("10.1.2.3/16" is 65,536 hosts): a
    /// typo here trusts or binds the wrong machines, so only dotted quads without leading zeros and ranges without
    /// host bits are taken. An IPv4-mapped IPv6 range becomes the IPv4 range it means, because client addresses are
    /// compared as IPv4 (<see cref="Normalize"/>); a zone id names no network.
    /// </summary>
    public static bool TryParseNetwork(string text, out IPNetwork network, out string problem)
    {
        network = default;
        problem = $"'{text}' is not an IP address or CIDR range (dotted-quad IPv4 without leading zeros, or IPv6)";
        var slash = text.IndexOf('/', StringComparison.Ordinal);
        var addressText = slash < 0 ? text : text[..slash];
        if (!IsPlainAddress(addressText) || !IPAddress.TryParse(addressText, out var address))
        {
            return false;
        }

        var bits = address.AddressFamily == AddressFamily.InterNetwork ? 32 : 128;
        var prefix = bits;
        if (slash >= 0)
        {
            var prefixText = text[(slash + 1)..];
            if (prefixText.Length is 0 or > 3 || !prefixText.All(char.IsAsciiDigit) || (prefixText.Length > 1 && prefixText[0] == '0')
                || (prefix = int.Parse(prefixText, CultureInfo.InvariantCulture)) > bits)
            {
                return false;
            }
        }

        if (address.IsIPv4MappedToIPv6)
        {
            if (prefix < 96)
            {
                problem = $"'{text}' is an IPv4-mapped range wider than the IPv4 space (/96 or longer, or write the IPv4 range)";
                return false;
            }

            (address, prefix, bits) = (address.MapToIPv4(), prefix - 96, 32);
        }

        var bytes = address.GetAddressBytes();
        var masked = (byte[])bytes.Clone();
        for (var i = 0; i < masked.Length; i++)
        {
            var keep = Math.Clamp(prefix - (i * 8), 0, 8);
            masked[i] &= (byte)(0xFF << (8 - keep));
        }

        if (!masked.AsSpan().SequenceEqual(bytes))
        {
            var baseAddress = new IPAddress(masked);
            problem = $"'{text}' has address bits set beyond the /{prefix} prefix (write {baseAddress}/{prefix}, or {address}/{bits} for one address)";
            return false;
        }

        network = new IPNetwork(address, prefix);
        return true;
    }

    private static bool IsPlainAddress(string text)
    {
        if (text.AsSpan().IndexOfAny('%', '[', ']') >= 0)
        {
            return false; // a zone id is an interface of this machine, not a network; "[v6]:port" is an endpoint
        }

        if (text.Contains(':', StringComparison.Ordinal))
        {
            // IPv6 has no legacy short forms, except in an embedded dotted quad ("::ffff:010.1.2.3").
            var lastColon = text.LastIndexOf(':');
            return !text.Contains('.', StringComparison.Ordinal) || IsDottedQuad(text[(lastColon + 1)..]);
        }

        return IsDottedQuad(text);
    }

    private static bool IsDottedQuad(string text)
    {
        var parts = text.Split('.');
        return parts.Length == 4 && parts.All(p => p.Length is > 0 and <= 3 && p.All(char.IsAsciiDigit) && (p.Length == 1 || p[0] != '0'));
    }
}
