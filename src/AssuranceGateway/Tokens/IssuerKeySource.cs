using System.Collections.Frozen;
using Microsoft.IdentityModel.Protocols;
using Microsoft.IdentityModel.Protocols.OpenIdConnect;
using Microsoft.IdentityModel.Tokens;

namespace AssuranceGateway.Tokens;

/// <summary>The signing keys of one issuer, indexed by <c>kid</c>.</summary>
public sealed class IssuerKeys
{
    public static readonly IssuerKeys Empty = new(FrozenDictionary<string, SecurityKey>.Empty, null);

    private IssuerKeys(FrozenDictionary<string, SecurityKey> byKid, SecurityKey? onlyKey)
    {
        ByKid = byKid;
        OnlyKey = onlyKey;
    }

    public FrozenDictionary<string, SecurityKey> ByKid { get; }

    /// <summary>The issuer's only key, when it has exactly one: then a token may omit <c>kid</c>.</summary>
    public SecurityKey? OnlyKey { get; }

    public int Count => ByKid.Count + (OnlyKey is not null && ByKid.Count == 0 ? 1 : 0);

    public static IssuerKeys From(JsonWebKeySet set)
    {
        var byKid = new Dictionary<string, SecurityKey>(StringComparer.Ordinal);
        var all = new List<SecurityKey>();
        foreach (var jwk in set.Keys)
        {
            // Encryption keys and symmetric keys are never accepted for access-token signatures.
            if (string.Equals(jwk.Use, "enc", StringComparison.Ordinal) || jwk.Kty == JsonWebAlgorithmsKeyTypes.Octet)
            {
                continue;
            }

            all.Add(jwk);
            if (!string.IsNullOrEmpty(jwk.Kid))
            {
                byKid[jwk.Kid] = jwk;
            }
        }

        return new IssuerKeys(byKid.ToFrozenDictionary(StringComparer.Ordinal), all.Count == 1 ? all[0] : null);
    }

    public SecurityKey? Find(string? kid)
    {
        if (kid is null)
        {
            return OnlyKey;
        }

        return ByKid.TryGetValue(kid, out var key) ? key : null;
    }
}

/// <summary>Where an issuer's keys come from: a file read at (re)load, a JWKS URI, or OIDC discovery.</summary>
public interface IIssuerKeySource
{
    /// <summary>Keys known now; never blocks on the network once keys have been fetched.</summary>
    ValueTask<IssuerKeys> GetKeysAsync(CancellationToken cancellationToken);

    /// <summary>A token named an unknown <c>kid</c>: the issuer may have rotated. Rate-limited by the source.</summary>
    void RequestRefresh();
}

internal sealed class StaticKeySource(IssuerKeys keys) : IIssuerKeySource
{
    public ValueTask<IssuerKeys> GetKeysAsync(CancellationToken cancellationToken) => ValueTask.FromResult(keys);

    public void RequestRefresh()
    {
        // File keys change by editing the file, which reloads the whole configuration.
    }
}

/// <summary>The keys of a remote issuer could not be fetched and none are cached: its tokens cannot be verified.</summary>
public sealed class IssuerKeysUnavailableException(string message, Exception? inner) : Exception(message, inner);

/// <summary>JWKS fetched from a URI (directly, or found by OIDC discovery), cached and refreshed by IdentityModel.</summary>
internal sealed class RemoteKeySource : IIssuerKeySource
{
    private readonly Func<CancellationToken, Task<JsonWebKeySet>> _fetch;
    private readonly Action _refresh;
    private readonly string _address;

    // One reference, swapped whole: the set and the keys built from it can never be seen half-updated by
    // concurrent requests (two separate fields could pair a new set with the old keys).
    private volatile Cached? _cached;

    private RemoteKeySource(string address, Func<CancellationToken, Task<JsonWebKeySet>> fetch, Action refresh)
    {
        _address = address;
        _fetch = fetch;
        _refresh = refresh;
    }

    /// <summary>
    /// How often an unknown <c>kid</c> may trigger a refetch (IdentityModel's <c>RefreshInterval</c>; the first
    /// request is always honoured). Five minutes by default, as in IdentityModel, so that a stream of tokens with random
    /// kids cannot turn the gateway into a JWKS flooder. Internal knob for tests (minimum 1 s, the library's floor);
    /// read when a source is created, i.e. at each configuration load.
    /// </summary>
    internal static TimeSpan RefreshInterval { get; set; } = BaseConfigurationManager.DefaultRefreshInterval;

    public static RemoteKeySource ForJwksUri(string uri, HttpClient? client = null)
    {
        var manager = new ConfigurationManager<JsonWebKeySet>(uri, new JwksRetriever(), Retriever(uri, client))
        {
            RefreshInterval = RefreshInterval,
        };
        return new RemoteKeySource(uri, ct => manager.GetConfigurationAsync(ct), manager.RequestRefresh);
    }

    public static RemoteKeySource ForAuthority(string authority, HttpClient? client = null)
    {
        var metadata = authority.TrimEnd('/') + "/.well-known/openid-configuration";
        var manager = new ConfigurationManager<OpenIdConnectConfiguration>(
            metadata, new OpenIdConnectConfigurationRetriever(), Retriever(metadata, client))
        {
            RefreshInterval = RefreshInterval,
        };
        return new RemoteKeySource(
            metadata,
            async ct =>
            {
                var config = await manager.GetConfigurationAsync(ct).ConfigureAwait(false);
                return config.JsonWebKeySet ?? new JsonWebKeySet();
            },
            manager.RequestRefresh);
    }

    /// <exception cref="IssuerKeysUnavailableException">Nothing could be fetched yet (IdentityModel keeps serving the
    /// last good keys once it has some, so this only happens before the first successful fetch).</exception>
    public async ValueTask<IssuerKeys> GetKeysAsync(CancellationToken cancellationToken)
    {
        JsonWebKeySet set;
        try
        {
            set = await _fetch(cancellationToken).ConfigureAwait(false);
        }
        catch (InvalidOperationException e)
        {
            // IDX20803: no configuration obtained. Without this, the exception escapes the pipeline as a 500.
            throw new IssuerKeysUnavailableException($"signing keys could not be fetched from '{_address}'", e);
        }

        var cached = _cached;
        if (cached is null || !ReferenceEquals(cached.Set, set))
        {
            cached = new Cached(set, IssuerKeys.From(set));
            _cached = cached;
        }

        return cached.Keys;
    }

    public void RequestRefresh() => _refresh();

    private sealed record Cached(JsonWebKeySet Set, IssuerKeys Keys);

    private static HttpDocumentRetriever Retriever(string address, HttpClient? client)
    {
        // HTTPS is required for key material, except on loopback (local IdPs and tests).
        var loopback = Uri.TryCreate(address, UriKind.Absolute, out var uri) && uri.IsLoopback;
        var retriever = client is null ? new HttpDocumentRetriever() : new HttpDocumentRetriever(client);
        retriever.RequireHttps = !loopback;
        return retriever;
    }

    private sealed class JwksRetriever : IConfigurationRetriever<JsonWebKeySet>
    {
        public async Task<JsonWebKeySet> GetConfigurationAsync(string address, IDocumentRetriever retriever, CancellationToken cancel)
        {
            var json = await retriever.GetDocumentAsync(address, cancel).ConfigureAwait(false);
            return new JsonWebKeySet(json);
        }
    }
}
