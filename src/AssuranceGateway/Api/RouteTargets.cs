using System.Collections.Concurrent;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.AspNetCore.Routing.Template;
using Yarp.ReverseProxy.Configuration;

namespace AssuranceGateway.Api;

/// <summary>
/// Whether a request an issuer writes into a grant can reach the route the grant names. YARP matches a request to a
/// route by its path and method before the gateway sees it: a grant for a path or method its route does not match is
/// only ever presented on another route (route_mismatch), or on none. Route constraints (<c>{id:int}</c>) and hosts,
/// headers and query matches are not judged here: they only narrow a match, so the check refuses no usable grant.
/// </summary>
internal static class RouteTargets
{
    private static readonly ConcurrentDictionary<string, TemplateMatcher> Matchers = new(StringComparer.Ordinal);

    public static string? Problem(RouteConfig route, string method, string rawPath)
    {
        var match = route.Match;
        if (match.Methods is { Count: > 0 } methods && !methods.Contains(method, StringComparer.OrdinalIgnoreCase))
        {
            return $"request.method: route '{route.RouteId}' matches only {string.Join(", ", methods)}, so the grant could never be used";
        }

        if (match.Path is { Length: > 0 } template && !Matcher(template).TryMatch(PathString.FromUriComponent(rawPath), []))
        {
            return $"request.path: route '{route.RouteId}' matches '{template}', which this path does not: a request for it goes to another route, never with this grant";
        }

        return null;
    }

    // Templates come from the validated configuration: few, and they passed YARP's own validation.
    private static TemplateMatcher Matcher(string template) =>
        Matchers.GetOrAdd(template, static t => new TemplateMatcher(TemplateParser.Parse(t), new RouteValueDictionary()));
}
