using System.Collections.Concurrent;
using System.Text.RegularExpressions;
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
internal static partial class RouteTargets
{
    private static readonly ConcurrentDictionary<string, TemplateMatcher> Matchers = new(StringComparer.Ordinal);

    public static string? Problem(RouteConfig route, string method, string rawPath)
    {
        var match = route.Match;
        if (match.Methods is { Count: > 0 } methods && !methods.Contains(method, StringComparer.OrdinalIgnoreCase))
        {
            return $"request.method: route '{route.RouteId}' matches only {string.Join(", ", methods)}, so the grant could never be used";
        }

        // Routing takes empty segments ("/deploy//x" reaches a catch-all): they are left out here, so that the check errs
        // towards a grant that may be usable.
        var path = PathString.FromUriComponent(EmptySegments().Replace(rawPath, "/"));
        if (match.Path is { Length: > 0 } template && !Matcher(template).TryMatch(path, []))
        {
            return $"request.path: route '{route.RouteId}' matches '{template}', which this path does not: a request for it goes to another route, never with this grant";
        }

        return null;
    }

    // Templates come from the validated configuration: few, and they passed YARP's own validation.
    // Inline defaults ("{format=json}") make a segment optional, as routing reads them.
    private static TemplateMatcher Matcher(string template) =>
        Matchers.GetOrAdd(template, static t =>
        {
            var parsed = TemplateParser.Parse(t);
            var defaults = new RouteValueDictionary();
            foreach (var parameter in parsed.Parameters)
            {
                if (parameter.DefaultValue is not null)
                {
                    defaults[parameter.Name!] = parameter.DefaultValue;
                }
            }

            return new TemplateMatcher(parsed, defaults);
        });

    [GeneratedRegex("/{2,}")]
    private static partial Regex EmptySegments();
}
