using System.Globalization;
using AssuranceGateway.Diagnostics;
using Microsoft.Extensions.Logging;

namespace AssuranceGateway.Enforcement;

public sealed partial class AssuranceMiddleware
{
    private static partial class Log
    {
        /// <summary>
        /// One structured line per denial with the fields of the evidence span (SPEC §6), read from the decision the
        /// same way <see cref="EvidenceRecorder.Complete"/> reads it, so an SRE without the trace backend sees what
        /// the span says. Identifiers and hashes only: the decision holds no raw token, workload JWT or body.
        /// </summary>
        public static void Denied(ILogger logger, AssuranceDecision decision)
        {
            if (!logger.IsEnabled(LogLevel.Warning))
            {
                return;
            }

            var first = decision.ReplayedFirstUse;
            Denied(logger, decision.Reason, decision.Route, decision.Policy.Name, EvidenceRecorder.ModeName(decision.Policy.Mode),
                decision.EvidenceGrantId, decision.GrantStatus?.ToString().ToLowerInvariant(), decision.UsesRemaining,
                decision.Approvers.Count > 0 ? string.Join(',', decision.Approvers) : null, decision.ApprovalAal,
                decision.Subject, decision.Session, decision.Aal, decision.WorkloadId, decision.WorkloadSource, decision.Origin,
                decision.RequestHash, decision.TokenHash, decision.Mismatch.Count > 0 ? string.Join(',', decision.Mismatch) : null,
                decision.Revoked, first?.TraceId, first?.At.ToString("O", CultureInfo.InvariantCulture), first?.Workload,
                decision.TraceId, decision.Detail);
        }

        [LoggerMessage(EventId = 201, EventName = "ForwardFailed", Level = LogLevel.Warning,
            Message = "Forward failed after the use of grant {GrantId} was consumed: route={Route} error={Error} traceId={TraceId}")]
        public static partial void ForwardFailed(ILogger logger, string? grantId, string route, string error, string? traceId);

        [LoggerMessage(EventId = 200, EventName = "AssuranceDenied", Level = LogLevel.Warning,
            Message = "Denied {Reason} route={Route} policy={Policy} mode={Mode} grant={GrantId} grantStatus={GrantStatus} "
                + "usesRemaining={UsesRemaining} approver={Approver} approvalAal={ApprovalAal} subject={Subject} session={Session} "
                + "aal={Aal} workload={Workload} workloadSource={WorkloadSource} origin={Origin} request={RequestHash} "
                + "token={TokenHash} mismatch={Mismatch} revoked={Revoked} firstUse={FirstUseTraceId} firstUseAt={FirstUseAt} "
                + "firstUseWorkload={FirstUseWorkload} traceId={TraceId}: {Detail}")]
        private static partial void Denied(
            ILogger logger, string reason, string route, string policy, string mode, string? grantId, string? grantStatus,
            int? usesRemaining, string? approver, int? approvalAal, string? subject, string? session, int? aal, string? workload,
            string? workloadSource, string? origin, string? requestHash, string? tokenHash, string? mismatch, bool revoked,
            string? firstUseTraceId, string? firstUseAt, string? firstUseWorkload, string? traceId, string? detail);
    }
}
