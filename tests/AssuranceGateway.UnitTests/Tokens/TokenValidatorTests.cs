using System.Collections.Frozen;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using AssuranceGateway.Configuration;
using AssuranceGateway.Requests;
using AssuranceGateway.Testing;
using AssuranceGateway.Tokens;
using Microsoft.IdentityModel.Tokens;

namespace AssuranceGateway.UnitTests.Tokens;

/// <summary>
/// The validator against a hand-set clock far from the real date: every time rule must be judged by the injected
/// <see cref="TimeProvider"/>, including the parts delegated to IdentityModel.
/// </summary>
public sealed class TokenValidatorTests : IDisposable
{
    private const int Skew = 30;
    private const int MaxLifetime = 3600;

    private readonly string _directory = Path.Combine(Path.GetTempPath(), "agw-unit", Guid.NewGuid().ToString("N"));
    private readonly TestIssuer _idp;
    private readonly ManualTimeProvider _time = new(ManualTimeProvider.FarFuture);

    public TokenValidatorTests() => _idp = new TestIssuer("https://idp.test", _directory);

    private long Now => _time.Now.ToUnixTimeSeconds();

    public void Dispose()
    {
        _idp.Dispose();
        Directory.Delete(_directory, recursive: true);
    }

    [Fact]
    public async Task ValidateAsync_ValidToken_ReturnsSubjectAalSessionAndHash()
    {
        var token = Sign(Claims());

        var check = await Validator().ValidateAsync(token, default);

        Assert.True(check.IsValid, check.Failure);
        Assert.Equal("alice", check.Token!.Subject);
        Assert.Equal(2, check.Token.Aal);
        Assert.Equal("urn:aal2", check.Token.Acr);
        Assert.Equal("s-1", check.Token.Session);
        Assert.Equal(AssuranceGateway.Requests.Hashes.TokenHash(token), check.Token.TokenHash);
        Assert.DoesNotContain(token, check.Token.TokenHash, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("=")]
    [InlineData(" ")]
    [InlineData("\u00e9")]
    [InlineData("\u0000")]
    public async Task ValidateAsync_CachedTokenWithOneCharacterOutsideBase64UrlAppended_Rejected(string extra)
    {
        // The cache is keyed by the hash of the token's ASCII bytes: a character that is not ASCII (or not base64url)
        // must never let another text reach an entry, so such text is refused before hashing.
        var token = Sign(Claims());
        var validator = Validator();
        await CacheAsync(validator, token);

        var check = await validator.ValidateAsync(token + extra, default);

        Assert.Equal("not a compact JWS (characters outside base64url)", check.Failure);
    }

    [Theory]
    [InlineData(-(Skew - 1), true)]   // expired 29 s ago: inside the skew
    [InlineData(-Skew, false)]        // exp + skew == now: RFC 7519 §4.1.4 "on or after" is expired
    [InlineData(-(Skew + 1), false)]
    public async Task ValidateAsync_ExpAroundSkew_AcceptedOnlyInsideSkew(int expOffset, bool accepted)
    {
        var token = Sign(Claims(iat: -600, nbf: -600, exp: expOffset));

        var check = await Validator().ValidateAsync(token, default);

        Assert.Equal(accepted, check.IsValid);
        if (!accepted)
        {
            Assert.Equal("token expired", check.Failure);
        }
    }

    [Theory]
    [InlineData(Skew, true)]
    [InlineData(Skew + 1, false)]
    public async Task ValidateAsync_NbfAroundSkew_AcceptedOnlyInsideSkew(int nbfOffset, bool accepted)
    {
        var token = Sign(Claims(iat: 0, nbf: nbfOffset, exp: 600));

        var check = await Validator().ValidateAsync(token, default);

        Assert.Equal(accepted, check.IsValid);
        if (!accepted)
        {
            Assert.Equal("token not yet valid", check.Failure);
        }
    }

    [Theory]
    [InlineData(Skew, true)]
    [InlineData(Skew + 1, false)]
    [InlineData(86_400, false)]
    public async Task ValidateAsync_IatAroundSkew_AcceptedOnlyInsideSkew(int iatOffset, bool accepted)
    {
        var token = Sign(Claims(iat: iatOffset, nbf: null, exp: iatOffset + 300));

        var check = await Validator().ValidateAsync(token, default);

        Assert.Equal(accepted, check.IsValid);
        if (!accepted)
        {
            Assert.Equal("iat in the future", check.Failure);
        }
    }

    [Theory]
    [InlineData(MaxLifetime, true)]
    [InlineData(MaxLifetime + 1, false)]
    [InlineData(10 * 365 * 86_400, false)]
    public async Task ValidateAsync_LifetimeFromIat_AtMostMaxLifetime(int lifetime, bool accepted)
    {
        var token = Sign(Claims(iat: -10, nbf: -10, exp: lifetime - 10));

        var check = await Validator().ValidateAsync(token, default);

        Assert.Equal(accepted, check.IsValid);
        if (!accepted)
        {
            Assert.Equal("lifetime exceeds MaxLifetime", check.Failure);
        }
    }

    [Fact]
    public async Task ValidateAsync_NoIatLongLifetimeFromNbf_Rejected()
    {
        var token = Sign(Claims(iat: null, nbf: -10, exp: MaxLifetime));

        var check = await Validator().ValidateAsync(token, default);

        Assert.Equal("lifetime exceeds MaxLifetime", check.Failure);
    }

    [Fact]
    public async Task ValidateAsync_NoIatNoNbfExpBeyondMaxLifetimeFromNow_Rejected()
    {
        var accepted = await Validator().ValidateAsync(Sign(Claims(iat: null, nbf: null, exp: MaxLifetime)), default);
        var rejected = await Validator().ValidateAsync(Sign(Claims(iat: null, nbf: null, exp: MaxLifetime + 1)), default);

        Assert.True(accepted.IsValid, accepted.Failure);
        Assert.Equal("lifetime exceeds MaxLifetime", rejected.Failure);
    }

    [Fact]
    public async Task ValidateAsync_NbfAfterExp_Rejected()
    {
        // A token that is never valid: both times in range of the clock, but in the wrong order.
        var token = Sign(Claims(iat: -20, nbf: 20, exp: 10));

        var check = await Validator().ValidateAsync(token, default);

        Assert.False(check.IsValid);
    }

    [Fact]
    public async Task ValidateAsync_IatAfterExp_Rejected()
    {
        // Like nbf after exp: a token issued after it expired is malformed, not a short-lived one. iat inside the skew
        // and exp + skew still ahead, so no other rule refuses it, and exp - iat is negative, below any MaxLifetime.
        var token = Sign(Claims(iat: 20, nbf: null, exp: 10));

        var check = await Validator().ValidateAsync(token, default);

        Assert.Equal("iat after exp", check.Failure);
    }

    [Fact]
    public async Task ValidateAsync_ClockMovesPastExpiry_SameTokenRejected()
    {
        var token = Sign(Claims(iat: 0, nbf: 0, exp: 60));
        var validator = Validator();
        await CacheAsync(validator, token);

        _time.Now = _time.Now.AddSeconds(60 + Skew);

        Assert.Equal("token expired", (await validator.ValidateAsync(token, default)).Failure);
    }

    [Theory]
    [InlineData(0, null, "token not yet valid")]
    [InlineData(null, 0, "iat in the future")]
    public async Task ValidateAsync_CachedTokenAfterClockSetBackBeforeItsStart_RejectedAsAFreshOneWouldBe(int? nbf, int? iat, string failure)
    {
        // The machine's clock corrected backwards after the token was cached: a fresh validation would refuse it, and a
        // cache hit must not answer otherwise.
        var token = Sign(Claims(iat: iat, nbf: nbf, exp: 300));
        var validator = Validator();
        await CacheAsync(validator, token);

        _time.Now = _time.Now.AddSeconds(-(Skew + 1));

        Assert.Equal(failure, (await validator.ValidateAsync(token, default)).Failure);
        Assert.Equal(failure, (await Validator().ValidateAsync(token, default)).Failure);
    }

    [Fact]
    public async Task ValidateAsync_CachedTokenClockBackInsideSkew_StillServedFromCache()
    {
        var token = Sign(Claims(iat: 0, nbf: 0, exp: 300));
        var validator = Validator();
        var first = await CacheAsync(validator, token);

        _time.Now = _time.Now.AddSeconds(-Skew);

        var second = await validator.ValidateAsync(token, default);
        Assert.True(second.IsValid, second.Failure);
        Assert.Same(first.Token, second.Token);
    }

    [Fact]
    public async Task ValidateAsync_TokenLongerThanMaxTokenBytes_RejectedBeforeParsing()
    {
        // Not even a JWT: a validator that parsed first would report a structural failure instead.
        var check = await Validator(maxTokenBytes: 256).ValidateAsync(new string('.', 257), default);

        Assert.Equal("token exceeds MaxTokenBytes", check.Failure);
    }

    [Fact]
    public async Task ValidateAsync_TokenOfExactlyMaxTokenBytes_NotRejectedForSize()
    {
        var token = Sign(Claims());

        var check = await Validator(maxTokenBytes: token.Length).ValidateAsync(token, default);

        Assert.True(check.IsValid, check.Failure);
    }

    [Fact]
    public async Task ValidateAsync_KidMissingSingleKeyIssuer_UsesTheOnlyKey()
    {
        var header = new JsonObject { ["alg"] = "ES256", ["typ"] = "at+jwt" };

        var check = await Validator().ValidateAsync(_idp.Sign(header, Claims().ToJsonString()), default);

        Assert.True(check.IsValid, check.Failure);
    }

    [Fact]
    public async Task ValidateAsync_KidMissingTwoKeyIssuer_Rejected()
    {
        using var second = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var header = new JsonObject { ["alg"] = "ES256", ["typ"] = "at+jwt" };
        var validator = Validator(keys: Keys((_idp.Key, "k1"), (second, "k2")));

        var check = await validator.ValidateAsync(_idp.Sign(header, Claims().ToJsonString()), default);

        Assert.Equal("kid missing", check.Failure);
    }

    [Fact]
    public async Task ValidateAsync_TwoKeyIssuer_EachKidSelectsItsOwnKey()
    {
        using var second = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var validator = Validator(keys: Keys((_idp.Key, "k1"), (second, "k2")));
        var byK2 = TestIssuer.SignRaw("""{"alg":"ES256","typ":"at+jwt","kid":"k2"}""", Claims().ToJsonString(), second);
        var k2SignedClaimingK1 = TestIssuer.SignRaw("""{"alg":"ES256","typ":"at+jwt","kid":"k1"}""", Claims().ToJsonString(), second);

        Assert.True((await validator.ValidateAsync(byK2, default)).IsValid);
        Assert.Equal("signature invalid", (await validator.ValidateAsync(k2SignedClaimingK1, default)).Failure);
    }

    [Fact]
    public async Task ValidateAsync_UnknownKid_RejectedAndRefreshRequested()
    {
        var source = new CountingKeySource(Keys((_idp.Key, "k1")));
        var validator = Validator(source: source);
        var header = new JsonObject { ["alg"] = "ES256", ["typ"] = "at+jwt", ["kid"] = "rotated" };

        var check = await validator.ValidateAsync(_idp.Sign(header, Claims().ToJsonString()), default);

        Assert.Equal("unknown kid", check.Failure);
        Assert.Equal(1, source.Refreshes);
    }

    [Fact]
    public async Task ValidateAsync_KnownKid_NoRefresh()
    {
        var source = new CountingKeySource(Keys((_idp.Key, "k1")));

        var check = await Validator(source: source).ValidateAsync(Sign(Claims()), default);

        Assert.True(check.IsValid, check.Failure);
        Assert.Equal(0, source.Refreshes);
    }

    [Theory]
    [InlineData("at+jwt", true)]
    [InlineData("application/at+jwt", true)]
    [InlineData("AT+JWT", true)]
    [InlineData("JWT", true)]
    [InlineData("dpop+jwt", false)]
    [InlineData("id_token+jwt", false)]
    [InlineData("", false)]
    public async Task ValidateAsync_Typ_OnlyConfiguredTypes(string typ, bool accepted)
    {
        var check = await Validator().ValidateAsync(_idp.Sign(_idp.Header(typ), Claims().ToJsonString()), default);

        Assert.Equal(accepted, check.IsValid);
        if (!accepted)
        {
            Assert.Equal("typ not accepted", check.Failure);
        }
    }

    [Fact]
    public async Task ValidateAsync_TypMissing_RejectedForAccessTokens()
    {
        var header = new JsonObject { ["alg"] = "ES256", ["kid"] = "k1" };

        var check = await Validator().ValidateAsync(_idp.Sign(header, Claims().ToJsonString()), default);

        Assert.Equal("typ not accepted", check.Failure);
    }

    [Fact]
    public async Task ValidateAsync_TypMissingWhenTypeOptional_Accepted()
    {
        var header = new JsonObject { ["alg"] = "ES256", ["kid"] = "k1" };

        var check = await Validator(typeOptional: true).ValidateAsync(_idp.Sign(header, Claims().ToJsonString()), default);

        Assert.True(check.IsValid, check.Failure);
    }

    // RFC 7518 §3.4: ES384 means P-384. An issuer allowed ES256 and ES384 accepted an "ES384" token signed (with SHA-384)
    // by its P-256 key.
    [Fact]
    public async Task ValidateAsync_Es384SignedWithAP256Key_Rejected()
    {
        var header = new JsonObject { ["alg"] = "ES384", ["typ"] = "at+jwt", ["kid"] = "k1" };
        var signingInput = Base64UrlEncoder.Encode(Encoding.UTF8.GetBytes(header.ToJsonString())) + "."
            + Base64UrlEncoder.Encode(Encoding.UTF8.GetBytes(Claims().ToJsonString()));
        var signature = _idp.Key.SignData(Encoding.ASCII.GetBytes(signingInput), HashAlgorithmName.SHA384, DSASignatureFormat.IeeeP1363FixedFieldConcatenation);

        // A JWKS key without "alg" (RFC 7517 makes it optional): the curve is then all that ties the key to ES256.
        var published = Keys((_idp.Key, "k1")).Find("k1", "ES256") as JsonWebKey;
        published!.Alg = null;
        var keys = IssuerKeys.From(new JsonWebKeySet { Keys = { published } });

        var check = await Validator(keys: keys, algorithms: ["ES256", "ES384"]).ValidateAsync(signingInput + "." + Base64UrlEncoder.Encode(signature), default);

        Assert.Equal("the signing key's curve does not belong to the token's algorithm", check.Failure);
    }

    [Fact]
    public async Task ValidateAsync_AlgorithmNotPinnedForIssuer_Rejected()
    {
        // Validly signed ES256, but this issuer is pinned to RS256 only.
        var check = await Validator(algorithms: ["RS256"]).ValidateAsync(Sign(Claims()), default);

        Assert.Equal("algorithm 'ES256' not allowed for this issuer", check.Failure);
    }

    [Fact]
    public async Task ValidateAsync_HmacKeyedWithPublicKey_Rejected()
    {
        var check = await Validator().ValidateAsync(HostileTokens.HmacWithPublicKey(Claims(), _idp.Key, "k1"), default);

        Assert.Equal("algorithm 'HS256' not allowed for this issuer", check.Failure);
    }

    [Fact]
    public async Task ValidateAsync_AlgWithLineBreaks_EchoedPrintable()
    {
        var header = new JsonObject { ["alg"] = "ES256\r\n[100] forged line", ["typ"] = "at+jwt", ["kid"] = "k1" };

        var check = await Validator().ValidateAsync(_idp.Sign(header, Claims().ToJsonString()), default);

        Assert.Equal("algorithm 'ES256??[100] forged line' not allowed for this issuer", check.Failure);
    }

    [Fact]
    public async Task ValidateAsync_AlgNoneUnsigned_Rejected()
    {
        var check = await Validator().ValidateAsync(HostileTokens.AlgNone(Claims()), default);

        Assert.False(check.IsValid);
    }

    [Fact]
    public async Task ValidateAsync_AlgNoneWithSignatureBytes_Rejected()
    {
        var token = HostileTokens.AlgNone(Claims()) + "c2lnbmF0dXJl";

        var check = await Validator().ValidateAsync(token, default);

        Assert.Equal("algorithm 'none' not allowed for this issuer", check.Failure);
    }

    [Fact]
    public async Task ValidateAsync_ForeignKeyWithKnownKid_SignatureInvalid()
    {
        using var attacker = ECDsa.Create(ECCurve.NamedCurves.nistP256);

        var check = await Validator().ValidateAsync(_idp.Sign(_idp.Header(), Claims().ToJsonString(), attacker), default);

        Assert.Equal("signature invalid", check.Failure);
    }

    [Fact]
    public async Task ValidateAsync_UntrustedIssuer_RejectedBeforeKeys()
    {
        var source = new CountingKeySource(Keys((_idp.Key, "k1")));
        var claims = Claims();
        claims["iss"] = "https://evil.test";

        var check = await Validator(source: source).ValidateAsync(Sign(claims), default);

        Assert.Equal("issuer not trusted", check.Failure);
        Assert.Equal(0, source.Reads);
    }

    [Theory]
    [InlineData("assurance-api")]
    [InlineData("Gateway")]
    [InlineData("")]
    public async Task ValidateAsync_WrongAudience_Rejected(string audience)
    {
        var claims = Claims();
        claims["aud"] = audience;

        var check = await Validator().ValidateAsync(Sign(claims), default);

        Assert.False(check.IsValid);
    }

    [Fact]
    public async Task ValidateAsync_AudienceMissing_Rejected()
    {
        var claims = Claims();
        claims.Remove("aud");

        var check = await Validator().ValidateAsync(Sign(claims), default);

        Assert.Equal("audience not accepted", check.Failure);
    }

    [Fact]
    public async Task ValidateAsync_AudienceArrayContainingOurs_Accepted()
    {
        var claims = Claims();
        claims["aud"] = new JsonArray("other", "gateway");

        var check = await Validator().ValidateAsync(Sign(claims), default);

        Assert.True(check.IsValid, check.Failure);
    }

    [Fact]
    public async Task ValidateAsync_AudiencesOverride_OnlyOverrideAccepted()
    {
        var api = Validator(audiencesOverride: ["assurance-api"]);
        var forApi = Claims();
        forApi["aud"] = "assurance-api";

        Assert.True((await api.ValidateAsync(Sign(forApi), default)).IsValid);
        Assert.Equal("audience not accepted", (await api.ValidateAsync(Sign(Claims()), default)).Failure);
    }

    [Fact]
    public async Task ValidateAsync_SubMissing_Rejected()
    {
        var claims = Claims();
        claims.Remove("sub");

        var check = await Validator().ValidateAsync(Sign(claims), default);

        Assert.Equal("sub missing", check.Failure);
    }

    [Theory]
    [InlineData("urn:aal1", 1)]
    [InlineData("urn:aal3", 3)]
    [InlineData("urn:unknown", 0)]
    [InlineData(null, 0)]
    public async Task ValidateAsync_Acr_MappedThroughAalMap(string? acr, int aal)
    {
        var check = await Validator().ValidateAsync(Sign(Claims(acr: acr)), default);

        Assert.True(check.IsValid, check.Failure);
        Assert.Equal(aal, check.Token!.Aal);
    }

    [Fact]
    public async Task ValidateAsync_AcrAsArray_NotMappedToAnAal()
    {
        // An array acr is not one authentication context; counting its best element would let a token claim aal3.
        var claims = Claims();
        claims["acr"] = new JsonArray("urn:aal3");

        var check = await Validator().ValidateAsync(Sign(claims), default);

        Assert.Equal(0, check.Token?.Aal);
    }

    private JsonObject Claims(int? iat = 0, int? nbf = 0, int exp = 300, string? acr = "urn:aal2")
    {
        var claims = _idp.Claims(acr: acr);
        Set(claims, "iat", iat);
        Set(claims, "nbf", nbf);
        Set(claims, "exp", exp);
        return claims;
    }

    private void Set(JsonObject claims, string name, int? offset)
    {
        if (offset is null)
        {
            claims.Remove(name);
        }
        else
        {
            claims[name] = Now + offset.Value;
        }
    }

    private string Sign(JsonObject claims) => _idp.Sign(_idp.Header(), claims.ToJsonString());

    private static IssuerKeys Keys(params (ECDsa Key, string Kid)[] keys)
    {
        var path = Path.GetTempFileName();
        try
        {
            TestIssuer.WriteJwks(path, keys);
            return IssuerKeys.From(new JsonWebKeySet(File.ReadAllText(path)));
        }
        finally
        {
            File.Delete(path);
        }
    }

    private TokenValidator Validator(
        IssuerKeys? keys = null,
        IIssuerKeySource? source = null,
        string[]? algorithms = null,
        int maxTokenBytes = 8192,
        string[]? audiencesOverride = null,
        bool typeOptional = false)
    {
        var issuer = new TokenIssuer
        {
            Issuer = _idp.Issuer,
            Audiences = ["gateway"],
            Algorithms = (algorithms ?? ["ES256"]).ToFrozenSet(StringComparer.Ordinal),
            Keys = source ?? new StaticKeySource(keys ?? Keys((_idp.Key, "k1"))),
            KeyLocation = "test",
        };
        var settings = new TokenSettings
        {
            Issuers = [issuer],
            ClockSkew = TimeSpan.FromSeconds(Skew),
            MaxLifetime = TimeSpan.FromSeconds(MaxLifetime),
            MaxTokenBytes = maxTokenBytes,
            AalMap = new Dictionary<string, int> { ["urn:aal1"] = 1, ["urn:aal2"] = 2, ["urn:aal3"] = 3 }.ToFrozenDictionary(),
        };
        return new TokenValidator(settings, _time, audiencesOverride, typeOptional);
    }

    [Fact]
    public async Task ValidateAsync_SameTokenThrice_HeldFromTheSecondVerificationAndThenServedFromCache()
    {
        var token = Sign(Claims());
        var validator = Validator();

        var first = await validator.ValidateAsync(token, default);
        Assert.Equal(0, validator.CachedCount);
        var second = await validator.ValidateAsync(token, default);
        var third = await validator.ValidateAsync(token, default);

        Assert.True(first.IsValid, first.Failure);
        Assert.NotSame(first.Token, second.Token);
        Assert.Same(second.Token, third.Token);
        Assert.Equal(1, validator.CachedCount);
    }

    [Fact]
    public async Task ValidateAsync_ManyTokensEachSentOnce_EveryOneVerifiedAndNoneHeld()
    {
        // A fresh token per request (or a flood of distinct valid ones) must not fill the cache: what it held was only
        // ever dropped again, after the garbage collector had carried it through every generation.
        var validator = Validator();

        for (var i = 0; i < 200; i++)
        {
            var claims = Claims();
            claims["jti"] = "t" + i.ToString(System.Globalization.CultureInfo.InvariantCulture);
            var check = await validator.ValidateAsync(Sign(claims), default);
            Assert.True(check.IsValid, check.Failure);
        }

        Assert.Equal(0, validator.CachedCount);
    }

    [Fact]
    public async Task ValidateAsync_TokenAsSliceOfHeader_SameHashAndCacheEntryAsTheWholeToken()
    {
        var token = Sign(Claims());
        var header = "Bearer " + token + "  ";
        var validator = Validator();

        Assert.True((await validator.ValidateAsync(header.AsMemory(7, token.Length), default)).IsValid);
        var fromSlice = await validator.ValidateAsync(header.AsMemory(7, token.Length), default);
        var fromString = await validator.ValidateAsync(token, default);

        Assert.True(fromSlice.IsValid, fromSlice.Failure);
        Assert.Equal(Hashes.TokenHash(token), fromSlice.Token!.TokenHash);
        Assert.Same(fromSlice.Token, fromString.Token);
        Assert.Equal(1, validator.CachedCount);
    }

    [Fact]
    public async Task ValidateAsync_SliceOneCharacterShort_Rejected()
    {
        var token = Sign(Claims());
        var validator = Validator();
        await CacheAsync(validator, token);

        var check = await validator.ValidateAsync(token.AsMemory(0, token.Length - 1), default);

        Assert.False(check.IsValid);
        Assert.Equal(1, validator.CachedCount);
    }

    [Theory]
    [InlineData("token expired")]
    [InlineData("signature invalid")]
    [InlineData("sub missing")]
    public async Task ValidateAsync_InvalidTokenSentAgainAndAgain_NeverCached(string failure)
    {
        // Three times: a token is held from its second verification on, so one refusal alone would show nothing. The
        // signature and sub are the last checks before a token is held.
        using var other = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var claims = failure == "token expired" ? Claims(exp: -600, iat: -900, nbf: -900) : Claims();
        if (failure == "sub missing")
        {
            claims.Remove("sub");
        }

        var token = failure == "signature invalid" ? _idp.Sign(_idp.Header(), claims.ToJsonString(), other) : Sign(claims);
        var validator = Validator();

        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(failure, (await validator.ValidateAsync(token, default)).Failure);
        }

        Assert.Equal(0, validator.CachedCount);
    }

    [Fact]
    public async Task ValidateAsync_CachedTokenAfterIssuerDropsItsKey_Rejected()
    {
        var source = new CountingKeySource(Keys((_idp.Key, "k1")));
        var validator = Validator(source: source);
        var token = Sign(Claims());
        await CacheAsync(validator, token);

        using var replacement = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        source.Keys = Keys((replacement, "k2"));

        Assert.Equal("unknown kid", (await validator.ValidateAsync(token, default)).Failure);
        Assert.Equal(0, validator.CachedCount);
    }

    [Fact]
    public async Task ValidateAsync_CachedTokenAfterKeyReplacedUnderSameKid_ReverifiedAndRejected()
    {
        var source = new CountingKeySource(Keys((_idp.Key, "k1")));
        var validator = Validator(source: source);
        var token = Sign(Claims());
        await CacheAsync(validator, token);

        using var replacement = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        source.Keys = Keys((replacement, "k1"));

        Assert.Equal("signature invalid", (await validator.ValidateAsync(token, default)).Failure);
    }

    /// <summary>Validates <paramref name="token"/> until the cache holds it (the second verification); returns what it holds.</summary>
    private static async Task<TokenCheck> CacheAsync(TokenValidator validator, string token)
    {
        var held = validator.CachedCount;
        Assert.True((await validator.ValidateAsync(token, default)).IsValid);
        var check = await validator.ValidateAsync(token, default);
        Assert.True(check.IsValid, check.Failure);
        Assert.Equal(held + 1, validator.CachedCount);
        return check;
    }

    private sealed class CountingKeySource(IssuerKeys keys) : IIssuerKeySource
    {
        /// <summary>What the issuer publishes now (a test rotates keys by replacing it).</summary>
        public IssuerKeys Keys { get; set; } = keys;

        public int Reads { get; private set; }

        public int Refreshes { get; private set; }

        public ValueTask<IssuerKeys> GetKeysAsync(CancellationToken cancellationToken)
        {
            Reads++;
            return ValueTask.FromResult(Keys);
        }

        public void RequestRefresh() => Refreshes++;
    }
}
