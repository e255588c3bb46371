using System.Globalization;
using AssuranceGateway.Diagnostics;
using AssuranceGateway.Tokens;
using Microsoft.Extensions.Logging;

namespace AssuranceGateway.Enforcement;

public sealed partial class AssuranceMiddleware
{
    private static partial class Log
    {
        /// <summary>The longest value from a token or an API caller written into a line (a claim is not bounded otherwise).</summary>
        private const int MaxValueLength = 256;

        /// <summary>
        /// One structured line per denial with the fields of the evidence span (SPEC §6), read from the decision the
        /// same way <see cref="EvidenceRecorder.Complete"/> reads it, so an SRE without the trace backend sees what
        /// the span says. Identifiers and hashes only: the decision holds no raw token, workload JWT or body. The trace id
        /// is the caller's (traceparent), so the span id says which decision a line is. Values from a signed claim or an
        /// API caller (subject, session, a claim-sourced workload, approvers, the first use's workload) are written with
        /// control characters escaped and capped in length (CWE-117: a CR/LF in a sub would start a forged line, an ESC
        /// drive the reader's terminal); the span keeps them as they are, its exporter encodes them.
        /// </summary>
        public static void Denied(ILogger logger, AssuranceDecision decision)
        {
            if (!logger.IsEnabled(LogLevel.Warning))
            {
                return;
            }

            var first = decision.ReplayedFirstUse;
            Denied(logger, decision.Reason, decision.Route, decision.Policy.Name, EvidenceRecorder.ModeName(decision.Policy.Mode),
                decision.EvidenceGrantId, decision.GrantStatus is { } status ? Grants.GrantStatusNames.Of(status) : null, decision.UsesRemaining,
                Safe(decision.Approvers.Count > 0 ? string.Join(',', decision.Approvers) : null), decision.ApprovalAal,
                Safe(decision.Subject), Safe(decision.Session), decision.Aal, Safe(decision.WorkloadId), decision.WorkloadSource, decision.Origin,
                decision.RequestHash, decision.TokenHash, decision.Mismatch.Count > 0 ? string.Join(',', decision.Mismatch) : null,
                decision.Revoked, first?.TraceId, first?.At.ToString("O", CultureInfo.InvariantCulture), Safe(first?.Workload),
                decision.TraceId, decision.SpanId, decision.Detail);
        }

        private static string? Safe(string? value) => value is null ? null : JwtInspector.Printable(value, MaxValueLength, asciiOnly: false);

        [LoggerMessage(EventId = 202, EventName = "TunnelClosedAtExpiry", Level = LogLevel.Information,
            Message = "Tunnel closed: the credentials that opened it expired at {CloseAt:O} (exp plus the allowed clock skew): route={Route} token={TokenHash}")]
        public static partial void TunnelClosedAtExpiry(ILogger logger, string route, string tokenHash, DateTimeOffset closeAt);

        [LoggerMessage(EventId = 201, EventName = "ForwardFailed", Level = LogLevel.Warning,
            Message = "Forward failed after the use of grant {GrantId} was consumed: route={Route} error={Error} traceId={TraceId} spanId={SpanId}")]
        public static partial void ForwardFailed(ILogger logger, string? grantId, string route, string error, string? traceId, string? spanId);

        [LoggerMessage(EventId = 200, EventName = "AssuranceDenied", Level = LogLevel.Warning,
            Message = "Denied {Reason} route={Route} policy={Policy} mode={Mode} grant={GrantId} grantStatus={GrantStatus} "
                + "usesRemaining={UsesRemaining} approver={Approver} approvalAal={ApprovalAal} subject={Subject} session={Session} "
                + "aal={Aal} workload={Workload} workloadSource={WorkloadSource} origin={Origin} request={RequestHash} "
                + "token={TokenHash} mismatch={Mismatch} revoked={Revoked} firstUse={FirstUseTraceId} firstUseAt={FirstUseAt} "
                + "firstUseWorkload={FirstUseWorkload} traceId={TraceId} spanId={SpanId}: {Detail}")]
        private static partial void Denied(
            ILogger logger, string reason, string route, string policy, string mode, string? grantId, string? grantStatus,
            int? usesRemaining, string? approver, int? approvalAal, string? subject, string? session, int? aal, string? workload,
            string? workloadSource, string? origin, string? requestHash, string? tokenHash, string? mismatch, bool revoked,
            string? firstUseTraceId, string? firstUseAt, string? firstUseWorkload, string? traceId, string? spanId, string? detail);
    }
}
