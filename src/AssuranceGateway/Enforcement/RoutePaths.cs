using System.Runtime.CompilerServices;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.AspNetCore.Routing.Patterns;
using Microsoft.AspNetCore.Routing.Template;
using Yarp.ReverseProxy.Configuration;

namespace AssuranceGateway.Enforcement;

/// <summary>
/// The path templates of one configuration generation's routes, to tell which route the gateway would give a path that
/// has none of the oddities routing and upstreams read differently (<see cref="Requests.UpstreamPaths.Read"/>): no empty
/// segment, no ';', no '\'. Templates are matched as ASP.NET Core routing matches them (case ignored, catch-alls, defaults,
/// inline constraints) and ranked as it ranks them (route order, then template precedence). A route's other criteria
/// (hosts, methods, headers, query) are not looked at: the route the request matched passed them, so a route that wins
/// here and would fail them only makes the answer more cautious. Built once per generation, by the first request that
/// needs it.
/// </summary>
internal sealed class RoutePaths
{
    private static readonly ConditionalWeakTable<IReadOnlyList<RouteConfig>, RoutePaths> ByGeneration = [];

    private readonly Dictionary<string, Template> _templates = new(StringComparer.OrdinalIgnoreCase);

    private RoutePaths(IReadOnlyList<RouteConfig> routes, IInlineConstraintResolver constraints)
    {
        foreach (var route in routes)
        {
            _templates[route.RouteId] = new Template(route, constraints);
        }
    }

    public static RoutePaths For(IReadOnlyList<RouteConfig> routes, IInlineConstraintResolver constraints) =>
        ByGeneration.GetValue(routes, r => new RoutePaths(r, constraints));

    /// <summary>
    /// True unless route <paramref name="routeId"/> is the one route the gateway would choose for <paramref name="path"/>
    /// (a path as <see cref="Requests.UpstreamPaths.Read"/> returns it): it must match it, and every other route that
    /// matches it must rank below it.
    /// </summary>
    public bool RoutesElsewhere(HttpContext context, string routeId, string path)
    {
        if (!_templates.TryGetValue(routeId, out var routed) || !routed.Matches(context, path))
        {
            return true;
        }

        foreach (var template in _templates.Values)
        {
            if (!ReferenceEquals(template, routed) && !template.RanksBelow(routed) && template.Matches(context, path))
            {
                return true;
            }
        }

        return false;
    }

    private sealed class Template
    {
        private readonly TemplateMatcher _matcher;
        private readonly int _order;
        private readonly decimal _precedence;
        private readonly List<(RoutePatternParameterPart Parameter, IRouteConstraint Constraint)> _constraints = [];

        public Template(RouteConfig route, IInlineConstraintResolver constraints)
        {
            // YARP gives a route without a path template a catch-all one.
            var pattern = RoutePatternFactory.Parse(route.Match.Path ?? "/{**catchall}");
            _matcher = new TemplateMatcher(new RouteTemplate(pattern), new RouteValueDictionary(pattern.Defaults));
            _order = route.Order ?? 0;
            _precedence = pattern.InboundPrecedence;
            foreach (var (name, policies) in pattern.ParameterPolicies)
            {
                var parameter = pattern.GetParameter(name)!;
                foreach (var policy in policies)
                {
                    if ((policy.ParameterPolicy as IRouteConstraint ?? Resolve(constraints, policy.Content)) is { } constraint)
                    {
                        _constraints.Add((parameter, constraint));
                    }
                }
            }
        }

        // A policy that is no constraint (a parameter transformer) narrows no match.
        private static IRouteConstraint? Resolve(IInlineConstraintResolver constraints, string? content)
        {
            try
            {
                return content is null ? null : constraints.ResolveConstraint(content);
            }
            catch (RouteCreationException)
            {
                return null;
            }
        }

        /// <summary>Routing prefers the lower order, then the lower (more specific) inbound precedence.</summary>
        public bool RanksBelow(Template other) =>
            _order != other._order ? _order > other._order : _precedence > other._precedence;

        public bool Matches(HttpContext context, string path)
        {
            var values = new RouteValueDictionary();
            if (!_matcher.TryMatch(new PathString(path), values))
            {
                return false;
            }

            foreach (var (parameter, constraint) in _constraints)
            {
                if (parameter.IsOptional && !values.ContainsKey(parameter.Name))
                {
                    continue;
                }

                if (!constraint.Match(context, null, parameter.Name, values, RouteDirection.IncomingRequest))
                {
                    return false;
                }
            }

            return true;
        }
    }
}
