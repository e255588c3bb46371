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

    /// <summary>
    /// The category pattern of the hold's rules: the name as prefix and as suffix around the one wildcard allowed. It
    /// matches the category (and no other that exists) and, at 97 characters, no rule that matches the category can be
    /// longer (its prefix and its suffix are each at most the name): LoggerFactory takes the longest matching category,
    /// then the last rule, so the hold's rules, added last, always decide. A longer wildcard whose prefix and suffix
    /// overlap in the name (<c>Microsoft.AspNetCore.Server.Kestrel.*.BadRequests</c>) would beat a rule for the plain name.
    /// </summary>
    internal const string Pattern = Category + "*" + Category;

    /// <summary>True when the last logging configuration would have enabled Debug or Trace for the category.</summary>
    public bool Overridden { get; private set; }

    public void PostConfigure(string? name, LoggerFilterOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var providers = new HashSet<string?>(StringComparer.Ordinal) { null };
        foreach (var rule in options.Rules)
        {
            providers.Add(rule.ProviderName);
        }

        // Each level as the configuration selects it, before any rule is added; then one rule per provider name that any
        // rule uses, and one for all providers, keeping that level when it is Information or above (None stays None), so
        // that nothing but this category's Debug and Trace changes. Other categories' rules are left as they are.
        var held = providers.Select(provider => (provider, level: EffectiveLevel(options, provider))).ToList();
        Overridden = held.Exists(h => h.level < LogLevel.Information);
        foreach (var (provider, level) in held)
        {
            options.Rules.Add(new LoggerFilterRule(provider, Pattern, level < LogLevel.Information ? LogLevel.Information : level, null));
        }
    }

    /// <summary>
    /// The level the configuration selects for the category, as LoggerFactory selects: a rule for this provider before
    /// one for all, then the longest category pattern that matches (a prefix, or a prefix and a suffix around one <c>*</c>), then the last.
    /// </summary>
    private static LogLevel EffectiveLevel(LoggerFilterOptions options, string? provider)
    {
        LoggerFilterRule? best = null;
        foreach (var rule in options.Rules)
        {
            if (rule.ProviderName is not null && !string.Equals(rule.ProviderName, provider, StringComparison.Ordinal))
            {
                continue;
            }

            if (rule.CategoryName is { } pattern && !Matches(pattern))
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

        // A rule with a filter and no level lets every level through to its filter.
        return best is null ? options.MinLevel : best.LogLevel ?? LogLevel.Trace;
    }

    private static bool Matches(string pattern)
    {
        var star = pattern.IndexOf('*', StringComparison.Ordinal);
        return star < 0
            ? Category.StartsWith(pattern, StringComparison.OrdinalIgnoreCase)
            : Category.StartsWith(pattern[..star], StringComparison.OrdinalIgnoreCase)
                && Category.EndsWith(pattern[(star + 1)..], StringComparison.OrdinalIgnoreCase);
    }

    public static void Hold(IServiceCollection services)
    {
        var hold = new KestrelBadRequestLog();
        services.AddSingleton(hold);
        services.AddSingleton<IPostConfigureOptions<LoggerFilterOptions>>(hold);
    }
}
