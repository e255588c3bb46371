using AssuranceGateway.Configuration;
using AssuranceGateway.Grants;
using Microsoft.AspNetCore.Http;

namespace AssuranceGateway.Enforcement;

/// <summary>
/// The decision for one request, built step by step and read by the response, the evidence span, the log line
/// and the signed evidence header. It travels as a value on the HttpContext, never through exceptions.
/// Holds identifiers and hashes only: never a raw token, workload JWT or body.
/// </summary>
public sealed class AssuranceDecision
{
    public required string Route { get; init; }
    public required AssurancePolicy Policy { get; init; }
    /// <summary>
    /// Denied until a step says otherwise: only an allowed consume, a policy that needs no grant, or passthrough sets
    /// <see cref="ReasonCodes.Ok"/>, so a path that forgets to decide fails closed.
    /// </summary>
    public string Reason { get; set; } = ReasonCodes.AssuranceRequired;

    /// <summary>Why, in words, for the problem's <c>detail</c> (never a secret).</summary>
    public string? Detail { get; set; }

    public bool Allowed => Reason == ReasonCodes.Ok;
    public string? GrantId { get; set; }
    public GrantStatus? GrantStatus { get; set; }
    public int? UsesRemaining { get; set; }
    public IReadOnlyList<string> Approvers { get; set; } = [];
    public int? ApprovalAal { get; set; }
    public string? RequestHash { get; set; }
    public string? TokenHash { get; set; }
    public string? Subject { get; set; }
    public string? Session { get; set; }
    public int? Aal { get; set; }
    public string? WorkloadId { get; set; }
    public string? WorkloadSource { get; set; }
    public string? Origin { get; set; }
    public IReadOnlyList<string> Mismatch { get; set; } = [];
    public FirstUse? FirstUse { get; set; }
    public bool Revoked { get; set; }

    /// <summary>The store was asked about the grant (step 6): it recorded the decision on the grant itself.</summary>
    public bool GrantConsulted { get; set; }

    /// <summary>Challenge mode: the pending grant created for this very request.</summary>
    public string? ChallengeGrantId { get; set; }

    /// <summary>The grant the evidence names: the one presented, else the pending one a challenge created.</summary>
    public string? EvidenceGrantId => GrantId ?? ChallengeGrantId;

    /// <summary>The first use the evidence shows: only on a <c>replayed</c> denial.</summary>
    public FirstUse? ReplayedFirstUse => Reason == ReasonCodes.Replayed ? FirstUse : null;

    /// <summary>For <c>insufficient_aal</c>: the <c>acr</c> values that would satisfy the policy.</summary>
    public IReadOnlyList<string> AcceptableAcr { get; set; } = [];

    /// <summary>Trace id of the span that decided; the client sees it in every denial.</summary>
    public string? TraceId { get; set; }

    /// <summary>
    /// Span id of the evidence span. The trace id is the caller's when it sends a <c>traceparent</c> (W3C), so two
    /// decisions can share one; the span id is the gateway's own, and the grant's events carry it too.
    /// </summary>
    public string? SpanId { get; set; }

    public bool Shadow => Policy.Mode == PolicyMode.Shadow;
}

/// <summary>Access to the decision of the current request (YARP's <c>HttpContextFeaturesExtensions</c> pattern).</summary>
public static class AssuranceHttpContextExtensions
{
    public static AssuranceDecision? GetAssuranceDecision(this HttpContext context) => context.Features.Get<AssuranceDecision>();
}
