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

/// <summary>JWKS fetched from a URI (directly, or found by OIDC discovery), cached and refreshed by IdentityModel.</summary>
internal sealed class RemoteKeySource : IIssuerKeySource
{
    private readonly Func<CancellationToken, Task<JsonWebKeySet>> _fetch;
    private readonly Action _refresh;
    private IssuerKeys _keys = IssuerKeys.Empty;
    private JsonWebKeySet? _lastSet;

    private RemoteKeySource(Func<CancellationToken, Task<JsonWebKeySet>> fetch, Action refresh)
    {
        _fetch = fetch;
        _refresh = refresh;
    }

    public static RemoteKeySource ForJwksUri(string uri, HttpClient? client = null)
    {
        var manager = new ConfigurationManager<JsonWebKeySet>(uri, new JwksRetriever(), Retriever(uri, client));
        return new RemoteKeySource(ct => manager.GetConfigurationAsync(ct), manager.RequestRefresh);
    }

    public static RemoteKeySource ForAuthority(string authority, HttpClient? client = null)
    {
        var metadata = authority.TrimEnd('/') + "/.well-known/openid-configuration";
        var manager = new ConfigurationManager<OpenIdConnectConfiguration>(
            metadata, new OpenIdConnectConfigurationRetriever(), Retriever(metadata, client));
        return new RemoteKeySource(
            async ct =>
            {
                var config = await manager.GetConfigurationAsync(ct).ConfigureAwait(false);
                return config.JsonWebKeySet ?? new JsonWebKeySet();
            },
            manager.RequestRefresh);
    }

    public async ValueTask<IssuerKeys> GetKeysAsync(CancellationToken cancellationToken)
    {
        var set = await _fetch(cancellationToken).ConfigureAwait(false);
        if (!ReferenceEquals(set, _lastSet))
        {
            _keys = IssuerKeys.From(set);
            _lastSet = set;
        }

        return _keys;
    }

    public void RequestRefresh() => _refresh();

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
