using System.Buffers;
using System.Collections.Frozen;
using AssuranceGateway.Configuration;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;

namespace AssuranceGateway.Tokens;

/// <summary>
/// The outcome of validating one access token: either a token or a reason (never logged with the token). A refused token
/// that is a well-formed compact JWS within MaxTokenBytes carries its hash (<see cref="TokenHash"/>, as a grant binds it),
/// so the evidence of the refusal can name the token without holding it.
/// </summary>
public readonly record struct TokenCheck(ValidatedToken? Token, string? Failure, string? TokenHash = null)
{
    public bool IsValid => Token is not null;

    public static TokenCheck Fail(string failure, string? tokenHash = null) => new(null, failure, tokenHash);
}

/// <summary>
/// Validates access tokens per SPEC §3.1. The order is deliberate: size first (no work for a huge token),
/// then structure and names without cryptography, then issuer and algorithm pinning, then the key by
/// <c>kid</c> among that issuer's keys only, then time rules, and the signature last.
/// </summary>
public sealed class TokenValidator
{
    private readonly TokenSettings _settings;
    private readonly TimeProvider _time;
    private readonly FrozenDictionary<string, IssuerEntry> _issuers;
    private readonly FrozenSet<string> _types;
    private readonly JsonWebTokenHandler _handler = new() { MapInboundClaims = false };

    private readonly bool _typeOptional;

    /// <summary>
    /// Verified tokens by their SHA-256. Real clients reuse a token for minutes, and the signature check is most of the
    /// cost of a request (ES256 ~50 µs here). A hit is a token byte-identical to one whose every check passed; its time
    /// rules (exp, and nbf/iat for a clock set back) are judged again on each hit, and an entry dies when its issuer no
    /// longer has the key that verified it. A reload builds a new validator, so a changed key file or policy never meets
    /// an old entry. A token is held from its second verification on (see the cache's doorkeeper): one sent once
    /// costs its verification and nothing after it.
    /// </summary>
    private readonly VerifiedTokenCache<CachedToken> _cache = new(CacheCapacity);

    /// <summary>The characters of a compact JWS: base64url and the two dots.</summary>
    private static readonly SearchValues<char> CompactJwsChars =
        SearchValues.Create("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.");

    /// <param name="settings">Issuers and rules.</param>
    /// <param name="time">The clock.</param>
    /// <param name="audiencesOverride">Accept these audiences instead of each issuer's own (the API, workload JWTs).</param>
    /// <param name="typeOptional">JWT-SVIDs may omit <c>typ</c>; access tokens may not.</param>
    public TokenValidator(TokenSettings settings, TimeProvider time, IEnumerable<string>? audiencesOverride = null, bool typeOptional = false)
    {
        _typeOptional = typeOptional;
        _settings = settings;
        _time = time;
        _types = settings.Types.Select(NormalizeType).ToFrozenSet(StringComparer.OrdinalIgnoreCase);
        var audiences = audiencesOverride?.ToArray();
        _issuers = settings.Issuers.ToFrozenDictionary(
            i => i.Issuer,
            i => new IssuerEntry(i, Parameters(i, audiences ?? [.. i.Audiences], settings, time)),
            StringComparer.Ordinal);
    }

    public TokenSettings Settings => _settings;

    public ValueTask<TokenCheck> ValidateAsync(string token, CancellationToken cancellationToken) =>
        ValidateAsync(token.AsMemory(), cancellationToken);

    /// <summary>
    /// Validates the token in <paramref name="token"/> (a slice of a header value, say): a cached token is found from the
    /// slice; only a token that must be verified becomes a string of its own.
    /// </summary>
    public async ValueTask<TokenCheck> ValidateAsync(ReadOnlyMemory<char> token, CancellationToken cancellationToken)
    {
        // Before any parsing or cryptography: a token cannot cost more than MaxTokenBytes of work.
        if (token.Length > _settings.MaxTokenBytes)
        {
            return TokenCheck.Fail("token exceeds MaxTokenBytes");
        }

        // Only a token that is all base64url and dots is hashed and looked up: then the hash (the cache key and the
        // binding) is over exactly the token's text, and no two texts share it.
        var compact = !token.Span.ContainsAnyExcept(CompactJwsChars);
        var digest = compact ? TokenDigest.Of(token.Span) : default;
        if (compact && _cache.TryGet(digest, out var cached))
        {
            if (await StillValidAsync(cached, cancellationToken).ConfigureAwait(false))
            {
                return new TokenCheck(cached.Token, null);
            }

            _cache.Remove(digest);
        }

        var raw = token.ToString();
        if (!JwtInspector.TryInspect(raw, out var shape, out var failure))
        {
            return TokenCheck.Fail(failure);
        }

        if (!compact)
        {
            // Header and payload decoded, so what is left is in the signature (or padding the decoder tolerated).
            return TokenCheck.Fail("not a compact JWS (characters outside base64url)");
        }

        // From here on the token is a well-formed compact JWS: a refusal names it by its hash (never by its text), the one
        // a grant binds and a verified token carries.
        var hash = digest.ToHash();

        if (shape.Issuer is null || !_issuers.TryGetValue(shape.Issuer, out var entry))
        {
            return TokenCheck.Fail("issuer not trusted", hash);
        }

        if (!entry.Issuer.Algorithms.Contains(shape.Algorithm))
        {
            return TokenCheck.Fail($"algorithm '{JwtInspector.Printable(shape.Algorithm)}' not allowed for this issuer", hash);
        }

        // RFC 8725 §3.11: explicit typing keeps an ID token, a workload JWT or a DPoP proof from passing as an access token.
        if (shape.Type is null ? !_typeOptional : !_types.Contains(NormalizeType(shape.Type)))
        {
            return TokenCheck.Fail("typ not accepted", hash);
        }

        var now = _time.GetUtcNow().ToUnixTimeSeconds();
        var skew = (long)_settings.ClockSkew.TotalSeconds;
        if (shape.Expires!.Value + skew <= now)
        {
            return TokenCheck.Fail("token expired", hash);
        }

        if (shape.NotBefore is { } nbf && nbf - skew > now)
        {
            return TokenCheck.Fail("token not yet valid", hash);
        }

        if (shape.NotBefore is { } notBefore && notBefore > shape.Expires.Value)
        {
            return TokenCheck.Fail("nbf after exp", hash);
        }

        // Like nbf after exp: a token issued after it expired is malformed. exp - iat is then negative, so the lifetime
        // rule below would not catch it.
        if (shape.IssuedAt is { } issued && issued > shape.Expires.Value)
        {
            return TokenCheck.Fail("iat after exp", hash);
        }

        if (shape.IssuedAt is { } iat && iat - skew > now)
        {
            return TokenCheck.Fail("iat in the future", hash);
        }

        var lifetimeStart = shape.IssuedAt ?? shape.NotBefore ?? now;
        if (shape.Expires.Value - lifetimeStart > (long)_settings.MaxLifetime.TotalSeconds)
        {
            return TokenCheck.Fail("lifetime exceeds MaxLifetime", hash);
        }

        IssuerKeys keys;
        try
        {
            keys = await entry.Issuer.Keys.GetKeysAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (IssuerKeysUnavailableException)
        {
            // Fail closed: a token that cannot be verified is not accepted. The source bounds the wait and backs off
            // after a failure, so a failing IdP is neither waited for nor hit once per request.
            return TokenCheck.Fail("signing keys of this issuer are unavailable", hash);
        }

        var key = keys.Find(shape.KeyId, shape.Algorithm);
        if (key is null)
        {
            // The issuer may have rotated: ask for a refresh (rate-limited), but do not hold this request for it.
            entry.Issuer.Keys.RequestRefresh();
            return TokenCheck.Fail(shape.KeyId is null ? "kid missing" : "unknown kid", hash);
        }

        // A key published for one algorithm verifies tokens of that algorithm only (RFC 7517 §4.4).
        if (key is JsonWebKey { Alg.Length: > 0 } published && !string.Equals(published.Alg, shape.Algorithm, StringComparison.Ordinal))
        {
            return TokenCheck.Fail("the signing key is published for another algorithm", hash);
        }

        // RFC 7518 §3.4: ES256 is P-256 with SHA-256, ES384 P-384, ES512 P-521. An issuer allowed both ES256 and ES384
        // would otherwise accept an "ES384" token signed with its P-256 key: not a forgery, but not the algorithm either.
        if (key is JsonWebKey { Kty: "EC" } ec && shape.Algorithm.StartsWith("ES", StringComparison.Ordinal)
            && !string.Equals(ec.Crv, IssuerKeys.CurveOf(shape.Algorithm), StringComparison.Ordinal))
        {
            return TokenCheck.Fail("the signing key's curve does not belong to the token's algorithm", hash);
        }

        // The library is stricter about some claim types than the inspector (an "aud" or "sub" that is a number or an
        // object, a header "cty" that is not a string) and throws on them, before any signature is checked: a refusal.
        JsonWebToken jwt;
        TokenValidationResult result;
        try
        {
            jwt = new JsonWebToken(raw);
            var parameters = entry.Parameters.Clone();
            // Hand the library exactly the key chosen above. Setting IssuerSigningKey alone is not enough: with
            // TryAllIssuerSigningKeys off, the library matches that key by kid only, so the token of a one-key issuer
            // that omits kid (allowed above) would fail with "key not found".
            parameters.IssuerSigningKeyResolver = (_, _, _, _) => [key];
            result = await _handler.ValidateTokenAsync(jwt, parameters).ConfigureAwait(false);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException or System.Text.Json.JsonException)
        {
            return TokenCheck.Fail("token malformed (a claim of an unexpected type)", hash);
        }

        if (!result.IsValid)
        {
            return TokenCheck.Fail(Describe(result.Exception), hash);
        }

        if (string.IsNullOrEmpty(jwt.Subject))
        {
            return TokenCheck.Fail("sub missing", hash);
        }

        var acr = ClaimReader.StringValue(jwt, _settings.AalClaim);
        var aal = acr is not null && _settings.AalMap.TryGetValue(acr, out var level) ? level : 0;
        var session = ClaimReader.StringValue(jwt, _settings.SessionClaim);
        var validated = new ValidatedToken(jwt, hash, aal, acr, session, entry.Issuer.SubjectPrefix);
        // The start of the token's validity (its nbf, or its iat when later: both are refused beyond the skew) is kept
        // with it, so that a hit after the clock was set back is judged as a fresh validation would judge it.
        var validFrom = Math.Max(shape.NotBefore ?? 0, shape.IssuedAt ?? 0);
        _cache.Add(digest, new CachedToken(validated, entry, shape.KeyId, shape.Algorithm, key, validFrom, shape.Expires.Value), shape.Expires.Value + skew, now);
        return new TokenCheck(validated, null);
    }

    /// <summary>Entries held at most (see <see cref="VerifiedTokenCache{T}"/> for what happens at the bound).</summary>
    internal const int CacheCapacity = 10_000;

    internal int CachedCount => _cache.Count;

    /// <summary>For the "cold" microbenchmark: the next validation of any token does the full work.</summary>
    internal void ClearCache() => _cache.Clear();

    private async ValueTask<bool> StillValidAsync(CachedToken cached, CancellationToken cancellationToken)
    {
        // Both ends, as on the first validation: the clock can be corrected backwards (NTP step, VM restored from a
        // snapshot) to before the token's nbf or iat, and a cache hit must not accept what a fresh check refuses.
        var now = _time.GetUtcNow().ToUnixTimeSeconds();
        var skew = (long)_settings.ClockSkew.TotalSeconds;
        if (cached.Expires + skew <= now || cached.ValidFrom - skew > now)
        {
            return false;
        }

        try
        {
            var keys = await cached.Entry.Issuer.Keys.GetKeysAsync(cancellationToken).ConfigureAwait(false);
            return ReferenceEquals(keys.Find(cached.KeyId, cached.Algorithm), cached.Key);
        }
        catch (IssuerKeysUnavailableException)
        {
            return false;
        }
    }

    private sealed record CachedToken(ValidatedToken Token, IssuerEntry Entry, string? KeyId, string Algorithm, SecurityKey Key, long ValidFrom, long Expires);

    private static TokenValidationParameters Parameters(TokenIssuer issuer, string[] audiences, TokenSettings settings, TimeProvider time) => new()
    {
        // The library judges exp/nbf again. Its default reads DateTime.UtcNow, not our clock, so the two could disagree
        // (a token valid by the injected clock refused by the library's, or the reverse): judge by the same clock.
        LifetimeValidator = (notBefore, expires, _, p) => LifetimeHolds(notBefore, expires, time.GetUtcNow().UtcDateTime, p.ClockSkew),
        ValidIssuer = issuer.Issuer,
        ValidAudiences = audiences,
        ValidAlgorithms = issuer.Algorithms,
        // typ is checked (and normalised) before this; the handler's own check cannot express "optional".
        ValidateTokenReplay = false,
        ClockSkew = settings.ClockSkew,
        RequireExpirationTime = true,
        RequireSignedTokens = true,
        ValidateIssuer = true,
        ValidateAudience = true,
        ValidateLifetime = true,
        ValidateIssuerSigningKey = true,
        TryAllIssuerSigningKeys = false,
        SaveSigninToken = false,
    };

    /// <summary>RFC 7519 §4.1.4/§4.1.5 with skew: valid from nbf - skew until (not including) exp + skew.</summary>
    private static bool LifetimeHolds(DateTime? notBefore, DateTime? expires, DateTime now, TimeSpan skew) =>
        expires is { } exp && now < exp + skew && (notBefore is not { } nbf || (nbf <= exp && nbf - skew <= now));

    private static string NormalizeType(string type) =>
        type.StartsWith("application/", StringComparison.OrdinalIgnoreCase) ? type["application/".Length..] : type;

    private static string Describe(Exception? exception) => exception switch
    {
        SecurityTokenInvalidAudienceException => "audience not accepted",
        SecurityTokenInvalidIssuerException => "issuer not trusted",
        SecurityTokenExpiredException => "token expired",
        SecurityTokenNotYetValidException => "token not yet valid",
        SecurityTokenInvalidLifetimeException => "token lifetime invalid",
        SecurityTokenInvalidAlgorithmException => "algorithm not allowed",
        SecurityTokenInvalidTypeException => "typ not accepted",
        SecurityTokenInvalidSignatureException or SecurityTokenSignatureKeyNotFoundException => "signature invalid",
        null => "token invalid",
        _ => "token invalid",
    };

    private sealed record IssuerEntry(TokenIssuer Issuer, TokenValidationParameters Parameters);
}
