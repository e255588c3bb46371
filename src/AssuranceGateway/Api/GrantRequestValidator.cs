using System.Text.Json;
using AssuranceGateway.Configuration;
using AssuranceGateway.Enforcement;
using AssuranceGateway.Grants;
using AssuranceGateway.Requests;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Primitives;

namespace AssuranceGateway.Api;

/// <summary>The outcome of checking a create request: a grant to store, or a problem naming the field.</summary>
internal readonly record struct GrantDraft(GrantRecord? Grant, string? Reason, string? Detail, int RequiredAal = 0);

/// <summary>
/// SPEC §5.1: a grant may only be as broad as the route's policy allows. Every binding the policy names must be
/// given, limits come from the policy, and nobody approves their own action.
/// </summary>
internal static class GrantRequestValidator
{
    private static string? Unprefixed(string field, string? value, GatewaySettings settings)
    {
        var prefixes = settings.Tokens.Issuers.Select(i => i.SubjectPrefix).Where(p => p.Length > 0).ToList();
        if (value is null || prefixes.Count == 0 || prefixes.Any(p => value.StartsWith(p, StringComparison.Ordinal)))
        {
            return null;
        }

        return $"{field}: '{value}' names no token issuer's {field}: each is written with its issuer's SubjectPrefix ({string.Join(", ", prefixes.Select(p => $"'{p}'"))})";
    }

    public static GrantDraft Validate(CreateGrantRequest body, ApiCaller caller, GatewaySettings settings, DateTimeOffset now)
    {
        if (string.IsNullOrWhiteSpace(body.Route))
        {
            return Invalid("route: required");
        }

        if (!settings.RoutePolicies.TryGetValue(body.Route, out var policy))
        {
            return Invalid($"route: unknown route '{body.Route}'");
        }

        if (!policy.RequiresGrant)
        {
            return Invalid($"route: policy '{policy.Name}' of route '{body.Route}' does not use grants");
        }

        var bound = Bindings.None;
        foreach (var (name, flag) in BindingNames.All)
        {
            var given = flag switch
            {
                Bindings.Subject => body.Subject is not null,
                Bindings.Session => body.Session is not null,
                Bindings.Token => body.TokenHash is not null,
                Bindings.Workload => body.Workload is not null,
                Bindings.Origin => body.Origin is { Count: > 0 },
                _ => body.Request is not null || body.RequestHash is not null,
            };
            if (given && ((flag == Bindings.Workload && !policy.NeedsWorkload) || (flag == Bindings.Request && (policy.Bind & flag) == 0)))
            {
                // The gateway resolves the workload only where the policy binds it or demands its claims, and hashes the
                // request only where the policy binds it (steps 3 and 4 come before the grant is read): such a grant
                // could never be used, and with RevokeOn its rightful caller's first attempt would burn it.
                return Invalid($"{FieldOf(name)}: policy '{policy.Name}' of route '{body.Route}' does not bind {name}, so the gateway never checks it on this route");
            }

            if (given)
            {
                bound |= flag;
            }
            else if ((policy.Bind & flag) != 0)
            {
                return Invalid($"{FieldOf(name)}: required by policy '{policy.Name}' (it binds {name})");
            }
        }

        if (body.Subject is not null && string.Equals(body.Subject, caller.Subject, StringComparison.Ordinal))
        {
            return new GrantDraft(null, ReasonCodes.SelfApproval, "the caller cannot approve an action of its own subject");
        }

        if (caller.Aal < policy.MinimumApprovalAal)
        {
            return new GrantDraft(null, ReasonCodes.InsufficientAal, null, policy.MinimumApprovalAal);
        }

        if (body.TokenHash is not null && !Hashes.IsWellFormed(body.TokenHash))
        {
            return Invalid("tokenHash: expected 'sha256:' + 43 base64url characters");
        }

        // Bounded, so that a grant cannot grow every view, listing and store record without limit.
        if ((TooLong("subject", body.Subject, MaxIdentifier) ?? TooLong("session", body.Session, MaxIdentifier)
            ?? TooLong("workload", body.Workload, MaxIdentifier)) is { } tooLong)
        {
            return Invalid(tooLong);
        }

        if (body.Origin is { Count: > MaxOrigins })
        {
            return Invalid($"origin: at most {MaxOrigins} entries");
        }

        if (body.Request is { } limits
            && (TooLong("request.method", limits.Method, 32) ?? TooLong("request.path", limits.Path, MaxTarget)
                ?? TooLong("request.query", limits.Query, MaxTarget)) is { } tooLongRequest)
        {
            return Invalid(tooLongRequest);
        }

        if (Blank(body.Subject) || Blank(body.Session) || Blank(body.Workload))
        {
            return Invalid($"{(Blank(body.Subject) ? "subject" : Blank(body.Session) ? "session" : "workload")}: must not be empty");
        }

        // With subject prefixes (required once two issuers are trusted) a subject or session without one is no token's:
        // the grant could never be used, and its issuer would not learn why.
        if ((Unprefixed("subject", body.Subject, settings) ?? Unprefixed("session", body.Session, settings)) is { } unprefixed)
        {
            return Invalid(unprefixed);
        }

        var origins = new List<string>();
        for (var i = 0; i < (body.Origin?.Count ?? 0); i++)
        {
            if (body.Origin![i] is null)
            {
                return Invalid($"origin[{i}]: malformed JSON or wrong type (an address or a range)");
            }

            if (!GrantRules.TryParseNetwork(body.Origin[i], out var network, out var problem))
            {
                return Invalid($"origin[{i}]: {problem}");
            }

            origins.Add(network.ToString());
        }

        RequestHash? requestHash = null;
        string? method = null, path = null;
        if (body.Request is not null && body.RequestHash is not null)
        {
            return Invalid("request: give either request or requestHash, not both");
        }

        if (body.Request is { } spec)
        {
            var computed = Compute(spec, policy);
            if (computed.Error is not null)
            {
                return Invalid(computed.Error);
            }

            requestHash = computed.Hash;
            method = spec.Method!.ToUpperInvariant();
            path = spec.Path!;
            if (settings.Routes.FirstOrDefault(r => string.Equals(r.RouteId, body.Route, StringComparison.OrdinalIgnoreCase)) is { } route
                && RouteTargets.Problem(route, method, path) is { } unreachable)
            {
                return Invalid(unreachable);
            }
        }
        else if (body.RequestHash is not null && !Hashes.IsWellFormed(body.RequestHash))
        {
            return Invalid("requestHash: expected 'sha256:' + 43 base64url characters");
        }

        var maxUses = body.MaxUses ?? 1;
        if (maxUses < 1 || maxUses > policy.MaxUses)
        {
            return Invalid($"maxUses: must be from 1 to {policy.MaxUses} (policy '{policy.Name}')");
        }

        var ttl = body.TtlSeconds is { } seconds ? TimeSpan.FromSeconds(seconds) : policy.MaxTtl;
        if (ttl <= TimeSpan.Zero || ttl > policy.MaxTtl)
        {
            return Invalid($"ttlSeconds: must be from 1 to {(int)policy.MaxTtl.TotalSeconds} (policy '{policy.Name}' MaxTtl)");
        }

        if (body.NotBefore is { } nbf && nbf > now.AddDays(30))
        {
            return Invalid("notBefore: at most 30 days ahead");
        }

        if (body.Reason is { Length: > 1024 })
        {
            return Invalid("reason: at most 1024 characters");
        }

        // The window is set by the store's clock, not this gateway's (GrantRecord.Ttl): it opens at the later of the store's
        // now and notBefore (break-glass for a planned change), and lasts ttlSeconds from then, never more than MaxTtl.
        var active = policy.Approvals <= 1;
        return new GrantDraft(new GrantRecord
        {
            Id = GrantIds.New(),
            Route = body.Route,
            Policy = policy.Name,
            Status = active ? GrantStatus.Active : GrantStatus.Pending,
            Subject = body.Subject,
            Session = body.Session,
            TokenHash = body.TokenHash,
            Workload = body.Workload,
            Origins = origins,
            RequestHash = requestHash?.Hash ?? body.RequestHash,
            Digests = requestHash?.Digests,
            Method = method,
            Path = path,
            Query = body.Request?.Query is { Length: > 0 } query && (query.StartsWith('?') ? query[1..] : query) is { Length: > 0 } raw ? raw : null,
            MaxUses = maxUses,
            UsesRemaining = maxUses,
            CreatedAt = now,
            Ttl = ttl,
            NotBefore = body.NotBefore,
            Reason = body.Reason,
            CreatedBy = caller.Subject,
            ApprovalsRequired = policy.Approvals,
            Approvers = [caller.Subject],
            ApprovalAal = caller.Aal,
            Bound = bound,
        }, null, null);
    }

    private const int MaxIdentifier = 1024;
    private const int MaxOrigins = 64;
    private const int MaxTarget = 8192;

    /// <summary>"field: at most N characters" when <paramref name="value"/> is longer, else null.</summary>
    private static string? TooLong(string field, string? value, int max) =>
        value is not null && value.Length > max ? $"{field}: at most {max} characters" : null;

    private static (RequestHash? Hash, string? Error) Compute(RequestSpec spec, AssurancePolicy policy)
    {
        if (string.IsNullOrWhiteSpace(spec.Method) || !spec.Method.All(char.IsAsciiLetter))
        {
            return (null, "request.method: required, letters only");
        }

        if (HttpMethods.IsConnect(spec.Method))
        {
            // The gateway refuses a CONNECT before using any grant: the forwarder cannot send one.
            return (null, "request.method: CONNECT is never forwarded, so the grant could never be used");
        }

        if (string.IsNullOrEmpty(spec.Path) || spec.Path[0] != '/')
        {
            return (null, "request.path: required, starting with '/'");
        }

        if (CanonicalRequest.PathProblem(spec.Path) is { } pathProblem)
        {
            // A grant for a path no request the gateway lets through can have could never be used.
            return (null, $"request.path: {pathProblem}");
        }

        var headers = new Dictionary<string, StringValues>(StringComparer.Ordinal);
        foreach (var (name, value) in spec.Headers ?? new Dictionary<string, JsonElement>())
        {
            var lower = name.ToLowerInvariant();
            if (headers.ContainsKey(lower))
            {
                // Two JSON members, one header: which value did the issuer mean?
                return (null, $"request.headers.{name}: given twice (header names ignore case)");
            }
            if (!policy.BoundHeaders.Contains(lower))
            {
                // Refused rather than ignored: an issuer who believes a header is protected must learn that it is not.
                return (null, $"request.headers.{name}: not a bound header of policy '{policy.Name}' (bound: {string.Join(", ", policy.BoundHeaders)})");
            }

            // A JsonElement keeps the raw bytes and decodes them only when read: a value that is not UTF-8 (escaped
            // lone surrogates are decoded to U+FFFD, raw bytes are not) throws here, past the serializer's checks, and
            // was a 500.
            if (ReadHeaderValues(value, out var values) is { } problem)
            {
                return (null, $"request.headers.{name}: {problem}");
            }

            headers[lower] = values;

            if (CanonicalRequest.PresentButEmpty(headers[lower]))
            {
                // The gateway refuses a bound header sent empty (it hashes like an absent one): leaving it out is the request.
                return (null, $"request.headers.{name}: empty; leave it out (an empty bound header hashes like an absent one, and the gateway refuses it)");
            }
        }

        if (spec.Query is { } query && CanonicalRequest.QueryProblem(query) is { } queryProblem)
        {
            // As for the path: a grant for a query the gateway never forwards as written could never be used.
            return (null, $"request.query: {queryProblem}");
        }

        byte[] body;
        try
        {
            body = spec.Body is null ? [] : Convert.FromBase64String(spec.Body);
        }
        catch (FormatException)
        {
            return (null, "request.body: not valid base64");
        }

        if (body.Length > policy.MaxBodyBytes)
        {
            return (null, $"request.body: larger than the policy's MaxBodyBytes ({policy.MaxBodyBytes})");
        }

        var hash = CanonicalRequest.Compute(spec.Method, spec.Path, spec.Query ?? string.Empty, policy.BoundHeaders,
            name => headers.TryGetValue(name, out var v) ? v : StringValues.Empty, body);
        return (hash, null);
    }

    private static bool Blank(string? value) => value is not null && string.IsNullOrWhiteSpace(value);

    private static string FieldOf(string binding) => binding switch
    {
        BindingNames.Token => "tokenHash",
        BindingNames.Request => "request",
        _ => binding,
    };

    private static GrantDraft Invalid(string detail) => new(null, ReasonCodes.InvalidRequest, detail);

    /// <summary>A bound header's value or values; null, or what is wrong with them.</summary>
    private static string? ReadHeaderValues(JsonElement value, out StringValues values)
    {
        values = StringValues.Empty;
        if (value.ValueKind is not JsonValueKind.String
            && !(value.ValueKind is JsonValueKind.Array && value.EnumerateArray().All(v => v.ValueKind == JsonValueKind.String)))
        {
            return "must be a string or an array of strings";
        }

        try
        {
            values = value.ValueKind is JsonValueKind.String
                ? value.GetString()
                : new StringValues([.. value.EnumerateArray().Select(v => v.GetString())]);
            return null;
        }
        catch (InvalidOperationException)
        {
            return "not valid UTF-8";
        }
    }
}
