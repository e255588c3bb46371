using AssuranceGateway.Configuration;
using Microsoft.Extensions.Logging;

namespace AssuranceGateway.Grants;

internal static class GrantStoreFactory
{
    public static IGrantStore Create(StoreSettings settings, TimeProvider time, ILoggerFactory loggers)
    {
        _ = loggers;
        return new InMemoryGrantStore(time, settings.EvidenceRetention);
    }
}
