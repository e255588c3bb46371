using System.Collections.Frozen;
using Microsoft.Extensions.Configuration;

namespace AssuranceGateway.Configuration;

/// <summary>
/// Kestrel's own view of the <c>Kestrel</c> section: the copy in the configuration the gateway applied. Kestrel reloads
/// its endpoints when its configuration changes; reading the file directly, it rebound them on a change the gateway
/// refused as a whole (a listener moved while the policies stayed, or an https endpoint the gateway refused for its
/// missing certificate replaced a working one). Through this copy it rebinds only what an applied change says.
/// Renewed certificate files are still served: Kestrel watches those files by itself.
/// </summary>
public sealed class ListenerConfiguration : ConfigurationProvider
{
    private FrozenDictionary<string, string?> _published;

    public ListenerConfiguration(GatewaySettings settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        _published = settings.Kestrel;
        Data = new Dictionary<string, string?>(_published, StringComparer.OrdinalIgnoreCase);
        Root = new ConfigurationRoot([this]);
    }

    /// <summary>What Kestrel is configured from (<c>Root.GetSection("Kestrel")</c>).</summary>
    public IConfigurationRoot Root { get; }

    /// <summary>Hands Kestrel the section of an applied configuration; a change of it makes Kestrel rebind.</summary>
    public void Publish(GatewaySettings settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        var section = settings.Kestrel;
        if (section.Count == _published.Count && section.All(e => _published.TryGetValue(e.Key, out var v) && string.Equals(v, e.Value, StringComparison.Ordinal)))
        {
            return;
        }

        _published = section;
        Data = new Dictionary<string, string?>(section, StringComparer.OrdinalIgnoreCase);
        OnReload();
    }
}
