using Microsoft.IdentityModel.Tokens;

namespace AssuranceGateway.Evidence;

/// <summary>
/// The keys evidence was signed with in this process, and the latest expiry of what each signed, so that the JWK Set
/// keeps a rotated-out key for as long as an upstream may still be handed evidence signed with it (RFC 7517 §5: a set
/// may hold several keys; verifiers pick one by <c>kid</c>).
/// </summary>
/// <remarks>
/// A rotation is a reload that names another key file, and a request keeps the configuration it started with: one
/// that read the old generation before the reload (a slow body, say) still signs with the old key after it. So the
/// history follows what was signed, not the reloads, and needs no hook in the configuration state. Only public
/// parts are kept; nothing survives a restart (the previous key then is no longer known, unless the configuration
/// lists it under <c>PublishedKeyFiles</c>).
/// </remarks>
internal sealed class EvidenceKeyHistory
{
    private readonly Lock _lock = new();
    private readonly List<UsedKey> _used = [];
    private volatile UsedKey? _last;

    /// <summary>
    /// Records that evidence expiring at <paramref name="expiresAt"/> (Unix seconds) is signed with
    /// <paramref name="key"/>. Called before the signature leaves the gateway, so the key is published by then.
    /// </summary>
    public void Signed(JsonWebKey key, long expiresAt)
    {
        // The hot path takes no lock: the same key instance, with an expiry already at or past this one (expiries are
        // whole seconds, so this holds for all but about one signature a second).
        var last = _last;
        if (last is not null && ReferenceEquals(last.Key, key) && Volatile.Read(ref last.LatestExpiry) >= expiresAt)
        {
            return;
        }

        lock (_lock)
        {
            var used = Find(key);
            if (used is null)
            {
                used = new UsedKey(key);
                _used.Add(used);
            }

            if (used.LatestExpiry < expiresAt)
            {
                Volatile.Write(ref used.LatestExpiry, expiresAt);
            }

            _last = used;
        }
    }

    /// <summary>
    /// The public JWKs to serve: <paramref name="current"/> first, then the <paramref name="published"/> keys the
    /// configuration lists (never used to sign), then, newest first, every other key that signed evidence still within
    /// its expiry plus <paramref name="skew"/> at <paramref name="now"/>. Keys past that are forgotten: no evidence
    /// signed with them can be accepted any more. Each key (kid and point) once.
    /// </summary>
    public List<Dictionary<string, string>> Published(
        JsonWebKey? current, DateTimeOffset now, TimeSpan skew, IReadOnlyList<JsonWebKey>? published = null)
    {
        var keys = new List<Dictionary<string, string>>();
        var served = new HashSet<string>(StringComparer.Ordinal);
        if (current is not null && served.Add(Identity(current)))
        {
            keys.Add(PublicJwk(current));
        }

        foreach (var key in published ?? [])
        {
            if (served.Add(Identity(key)))
            {
                keys.Add(PublicJwk(key));
            }
        }

        var oldest = now.ToUnixTimeSeconds() - (long)Math.Ceiling(skew.TotalSeconds);
        lock (_lock)
        {
            _used.RemoveAll(u => u.LatestExpiry < oldest);
            for (var i = _used.Count - 1; i >= 0; i--)
            {
                if (served.Add(_used[i].Id))
                {
                    keys.Add(_used[i].Public);
                }
            }
        }

        return keys;
    }

    /// <summary>The public half of a key as served: never <c>d</c> or any other private member.</summary>
    public static Dictionary<string, string> PublicJwk(JsonWebKey key)
    {
        var jwk = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["kty"] = key.Kty, ["crv"] = key.Crv, ["x"] = key.X, ["y"] = key.Y, ["use"] = "sig", ["alg"] = "ES256",
        };
        if (!string.IsNullOrEmpty(key.Kid))
        {
            jwk["kid"] = key.Kid;
        }

        return jwk;
    }

    /// <summary>
    /// A reload re-reads the key file into a new instance: the same key (and kid) is one entry, whatever the instance.
    /// </summary>
    private UsedKey? Find(JsonWebKey key)
    {
        foreach (var used in _used)
        {
            if (ReferenceEquals(used.Key, key))
            {
                return used;
            }
        }

        var id = Identity(key);
        foreach (var used in _used)
        {
            if (string.Equals(used.Id, id, StringComparison.Ordinal))
            {
                used.Key = key;
                return used;
            }
        }

        return null;
    }

    private static string Identity(JsonWebKey key) => $"{key.Kid}|{PublicPoint(key)}";

    /// <summary>The public point of an EC key, as text: two keys are the same key when these are equal.</summary>
    internal static string PublicPoint(JsonWebKey key) => $"{key.Crv}|{key.X}|{key.Y}";

    private sealed class UsedKey(JsonWebKey key)
    {
        public readonly string Id = Identity(key);
        public readonly Dictionary<string, string> Public = PublicJwk(key);
        public volatile JsonWebKey Key = key;
        public long LatestExpiry;
    }
}
