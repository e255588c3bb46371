using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using AssuranceGateway.Configuration;
using AssuranceGateway.Diagnostics;
using AssuranceGateway.Enforcement;
using AssuranceGateway.Grants;
using AssuranceGateway.Workload;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;

namespace AssuranceGateway.Api;

/// <summary>The grant endpoints of the assurance API (SPEC §5.1–§5.4). Every error is problem+json.</summary>
internal static class GrantEndpoints
{
    public const string Base = "/assurance/v1/grants";
    // The JSON a grant request may take: at least 2 MiB, more when a policy that binds request accepts bodies whose
    // base64 (a third larger) would not fit, up to 64 MiB; beyond that an issuer sends requestHash (agw hash).
    private const int MinJsonBytes = 2 * 1024 * 1024;
    private const int MaxJsonBytes = 64 * 1024 * 1024;
    private const int MaxListed = 500;

    public static void Map(WebApplication app)
    {
        app.MapPost(Base, CreateAsync);
        app.MapGet(Base, ListAsync);
        app.MapGet(Base + "/{id}", GetAsync);
        app.MapDelete(Base + "/{id}", RevokeAsync);
        app.MapPost(Base + "/{id}/approve", ApproveAsync);
        app.MapPost(Base + "/{id}/deny", DenyAsync);
    }

    private static async Task CreateAsync(HttpContext context)
    {
        var (runtime, store, time) = Services(context);
        if (await ApiCaller.AuthenticateAsync(context, runtime, ApiScopes.Grant).ConfigureAwait(false) is not { } caller)
        {
            return;
        }

        var body = await ReadJsonAsync<CreateGrantRequest>(context, JsonLimit(runtime.Settings)).ConfigureAwait(false);
        if (body is null)
        {
            return;
        }

        // The body can take minutes to arrive: a reload applied meanwhile decides the rest, and one that removed the key of
        // the caller's token from a JWKS file refuses the caller here, before any grant is created.
        if (Services(context).Runtime is var now && !ReferenceEquals(now, runtime))
        {
            runtime = now;
            if (await ApiCaller.AuthenticateAsync(context, runtime, ApiScopes.Grant).ConfigureAwait(false) is not { } again)
            {
                return;
            }

            caller = again;
        }

        var draft = GrantRequestValidator.Validate(body, caller, runtime.Settings, time.GetUtcNow());
        if (draft.Grant is not { } grant)
        {
            if (draft.Reason == ReasonCodes.InsufficientAal)
            {
                await ApiProblems.InsufficientAalAsync(context, runtime.Settings, draft.RequiredAal, caller.Aal).ConfigureAwait(false);
            }
            else
            {
                await ApiProblems.WriteAsync(context, draft.Reason!, draft.Detail).ConfigureAwait(false);
            }

            return;
        }

        var created = ApiEvent(context, runtime, GrantEvent.Created, caller);
        var (ok, outcome) = await StoreCallAsync(context, "create", ct => store.CreateAsync(grant, created, int.MaxValue, ct)).ConfigureAwait(false);
        if (!ok)
        {
            return;
        }

        if (outcome.Outcome != GrantChange.Done)
        {
            await ApiProblems.WriteAsync(context, ReasonCodes.Conflict, "a grant with this id exists").ConfigureAwait(false);
            return;
        }

        // The expiry the store set by its own clock (this gateway's may be off), as GET and every use see it.
        context.Response.StatusCode = StatusCodes.Status201Created;
        context.Response.Headers.Location = $"{Base}/{grant.Id}";
        await WriteJsonAsync(context, new CreateGrantResponse(grant.Id, grant.RequestHash, grant.Status, outcome.ExpiresAt, grant.UsesRemaining)).ConfigureAwait(false);
    }

    private static async Task GetAsync(HttpContext context, string id)
    {
        var (runtime, store, _) = Services(context);
        if (await ApiCaller.AuthenticateAsync(context, runtime, ApiScopes.Read).ConfigureAwait(false) is null)
        {
            return;
        }

        if (!await CheckIdAsync(context, id).ConfigureAwait(false))
        {
            return;
        }

        var (found, grant) = await StoreCallAsync(context, "get", ct => store.GetAsync(id, ct), found: g => g is not null).ConfigureAwait(false);
        if (!found || grant is null)
        {
            return;
        }

        await WriteJsonAsync(context, GrantView.From(grant)).ConfigureAwait(false);
    }

    private static async Task ListAsync(HttpContext context)
    {
        var (runtime, store, _) = Services(context);
        if (await ApiCaller.AuthenticateAsync(context, runtime, ApiScopes.Read).ConfigureAwait(false) is null)
        {
            return;
        }

        var status = context.Request.Query["status"].ToString();
        if (!string.Equals(status, "pending", StringComparison.Ordinal))
        {
            await ApiProblems.WriteAsync(context, ReasonCodes.InvalidRequest, "status: only 'pending' can be listed").ConfigureAwait(false);
            return;
        }

        var limit = MaxListed;
        if (context.Request.Query.TryGetValue("limit", out var given)
            && (!int.TryParse(given.ToString(), NumberStyles.None, CultureInfo.InvariantCulture, out limit) || limit is < 1 or > MaxListed))
        {
            await ApiProblems.WriteAsync(context, ReasonCodes.InvalidRequest, $"limit: a whole number from 1 to {MaxListed}").ConfigureAwait(false);
            return;
        }

        // An approver who owns one route sees its requests, however many other routes' wait before them. A route that is
        // not configured is refused: an empty list for a misspelt name would read as "nothing waits".
        string? route = null;
        if (context.Request.Query.TryGetValue("route", out var named))
        {
            route = named.ToString();
            if (named.Count != 1 || runtime.Settings.PolicyForRoute(route) is null)
            {
                await ApiProblems.WriteAsync(context, ReasonCodes.InvalidRequest, $"route: unknown route '{route}'").ConfigureAwait(false);
                return;
            }
        }

        // One more than shown: an approver must know when the list is not all there is (oldest first).
        var (ok, pending) = await StoreCallAsync(context, "list", ct => store.ListPendingAsync(limit + 1, route, ct)).ConfigureAwait(false);
        if (!ok)
        {
            return;
        }

        var views = pending.Take(limit).Select(PendingGrantView.From).ToList();
        await WriteJsonAsync(context, new Dictionary<string, object> { ["grants"] = views, ["truncated"] = pending.Count > limit }).ConfigureAwait(false);
    }

    private static async Task RevokeAsync(HttpContext context, string id)
    {
        var (runtime, store, _) = Services(context);
        if (await ApiCaller.AuthenticateAsync(context, runtime, ApiScopes.Revoke).ConfigureAwait(false) is not { } caller
            || !await CheckIdAsync(context, id).ConfigureAwait(false))
        {
            return;
        }

        if (await RevokeAsActorAsync(context, runtime, store, id, caller, "revoked_by_api").ConfigureAwait(false))
        {
            context.Response.StatusCode = StatusCodes.Status204NoContent;
        }
    }

    /// <summary>
    /// An approver's "no": a pending grant is revoked, with the approver as actor. Only a pending one (revoking a live
    /// grant takes the revoke scope), and only by a caller strong enough to have approved it.
    /// </summary>
    private static async Task DenyAsync(HttpContext context, string id)
    {
        if (await ApproverAndGrantAsync(context, id).ConfigureAwait(false) is not { } approver)
        {
            return;
        }

        var (runtime, store, caller, grant) = approver;

        if (grant.Status != GrantStatus.Pending)
        {
            await ApiProblems.WriteAsync(context, ReasonCodes.Conflict, $"only a pending grant can be denied (this one is {GrantStatusNames.Of(grant.Status)}); revoking takes the revoke scope").ConfigureAwait(false);
            return;
        }

        if (!await StrongEnoughAsync(context, runtime, caller, grant).ConfigureAwait(false))
        {
            return;
        }

        // Pending when read above, but another approver may have completed the quorum since: the store decides again,
        // in the same operation as the revocation.
        var denied = ApiEvent(context, runtime, GrantEvent.Revoked, caller, "denied_by_approver");
        var (ok, outcome) = await StoreCallAsync(context, "deny", ct => store.DenyPendingAsync(id, denied, ct), found: o => o != GrantChange.NotFound)
            .ConfigureAwait(false);
        if (!ok)
        {
            return;
        }

        if (outcome == GrantChange.Conflict)
        {
            await ApiProblems.WriteAsync(context, ReasonCodes.Conflict, "the grant stopped being pending before it could be denied").ConfigureAwait(false);
            return;
        }

        await WriteJsonAsync(context, new ApproveResponse(id, GrantStatus.Revoked, 0)).ConfigureAwait(false);
    }

    private static async Task ApproveAsync(HttpContext context, string id)
    {
        if (await ApproverAndGrantAsync(context, id).ConfigureAwait(false) is not { } approver)
        {
            return;
        }

        var (runtime, store, caller, grant) = approver;

        if (grant.Subject is not null && string.Equals(grant.Subject, caller.Subject, StringComparison.Ordinal))
        {
            await ApiProblems.WriteAsync(context, ReasonCodes.SelfApproval, "the subject of an action cannot approve it").ConfigureAwait(false);
            return;
        }

        if (!await StrongEnoughAsync(context, runtime, caller, grant).ConfigureAwait(false))
        {
            return;
        }

        // The approvals already given count towards the quorum only if they too meet the policy in force (a reload may have
        // raised MinimumApprovalAal while the grant waited): the approval AAL is judged when the grant becomes active. The
        // grant keeps the weakest approval's AAL, not each one's, so it cannot become active: it is issued again.
        if (grant.Status == GrantStatus.Pending && grant.Approvers.Count > 0 && !grant.Approvers.Contains(caller.Subject)
            && PolicyOf(runtime, grant)?.MinimumApprovalAal is { } minimum && grant.ApprovalAal < minimum)
        {
            await ApiProblems.WriteAsync(context, ReasonCodes.Conflict,
                $"an approval already given was at AAL {grant.ApprovalAal}, below the {minimum} the policy now requires of approvers: "
                + "this grant cannot become active; deny it and issue it again").ConfigureAwait(false);
            return;
        }

        var approved = ApiEvent(context, runtime, GrantEvent.Approved, caller);
        // Once active, a grant is usable for at most the policy's MaxTtl from approval (or from its notBefore), like one
        // the API issues active: a challenge grant waits PendingTtl for approvers, not MaxTtl.
        // The quorum too is the policy's in force now: a reload that raised Approvals holds for grants already waiting.
        var policy = PolicyOf(runtime, grant);
        var (ok, result) = await StoreCallAsync(context, "approve", ct => store.ApproveAsync(id, caller.Subject, caller.Aal, approved, policy?.MaxTtl, policy?.Approvals ?? 0, ct),
            found: r => r.Outcome != GrantChange.NotFound).ConfigureAwait(false);
        if (!ok)
        {
            return;
        }

        if (result.Outcome == GrantChange.Conflict)
        {
            // The store refuses a pending grant only once it has expired (its stored status stays pending).
            var state = result.Status == GrantStatus.Pending ? "expired" : (result.Status is { } status ? GrantStatusNames.Of(status) : null);
            await ApiProblems.WriteAsync(context, ReasonCodes.Conflict,
                $"only a pending, unexpired grant can be approved (this one is {state})").ConfigureAwait(false);
            return;
        }

        await WriteJsonAsync(context, new ApproveResponse(id, result.Status ?? GrantStatus.Pending, result.ApprovalsRemaining)).ConfigureAwait(false);
    }

    /// <summary>An approver (approve scope) and the grant it names; null once a problem has been written.</summary>
    private static async Task<(GatewayRuntime Runtime, IGrantStore Store, ApiCaller Caller, GrantRecord Grant)?> ApproverAndGrantAsync(HttpContext context, string id)
    {
        var (runtime, store, _) = Services(context);
        if (await ApiCaller.AuthenticateAsync(context, runtime, ApiScopes.Approve).ConfigureAwait(false) is not { } caller
            || !await CheckIdAsync(context, id).ConfigureAwait(false))
        {
            return null;
        }

        var (found, grant) = await StoreCallAsync(context, "get", ct => store.GetAsync(id, ct), found: g => g is not null).ConfigureAwait(false);
        return found && grant is not null ? (runtime, store, caller, grant) : null;
    }

    /// <summary>
    /// The approval strength a grant needs, judged against the policy in force now, found by the route the grant is bound
    /// to (3 when that route is gone); false once the problem has been written.
    /// </summary>
    private static async Task<bool> StrongEnoughAsync(HttpContext context, GatewayRuntime runtime, ApiCaller caller, GrantRecord grant)
    {
        var required = PolicyOf(runtime, grant)?.MinimumApprovalAal ?? 3;
        if (caller.Aal >= required)
        {
            return true;
        }

        await ApiProblems.InsufficientAalAsync(context, runtime.Settings, required, caller.Aal).ConfigureAwait(false);
        return false;
    }

    private static AssurancePolicy? PolicyOf(GatewayRuntime runtime, GrantRecord grant) =>
        runtime.Settings.PolicyForRoute(grant.Route)
            ?? (grant.Policy is not null && runtime.Settings.Policies.TryGetValue(grant.Policy, out var named) ? named : null);

    /// <summary>Revokes the grant with the caller as actor; false once a problem has been written (not found, store down).</summary>
    private static async Task<bool> RevokeAsActorAsync(HttpContext context, GatewayRuntime runtime, IGrantStore store, string id, ApiCaller caller, string reason)
    {
        var revoked = ApiEvent(context, runtime, GrantEvent.Revoked, caller, reason);
        var (ok, _) = await StoreCallAsync(context, "revoke", ct => store.RevokeAsync(id, revoked, ct), found: o => o != GrantChange.NotFound).ConfigureAwait(false);
        return ok;
    }

    /// <summary>
    /// An event the API writes on a grant (SPEC §5.2): the caller as actor, the caller's address as origin (resolved and
    /// normalised as the proxy resolves a client's: behind a trusted proxy the client it forwards for, IPv4-mapped IPv6 as
    /// IPv4), and the trace and span of this API request, so "who did this, from where, in which request" is on the record.
    /// </summary>
    private static GrantEvent ApiEvent(HttpContext context, GatewayRuntime runtime, string type, ApiCaller caller, string? reason = null) => new()
    {
        Type = type,
        TraceId = TraceId(),
        SpanId = Activity.Current?.SpanId.ToHexString(),
        Actor = caller.Subject,
        Origin = OriginResolver.Resolve(context, runtime.Settings.Workload.TrustedProxies)?.ToString(),
        Reason = reason,
    };

    private static (GatewayRuntime Runtime, IGrantStore Store, TimeProvider Time) Services(HttpContext context)
    {
        var services = context.RequestServices;
        return (services.GetRequiredService<GatewayConfigState>().Current, services.GetRequiredService<IGrantStore>(), services.GetRequiredService<TimeProvider>());
    }

    private static async Task<bool> CheckIdAsync(HttpContext context, string id)
    {
        if (GrantIds.IsWellFormed(id))
        {
            return true;
        }

        await ApiProblems.WriteAsync(context, ReasonCodes.InvalidRequest, "id: grant ids are 1-64 characters of A-Z a-z 0-9 _ -").ConfigureAwait(false);
        return false;
    }

    /// <summary>Runs one store call; on failure writes 503 (unavailable) or 404 (when <paramref name="found"/> says so).</summary>
    private static async Task<(bool Ok, T Value)> StoreCallAsync<T>(HttpContext context, string operation, Func<CancellationToken, Task<T>> call, Func<T, bool>? found = null)
    {
        var start = Stopwatch.GetTimestamp();
        T result;
        try
        {
            result = await call(context.RequestAborted).ConfigureAwait(false);
        }
        catch (GrantUnreadableException e)
        {
            context.Response.StatusCode = StatusCodes.Status409Conflict;
            await ProblemResponses.WriteAsync(context, ReasonCodes.GrantUnreadable, e.Message, TraceId()).ConfigureAwait(false);
            return (false, default!);
        }
        catch (StoreUnavailableException e)
        {
            await ApiProblems.WriteAsync(context, ReasonCodes.StoreUnavailable, e.OutcomeUnknown
                ? "the grant store did not answer in time; the change may or may not have been applied"
                : "the grant store is unavailable").ConfigureAwait(false);
            return (false, default!);
        }
        finally
        {
            EvidenceRecorder.RecordStore(start, operation);
        }

        if (found is not null && !found(result))
        {
            context.Response.StatusCode = StatusCodes.Status404NotFound;
            await ProblemResponses.WriteAsync(context, ReasonCodes.GrantNotFound, "no grant with this id", TraceId()).ConfigureAwait(false);
            return (false, default!);
        }

        return (true, result);
    }

    /// <summary>The largest grant request in JSON that carries a body every request-binding policy accepts.</summary>
    private static int JsonLimit(GatewaySettings settings)
    {
        long largest = 0;
        foreach (var policy in settings.Policies.Values)
        {
            if ((policy.Bind & Bindings.Request) != 0)
            {
                largest = Math.Max(largest, policy.MaxBodyBytes);
            }
        }

        return (int)Math.Clamp((largest * 4 / 3) + (64 * 1024), MinJsonBytes, MaxJsonBytes);
    }

    private static async Task<T?> ReadJsonAsync<T>(HttpContext context, int maxBytes)
        where T : class
    {
        if (!(context.Request.ContentType?.StartsWith("application/json", StringComparison.OrdinalIgnoreCase) ?? false))
        {
            await ApiProblems.WriteAsync(context, ReasonCodes.InvalidRequest, "Content-Type must be application/json").ConfigureAwait(false);
            return null;
        }

        if (context.Request.ContentLength > maxBytes)
        {
            await BodyTooLargeAsync(context, maxBytes).ConfigureAwait(false);
            return null;
        }

        // A chunked body has no Content-Length to check: Kestrel enforces the same bound while it is read.
        if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit)
        {
            limit.MaxRequestBodySize = maxBytes;
        }

        try
        {
            var value = await JsonSerializer.DeserializeAsync<T>(context.Request.Body, ApiJson.Options, context.RequestAborted).ConfigureAwait(false);
            if (value is null)
            {
                await ApiProblems.WriteAsync(context, ReasonCodes.InvalidRequest, "body: a JSON object is required").ConfigureAwait(false);
            }

            return value;
        }
        catch (BadHttpRequestException e) when (e.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            await BodyTooLargeAsync(context, maxBytes).ConfigureAwait(false);
            return null;
        }
        catch (BadHttpRequestException e)
        {
            context.Response.StatusCode = e.StatusCode;
            await ProblemResponses.WriteAsync(context, ReasonCodes.InvalidRequest, "body: unreadable (" + e.Message + ")", TraceId()).ConfigureAwait(false);
            return null;
        }
        catch (JsonException e)
        {
            // Name the field: "$.maxUses" becomes "maxUses".
            var field = string.IsNullOrEmpty(e.Path) || e.Path == "$" ? "body" : e.Path.TrimStart('$', '.');
            var what = e.Message.Contains("could not be mapped", StringComparison.Ordinal) ? "unknown member"
                : e.Message.Contains("Duplicate", StringComparison.Ordinal) ? "member given twice (ambiguous: which one did the caller mean?)"
                : e.Message == ApiJson.OffsetRequired ? ApiJson.OffsetRequired
                : "malformed JSON or wrong type";
            await ApiProblems.WriteAsync(context, ReasonCodes.InvalidRequest, $"{field}: {what}").ConfigureAwait(false);
            return null;
        }
    }

    private static Task BodyTooLargeAsync(HttpContext context, int maxBytes)
    {
        context.Response.StatusCode = StatusCodes.Status413PayloadTooLarge;
        return ProblemResponses.WriteAsync(context, ReasonCodes.BodyTooLarge,
            $"at most {maxBytes} bytes of JSON: for a larger request body, send requestHash instead of request (agw hash computes it)", TraceId());
    }

    private static Task WriteJsonAsync<T>(HttpContext context, T value)
    {
        context.Response.ContentType = "application/json";
        context.Response.Headers.CacheControl = "no-store";
        return JsonSerializer.SerializeAsync(context.Response.Body, value, ApiJson.Options, context.RequestAborted);
    }

    private static string? TraceId() => Activity.Current?.TraceId.ToHexString();
}
