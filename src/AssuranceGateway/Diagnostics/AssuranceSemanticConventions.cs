namespace AssuranceGateway.Diagnostics;

/// <summary>Every span, attribute, event and metric name the gateway emits (SPEC §6), in one place.</summary>
public static class AssuranceSemanticConventions
{
    public const string SourceName = "AssuranceGateway";
    public const string EnforceSpan = "assurance.enforce";

    public const string Decision = "assurance.decision";
    public const string Reason = "assurance.reason";
    public const string Route = "assurance.route";
    public const string Policy = "assurance.policy";
    public const string GrantId = "assurance.grant.id";
    public const string GrantStatus = "assurance.grant.status";
    public const string GrantApprover = "assurance.grant.approver";
    public const string GrantAal = "assurance.grant.aal";
    public const string GrantUsesRemaining = "assurance.grant.uses_remaining";
    public const string RequestHash = "assurance.request.hash";
    public const string TokenHash = "assurance.token.hash";
    public const string Subject = "assurance.subject";
    public const string Session = "assurance.session";
    public const string Aal = "assurance.aal";
    public const string WorkloadId = "assurance.workload.id";
    public const string WorkloadSource = "assurance.workload.source";
    public const string Origin = "assurance.origin";
    public const string Mode = "assurance.mode";
    public const string Mismatch = "assurance.mismatch";
    public const string FirstUseTraceId = "assurance.first_use.trace_id";
    public const string FirstUseAt = "assurance.first_use.at";
    public const string FirstUseWorkload = "assurance.first_use.workload";

    public const string GrantRevokedEvent = "assurance.grant.revoked";

    public const string DecisionsCounter = "assurance.decisions";
    public const string EnforceDuration = "assurance.enforce.duration";
    public const string StoreDuration = "assurance.store.duration";

    public const string DecisionAllow = "allow";
    public const string DecisionDeny = "deny";
}
