using System.Collections.Frozen;
using System.Security.Cryptography;
using Microsoft.IdentityModel.Protocols;
using Microsoft.IdentityModel.Protocols.OpenIdConnect;
using Microsoft.IdentityModel.Tokens;

namespace AssuranceGateway.Tokens;

/// <summary>
/// The signing keys of one issuer, indexed by <c>kid</c>. RFC 7517 §4.5 lets keys of different types share a <c>kid</c>
/// (an issuer moving from RSA to EC may publish both under one name): a token's key is the one under its <c>kid</c> that
/// fits its algorithm.
/// </summary>
public sealed class IssuerKeys
{
    public static readonly IssuerKeys Empty = new(FrozenDictionary<string, SecurityKey[]>.Empty, []);

    private readonly FrozenDictionary<string, SecurityKey[]> _byKid;

    private IssuerKeys(FrozenDictionary<string, SecurityKey[]> byKid, SecurityKey[] all)
    {
        _byKid = byKid;
        OnlyKey = all.Length == 1 ? all[0] : null;
        Usable = OnlyKey is not null ? all : [.. byKid.Values.SelectMany(k => k)];
    }

    /// <summary>The keys a token can reach: those under a <c>kid</c>, or the only key (a token may then omit <c>kid</c>).</summary>
    public IReadOnlyList<SecurityKey> Usable { get; }

    /// <summary>The issuer's only key, when it has exactly one: then a token may omit <c>kid</c>.</summary>
    public SecurityKey? OnlyKey { get; }

    public int Count => Usable.Count;

    public static IssuerKeys From(JsonWebKeySet set)
    {
        var byKid = new Dictionary<string, List<SecurityKey>>(StringComparer.Ordinal);
        var all = new List<SecurityKey>();
        foreach (var jwk in set.Keys)
        {
            if (!Acceptable(jwk))
            {
                continue;
            }

            all.Add(jwk);
            if (!string.IsNullOrEmpty(jwk.Kid))
            {
                if (!byKid.TryGetValue(jwk.Kid, out var named))
                {
                    byKid[jwk.Kid] = named = [];
                }

                named.Add(jwk);
            }
        }

        return new IssuerKeys(byKid.ToFrozenDictionary(p => p.Key, p => p.Value.ToArray(), StringComparer.Ordinal), [.. all]);
    }

    /// <summary>
    /// Whether <paramref name="key"/> can verify a signature of <paramref name="algorithm"/>: an EC key only the
    /// algorithm of its curve (RFC 7518 §3.4: ES256 is P-256, ES384 P-384, ES512 P-521), an RSA key RS* and PS*, and a key
    /// published with an <c>alg</c> only that one (RFC 7517 §4.4).
    /// </summary>
    public static bool Fits(SecurityKey key, string algorithm)
    {
        if (key is not JsonWebKey jwk)
        {
            return true;
        }

        if (jwk.Alg is { Length: > 0 } published && !string.Equals(published, algorithm, StringComparison.Ordinal))
        {
            return false;
        }

        return jwk.Kty switch
        {
            JsonWebAlgorithmsKeyTypes.EllipticCurve => string.Equals(jwk.Crv, CurveOf(algorithm), StringComparison.Ordinal),
            JsonWebAlgorithmsKeyTypes.RSA => algorithm.StartsWith("RS", StringComparison.Ordinal) || algorithm.StartsWith("PS", StringComparison.Ordinal),
            _ => false,
        };
    }

    /// <summary>The curve an ECDSA algorithm signs on, or null for any other algorithm.</summary>
    public static string? CurveOf(string algorithm) => algorithm switch
    {
        "ES256" => "P-256",
        "ES384" => "P-384",
        "ES512" => "P-521",
        _ => null,
    };

    /// <summary>
    /// A signing key as its members describe it. Not: a key for another use (encryption, a SPIFFE bundle's X.509
    /// authority), a symmetric key, an RSA key under 2048 bits. A key that also carries a certificate (x5c) is used by its
    /// own members (n/e, x/y), which the library would otherwise ignore for the certificate's key (RFC 7517 §4.7 says
    /// they must match; nothing checks that they do).
    /// </summary>
    private static bool Acceptable(JsonWebKey jwk)
    {
        if (jwk.Use is { Length: > 0 } use && use is not ("sig" or "jwt-svid"))
        {
            return false;
        }

        switch (jwk.Kty)
        {
            case JsonWebAlgorithmsKeyTypes.RSA:
                if (string.IsNullOrEmpty(jwk.N) || string.IsNullOrEmpty(jwk.E) || ModulusBits(jwk.N) < 2048)
                {
                    return false;
                }

                break;
            case JsonWebAlgorithmsKeyTypes.EllipticCurve:
                if (string.IsNullOrEmpty(jwk.X) || string.IsNullOrEmpty(jwk.Y) || !IsPointOnNamedCurve(jwk))
                {
                    return false;
                }

                break;
            default:
                return false;
        }

        jwk.X5c.Clear();
        jwk.X5t = null;
        jwk.X5tS256 = null;
        return true;
    }

    /// <summary>
    /// A key of an unknown curve ("P-999") or a point off its curve verifies nothing: refused here, so that a key set
    /// holding only such keys is "no signing key" at start (named) rather than every token of the issuer failing later.
    /// </summary>
    private static bool IsPointOnNamedCurve(JsonWebKey jwk)
    {
        try
        {
            using var key = EcJwk.Create(jwk, includePrivate: false);
            return true;
        }
        catch (Exception e) when (e is CryptographicException or FormatException or ArgumentException)
        {
            return false;
        }
    }

    private static int ModulusBits(string n)
    {
        try
        {
            // Whole bytes less the leading zero bits of the first: a 256-byte modulus starting 0x01 is a 2041-bit key.
            var modulus = Base64UrlEncoder.DecodeBytes(n).AsSpan().TrimStart((byte)0);
            return modulus.IsEmpty ? 0 : (modulus.Length * 8) - System.Numerics.BitOperations.LeadingZeroCount((uint)modulus[0]) + 24;
        }
        catch (FormatException)
        {
            return 0;
        }
    }

    /// <summary>
    /// The key a token with <paramref name="kid"/> and <paramref name="algorithm"/> is verified with: among the keys under
    /// that <c>kid</c> (or the only key, for a token without one), the first that fits the algorithm; failing that the
    /// first of them, so that the caller can say why it does not fit. Never a key under another <c>kid</c>.
    /// </summary>
    public SecurityKey? Find(string? kid, string algorithm)
    {
        if (kid is null)
        {
            return OnlyKey;
        }

        if (!_byKid.TryGetValue(kid, out var named))
        {
            return null;
        }

        foreach (var key in named)
        {
            if (Fits(key, algorithm))
            {
                return key;
            }
        }

        return named[0];
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
    // Before the first good fetch a request waits this long for keys at most, and a failed fetch is not retried sooner
    // than this: a hanging or failing IdP must neither hold requests (IdentityModel fetches without a deadline, one
    // caller after another) nor be hit once per request.
    private static readonly TimeSpan ColdWait = TimeSpan.FromSeconds(2);
    private static readonly TimeSpan ColdRetry = TimeSpan.FromSeconds(5);

    // Once keys are known, IdentityModel is asked at most this often. It moves its next automatic refresh only when a
    // fetch succeeds: with the IdP down when the 12-hourly refresh fell due, every call started another fetch, and
    // the gateway hit the failing IdP once per request (cache hits included, as they re-read the keys).
    private static readonly TimeSpan Recheck = TimeSpan.FromSeconds(1);
    private long _askedAt;

    // Key material is small and comes from where it was configured: bounded size and time, no redirects (RequireHttps
    // only checks the first address).
    private static readonly HttpClient KeyClient = new(new SocketsHttpHandler { AllowAutoRedirect = false, PooledConnectionLifetime = TimeSpan.FromMinutes(10) })
    {
        Timeout = TimeSpan.FromSeconds(10),
        MaxResponseContentBufferSize = 1024 * 1024,
    };

    // One source per address for the life of the process: a configuration reload (any edit) reuses it, so keys known
    // before the reload stay known while the IdP is down, and the cold-start windows do not open again.
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, RemoteKeySource> Shared = new(StringComparer.Ordinal);

    private readonly Func<CancellationToken, Task<JsonWebKeySet>> _fetch;
    private readonly Action _refresh;
    private readonly string _address;
    private readonly Lock _cold = new();
    private Task<JsonWebKeySet>? _coldFetch;
    private long _coldFailedAt;

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

    public static RemoteKeySource ForJwksUri(string uri) => Shared.GetOrAdd("jwks " + uri, static (_, uri) => CreateForJwksUri(uri), uri);

    /// <param name="issuer">The issuer the discovery document must name (OIDC Discovery §4.3: identical), or its keys are
    /// not used: a multi-tenant authority would otherwise lend another tenant's keys to this issuer.</param>
    public static RemoteKeySource ForAuthority(string authority, string issuer) =>
        Shared.GetOrAdd($"oidc {authority} {issuer}", static (_, a) => CreateForAuthority(a.authority, a.issuer), (authority, issuer));

    private static RemoteKeySource CreateForJwksUri(string uri)
    {
        var manager = new ConfigurationManager<JsonWebKeySet>(uri, new JwksRetriever(), Retriever(uri))
        {
            RefreshInterval = RefreshInterval,
        };
        return new RemoteKeySource(uri, ct => manager.GetConfigurationAsync(ct), manager.RequestRefresh);
    }

    private static RemoteKeySource CreateForAuthority(string authority, string issuer)
    {
        var metadata = authority.TrimEnd('/') + "/.well-known/openid-configuration";
        var manager = new ConfigurationManager<OpenIdConnectConfiguration>(
            metadata, new OpenIdConnectConfigurationRetriever(), Retriever(metadata))
        {
            RefreshInterval = RefreshInterval,
        };
        return new RemoteKeySource(
            metadata,
            async ct =>
            {
                var config = await manager.GetConfigurationAsync(ct).ConfigureAwait(false);
                if (!string.Equals(config.Issuer, issuer, StringComparison.Ordinal))
                {
                    throw new InvalidOperationException($"the discovery document names issuer '{config.Issuer}', not '{issuer}'");
                }

                return config.JsonWebKeySet ?? new JsonWebKeySet();
            },
            manager.RequestRefresh);
    }

    /// <exception cref="IssuerKeysUnavailableException">Nothing could be fetched yet (IdentityModel keeps serving the
    /// last good keys once it has some, so this only happens before the first successful fetch).</exception>
    public async ValueTask<IssuerKeys> GetKeysAsync(CancellationToken cancellationToken)
    {
        if (_cached is { } known)
        {
            var asked = Volatile.Read(ref _askedAt);
            if (asked != 0 && System.Diagnostics.Stopwatch.GetElapsedTime(asked) < Recheck)
            {
                return known.Keys;
            }

            Volatile.Write(ref _askedAt, System.Diagnostics.Stopwatch.GetTimestamp());
        }

        JsonWebKeySet set;
        try
        {
            set = _cached is null
                ? await ColdFetchAsync(cancellationToken).ConfigureAwait(false)
                : await _fetch(cancellationToken).ConfigureAwait(false);
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

    /// <summary>No keys yet: one fetch at a time for all callers, waited for briefly, not repeated soon after a failure.</summary>
    private async Task<JsonWebKeySet> ColdFetchAsync(CancellationToken cancellationToken)
    {
        Task<JsonWebKeySet> fetch;
        lock (_cold)
        {
            var failed = _coldFetch is { IsCompleted: true, IsCompletedSuccessfully: false };
            if (_coldFetch is null || (failed && System.Diagnostics.Stopwatch.GetElapsedTime(Volatile.Read(ref _coldFailedAt)) >= ColdRetry))
            {
                _coldFetch = FetchOnceAsync();
            }

            fetch = _coldFetch;
        }

        if (fetch is { IsCompleted: true, IsCompletedSuccessfully: false })
        {
            throw new IssuerKeysUnavailableException($"signing keys could not be fetched from '{_address}' (retried within {ColdRetry.TotalSeconds} s)", fetch.Exception?.InnerException);
        }

        try
        {
            return await fetch.WaitAsync(ColdWait, cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            throw new IssuerKeysUnavailableException($"signing keys from '{_address}' did not arrive within {ColdWait.TotalSeconds} s", null);
        }
    }

    private async Task<JsonWebKeySet> FetchOnceAsync()
    {
        try
        {
            return await _fetch(CancellationToken.None).ConfigureAwait(false);
        }
        catch
        {
            Volatile.Write(ref _coldFailedAt, System.Diagnostics.Stopwatch.GetTimestamp());
            throw;
        }
    }

    private sealed record Cached(JsonWebKeySet Set, IssuerKeys Keys);

    private static HttpDocumentRetriever Retriever(string address)
    {
        // HTTPS is required for key material, except on loopback (local IdPs and tests).
        var loopback = Uri.TryCreate(address, UriKind.Absolute, out var uri) && uri.IsLoopback;
        var retriever = new HttpDocumentRetriever(KeyClient);
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
