using System.Globalization;
using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace AssuranceGateway.Enforcement;

/// <summary>Denials as RFC 9457 problem+json, with the WWW-Authenticate challenges of RFC 6750 and RFC 9470.</summary>
public static class ProblemResponses
{
    public const string ContentType = "application/problem+json";
    public const string TypePrefix = "urn:assurance-gateway:";

    // problem+json is never embedded in HTML, so readable quotes and '<' are safe here.
    private static readonly JsonWriterOptions WriterOptions = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static Task WriteDenialAsync(HttpContext context, AssuranceDecision decision)
    {
        context.Response.StatusCode = ReasonCodes.StatusCode(decision.Reason);
        SetChallenge(context.Response, decision.Reason, decision.AcceptableAcr);
        return WriteAsync(context, decision.Reason, decision.Detail, decision.TraceId, writer =>
        {
            if (decision.SpanId is not null)
            {
                writer.WriteString("spanId", decision.SpanId);
            }

            if (decision.GrantId is not null)
            {
                writer.WriteString("assuranceId", decision.GrantId);
            }

            // Always on request_mismatch (SPEC §4.3); empty when the grant was issued with a request hash only and keeps
            // no digests to compare.
            if (decision.Mismatch.Count > 0 || decision.Reason == ReasonCodes.RequestMismatch)
            {
                writer.WriteStartArray("mismatch");
                foreach (var component in decision.Mismatch)
                {
                    writer.WriteStringValue(component);
                }

                writer.WriteEndArray();
            }

            if (decision.ChallengeGrantId is not null)
            {
                writer.WriteString("grantId", decision.ChallengeGrantId);
                // RFC 9457 reserves "status" for the HTTP status code, so the grant's status has its own member.
                writer.WriteString("grantStatus", "pending");
            }
        });
    }

    /// <summary>
    /// The headers a denial owes its client, in one place for the proxy and the API: the Bearer challenges of RFC 6750
    /// §3 (and RFC 9110's rule that every 401 carries one), RFC 9470's step-up challenge, and Retry-After on 503.
    /// </summary>
    public static void SetChallenge(HttpResponse response, string reason, IReadOnlyList<string> acceptableAcr)
    {
        switch (reason)
        {
            case ReasonCodes.TokenMissing or ReasonCodes.WorkloadUnidentified or ReasonCodes.WorkloadInvalid:
                // RFC 6750 §3.1: no error code when the request carried no (access-token) authentication problem.
                response.Headers.WWWAuthenticate = "Bearer";
                break;
            case ReasonCodes.TokenInvalid:
                response.Headers.WWWAuthenticate = "Bearer error=\"invalid_token\"";
                break;
            case ReasonCodes.InsufficientScope:
                response.Headers.WWWAuthenticate = "Bearer error=\"insufficient_scope\"";
                break;
            case ReasonCodes.InsufficientAal:
                // RFC 9470 §3: tell the client which authentication contexts would do.
                response.Headers.WWWAuthenticate = string.Create(CultureInfo.InvariantCulture,
                    $"Bearer error=\"insufficient_user_authentication\", error_description=\"A stronger authentication is required\", acr_values=\"{string.Join(' ', acceptableAcr)}\"");
                break;
            case ReasonCodes.StoreUnavailable:
                response.Headers.RetryAfter = "1";
                break;
        }
    }

    /// <summary>Writes one problem document; <paramref name="extra"/> adds members beyond the standard ones.</summary>
    public static async Task WriteAsync(HttpContext context, string reason, string? detail, string? traceId, Action<Utf8JsonWriter>? extra = null)
    {
        var response = context.Response;
        if (response.StatusCode < 400)
        {
            response.StatusCode = ReasonCodes.StatusCode(reason);
        }

        response.ContentType = ContentType;
        response.Headers.CacheControl = "no-store";
        var buffer = new System.Buffers.ArrayBufferWriter<byte>(256);
        using (var writer = new Utf8JsonWriter(buffer, WriterOptions))
        {
            writer.WriteStartObject();
            writer.WriteString("type", TypePrefix + reason);
            writer.WriteString("title", ReasonCodes.Title(reason));
            writer.WriteNumber("status", response.StatusCode);
            if (detail is not null)
            {
                writer.WriteString("detail", detail);
            }

            writer.WriteString("reason", reason);
            extra?.Invoke(writer);
            writer.WriteString("traceId", traceId ?? System.Diagnostics.Activity.Current?.TraceId.ToHexString() ?? context.TraceIdentifier);
            writer.WriteEndObject();
        }

        response.ContentLength = buffer.WrittenCount;
        await response.Body.WriteAsync(buffer.WrittenMemory, context.RequestAborted).ConfigureAwait(false);
    }
}
