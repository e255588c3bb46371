using System.Collections.Frozen;
using Microsoft.Extensions.Configuration;

namespace AssuranceGateway.Configuration;

/// <summary>
/// A section of the configuration as the gateway applied it, for a part of the host that would otherwise read the file
/// on its own and take a change the gateway refused:
/// <list type="bullet">
/// <item>Kestrel, the <c>Kestrel</c> section: reading the file, it rebound its endpoints on a change refused as a whole
/// (a listener moved while the policies stayed, or an https endpoint refused for its missing certificate replaced a
/// working one). Renewed certificate files are still served: Kestrel watches those files by itself.</item>
/// <item>The host's logging, the <c>Logging</c> section: reading the file, a console option it could not bind left its
/// options unreadable, and every logger created afterwards threw (a 500 from the API's first JSON answer).</item>
/// </list>
/// Through this copy each sees only what an applied change says.
/// </summary>
public sealed class AppliedSection : ConfigurationProvider
{
    private readonly Func<GatewaySettings, FrozenDictionary<string, string?>> _section;
    private FrozenDictionary<string, string?> _published;

    /// <param name="settings">The configuration in force at start.</param>
    /// <param name="section">The section's keys and values (full keys) in a configuration.</param>
    public AppliedSection(GatewaySettings settings, Func<GatewaySettings, FrozenDictionary<string, string?>> section)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(section);
        _section = section;
        _published = section(settings);
        Data = new Dictionary<string, string?>(_published, StringComparer.OrdinalIgnoreCase);
        Root = new ConfigurationRoot([this]);
    }

    /// <summary>What the part of the host is configured from (<c>Root.GetSection(name)</c>).</summary>
    public IConfigurationRoot Root { get; }

    /// <summary>Hands over the section of an applied configuration; a change of it reloads whoever reads it.</summary>
    public void Publish(GatewaySettings settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        var section = _section(settings);
        if (section.Count == _published.Count && section.All(e => _published.TryGetValue(e.Key, out var v) && string.Equals(v, e.Value, StringComparison.Ordinal)))
        {
            return;
        }

        _published = section;
        Data = new Dictionary<string, string?>(section, StringComparer.OrdinalIgnoreCase);
        OnReload();
    }
}
