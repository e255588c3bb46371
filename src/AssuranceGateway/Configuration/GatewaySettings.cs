using System.Collections.Frozen;
using System.Net;
using AssuranceGateway.Tokens;
using Yarp.ReverseProxy.Configuration;

namespace AssuranceGateway.Configuration;

/// <summary>One validated, immutable configuration: swapped as a whole on reload, never edited in place.</summary>
public sealed class GatewaySettings
{
    public required FrozenDictionary<string, AssurancePolicy> Policies { get; init; }

    /// <summary>Route id → the policy that guards it. Every route has one, or the configuration was refused.</summary>
    public required FrozenDictionary<string, AssurancePolicy> RoutePolicies { get; init; }

    public required TokenSettings Tokens { get; init; }
    public required WorkloadSettings Workload { get; init; }
    public required StoreSettings Store { get; init; }
    public required ApiSettings Api { get; init; }
    public required EvidenceSettings Evidence { get; init; }
    public required IReadOnlyList<RouteConfig> Routes { get; init; }
    public required IReadOnlyList<ClusterConfig> Clusters { get; init; }

    /// <summary>
    /// <c>Urls</c> as read: Kestrel binds it once, at start. (Kestrel:Endpoints, which take precedence, Kestrel rebinds
    /// when a configuration that changes them is applied: see <see cref="AppliedSection"/>.)
    /// </summary>
    public string Urls { get; init; } = string.Empty;

    /// <summary>The <c>Kestrel</c> section as validated (endpoints, certificates), by full key.</summary>
    public FrozenDictionary<string, string?> Kestrel { get; init; } = FrozenDictionary<string, string?>.Empty;

    /// <summary>The <c>Logging</c> section as validated (levels, the console logger's options), by full key.</summary>
    public FrozenDictionary<string, string?> Logging { get; init; } = FrozenDictionary<string, string?>.Empty;

    public AssurancePolicy? PolicyForRoute(string routeId) =>
        RoutePolicies.TryGetValue(routeId, out var policy) ? policy : null;
}

public sealed record TokenSettings
{
    public required IReadOnlyList<TokenIssuer> Issuers { get; init; }
    public TimeSpan ClockSkew { get; init; } = TimeSpan.FromSeconds(30);
    public TimeSpan MaxLifetime { get; init; } = TimeSpan.FromHours(1);
    public IReadOnlyList<string> Types { get; init; } = ["at+jwt", "JWT"];
    public int MaxTokenBytes { get; init; } = 8192;
    public string AalClaim { get; init; } = "acr";
    public string SessionClaim { get; init; } = "sid";
    public FrozenDictionary<string, int> AalMap { get; init; } = FrozenDictionary<string, int>.Empty;
}

public enum WorkloadSource
{
    Mtls,
    Xfcc,
    Header,
    Claim,
}

public sealed record WorkloadSettings
{
    public IReadOnlyList<WorkloadSource> Sources { get; init; } = [];
    public IReadOnlyList<IPNetwork> TrustedProxies { get; init; } = [];
    public IReadOnlyList<TokenIssuer> Issuers { get; init; } = [];
    public string? Audience { get; init; }
    public string Claim { get; init; } = "azp";

    /// <summary>PEM bundle of CAs a client certificate must chain to (the <c>mtls</c> source).</summary>
    public string? ClientCaFile { get; init; }
}

public sealed record StoreSettings
{
    public string? Redis { get; init; }
    public string KeyPrefix { get; init; } = "agw:";
    public TimeSpan Timeout { get; init; } = TimeSpan.FromMilliseconds(250);
    public TimeSpan EvidenceRetention { get; init; } = TimeSpan.FromDays(7);
    public int RequireReplicaAcks { get; init; }
}

public sealed record ApiSettings
{
    public string Url { get; init; } = "http://127.0.0.1:8081";
    public string Audience { get; init; } = "assurance-api";
}

public sealed record EvidenceSettings
{
    public string? SigningKeyFile { get; init; }
    public Microsoft.IdentityModel.Tokens.JsonWebKey? SigningKey { get; init; }

    /// <summary>Keys published beside the signing key and never used to sign (a rotation's next or previous key), as listed.</summary>
    public IReadOnlyList<string> PublishedKeyFiles { get; init; } = [];

    /// <summary>The public parts of <see cref="PublishedKeyFiles"/>, in order: no private member is kept, whatever the file holds.</summary>
    public IReadOnlyList<Microsoft.IdentityModel.Tokens.JsonWebKey> PublishedKeys { get; init; } = [];

    public TimeSpan Lifetime { get; init; } = TimeSpan.FromSeconds(60);
}
