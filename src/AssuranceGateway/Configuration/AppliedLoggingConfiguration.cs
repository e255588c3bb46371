using System.Collections.Frozen;
using Microsoft.Extensions.Configuration;

namespace AssuranceGateway.Configuration;

/// <summary>
/// The host's logging's own view of the <c>Logging</c> section: the copy in the configuration the gateway applied, as
/// <see cref="ListenerConfiguration"/> is Kestrel's. Reading the file directly, the host's logging bound a change the
/// gateway refused: a value the console logger cannot bind (<c>Logging:Console:LogToStandardErrorThreshold</c> set to
/// "Verbose") left its options unreadable, and every logger created after it threw (a 500 from the API's first JSON
/// answer), until the file was fixed. Through this copy it sees only what an applied change says.
/// </summary>
public sealed class AppliedLoggingConfiguration : ConfigurationProvider
{
    private FrozenDictionary<string, string?> _published;

    public AppliedLoggingConfiguration(GatewaySettings settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        _published = settings.Logging;
        Data = new Dictionary<string, string?>(_published, StringComparer.OrdinalIgnoreCase);
        Root = new ConfigurationRoot([this]);
    }

    /// <summary>What the host's logging is configured from (<c>Root.GetSection("Logging")</c>).</summary>
    public IConfigurationRoot Root { get; }

    /// <summary>Hands the host's logging the section of an applied configuration; a change of it reloads the loggers' options.</summary>
    public void Publish(GatewaySettings settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        var section = settings.Logging;
        if (section.Count == _published.Count && section.All(e => _published.TryGetValue(e.Key, out var v) && string.Equals(v, e.Value, StringComparison.Ordinal)))
        {
            return;
        }

        _published = section;
        Data = new Dictionary<string, string?>(section, StringComparer.OrdinalIgnoreCase);
        OnReload();
    }
}
