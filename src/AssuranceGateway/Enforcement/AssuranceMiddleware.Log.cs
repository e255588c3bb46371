using Microsoft.Extensions.Logging;

namespace AssuranceGateway.Enforcement;

public sealed partial class AssuranceMiddleware
{
    private static partial class Log
    {
        // One structured line per denial, with the fields of the evidence span (SPEC §6). Hashes and ids only.
        [LoggerMessage(EventId = 200, EventName = "AssuranceDenied", Level = LogLevel.Warning,
            Message = "Denied {Reason} route={Route} policy={Policy} mode={Mode} grant={GrantId} subject={Subject} workload={Workload} origin={Origin} request={RequestHash} token={TokenHash} mismatch={Mismatch} traceId={TraceId}: {Detail}")]
        public static partial void Denied(
            ILogger logger, string reason, string route, string policy, string mode, string? grantId, string? subject, string? workload,
            string? origin, string? requestHash, string? tokenHash, string? mismatch, string? traceId, string? detail);
    }
}
