using Microsoft.AspNetCore.Builder;

namespace AssuranceGateway.Api;

internal static class GrantEndpoints
{
    public static void Map(WebApplication app)
    {
        _ = app;
    }
}
