using Microsoft.Extensions.Logging;

namespace AssuranceGateway.Grants;

internal sealed partial class RedisGrantStore
{
    // Event ids 3100-3199: the Redis grant store, each used once (operators alert on them; LoggerMessageTests checks
    // the whole assembly). Next free: 3126. Only store names, grant ids and operation names are logged: the store
    // never sees a raw token or body, and the connection string may hold a password.
    private static partial class Log
    {
        [LoggerMessage(3100, LogLevel.Debug, "Grant store {Store}: connecting ({Link})")]
        public static partial void Connecting(ILogger logger, string store, string link);

        [LoggerMessage(3101, LogLevel.Warning, "Grant store {Store}: connection failed ({FailureType}); said again only when the cause changes")]
        public static partial void ConnectionFailed(ILogger logger, string store, string failureType);

        [LoggerMessage(3102, LogLevel.Debug, "Grant store {Store}: connection restored")]
        public static partial void ConnectionRestored(ILogger logger, string store);

        [LoggerMessage(3103, LogLevel.Debug, "Grant store {Store}: {Link} connection unhealthy for {Elapsed}, rebuilding it")]
        public static partial void Rebuilding(ILogger logger, string store, string link, TimeSpan elapsed);

        [LoggerMessage(3114, LogLevel.Warning, "Grant store {Store}: {Link} connection does not answer ({Why}); requests are denied (store_unavailable) until it does")]
        public static partial void Unreachable(ILogger logger, string store, string link, string why);

        [LoggerMessage(3115, LogLevel.Information, "Grant store {Store}: {Link} connection answers")]
        public static partial void Reachable(ILogger logger, string store, string link);

        [LoggerMessage(3104, LogLevel.Debug, "Grant store {Store}: {Operation} on grant {GrantId} failed: {Why} (outcome unknown: {OutcomeUnknown})")]
        public static partial void OperationFailed(ILogger logger, string store, string operation, string grantId, string why, bool outcomeUnknown);

        [LoggerMessage(3105, LogLevel.Warning, "Grant store {Store}: consume of grant {GrantId} (trace {TraceId}) has an unknown outcome; it will be recorded on the grant once the store answers")]
        public static partial void UnknownOutcome(ILogger logger, string store, string grantId, string? traceId);

        [LoggerMessage(3106, LogLevel.Information, "Grant store {Store}: {EventType} of trace {TraceId} recorded on grant {GrantId}")]
        public static partial void DeferredEventRecorded(ILogger logger, string store, string grantId, string? traceId, string eventType);

        [LoggerMessage(3107, LogLevel.Error, "Grant store {Store}: unknown-outcome queue full, dropped the record of grant {GrantId} (trace {TraceId})")]
        public static partial void UnknownOutcomeDropped(ILogger logger, string store, string grantId, string? traceId);

        [LoggerMessage(3108, LogLevel.Warning, "Grant store {Store}: closed with {Count} unknown outcome(s) not yet recorded")]
        public static partial void UnknownOutcomesLost(ILogger logger, string store, int count);

        [LoggerMessage(3124, LogLevel.Error, "Grant store {Store}: closed before {EventType} of trace {TraceId} (span {SpanId}, at {At:o}, reason {Reason}) "
            + "could be recorded on grant {GrantId}; the use may have been spent. Record it on the grant by hand")]
        public static partial void UnrecordedAtClose(ILogger logger, string store, string eventType, string grantId, string? traceId, string? spanId, DateTimeOffset at, string? reason);

        [LoggerMessage(3109, LogLevel.Debug, "Grant store {Store}: index clean-up for grant(s) {GrantIds} deferred; the index heals itself when read")]
        public static partial void IndexCleanupDeferred(ILogger logger, string store, string grantIds, Exception exception);

        [LoggerMessage(3110, LogLevel.Error, "Grant store {Store}: background loop failed")]
        public static partial void BackgroundFailure(ILogger logger, string store, Exception exception);

        [LoggerMessage(3112, LogLevel.Warning, "Grant store {Store}: use of grant {GrantId} acknowledged by {Acknowledged} of {Required} replicas in time: denied")]
        public static partial void TooFewReplicaAcks(ILogger logger, string store, string grantId, long acknowledged, int required);

        [LoggerMessage(3113, LogLevel.Error, "Grant store {Store}: RequireReplicaAcks is not supported on Redis Cluster (WAIT cannot be routed to the grant's node); consumes fail closed")]
        public static partial void ReplicaAcksUnsupported(ILogger logger, string store);

        [LoggerMessage(3111, LogLevel.Debug, "Grant store {Store}: loading scripts failed; they will be sent in full on first use")]
        public static partial void ScriptLoadFailed(ILogger logger, string store, Exception exception);

        [LoggerMessage(3116, LogLevel.Information, "Grant store {Store}: consumes go over a dedicated connection to {EndPoint}")]
        public static partial void PipeConnected(ILogger logger, string store, string endPoint);

        [LoggerMessage(3118, LogLevel.Warning, "Grant store {Store}: Redis answers but {Refusal}; requests that need the store are denied (store_unavailable). Said at most once a minute while it lasts")]
        public static partial void Refused(ILogger logger, string store, string refusal);

        [LoggerMessage(3119, LogLevel.Error, "Grant store {Store}: Redis {Risk}. Uses, new grants and approvals are denied (store_unavailable) and /readyz is 503 until it does not")]
        public static partial void Evicting(ILogger logger, string store, string risk);

        [LoggerMessage(3120, LogLevel.Information, "Grant store {Store}: Redis no longer evicts keys (maxmemory-policy noeviction, or no maxmemory); serving again")]
        public static partial void NoLongerEvicting(ILogger logger, string store);

        [LoggerMessage(3121, LogLevel.Debug, "Grant store {Store}: reading INFO failed; the eviction and clock checks run again on the next round")]
        public static partial void EvictionCheckFailed(ILogger logger, string store, Exception exception);

        [LoggerMessage(3122, LogLevel.Warning, "Grant store {Store}: Redis's clock is {Seconds} s {Direction} this gateway's. Grant windows are set and judged by Redis's clock, but this gateway's judges tokens (exp, nbf, iat within ClockSkew) and stamps signed evidence, so callers may be refused or admitted that much early or late; synchronise the clocks (NTP)")]
        public static partial void ClockOffset(ILogger logger, string store, double seconds, string direction);

        [LoggerMessage(3123, LogLevel.Information, "Grant store {Store}: Redis's clock agrees with this gateway's again")]
        public static partial void ClockAgrees(ILogger logger, string store);

        [LoggerMessage(3125, LogLevel.Warning, "Grant store {Store}: pending grant {GrantId} left out of the list of pending grants: {Why}. It can be neither approved nor used; mend or delete its record")]
        public static partial void PendingUnreadable(ILogger logger, string store, string grantId, string why);

        [LoggerMessage(3117, LogLevel.Warning, "Grant store {Store}: the dedicated consume connection is unavailable ({Why}); consumes use the shared connection meanwhile")]
        public static partial void PipeUnavailable(ILogger logger, string store, string why);
    }
}
