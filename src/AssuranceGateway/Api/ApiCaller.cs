using AssuranceGateway.Configuration;
using AssuranceGateway.Enforcement;
using AssuranceGateway.Tokens;
using Microsoft.AspNetCore.Http;

namespace AssuranceGateway.Api;

/// <summary>Scopes of the assurance API (SPEC §5).</summary>
public static class ApiScopes
{
    public const string Grant = "assurance:grant";
    public const string Read = "assurance:read";
    public const string Approve = "assurance:approve";
    public const string Revoke = "assurance:revoke";
}

/// <summary>An authenticated API caller: who (recorded as issuer, approver or actor) and how strongly authenticated.</summary>
internal sealed record ApiCaller(ValidatedToken Token)
{
    public string Subject => Token.Subject;
    public int Aal => Token.Aal;

    /// <summary>
    /// Validates the bearer token for the API audience and checks the scope. Returns null after writing the
    /// problem response (401 for the token, 403 for the scope).
    /// </summary>
    public static async Task<ApiCaller?> AuthenticateAsync(HttpContext context, GatewayRuntime runtime, string scope)
    {
        var raw = AssuranceMiddleware.BearerToken(context.Request, out var malformed);
        if (raw is null)
        {
            await ApiProblems.WriteAsync(context, malformed ? ReasonCodes.TokenInvalid : ReasonCodes.TokenMissing,
                "send a token for audience '" + runtime.Settings.Api.Audience + "' as 'Authorization: Bearer <JWT>'").ConfigureAwait(false);
            return null;
        }

        var check = await runtime.ApiTokens.ValidateAsync(raw.Value, context.RequestAborted).ConfigureAwait(false);
        if (check.Token is not { } token)
        {
            await ApiProblems.WriteAsync(context, ReasonCodes.TokenInvalid, check.Failure).ConfigureAwait(false);
            return null;
        }

        if (!HasScope(token, scope))
        {
            await ApiProblems.WriteAsync(context, ReasonCodes.InsufficientScope, $"scope '{scope}' is required").ConfigureAwait(false);
            return null;
        }

        return new ApiCaller(token);
    }

    /// <summary>RFC 9068 §2.2.3: <c>scope</c> is a space-separated string; some issuers send an array (<c>scp</c>).</summary>
    private static bool HasScope(ValidatedToken token, string scope)
    {
        foreach (var name in (ReadOnlySpan<string>)["scope", "scp"])
        {
            foreach (var value in token.ClaimValues(name))
            {
                foreach (var part in value.Split(' ', StringSplitOptions.RemoveEmptyEntries))
                {
                    if (string.Equals(part, scope, StringComparison.Ordinal))
                    {
                        return true;
                    }
                }
            }
        }

        return false;
    }
}

internal static class ApiProblems
{
    public static Task WriteAsync(HttpContext context, string reason, string? detail, Action<System.Text.Json.Utf8JsonWriter>? extra = null)
    {
        context.Response.StatusCode = reason == ReasonCodes.InsufficientScope ? StatusCodes.Status403Forbidden : ReasonCodes.StatusCode(reason);
        ProblemResponses.SetChallenge(context.Response, reason, []);
        return ProblemResponses.WriteAsync(context, reason, detail, System.Diagnostics.Activity.Current?.TraceId.ToHexString(), extra);
    }

    public static Task InsufficientAalAsync(HttpContext context, GatewaySettings settings, int required, int actual)
    {
        context.Response.StatusCode = StatusCodes.Status401Unauthorized;
        ProblemResponses.SetChallenge(context.Response, ReasonCodes.InsufficientAal, AssuranceMiddleware.AcceptableAcr(settings.Tokens, required));
        return ProblemResponses.WriteAsync(context, ReasonCodes.InsufficientAal,
            $"authentication level {actual} is below the {required} this policy requires of approvers", System.Diagnostics.Activity.Current?.TraceId.ToHexString());
    }
}
