using AssuranceGateway.Configuration;
using Microsoft.Extensions.Logging;

namespace AssuranceGateway.Grants;

internal static partial class GrantStoreFactory
{
    /// <summary>Redis when <c>Assurance:Store:Redis</c> is set; otherwise the embedded store (one instance only).</summary>
    public static IGrantStore Create(StoreSettings settings, TimeProvider time, ILoggerFactory loggers)
    {
        if (!string.IsNullOrWhiteSpace(settings.Redis))
        {
            return new RedisGrantStore(settings, time, loggers.CreateLogger<RedisGrantStore>());
        }

        Log.Embedded(loggers.CreateLogger(typeof(GrantStoreFactory)));
        return new InMemoryGrantStore(time, settings.EvidenceRetention);
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 2, Level = LogLevel.Warning,
            Message = "Assurance:Store:Redis is empty: using the embedded in-process grant store. Grants live in this process only; do not run more than one instance.")]
        public static partial void Embedded(ILogger logger);
    }
}
