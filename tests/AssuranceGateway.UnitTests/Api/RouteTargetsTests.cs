using AssuranceGateway.Api;
using Yarp.ReverseProxy.Configuration;

namespace AssuranceGateway.UnitTests.Api;

/// <summary>A grant for a request its route never matches could only be presented on another route, or on none.</summary>
public sealed class RouteTargetsTests
{
    private static RouteConfig Route(string? path, params string[] methods) => new()
    {
        RouteId = "r",
        ClusterId = "c",
        Match = new RouteMatch { Path = path, Methods = methods.Length > 0 ? methods : null },
    };

    [Theory]
    [InlineData("/deploy/{**rest}", "/deploy/v1/releases")]
    [InlineData("/deploy/{**rest}", "/deploy")]
    [InlineData("/deploy/{**rest}", "/DEPLOY/x")]              // literals match in any case, as routing does
    [InlineData("/items/{id:int}", "/items/abc")]              // constraints only narrow: not judged, never refused here
    [InlineData("/files/{name}", "/files/a%20b")]              // matched on the decoded path, as routing does
    [InlineData(null, "/anything")]                            // a route without a path (hosts only) matches any
    [InlineData("/deploy/{**rest}", "/deploy//v1/releases")]   // routing takes empty segments (object-store keys)
    [InlineData("/reports/{format=json}", "/reports")]         // an inline default makes the segment optional
    [InlineData("/reports/{format?}", "/reports")]
    public void Problem_PathTheRouteMatches_Null(string? template, string path) =>
        Assert.Null(RouteTargets.Problem(Route(template), "POST", path));

    [Theory]
    [InlineData("/deploy/{**rest}", "/status")]
    [InlineData("/deploy/{**rest}", "/deployments/x")]
    [InlineData("/status", "/status/x")]
    [InlineData("/files/{name}", "/files/a/b")]
    public void Problem_PathTheRouteNeverMatches_NamesThePath(string template, string path) =>
        Assert.StartsWith("request.path: route 'r' matches", RouteTargets.Problem(Route(template), "POST", path), StringComparison.Ordinal);

    [Fact]
    public void Problem_MethodTheRouteDoesNotMatch_NamesTheMethod()
    {
        Assert.Null(RouteTargets.Problem(Route("/x", "POST", "PUT"), "PUT", "/x"));
        Assert.StartsWith("request.method: route 'r' matches only POST, PUT", RouteTargets.Problem(Route("/x", "POST", "PUT"), "DELETE", "/x"), StringComparison.Ordinal);
    }
}
