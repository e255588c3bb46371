using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace AssuranceGateway.Diagnostics;

/// <summary>
/// Kestrel logs each request it refuses while parsing, at Debug in its BadRequests category, with the offending line as
/// received (up to 128 bytes): a credential folded over two lines (obs-fold), or an <c>Authorization</c> line without its
/// colon, puts the raw signature of an access token or a workload JWT in the log. SPEC §6 allows no raw token in any
/// log, whatever level an operator sets, so this category is held at Information (where Kestrel writes nothing for it),
/// whatever the configuration says; the gateway says so at start when the configuration asked for more.
/// </summary>
internal sealed class KestrelBadRequestLog : IPostConfigureOptions<LoggerFilterOptions>
{
    public const string Category = "Microsoft.AspNetCore.Server.Kestrel.BadRequests";

    /// <summary>True when the last logging configuration would have enabled Debug or Trace for the category.</summary>
    public bool Overridden { get; private set; }

    public void PostConfigure(string? name, LoggerFilterOptions options)
    {
        Overridden = false;
        var providers = new HashSet<string?>(StringComparer.OrdinalIgnoreCase) { null };
        foreach (var rule in options.Rules)
        {
            providers.Add(rule.ProviderName);
        }

        foreach (var provider in providers)
        {
            if (EffectiveLevel(options, provider) < LogLevel.Information)
            {
                Overridden = true;
            }
        }

        // A rule naming a sub-category (or a wildcard beyond the name) would be more specific than the ones added here.
        for (var i = 0; i < options.Rules.Count; i++)
        {
            var rule = options.Rules[i];
            if (rule.CategoryName is { } category && category.Length > Category.Length
                && category.StartsWith(Category, StringComparison.OrdinalIgnoreCase) && rule.LogLevel is null or < LogLevel.Information)
            {
                options.Rules[i] = new LoggerFilterRule(rule.ProviderName, category, LogLevel.Information, rule.Filter);
            }
        }

        // Last among equally specific rules wins: one per provider name that any rule uses, and one for all providers.
        foreach (var provider in providers)
        {
            options.Rules.Add(new LoggerFilterRule(provider, Category, LogLevel.Information, null));
        }
    }

    /// <summary>The level the configuration selects for the category (as LoggerFactory selects: provider, then longest category, then last).</summary>
    private static LogLevel EffectiveLevel(LoggerFilterOptions options, string? provider)
    {
        LoggerFilterRule? best = null;
        foreach (var rule in options.Rules)
        {
            if (rule.ProviderName is not null && !string.Equals(rule.ProviderName, provider, StringComparison.OrdinalIgnoreCase))
            {
                continue;
            }

            var prefix = rule.CategoryName?.Split('*')[0];
            if (prefix is not null && !Category.StartsWith(prefix, StringComparison.OrdinalIgnoreCase))
            {
                continue;
            }

            if (best is null
                || (rule.ProviderName is not null && best.ProviderName is null)
                || ((rule.ProviderName is null) == (best.ProviderName is null) && (rule.CategoryName?.Length ?? -1) >= (best.CategoryName?.Length ?? -1)))
            {
                best = rule;
            }
        }

        return best?.LogLevel ?? options.MinLevel;
    }

    public static void Hold(IServiceCollection services)
    {
        var hold = new KestrelBadRequestLog();
        services.AddSingleton(hold);
        services.AddSingleton<IPostConfigureOptions<LoggerFilterOptions>>(hold);
    }
}
