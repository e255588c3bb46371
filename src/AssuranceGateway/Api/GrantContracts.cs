using System.Text.Json;
using AssuranceGateway.Grants;

namespace AssuranceGateway.Api;

/// <summary>POST /assurance/v1/grants (SPEC §5.1).</summary>
public sealed record CreateGrantRequest
{
    public string? Route { get; init; }
    public string? Subject { get; init; }
    public string? Session { get; init; }
    public string? TokenHash { get; init; }
    public string? Workload { get; init; }
    public IReadOnlyList<string>? Origin { get; init; }
    public RequestSpec? Request { get; init; }
    public string? RequestHash { get; init; }
    public int? MaxUses { get; init; }
    public int? TtlSeconds { get; init; }
    public DateTimeOffset? NotBefore { get; init; }
    public string? Reason { get; init; }
}

/// <summary>The request an issuer approves; the gateway hashes it exactly as it hashes the real one (SPEC §4.2).</summary>
public sealed record RequestSpec
{
    public string? Method { get; init; }
    public string? Path { get; init; }
    public string? Query { get; init; }

    /// <summary>Values are a string or an array of strings (a header sent several times).</summary>
    public IReadOnlyDictionary<string, JsonElement>? Headers { get; init; }

    /// <summary>Base64 of the exact body bytes.</summary>
    public string? Body { get; init; }
}

public sealed record CreateGrantResponse(string Id, string? RequestHash, GrantStatus Status, DateTimeOffset ExpiresAt, int UsesRemaining);

public sealed record GrantEventView(
    string Type, DateTimeOffset At, string? TraceId, string? SpanId, string? Reason, string? Workload, string? Origin, string? Actor,
    IReadOnlyList<string>? Mismatch);

public sealed record FirstUseView(string? TraceId, string? SpanId, DateTimeOffset At, string? Workload, string? Origin);

/// <summary>GET /assurance/v1/grants/{id}: bindings as stored (hashes only), status, uses and the event history.</summary>
public sealed record GrantView(
    string Id,
    string Route,
    string? Policy,
    GrantStatus Status,
    string? Subject,
    string? Session,
    string? TokenHash,
    string? Workload,
    IReadOnlyList<string> Origin,
    string? RequestHash,
    string? Method,
    string? Path,
    string? Query,
    int MaxUses,
    int UsesRemaining,
    DateTimeOffset CreatedAt,
    DateTimeOffset ExpiresAt,
    DateTimeOffset? NotBefore,
    string? Reason,
    string? CreatedBy,
    int ApprovalsRequired,
    int ApprovalsRemaining,
    IReadOnlyList<string> Approvers,
    int ApprovalAal,
    FirstUseView? FirstUse,
    IReadOnlyList<GrantEventView> Events,
    long DroppedEvents)
{
    public static GrantView From(GrantRecord g) => new(
        g.Id, g.Route, g.Policy, g.Status, g.Subject, g.Session, g.TokenHash, g.Workload, g.Origins, g.RequestHash, g.Method, g.Path, g.Query,
        g.MaxUses, g.UsesRemaining, g.CreatedAt, g.ExpiresAt, g.NotBefore, g.Reason, g.CreatedBy, g.ApprovalsRequired,
        Math.Max(0, g.ApprovalsRequired - g.Approvers.Count), g.Approvers, g.ApprovalAal,
        g.FirstUse is { } f ? new FirstUseView(f.TraceId, f.SpanId, f.At, f.Workload, f.Origin) : null,
        [.. g.Events.Select(e => new GrantEventView(e.Type, e.At, e.TraceId, e.SpanId, e.Reason, e.Workload, e.Origin, e.Actor, e.Mismatch))],
        g.DroppedEvents);
}

/// <summary>
/// One entry of GET /assurance/v1/grants?status=pending: what an approver must see to decide, the breadth the first
/// approver gave an API grant included (its uses, the window's opening, the networks it may be used from).
/// </summary>
public sealed record PendingGrantView(
    string Id, string Route, string? Method, string? Path, string? Query, string? Subject, string? Workload, string? Reason, string? RequestHash,
    int ApprovalsRemaining, IReadOnlyList<string> Approvers, DateTimeOffset CreatedAt, DateTimeOffset ExpiresAt,
    int MaxUses, DateTimeOffset? NotBefore, IReadOnlyList<string> Origin)
{
    public static PendingGrantView From(GrantRecord g) => new(
        g.Id, g.Route, g.Method, g.Path, g.Query, g.Subject, g.Workload, g.Reason, g.RequestHash,
        Math.Max(0, g.ApprovalsRequired - g.Approvers.Count), g.Approvers, g.CreatedAt, g.ExpiresAt, g.MaxUses, g.NotBefore, g.Origins);
}

public sealed record ApproveResponse(string Id, GrantStatus Status, int ApprovalsRemaining);
