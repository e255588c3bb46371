using System.Buffers;
using System.Collections.Frozen;
using System.Diagnostics;
using System.Net;
using System.Text.Json;
using AssuranceGateway.Configuration;
using AssuranceGateway.Diagnostics;
using AssuranceGateway.Grants;
using AssuranceGateway.Requests;
using AssuranceGateway.Tokens;
using AssuranceGateway.Workload;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Logging;
using Yarp.ReverseProxy.Forwarder;
using Yarp.ReverseProxy.Model;

namespace AssuranceGateway.Enforcement;

/// <summary>
/// Runs in YARP's proxy pipeline, after the route is matched and before anything is forwarded. It decides in the
/// order of SPEC §2 and stops at the first failure. Every step before the last only reads; the last one (the
/// atomic consume in the store) is the only one that writes, so a request denied earlier never costs a grant use.
/// </summary>
public sealed partial class AssuranceMiddleware
{
    public const string AssuranceIdHeader = "Assurance-Id";
    public const string EvidenceHeader = "Assurance-Evidence";

    private readonly RequestDelegate _next;
    private readonly GatewayConfigState _config;
    private readonly IGrantStore _store;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly IEvidenceSigner? _signer;
    private readonly Microsoft.AspNetCore.Routing.IInlineConstraintResolver _constraints;

    public AssuranceMiddleware(
        RequestDelegate next,
        GatewayConfigState config,
        IGrantStore store,
        TimeProvider time,
        ILogger<AssuranceMiddleware> logger,
        Microsoft.AspNetCore.Routing.IInlineConstraintResolver constraints,
        IEvidenceSigner? signer = null)
    {
        _constraints = constraints;
        _next = next;
        _config = config;
        _store = store;
        _time = time;
        _logger = logger;
        _signer = signer;
    }

    public async Task InvokeAsync(HttpContext context)
    {
        // The configuration generation of the route YARP matched: its routes and its policies belong together.
        var route = context.GetReverseProxyFeature().Route.Config;
        var runtime = _config.RuntimeFor(route);
        var policy = runtime?.Settings.PolicyForRoute(route.RouteId);
        runtime ??= _config.Current;
        var start = Stopwatch.GetTimestamp();
        var outer = Activity.Current;
        using var activity = EvidenceRecorder.Start(context);
        var origin = OriginResolver.Resolve(context, runtime.Settings.Workload.TrustedProxies);
        var decision = new AssuranceDecision
        {
            Route = route.RouteId,
            Policy = policy ?? AssurancePolicy.Passthrough,
            TraceId = (activity ?? Activity.Current)?.TraceId.ToHexString(),
            SpanId = activity?.SpanId.ToHexString(),
            // Known from the connection before any token is read: a burst of forged tokens says where it came from.
            Origin = origin?.ToString(),
        };
        context.Features.Set(decision);

        // Refused on every route, whatever its policy or mode: the upstream would act on another path than the one routed.
        var neverForwarded = TargetNeverForwarded(context, runtime.Settings.Routes, route.RouteId);
        var leavesItsRoute = neverForwarded is not null;
        if (leavesItsRoute)
        {
            decision.Reason = ReasonCodes.RequestAmbiguous;
            decision.Detail = neverForwarded;
        }
        else if (policy is null)
        {
            // Routed by a configuration generation that is no longer kept (several reloads while this request waited):
            // fail closed rather than guess.
            decision.Reason = ReasonCodes.AssuranceRequired;
            decision.Detail = "the configuration this request was routed by is no longer in force; retry";
        }
        else if (policy.RequiresToken)
        {
            try
            {
                await DecideAsync(context, runtime, decision, origin, activity).ConfigureAwait(false);
            }
            catch (StoreUnavailableException e)
            {
                decision.Reason = ReasonCodes.StoreUnavailable;
                decision.Detail = e.OutcomeUnknown ? "the grant store did not answer in time" : "the grant store is unavailable";
            }
            catch (BadHttpRequestException e) when (e.StatusCode == StatusCodes.Status413PayloadTooLarge)
            {
                decision.Reason = ReasonCodes.BodyTooLarge;
                decision.Detail = "request body exceeds the server limit";
            }
            catch (BadHttpRequestException e)
            {
                // Kestrel could not read the body (framing it cannot parse, data too slow): there is no exact request
                // to judge. Kestrel's own message is not echoed: it may quote what the client sent.
                decision.Reason = ReasonCodes.RequestAmbiguous;
                decision.Detail = e.StatusCode == StatusCodes.Status408RequestTimeout
                    ? "the request body arrived too slowly to be read"
                    : "the request body could not be read (malformed framing)";
            }
            catch (Exception e) when (e is Microsoft.AspNetCore.Connections.ConnectionResetException
                || (e is IOException or OperationCanceledException && context.RequestAborted.IsCancellationRequested))
            {
                // The client went away mid-request: nobody to answer, but the denial is still evidence. A reset over
                // HTTP/1.1 reaches the body read before RequestAborted is signalled.
                decision.Reason = ReasonCodes.RequestAmbiguous;
                decision.Detail = "the client went away before the request was complete";
            }
        }
        else
        {
            decision.Reason = ReasonCodes.Ok;
        }

        if (!decision.Allowed && decision.GrantId is not null && !decision.GrantConsulted)
        {
            await RecordEarlyDenialAsync(decision).ConfigureAwait(false);
        }

        EvidenceRecorder.Complete(activity, decision, start);
        if (!decision.Allowed)
        {
            Log.Denied(_logger, decision);
        }

        activity?.Stop();
        Activity.Current = outer; // YARP's span: the forwarded request's client span stays its child
        if (decision.Allowed || (decision.Shadow && !leavesItsRoute))
        {
            PrepareForwarding(context, runtime.Settings, decision);
            await _next(context).ConfigureAwait(false);
            if (decision.Allowed && !decision.Shadow && decision.GrantId is not null
                && context.Features.Get<IForwarderErrorFeature>() is { Error: not ForwarderError.None } failure)
            {
                await ForwardFailedAsync(context, decision, failure.Error).ConfigureAwait(false);
            }

            return;
        }

        if (!context.RequestAborted.IsCancellationRequested)
        {
            await ProblemResponses.WriteDenialAsync(context, decision).ConfigureAwait(false);
        }
    }

    private async Task DecideAsync(HttpContext context, GatewayRuntime runtime, AssuranceDecision decision, IPAddress? origin, Activity? activity)
    {
        var policy = decision.Policy;
        var settings = runtime.Settings;
        var aborted = context.RequestAborted;

        // A well-formed grant id is named by every denial from here on, also one decided before step 5 (SPEC §2, §4.3):
        // the client, the span, the log and the grant's record all say which grant the attempt was made with.
        var ids = context.Request.Headers[AssuranceIdHeader];
        if (policy.RequiresGrant && ids.Count == 1 && GrantIds.IsWellFormed(ids[0]))
        {
            decision.GrantId = ids[0];
        }

        // Step 1: the access token.
        var token = await ValidateTokenAsync(context, runtime.AccessTokens, decision, aborted).ConfigureAwait(false);
        if (token is null)
        {
            return;
        }

        // Step 2: authentication strength (RFC 9470).
        if (token.Aal < policy.MinimumAal)
        {
            decision.Reason = ReasonCodes.InsufficientAal;
            decision.Detail = $"authentication level {token.Aal} is below the required {policy.MinimumAal}";
            decision.AcceptableAcr = AcceptableAcr(settings.Tokens, policy.MinimumAal);
            return;
        }

        // Step 3: the workload, and claims the policy demands of it.
        WorkloadIdentity? workload = null;
        if (policy.NeedsWorkload)
        {
            var check = await runtime.Workloads.ResolveAsync(context, token, aborted).ConfigureAwait(false);
            if (check.Identity is null)
            {
                decision.Reason = check.Reason!;
                decision.Detail = check.Detail;
                return;
            }

            workload = check.Identity;
            decision.WorkloadId = workload.Id;
            decision.WorkloadSource = WorkloadResolver.Name(workload.Source);
            if (!ClaimsSatisfied(policy, workload.Token ?? token, out var claim))
            {
                decision.Reason = ReasonCodes.ClaimsMismatch;
                decision.Detail = $"claim '{claim}' does not have a required value";
                return;
            }
        }

        if (!policy.RequiresGrant)
        {
            decision.Reason = ReasonCodes.Ok;
            if (policy.Mode != PolicyMode.Shadow && IsProtocolUpgrade(context))
            {
                // A tunnel lasts no longer than the credentials that opened it would still be accepted: the tokens until
                // exp plus the skew, a client certificate until its notAfter (judged without skew, as the resolver does).
                var expires = workload?.Token is { } svid && svid.ExpiresAt < token.ExpiresAt ? svid.ExpiresAt : token.ExpiresAt;
                var closeAt = new DateTimeOffset(expires, TimeSpan.Zero) + settings.Tokens.ClockSkew;
                if (workload?.CertificateNotAfter is { } notAfter && notAfter < closeAt)
                {
                    closeAt = notAfter;
                }
                var route = decision.Route;
                var tokenHash = token.TokenHash;
                TunnelDeadline.Arm(context, closeAt, _time, () => Log.TunnelClosedAtExpiry(_logger, route, tokenHash, closeAt));
            }

            return;
        }

        // A protocol upgrade turns the connection into a tunnel as soon as the upstream agrees: what flows through it is
        // covered by no grant, counts as no further use, and outlives the grant's expiry and any revocation. A grant approves
        // one request, whether or not the policy binds its content, so a route that needs one never forwards an upgrade
        // (one that should carry tunnels takes a token-only policy). Refused before the body is read or a grant is used or
        // requested; a grant named in Assurance-Id records the denial.
        if (IsProtocolUpgrade(context))
        {
            decision.Reason = ReasonCodes.RequestAmbiguous;
            decision.Detail = "a protocol upgrade (HTTP/1.1 Upgrade, HTTP/2 extended CONNECT) would open a tunnel whose traffic no approval covers "
                + "and that outlives it: a route that requires a grant never forwards one";
            return;
        }

        // Step 4: the canonical request, read once and kept to be forwarded byte for byte.
        RequestHash? requestHash = null;
        if ((policy.Bind & Bindings.Request) != 0)
        {
            // What the hash covers must be what the upstream receives: refused before the body is read or any grant
            // is touched.
            var (path, query) = RawTarget(context);
            if (Ambiguity(context, path, query, policy.BoundHeaders) is { } ambiguity)
            {
                decision.Reason = ReasonCodes.RequestAmbiguous;
                decision.Detail = ambiguity;
                return;
            }

            // The policy's limit rules, not Kestrel's server-wide one (30 MB by default), which would otherwise refuse a
            // body the policy allows. One byte more, so that RequestBody still sees a body over the policy's limit.
            if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false, MaxRequestBodySize: { } server } limit
                && server <= policy.MaxBodyBytes)
            {
                limit.MaxRequestBodySize = policy.MaxBodyBytes + 1;
            }

            var body = await RequestBody.ReadAsync(context.Request, policy.MaxBodyBytes, aborted).ConfigureAwait(false);
            if (body is null)
            {
                decision.Reason = ReasonCodes.BodyTooLarge;
                decision.Detail = $"request body exceeds {policy.MaxBodyBytes} bytes";
                return;
            }

            var headers = context.Request.Headers;
            foreach (var name in policy.BoundHeaders)
            {
                if (CanonicalRequest.PresentButEmpty(headers[name]))
                {
                    // "name:" is how the hash writes an absent header too: the approver saw no such header.
                    decision.Reason = ReasonCodes.RequestAmbiguous;
                    decision.Detail = $"bound header '{name}' is present but empty, which the request hash cannot tell from absent: leave it out";
                    return;
                }

                if (headers[name].Count > 1 && JoinedOtherwise.TryGetValue(name, out var separator))
                {
                    // Two Cookie lines "a=1" and "b=2" hash as "a=1,b=2", as one line "a=1,b=2" does, and reach the upstream
                    // as "a=1; b=2" (two cookies), where the one line stays one cookie whose value holds a comma.
                    decision.Reason = ReasonCodes.RequestAmbiguous;
                    decision.Detail = $"bound header '{name}' is sent in {headers[name].Count} field lines, which the proxy joins with '{separator}' "
                        + "for the upstream while the request hash joins them with ',': send it in one line";
                    return;
                }
            }

            requestHash = CanonicalRequest.Compute(context.Request.Method, path, query, policy.BoundHeaders, name => headers[name], body.Span);
            decision.RequestHash = requestHash.Value.Hash;
        }

        // Requests the forwarder cannot send are refused before a grant is used or a challenge creates one: the use would be
        // spent on a 502 for an action that never ran, and an approver would approve a request that can never be sent.
        if (HttpMethods.IsConnect(context.Request.Method))
        {
            // Kestrel accepts "CONNECT /path" (origin form) and the route matches.
            decision.Reason = ReasonCodes.RequestAmbiguous;
            decision.Detail = "CONNECT cannot be forwarded to the upstream: refused before any grant is used or requested";
            return;
        }

        if (UnsendableHeader(context) is { } unsendable)
        {
            decision.Reason = ReasonCodes.RequestAmbiguous;
            decision.Detail = $"header '{JwtInspector.Printable(unsendable)}' has characters beyond ASCII, which the upstream connection cannot send "
                + "(the cluster's HttpClient.RequestHeaderEncoding would let it): refused before any grant is used or requested";
            return;
        }

        // A reload applied since this request was routed (its body can take minutes to arrive) may have revoked what vouched
        // for it: checked again before any grant is used or requested.
        if (_config.Current is var now && !ReferenceEquals(now, runtime)
            && await NoLongerTrustedAsync(context, now, policy, workload, origin, aborted).ConfigureAwait(false) is { } revoked)
        {
            decision.Reason = revoked.Reason;
            decision.Detail = revoked.Detail;
            return;
        }

        // Step 5: the grant id.
        if (ids.Count == 0)
        {
            if (policy.OnMissing == MissingGrantAction.Challenge)
            {
                await ChallengeAsync(context, decision, token, workload, origin, requestHash, activity).ConfigureAwait(false);
            }
            else
            {
                decision.Reason = ReasonCodes.AssuranceRequired;
                decision.Detail = "this action needs an approval: send its id in Assurance-Id";
            }

            return;
        }

        if (ids.Count > 1 || !GrantIds.IsWellFormed(ids[0]))
        {
            decision.Reason = ReasonCodes.AssuranceMalformed;
            decision.Detail = "Assurance-Id must be 1-64 characters of A-Z a-z 0-9 _ -";
            return;
        }

        decision.GrantId = ids[0];

        // Step 6: every binding checked and the use consumed, in one atomic store operation.
        var request = new ConsumeRequest
        {
            GrantId = ids[0]!,
            Route = decision.Route,
            Required = policy.Bind,
            Subject = token.Subject,
            Session = token.Session,
            TokenHash = token.TokenHash,
            Workload = workload?.Id,
            Origin = origin,
            RequestHash = requestHash?.Hash,
            Components = requestHash?.Components,
            // In shadow mode too: a dry run writes nothing, and the evidence then says the grant would have been burned.
            RevokeOn = policy.RevokeOn,
            MinimumApprovals = policy.Approvals,
            MinimumApprovalAal = policy.MinimumApprovalAal,
            TraceId = activity is null ? null : decision.TraceId,
            SpanId = decision.SpanId,
            DryRun = policy.Mode == PolicyMode.Shadow,
        };

        var storeStart = Stopwatch.GetTimestamp();
        ConsumeResult result;
        decision.GrantConsulted = true;
        try
        {
            result = await _store.ConsumeAsync(request, aborted).ConfigureAwait(false);
        }
        finally
        {
            EvidenceRecorder.RecordStore(storeStart, "consume");
        }

        decision.Reason = result.Reason;
        decision.GrantStatus = result.Status;
        decision.UsesRemaining = result.Reason == ReasonCodes.GrantNotFound ? null : result.UsesRemaining;
        decision.Mismatch = result.Mismatch;
        decision.Revoked = result.Revoked;
        // Only a replay's evidence points at the first use: an allowed request never reads (so never parses) it.
        decision.FirstUse = result.Reason == ReasonCodes.Replayed ? result.FirstUse : null;
        decision.Approvers = result.Approvers;
        decision.ApprovalAal = result.Reason == ReasonCodes.GrantNotFound ? null : result.ApprovalAal;
        if (!result.Allowed)
        {
            decision.Detail = result.Reason switch
            {
                ReasonCodes.RequestMismatch when result.Mismatch.Count > 0 => "the request differs from the approved one in: " + string.Join(", ", result.Mismatch),
                ReasonCodes.RequestMismatch => "the request differs from the approved one (the grant was issued with a request hash only, so which part differs is not known)",
                ReasonCodes.SelfApproval => "this grant was approved by the caller itself: an approver may not perform the action",
                ReasonCodes.Replayed => "this approval has no uses left",
                ReasonCodes.GrantPending when result.Status is not GrantStatus.Pending =>
                    "the grant was approved by fewer approvers, or weaker ones, than this route's policy now requires; issue it again",
                ReasonCodes.GrantUnreadable => "the grant's record in the store has a status or field this gateway cannot read; it is never used",
                _ => null,
            };
        }
    }

    /// <summary>
    /// Why the configuration in force now (<paramref name="now"/>) no longer accepts the credentials this request was
    /// decided with, or null. A request is decided by the generation YARP routed it with, and it may wait on its body for
    /// minutes: a reload applied meanwhile that removed the key of its token or workload JWT from a JWKS file, the CA of
    /// its certificate from ClientCaFile, or the proxy its origin was taken from from TrustedProxies revokes them for this
    /// request too, before its grant is used. This can only refuse: the policy stays the request's own generation's.
    /// </summary>
    private static async ValueTask<(string Reason, string Detail)?> NoLongerTrustedAsync(
        HttpContext context, GatewayRuntime now, AssurancePolicy policy, WorkloadIdentity? workload, IPAddress? origin, CancellationToken aborted)
    {
        const string Since = "no longer trusted by the configuration applied while this request was read";
        var check = BearerToken(context.Request, out _) is { } bearer
            ? await now.AccessTokens.ValidateAsync(bearer, aborted).ConfigureAwait(false)
            : TokenCheck.Fail("no access token");
        if (check.Token is not { } token)
        {
            return (ReasonCodes.TokenInvalid, $"the access token is {Since}: {check.Failure}");
        }

        if (policy.NeedsWorkload)
        {
            var again = await now.Workloads.ResolveAsync(context, token, aborted).ConfigureAwait(false);
            if (again.Identity is not { } identity || !string.Equals(identity.Id, workload?.Id, StringComparison.Ordinal))
            {
                return (ReasonCodes.WorkloadInvalid, $"the workload identity is {Since}: {again.Detail ?? "it names another workload now"}");
            }
        }

        return Equals(OriginResolver.Resolve(context, now.Settings.Workload.TrustedProxies), origin)
            ? null
            : (ReasonCodes.OriginMismatch, $"the network origin is {Since} (Workload:TrustedProxies changed)");
    }

    /// <summary>
    /// A request that named a grant and was denied before the store was asked (steps 2-5: authentication strength,
    /// workload, claims, body, an ambiguous request) leaves a denied event on that grant, as a step-6 denial does: a
    /// leaked grant id tried from elsewhere shows on its own record. Not for a request without a valid token (steps 1
    /// and the unauthenticated failures): the store is never written on behalf of an unauthenticated caller, who could
    /// otherwise make the gateway write to it at line rate; the span and the log line name the grant for those. Not in
    /// shadow mode (it writes nothing) and not for store_unavailable. Best effort: not retried when the store fails, and
    /// kept only while the record is short (GrantRules.MaxEarlyDenials).
    /// </summary>
    private async Task RecordEarlyDenialAsync(AssuranceDecision decision)
    {
        if (decision.Subject is null || decision.Shadow || decision.Reason == ReasonCodes.StoreUnavailable)
        {
            return;
        }

        var denied = new GrantEvent
        {
            Type = GrantEvent.Denied, Reason = decision.Reason, TraceId = decision.TraceId, SpanId = decision.SpanId,
            Workload = decision.WorkloadId, Origin = decision.Origin,
        };
        var storeStart = Stopwatch.GetTimestamp();
        try
        {
            await _store.AppendEventAsync(decision.GrantId!, denied, CancellationToken.None).ConfigureAwait(false);
        }
        catch (StoreUnavailableException)
        {
            // Logged by the store; best effort, not retried (the span and the log line keep the denial). It stands as decided.
        }
        finally
        {
            EvidenceRecorder.RecordStore(storeStart, "append");
        }
    }

    private static async ValueTask<ValidatedToken?> ValidateTokenAsync(
        HttpContext context, TokenValidator validator, AssuranceDecision decision, CancellationToken cancellationToken)
    {
        var token = BearerToken(context.Request, out var malformed);
        if (token is null)
        {
            decision.Reason = malformed ? ReasonCodes.TokenInvalid : ReasonCodes.TokenMissing;
            decision.Detail = malformed ? "Authorization must be one 'Bearer <JWT>'" : "send an access token as 'Authorization: Bearer <JWT>'";
            return null;
        }

        var check = await validator.ValidateAsync(token.Value, cancellationToken).ConfigureAwait(false);
        if (check.Token is not { } valid)
        {
            decision.Reason = ReasonCodes.TokenInvalid;
            decision.Detail = check.Failure;
            // The hash of a well-formed token that failed (expired, wrong key...): it ties the refusal to a grant's tokenHash
            // and groups a burst of one token. Never the token itself.
            decision.TokenHash = check.TokenHash;
            return null;
        }

        decision.Subject = valid.Subject;
        decision.Session = valid.Session;
        decision.Aal = valid.Aal;
        decision.TokenHash = valid.TokenHash;
        return valid;
    }

    /// <summary>The bearer token of the request, or null (with <paramref name="malformed"/> when one was attempted).</summary>
    public static ReadOnlyMemory<char>? BearerToken(HttpRequest request, out bool malformed)
    {
        malformed = false;
        var values = request.Headers.Authorization;
        if (values.Count == 0)
        {
            return null;
        }

        var value = values[0];
        if (values.Count > 1 || value is null || !value.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
        {
            malformed = values.Count > 1 || (value?.StartsWith("Bearer", StringComparison.OrdinalIgnoreCase) ?? false);
            return null;
        }

        // A slice of the header value, not a copy: a cached token is looked up from it as it is.
        var token = value.AsMemory(7).Trim();
        if (token.IsEmpty)
        {
            malformed = true;
            return null;
        }

        return token;
    }

    /// <summary>SPEC §5.3: a pending grant bound to exactly this request, for an approver to activate.</summary>
    private async Task ChallengeAsync(
        HttpContext context, AssuranceDecision decision, ValidatedToken token, WorkloadIdentity? workload, IPAddress? origin,
        RequestHash? requestHash, Activity? activity)
    {
        var policy = decision.Policy;
        if (policy.Mode == PolicyMode.Shadow)
        {
            // Shadow mode writes nothing: it only says what enforcement would have done.
            decision.Reason = ReasonCodes.AssuranceRequired;
            decision.Detail = "shadow mode: an approval would have been requested";
            return;
        }

        // A binding the policy names but this request lacks would make a grant no request can use (the API refuses one):
        // no approver is asked for it.
        var missing = (policy.Bind & Bindings.Session) != 0 && token.Session is null ? "a session (the token has no sid)"
            : (policy.Bind & Bindings.Origin) != 0 && origin is null ? "a network origin (none could be resolved)"
            : null;
        if (missing is not null)
        {
            decision.Reason = ReasonCodes.AssuranceRequired;
            decision.Detail = $"this action needs an approval bound to {missing}: no approval can be requested for this request";
            return;
        }

        var (path, query) = RawTarget(context);
        var grant = new GrantRecord
        {
            Id = GrantIds.New(),
            Route = decision.Route,
            Policy = policy.Name,
            Status = GrantStatus.Pending,
            Subject = token.Subject,
            Session = (policy.Bind & Bindings.Session) != 0 ? token.Session : null,
            TokenHash = (policy.Bind & Bindings.Token) != 0 ? token.TokenHash : null,
            Workload = workload?.Id,
            Origins = (policy.Bind & Bindings.Origin) != 0 && origin is not null ? [GrantRules.CidrOf(origin)] : [],
            RequestHash = requestHash?.Hash,
            Digests = requestHash?.Digests,
            Method = context.Request.Method,
            Path = path,
            Query = query.Length > 0 ? query : null,
            MaxUses = 1,
            UsesRemaining = 1,
            // Counted from the store's clock, as every grant's window (GrantRecord.Ttl).
            Ttl = policy.PendingTtl,
            ApprovalsRequired = policy.Approvals,
            // The subject always, and the workload whenever one is recorded: the approver is shown both as part of the action.
            Bound = policy.Bind | Bindings.Subject | (workload is not null ? Bindings.Workload : Bindings.None),
            Reason = "challenged by the gateway",
            CreatedBy = "gateway",
        };

        var created = new GrantEvent
        {
            Type = GrantEvent.Created, TraceId = activity?.TraceId.ToHexString(), SpanId = decision.SpanId, Actor = "gateway",
            Workload = workload?.Id, Origin = origin?.ToString(),
        };
        var storeStart = Stopwatch.GetTimestamp();
        GrantChange outcome;
        try
        {
            var result = await _store.CreateAsync(grant, created, policy.MaxPendingPerSubject, context.RequestAborted).ConfigureAwait(false);
            outcome = result.Outcome;
        }
        finally
        {
            EvidenceRecorder.RecordStore(storeStart, "create");
        }

        if (outcome == GrantChange.TooMany)
        {
            decision.Reason = ReasonCodes.TooManyPending;
            decision.Detail = $"at most {policy.MaxPendingPerSubject} approvals may wait per subject";
            return;
        }

        decision.Reason = ReasonCodes.AssuranceRequired;
        decision.Detail = "approval requested: repeat this exact request with Assurance-Id once it is approved";
        decision.ChallengeGrantId = grant.Id;
        decision.GrantStatus = GrantStatus.Pending;
    }

    private static bool ClaimsSatisfied(AssurancePolicy policy, ValidatedToken source, out string? failed)
    {
        foreach (var (claim, accepted) in policy.RequireClaims)
        {
            var values = source.ClaimValues(claim);
            var ok = false;
            foreach (var value in values)
            {
                if (Array.IndexOf(accepted, value) >= 0)
                {
                    ok = true;
                    break;
                }
            }

            if (!ok)
            {
                failed = claim;
                return false;
            }
        }

        failed = null;
        return true;
    }

    /// <summary>The <c>acr</c> values whose AAL meets <paramref name="minimum"/>, weakest first (RFC 9470 <c>acr_values</c>).</summary>
    internal static List<string> AcceptableAcr(TokenSettings tokens, int minimum)
    {
        var acceptable = new List<KeyValuePair<string, int>>();
        foreach (var entry in tokens.AalMap)
        {
            if (entry.Value >= minimum)
            {
                acceptable.Add(entry);
            }
        }

        acceptable.Sort((a, b) => a.Value != b.Value ? a.Value.CompareTo(b.Value) : string.CompareOrdinal(a.Key, b.Key));
        return acceptable.ConvertAll(e => e.Key);
    }

    /// <summary>
    /// Why the request's target is never forwarded, on any route whatever its policy or mode, or null. The one place that
    /// says so (README, "How a request is decided"); each case is a path that the gateway routes one way and that the
    /// upstream, or a common upstream, would serve as another:
    /// <list type="bullet">
    /// <item>a segment that some upstream reads as "." or ".." (<see cref="UpstreamPaths.HasDotSegment"/>). Kestrel removes
    /// dot segments from an origin-form target, but it decodes an absolute-form one
    /// (<c>POST http://host/public/x%2F..%2F..%2Fdeploy HTTP/1.1</c>) with <see cref="Uri"/>, escapes and all, into
    /// "/public/x/../../deploy": the route of /public matched it, and the forwarder's Uri then removed the dot segments, so the
    /// upstream received /deploy through a route that checks nothing. "/public/..;/deploy" (Tomcat, Jetty, Spring),
    /// "/public/..\deploy" or "/public/..%20/deploy" (IIS) reach /deploy on the upstream the same way;</item>
    /// <item>a path that common upstreams read as one some other route matches (<see cref="UpstreamPaths.Read"/>): with a
    /// passthrough catch-all next to /deploy/{**rest}, "/deploy;x=1/v1", "//deploy/v1", "/deploy\v1" or "/deploy./v1" were
    /// routed to the catch-all and served as /deploy/v1. A path that is read differently but stays with the same routes
    /// ("/public/cart;jsessionid=1", "/public//docs", "//catalog/items" under the catch-all) is forwarded as it came.</item>
    /// </list>
    /// </summary>
    private string? TargetNeverForwarded(HttpContext context, IReadOnlyList<Yarp.ReverseProxy.Configuration.RouteConfig> routes, string routeId)
    {
        // The upstream receives PathBase and Path (PathBase never ends in '/', and is empty: a listener has no path); routes
        // match Path.
        if (UpstreamPaths.HasDotSegment(context.Request.PathBase.Value) || UpstreamPaths.HasDotSegment(context.Request.Path.Value))
        {
            return "the request target has a segment that the proxy or the upstream reads as a dot segment ('.' or '..', also "
                + "'..;param', '..\\', '.. '), which takes the upstream to another path than the one this route matched; send the path "
                + "without dot segments, as the upstream should act on it";
        }

        var path = context.Request.Path.Value ?? string.Empty;
        var read = UpstreamPaths.Read(path);
        return !ReferenceEquals(read, path) && RoutePaths.For(routes, _constraints).RoutesElsewhere(context, routeId, read)
            ? "the request path has path parameters (';'), repeated slashes, backslashes or segments ending in '.' or ' ' that "
                + "common upstreams remove, and without them the gateway routes it otherwise than it routed this request; send the path "
                + "as the upstream should act on it"
            : null;
    }

    /// <summary>The path and query exactly as they arrived on the wire (SPEC §4.2: percent-encoding untouched).</summary>
    internal static (string Path, string Query) RawTarget(HttpContext context)
    {
        var raw = context.Features.Get<IHttpRequestFeature>()?.RawTarget;
        if (string.IsNullOrEmpty(raw) || raw[0] != '/')
        {
            // Absolute-form or asterisk-form targets: fall back to the decoded-then-escaped view.
            return (context.Request.PathBase.Add(context.Request.Path).ToUriComponent(), context.Request.QueryString.Value is { Length: > 0 } q0 ? q0[1..] : string.Empty);
        }

        var q = raw.IndexOf('?', StringComparison.Ordinal);
        return q < 0 ? (raw, string.Empty) : (raw[..q], raw[(q + 1)..]);
    }

    /// <summary>
    /// The use was consumed and the forwarder failed (upstream unreachable or timed out, the client gone before the
    /// request was sent, the response broken off): without this, the grant's record said "used" for an action that may
    /// never have run, and the client got an empty 502. Recorded on the grant (one store call, on this path only) and
    /// in the log; the use is not given back, which would allow a replay of a request the upstream may have received.
    /// </summary>
    private async Task ForwardFailedAsync(HttpContext context, AssuranceDecision decision, ForwarderError error)
    {
        var what = JsonNamingPolicy.SnakeCaseLower.ConvertName(error.ToString());
        Log.ForwardFailed(_logger, decision.GrantId, decision.Route, what, decision.TraceId, decision.SpanId);
        // No time of ours: the store stamps it, so it follows the used event the store stamped (clocks differ by ms). The
        // workload and origin are the used event's (SPEC §5.2: every event carries them where known).
        var failed = new GrantEvent
        {
            Type = GrantEvent.ForwardFailed, TraceId = decision.TraceId, SpanId = decision.SpanId, Reason = what,
            Workload = decision.WorkloadId, Origin = decision.Origin,
        };
        try
        {
            await _store.AppendEventAsync(decision.GrantId!, failed, CancellationToken.None).ConfigureAwait(false);
        }
        catch (StoreUnavailableException)
        {
            // Logged by the store; the log line above stands for it.
        }

        if (!context.Response.HasStarted && !context.RequestAborted.IsCancellationRequested)
        {
            // A 4xx from the forwarder is the client's body failing on a route that streams it; otherwise the upstream
            // side failed, and how far the request got decides what the client may assume.
            var (reason, reached) = context.Response.StatusCode < 500
                ? (ReasonCodes.RequestAmbiguous, "the request body could not be read while it was forwarded")
                : (ReasonCodes.UpstreamFailed, error switch
                {
                    ForwarderError.NoAvailableDestinations or ForwarderError.RequestCreation => "the request was not sent to the upstream",
                    ForwarderError.ResponseHeaders or ForwarderError.ResponseBodyDestination or ForwarderError.ResponseBodyClient
                        or ForwarderError.ResponseBodyCanceled => "the upstream received the request and answered, but its response could not be relayed",
                    _ => "the upstream may or may not have received the request",
                });
            await ProblemResponses.WriteAsync(context, reason,
                $"the approval's use was spent: {reached} ({what}); the grant records it as forward_failed", decision.TraceId).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// A request header the forwarder would fail to send, after the grant is used: HttpClient sends header values in
    /// ASCII only unless the cluster names an encoding, and Kestrel accepts UTF-8. Without this, such a request burned
    /// its use and got a 502 while the grant recorded "used" for an action that never ran. Headers that are never
    /// forwarded (hop-by-hop ones, those the gateway removes, and those the route's transforms remove) do not count.
    /// </summary>
    private static string? UnsendableHeader(HttpContext context)
    {
        var proxy = context.GetReverseProxyFeature();
        if (proxy.Cluster?.Config.HttpClient?.RequestHeaderEncoding is not null)
        {
            return null;
        }

        var transforms = proxy.Route.Config.Transforms;
        foreach (var (name, values) in context.Request.Headers)
        {
            if (NeverForwarded.Contains(name) || (transforms is { Count: > 0 } && RemovedByTransform(transforms, name)))
            {
                continue;
            }

            foreach (var value in values)
            {
                if (value is not null && value.AsSpan().ContainsAnyExceptInRange('\0', '\x7F'))
                {
                    return name;
                }
            }
        }

        return null;
    }

    /// <summary>A header the route's transforms keep from the upstream: removed by name, or no client header copied.</summary>
    private static bool RemovedByTransform(IReadOnlyList<IReadOnlyDictionary<string, string>> transforms, string name)
    {
        foreach (var transform in transforms)
        {
            if ((transform.TryGetValue("RequestHeaderRemove", out var removed) && string.Equals(removed, name, StringComparison.OrdinalIgnoreCase))
                || (transform.TryGetValue("RequestHeadersCopy", out var copy) && string.Equals(copy, "false", StringComparison.OrdinalIgnoreCase)))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// Bound headers whose field lines the forwarder's HttpClient joins into one with another separator than the ','
    /// the request hash joins them with (SPEC §4.2); other headers it joins with ", ", a list the hash's ',' reads alike.
    /// </summary>
    private static readonly FrozenDictionary<string, string> JoinedOtherwise = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase)
    {
        ["cookie"] = "; ",
        ["user-agent"] = " ",
    }.ToFrozenDictionary(StringComparer.OrdinalIgnoreCase);

    /// <summary>
    /// Request headers YARP 2.1 never forwards (hop-by-hop ones it drops) and those the gateway removes. Not Trailer (YARP
    /// copies it) nor Upgrade (YARP sends it again for a WebSocket or SPDY upgrade).
    /// </summary>
    private static readonly FrozenSet<string> NeverForwarded = FrozenSet.ToFrozenSet(
        ["Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Transfer-Encoding",
            AssuranceIdHeader, WorkloadResolver.WorkloadIdentityHeader, EvidenceHeader],
        StringComparer.OrdinalIgnoreCase);

    /// <summary>
    /// Why the request the upstream would receive is not the one hashed, or null when it is. The hash covers the target
    /// as it arrived (SPEC §4.2) and upper-cases the method; YARP forwards the path Kestrel decoded and normalised,
    /// re-encoded, and a method it does not know as sent. (A protocol upgrade is refused before this, on every route that
    /// requires a grant.)
    /// </summary>
    private static string? Ambiguity(HttpContext context, string rawPath, string rawQuery, IReadOnlyList<string> boundHeaders)
    {
        if (boundHeaders.Count > 0 && BoundHeaderAlias(context.Request.Headers, boundHeaders) is { } alias)
        {
            return $"the header '{JwtInspector.Printable(alias.Name)}' is the bound header '{alias.Bound}' to upstreams that read '_' as '-' "
                + "(CGI, WSGI, PHP-FPM, Rack), and the hash does not cover it: send the bound header under its own name only";
        }

        if (MethodOverride(context.Request.Headers, boundHeaders) is { } overriding)
        {
            return $"the header '{JwtInspector.Printable(overriding)}' makes upstreams that honour it (ASP.NET Core's HttpMethodOverride, Express, "
                + $"Rack, Laravel) run another method than the {JwtInspector.Printable(context.Request.Method)} the request hash binds: leave it out, or bind it (BoundHeaders)";
        }

        if (rawQuery.StartsWith('?'))
        {
            // "/x??dry_run=true": the upstream gets a parameter named "?dry_run", the hash (which drops one leading '?'
            // of an issuer's query) would have read "dry_run".
            return "the query starts with a second '?': send the target as the upstream should receive it";
        }

        if (!ForwardedAsReceived(context, rawPath, rawQuery))
        {
            return "the request target is not in normal form (dot segments, or percent-encoding that the gateway would "
                + "decode or re-encode before forwarding): send it as the upstream should receive it";
        }

        if (CanonicalRequest.RepeatedNameOutOfOrder(rawQuery) is { } repeated)
        {
            return $"the query repeats '{JwtInspector.Printable(repeated)}' out of canonical order, and the request hash sorts pairs, so it "
                + "cannot bind which value comes first: send the repeated pairs sorted (by byte order), as the approval has them";
        }

        var method = context.Request.Method;
        if (!string.Equals(HttpMethods.GetCanonicalizedValue(method), method.ToUpperInvariant(), StringComparison.Ordinal))
        {
            return "the method is not in upper case: the upstream would receive another method than the one bound";
        }

        return null;
    }

    /// <summary>
    /// A request the forwarder may turn into a tunnel: an HTTP/1.1 request Kestrel reads as upgradable (any
    /// <c>Connection: upgrade</c> without a body, whatever the Upgrade token: YARP tunnels WebSocket and SPDY, and
    /// relays any 101), or an HTTP/2 extended CONNECT (RFC 8441, which Kestrel accepts by default on an HTTP/2 listener).
    /// </summary>
    private static bool IsProtocolUpgrade(HttpContext context) =>
        context.Features.Get<IHttpUpgradeFeature>()?.IsUpgradableRequest == true
        || context.Features.Get<IHttpExtendedConnectFeature>()?.IsExtendedConnect == true;

    /// <summary>
    /// Headers that ask the upstream to run another method than the request line's. The hash binds the method, not these
    /// (unless a policy binds one): an approval of "POST /releases" would let its holder have the upstream run DELETE.
    /// </summary>
    private static readonly FrozenSet<string> MethodOverrideHeaders = FrozenSet.ToFrozenSet(
        ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"], StringComparer.OrdinalIgnoreCase);

    /// <summary>A method-override header (any case, '_' read as '-', as CGI-style upstreams read it) that no bound header covers.</summary>
    private static string? MethodOverride(IHeaderDictionary headers, IReadOnlyList<string> boundHeaders)
    {
        foreach (var (name, _) in headers)
        {
            if (name.StartsWith("X", StringComparison.OrdinalIgnoreCase) && MethodOverrideHeaders.Contains(name.Replace('_', '-'))
                && !boundHeaders.Contains(name.ToLowerInvariant()))
            {
                return name;
            }
        }

        return null;
    }

    /// <summary>
    /// A header other than a bound one whose name, with '_' and '-' read alike (as CGI-style upstreams do), is a bound
    /// header's name.
    /// </summary>
    private static (string Name, string Bound)? BoundHeaderAlias(IHeaderDictionary headers, IReadOnlyList<string> boundHeaders)
    {
        foreach (var (name, _) in headers)
        {
            foreach (var bound in boundHeaders)
            {
                if (name.Length == bound.Length && !string.Equals(name, bound, StringComparison.OrdinalIgnoreCase) && SameUpToUnderscore(name, bound))
                {
                    return (name, bound);
                }
            }
        }

        return null;
    }

    private static bool SameUpToUnderscore(string a, string b)
    {
        for (var i = 0; i < a.Length; i++)
        {
            var (x, y) = (a[i] == '_' ? '-' : char.ToLowerInvariant(a[i]), b[i] == '_' ? '-' : char.ToLowerInvariant(b[i]));
            if (x != y)
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>
    /// True when the upstream receives the target exactly as it arrived. YARP forwards the path Kestrel decoded (all
    /// escapes but <c>%2F</c>) and cleared of dot segments, percent-encoding every character outside RFC 3986's pchar
    /// set and '%' itself; and the query as received. Both then pass through <see cref="Uri"/>, which decodes
    /// percent-encoded unreserved characters.
    /// </summary>
    private static bool ForwardedAsReceived(HttpContext context, string rawPath, string rawQuery)
    {
        var decoded = context.Request.PathBase.Add(context.Request.Path).Value ?? "/";
        if (decoded.AsSpan().IndexOfAnyExcept(CanonicalRequest.ForwardedPathChars) < 0)
        {
            // Nothing to encode: the raw path must be the decoded one.
            if (!string.Equals(decoded, rawPath, StringComparison.Ordinal))
            {
                return false;
            }
        }
        else if (!string.Equals(EncodeForwardedPath(decoded), rawPath, StringComparison.Ordinal))
        {
            return false;
        }

        return CanonicalRequest.QueryForwardedAsIs(rawQuery);
    }

    private static string? EncodeForwardedPath(string decoded)
    {
        var builder = new System.Text.StringBuilder(decoded.Length + 16);
        Span<byte> utf8 = stackalloc byte[4];
        for (var i = 0; i < decoded.Length; i++)
        {
            var c = decoded[i];
            if (CanonicalRequest.ForwardedPathChars.Contains(c))
            {
                builder.Append(c);
                continue;
            }

            if (!System.Text.Rune.TryGetRuneAt(decoded, i, out var rune))
            {
                return null;
            }

            var length = rune.EncodeToUtf8(utf8);
            for (var b = 0; b < length; b++)
            {
                builder.Append('%').Append(utf8[b].ToString("X2", System.Globalization.CultureInfo.InvariantCulture));
            }

            i += rune.Utf16SequenceLength - 1;
        }

        return builder.ToString();
    }

    /// <summary>
    /// Headers the upstream must never see: the grant id and the workload JWT (a credential), an evidence header a
    /// client might forge, and a client-certificate header that did not come from a trusted proxy.
    /// </summary>
    /// <summary>
    /// Headers the gateway removes or the proxy writes, spelt with '_' for '-': CGI, WSGI, PHP-FPM and Rack upstreams (and
    /// nginx with <c>underscores_in_headers</c>) read <c>X_Forwarded_Client_Cert</c> as <c>X-Forwarded-Client-Cert</c>, so
    /// the alias would carry a forged certificate, workload or grant id past the removal above. No legitimate sender
    /// spells them so.
    /// </summary>
    private static readonly FrozenSet<string> Aliased = FrozenSet.ToFrozenSet(
        [AssuranceIdHeader, WorkloadResolver.WorkloadIdentityHeader, EvidenceHeader, WorkloadResolver.ClientCertHeader,
            "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Prefix"],
        StringComparer.OrdinalIgnoreCase);

    private static void RemoveUnderscoreAliases(IHeaderDictionary headers)
    {
        List<string>? aliases = null;
        foreach (var (name, _) in headers)
        {
            if (name.Contains('_', StringComparison.Ordinal) && Aliased.Contains(name.Replace('_', '-')))
            {
                (aliases ??= []).Add(name);
            }
        }

        foreach (var alias in aliases ?? [])
        {
            headers.Remove(alias);
        }
    }

    private void PrepareForwarding(HttpContext context, GatewaySettings settings, AssuranceDecision decision)
    {
        var headers = context.Request.Headers;
        headers.Remove(AssuranceIdHeader);
        headers.Remove(WorkloadResolver.WorkloadIdentityHeader);
        headers.Remove(EvidenceHeader);
        if (!OriginResolver.IsTrusted(settings.Workload.TrustedProxies, context.Connection.RemoteIpAddress))
        {
            headers.Remove(WorkloadResolver.ClientCertHeader);
        }

        RemoveUnderscoreAliases(headers);

        // Evidence says an approval protected this very request. A shadow decision consumed nothing (a dry run), so
        // evidence for it would let one single-use grant vouch for any number of requests, indistinguishable from
        // enforced evidence: shadow mode forwards without any (the client's was removed above).
        if (_signer is not null && settings.Evidence.SigningKey is not null && decision.Allowed && !decision.Shadow && decision.Policy.RequiresToken)
        {
            headers[EvidenceHeader] = _signer.Sign(decision, settings);
        }
    }
}
