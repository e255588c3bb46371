using System.Net;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using AssuranceGateway.Testing;

namespace AssuranceGateway.FunctionalTests.Tokens;

/// <summary>
/// One gateway whose identity provider publishes two keys (k1, the harness issuer's, and k2), shared by the
/// attack tests: every test only sends requests, and each starts from an empty upstream record.
/// </summary>
public sealed class TokenAttackFixture : IAsyncLifetime
{
    public GatewayHarness Gateway { get; private set; } = null!;

    /// <summary>The issuer's second published key (kid k2): with two keys, a token must name its kid.</summary>
    public ECDsa SecondKey { get; } = ECDsa.Create(ECCurve.NamedCurves.nistP256);

    /// <summary>A key nobody trusts.</summary>
    public ECDsa AttackerKey { get; } = ECDsa.Create(ECCurve.NamedCurves.nistP256);

    public async Task InitializeAsync()
    {
        Gateway = await GatewayHarness.CreateAsync();
        var jwks = Path.Combine(Gateway.Directory, "idp-two-keys.jwks.json");
        TestIssuer.WriteJwks(jwks, (Gateway.Idp.Key, Gateway.Idp.Kid), (SecondKey, "k2"));
        var config = Gateway.DefaultConfig();
        config["Assurance"]!["Tokens"]!["Issuers"]![0]!["JwksFile"] = jwks;
        await Gateway.StartWithAsync(config);
    }

    public async Task DisposeAsync()
    {
        await Gateway.DisposeAsync();
        SecondKey.Dispose();
        AttackerKey.Dispose();
    }
}

/// <summary>
/// SPEC §2 step 1, §3.1 and §4.3 through the real pipeline: each hostile token goes to the token-only route
/// (/status) and must come back 401 token_invalid with the RFC 6750 challenge, while the upstream sees nothing.
/// The problem's detail names the rule that fired, so a token refused for the wrong reason fails the test too.
/// </summary>
public sealed class TokenAttackTests : IClassFixture<TokenAttackFixture>
{
    private const string InvalidTokenChallenge = "Bearer error=\"invalid_token\"";

    private static readonly Dictionary<string, (Func<TokenAttackFixture, string> Token, string Detail)> Attacks = new()
    {
        ["foreign key with a known kid"] = (f => f.Gateway.Idp.Sign(f.Gateway.Idp.Header(), Claims(f).ToJsonString(), f.AttackerKey), "signature invalid"),
        ["alg none, empty signature"] = (f => HostileTokens.AlgNone(Claims(f)), "signature missing"),
        ["alg none, garbage signature"] = (f => HostileTokens.AlgNone(Claims(f)) + "c2ln", "algorithm 'none' not allowed for this issuer"),
        ["stripped signature"] = (f => HostileTokens.StripSignature(f.Gateway.Idp.Token()), "signature missing"),
        ["HS256 keyed with the public key"] = (f => HostileTokens.HmacWithPublicKey(Claims(f), f.Gateway.Idp.Key, f.Gateway.Idp.Kid), "algorithm 'HS256' not allowed for this issuer"),
        ["expired beyond skew"] = (f => Signed(f, c => Times(c, iat: -600, nbf: -600, exp: -31)), "token expired"),
        ["nbf beyond skew"] = (f => Signed(f, c => Times(c, iat: 0, nbf: 120, exp: 600)), "token not yet valid"),
        ["wrong aud"] = (f => Signed(f, c => c["aud"] = "billing"), "audience not accepted"),
        ["aud of the assurance API"] = (f => Signed(f, c => c["aud"] = TestConfig.ApiAudience), "audience not accepted"),
        ["wrong iss"] = (f => Signed(f, c => c["iss"] = "https://idp.evil"), "issuer not trusted"),
        ["iss missing"] = (f => Signed(f, c => c.Remove("iss")), "issuer not trusted"),
        ["iat a day ahead"] = (f => Signed(f, c => Times(c, iat: 86_400, nbf: null, exp: 86_400 + 300)), "iat in the future"),
        ["ten-year lifetime"] = (f => Signed(f, c => Times(c, iat: 0, nbf: 0, exp: 10 * 365 * 86_400)), "lifetime exceeds MaxLifetime"),
        ["typ dpop+jwt"] = (f => f.Gateway.Idp.Sign(f.Gateway.Idp.Header("dpop+jwt"), Claims(f).ToJsonString()), "typ not accepted"),
        ["typ missing"] = (f => f.Gateway.Idp.Sign(Header(f, h => h.Remove("typ")), Claims(f).ToJsonString()), "typ not accepted"),
        ["signed by the workload issuer"] = (f => f.Gateway.WorkloadIssuer.Token(), "issuer not trusted"),
        ["workload key posing as the IdP"] = (f => f.Gateway.WorkloadIssuer.Sign(f.Gateway.WorkloadIssuer.Header(), Claims(f).ToJsonString()), "unknown kid"),
        ["unknown kid"] = (f => f.Gateway.Idp.Sign(Header(f, h => h["kid"] = "k9"), Claims(f).ToJsonString()), "unknown kid"),
        ["kid missing, issuer has two keys"] = (f => f.Gateway.Idp.Sign(Header(f, h => h.Remove("kid")), Claims(f).ToJsonString()), "kid missing"),
        ["embedded jwk with the attacker's key"] = (f => f.Gateway.Idp.Sign(
            new JsonObject { ["alg"] = "ES256", ["typ"] = "at+jwt", ["jwk"] = HostileTokens.PublicJwk(f.AttackerKey) }, Claims(f).ToJsonString(), f.AttackerKey),
            "embedded key header 'jwk' present"),
        ["embedded jwk reusing a known kid"] = (f => f.Gateway.Idp.Sign(
            Header(f, h => h["jwk"] = HostileTokens.PublicJwk(f.AttackerKey, "k1")), Claims(f).ToJsonString(), f.AttackerKey),
            "embedded key header 'jwk' present"),
        ["jku header"] = (f => f.Gateway.Idp.Sign(Header(f, h => h["jku"] = "https://idp.evil/jwks.json"), Claims(f).ToJsonString()), "embedded key header 'jku' present"),
        ["x5u header"] = (f => f.Gateway.Idp.Sign(Header(f, h => h["x5u"] = "https://idp.evil/cert.pem"), Claims(f).ToJsonString()), "embedded key header 'x5u' present"),
        ["x5c header"] = (f => f.Gateway.Idp.Sign(Header(f, h => h["x5c"] = new JsonArray("MIIBszCCAVmgAwIBAgIU")), Claims(f).ToJsonString()), "embedded key header 'x5c' present"),
        ["crit header"] = (f => f.Gateway.Idp.Sign(Header(f, h => h["crit"] = new JsonArray("exp")), Claims(f).ToJsonString()), "crit header present"),
        ["duplicate sub"] = (f => f.Gateway.Idp.Sign(f.Gateway.Idp.Header(), HostileTokens.WithLeadingMember(Claims(f).ToJsonString(), "\"sub\":\"root\"")), "duplicate payload name 'sub'"),
        ["duplicate alg"] = (f => TestIssuer.SignRaw(
            HostileTokens.WithLeadingMember(f.Gateway.Idp.Header().ToJsonString(), "\"alg\":\"none\""), Claims(f).ToJsonString(), f.Gateway.Idp.Key),
            "duplicate header name 'alg'"),
        ["exp as a string"] = (f => Signed(f, c => c["exp"] = (DateTimeOffset.UtcNow.ToUnixTimeSeconds() + 300).ToString(System.Globalization.CultureInfo.InvariantCulture)), "'exp' is not a NumericDate"),
        ["exp missing"] = (f => Signed(f, c => c.Remove("exp")), "exp missing"),
        ["over MaxTokenBytes"] = (f => Signed(f, c => HostileTokens.Padded(c, 9000)), "token exceeds MaxTokenBytes"),
        ["JWE-shaped, five segments"] = (f => HostileTokens.JweShaped(Claims(f)), "not a compact JWS (three segments expected)"),
        ["garbage base64"] = (_ => "!!!.@@@.###", "header is not base64url"),
        ["sub missing"] = (f => Signed(f, c => c.Remove("sub")), "sub missing"),
        ["header name with a lone surrogate"] = (f => TestIssuer.SignRaw(
            f.Gateway.Idp.Header().ToJsonString()[..^1] + ",\"\\ud800\":1}", Claims(f).ToJsonString(), f.Gateway.Idp.Key), "header is not valid JSON"),
        ["aud as a number"] = (f => Signed(f, c => c["aud"] = 5), "token malformed (a claim of an unexpected type)"),
        ["sub as an object"] = (f => Signed(f, c => c["sub"] = new JsonObject { ["a"] = 1 }), "token malformed (a claim of an unexpected type)"),
        ["iat before the epoch, ten-year lifetime"] = (f => Signed(f, c =>
        {
            c["iat"] = long.MinValue + 30;
            c.Remove("nbf");
            c["exp"] = DateTimeOffset.UtcNow.ToUnixTimeSeconds() + (10L * 365 * 86_400);
        }), "'iat' is out of range"),
        ["alg forging a log line"] = (f => f.Gateway.Idp.Sign(Header(f, h => h["alg"] = "ES256\nInfo forged[0] allow"), Claims(f).ToJsonString()),
            "algorithm 'ES256?Info forged[0] allow' not allowed for this issuer"),
    };

    private readonly TokenAttackFixture _fixture;
    private readonly GatewayHarness _gateway;

    public TokenAttackTests(TokenAttackFixture fixture)
    {
        _fixture = fixture;
        _gateway = fixture.Gateway;
        _gateway.Upstream.Clear();
    }

    public static TheoryData<string> AttackNames => [.. Attacks.Keys];

    [Theory]
    [MemberData(nameof(AttackNames))]
    public async Task TokenOnly_HostileToken_401InvalidTokenNothingForwarded(string attack)
    {
        var (build, detail) = Attacks[attack];
        var token = build(_fixture);
        using var request = GatewayHarness.Request(HttpMethod.Get, "/status", token, out var traceId);

        using var response = await _gateway.Proxy.SendAsync(request);

        await AssertInvalidTokenAsync(response, traceId, detail);
        Assert.DoesNotContain(_gateway.Logs.Lines, line => line.Contains(token, StringComparison.Ordinal));
        var denyLog = Assert.Single(_gateway.Logs.Lines, line => line.Contains(traceId, StringComparison.Ordinal) && line.Contains("token_invalid", StringComparison.Ordinal));
        Assert.DoesNotContain('\n', denyLog); // token text in the detail cannot break the line
    }

    [Fact]
    public async Task TokenOnly_ValidToken_ForwardedOnce()
    {
        using var request = GatewayHarness.Request(HttpMethod.Get, "/status", _gateway.Idp.Token(), out var traceId);

        using var response = await _gateway.Proxy.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(1, _gateway.Upstream.Count);
        Assert.Equal("ok", Assert.Single(_gateway.Spans.Enforce(traceId)).GetTagItem("assurance.reason"));
    }

    [Fact]
    public async Task TokenOnly_SecondPublishedKeyWithItsKid_Forwarded()
    {
        var header = Header(_fixture, h => h["kid"] = "k2");
        var token = _gateway.Idp.Sign(header, Claims(_fixture).ToJsonString(), _fixture.SecondKey);
        using var request = GatewayHarness.Request(HttpMethod.Get, "/status", token, out _);

        using var response = await _gateway.Proxy.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(1, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task TokenOnly_ExpiredWithinSkew_Forwarded()
    {
        // Positive control for the skew: expired 10 s ago with a 30 s skew is still accepted.
        var token = Signed(_fixture, c => Times(c, iat: -600, nbf: -600, exp: -10));
        using var request = GatewayHarness.Request(HttpMethod.Get, "/status", token, out _);

        using var response = await _gateway.Proxy.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(1, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task TokenOnly_TypJwt_Forwarded()
    {
        // "JWT" is in Tokens:Types, so plain-typed access tokens pass; it is the issuer, not typ, that keeps a
        // workload JWT out (see "signed by the workload issuer").
        var token = _gateway.Idp.Sign(_gateway.Idp.Header("JWT"), Claims(_fixture).ToJsonString());
        using var request = GatewayHarness.Request(HttpMethod.Get, "/status", token, out _);

        using var response = await _gateway.Proxy.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(1, _gateway.Upstream.Count);
    }

    [Theory]
    [InlineData("Basic YWxpY2U6c2VjcmV0")]
    [InlineData("Negotiate abc")]
    public async Task TokenOnly_NonBearerAuthorization_401TokenMissing(string authorization)
    {
        using var request = GatewayHarness.Request(HttpMethod.Get, "/status", token: null, out var traceId);
        request.Headers.TryAddWithoutValidation("Authorization", authorization);

        using var response = await _gateway.Proxy.SendAsync(request);

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        using var problem = await ProblemAsync(response);
        Assert.Equal("token_missing", problem.RootElement.GetProperty("reason").GetString());
        Assert.Equal(traceId, problem.RootElement.GetProperty("traceId").GetString());
        Assert.Equal("Bearer", Assert.Single(response.Headers.GetValues("WWW-Authenticate")));
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Theory]
    [InlineData("Bearer ")]
    [InlineData("Bearer")]
    [InlineData("Bearer    ")]
    public async Task TokenOnly_EmptyBearer_401TokenInvalid(string authorization)
    {
        using var request = GatewayHarness.Request(HttpMethod.Get, "/status", token: null, out var traceId);
        request.Headers.TryAddWithoutValidation("Authorization", authorization);

        using var response = await _gateway.Proxy.SendAsync(request);

        await AssertInvalidTokenAsync(response, traceId, "Authorization must be one 'Bearer <JWT>'");
    }

    [Fact]
    public async Task TokenOnly_TwoAuthorizationHeaderLines_401TokenInvalid()
    {
        // Which of two credentials counts is ambiguous (a proxy in front might have checked the other one), so two
        // header lines are refused even when both hold valid tokens. HttpClient would fold them into one line, so
        // this request is written by hand.
        var uri = new Uri(_gateway.ProxyAddress);
        using var tcp = new System.Net.Sockets.TcpClient();
        await tcp.ConnectAsync(uri.Host, uri.Port);
        await using var stream = tcp.GetStream();
        var raw = "GET /status HTTP/1.1\r\nHost: gateway\r\n"
            + $"Authorization: Bearer {_gateway.Idp.Token()}\r\nAuthorization: Bearer {_gateway.Idp.Token("bob")}\r\n"
            + "Connection: close\r\n\r\n";
        await stream.WriteAsync(System.Text.Encoding.ASCII.GetBytes(raw));
        using var reader = new StreamReader(stream, System.Text.Encoding.UTF8);
        var text = await reader.ReadToEndAsync();

        Assert.StartsWith("HTTP/1.1 401 ", text, StringComparison.Ordinal);
        Assert.Contains("WWW-Authenticate: " + InvalidTokenChallenge + "\r\n", text, StringComparison.OrdinalIgnoreCase);
        using var problem = JsonDocument.Parse(text[(text.IndexOf("\r\n\r\n", StringComparison.Ordinal) + 4)..]);
        Assert.Equal("token_invalid", problem.RootElement.GetProperty("reason").GetString());
        Assert.Equal("Authorization must be one 'Bearer <JWT>'", problem.RootElement.GetProperty("detail").GetString());
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task TokenOnly_TwoTokensFoldedIntoOneHeader_401TokenInvalid()
    {
        using var request = GatewayHarness.Request(HttpMethod.Get, "/status", token: null, out var traceId);
        request.Headers.TryAddWithoutValidation("Authorization", $"Bearer {_gateway.Idp.Token()}, Bearer {_gateway.Idp.Token("bob")}");

        using var response = await _gateway.Proxy.SendAsync(request);

        await AssertInvalidTokenAsync(response, traceId, "not a compact JWS (three segments expected)");
    }

    [Theory]
    [InlineData("urn:aal1")]
    [InlineData("urn:unknown")]
    [InlineData(null)]
    public async Task Deploy_AalBelowPolicyMinimum_401InsufficientAalWithAcrValues(string? acr)
    {
        var token = _gateway.Idp.Token(acr: acr);
        using var request = GatewayHarness.Request(HttpMethod.Post, "/deploy/v1/releases", token, out var traceId);
        request.Content = new StringContent("{}", System.Text.Encoding.UTF8, "application/json");

        using var response = await _gateway.Proxy.SendAsync(request);

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        using var problem = await ProblemAsync(response);
        Assert.Equal("insufficient_aal", problem.RootElement.GetProperty("reason").GetString());
        Assert.Equal(traceId, problem.RootElement.GetProperty("traceId").GetString());
        var challenge = Assert.Single(response.Headers.GetValues("WWW-Authenticate"));
        Assert.StartsWith("Bearer error=\"insufficient_user_authentication\"", challenge, StringComparison.Ordinal);
        Assert.EndsWith("acr_values=\"urn:aal2 urn:aal3\"", challenge, StringComparison.Ordinal);
        Assert.Equal(0, _gateway.Upstream.Count);
        Assert.Equal("insufficient_aal", Assert.Single(_gateway.Spans.Enforce(traceId)).GetTagItem("assurance.reason"));
    }

    [Fact]
    public async Task Deploy_AalSufficient_PassesTheAalStep()
    {
        // Positive control: the same request with urn:aal2 gets past step 2 (and stops later, at the grant).
        using var request = GatewayHarness.Request(HttpMethod.Post, "/deploy/v1/releases", _gateway.Idp.Token(acr: "urn:aal2"), out _);
        request.Content = new StringContent("{}", System.Text.Encoding.UTF8, "application/json");

        using var response = await _gateway.Proxy.SendAsync(request);

        using var problem = await ProblemAsync(response);
        Assert.NotEqual("insufficient_aal", problem.RootElement.GetProperty("reason").GetString());
        Assert.NotEqual("token_invalid", problem.RootElement.GetProperty("reason").GetString());
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    private async Task AssertInvalidTokenAsync(HttpResponseMessage response, string traceId, string detail)
    {
        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal(InvalidTokenChallenge, Assert.Single(response.Headers.GetValues("WWW-Authenticate")));
        using var problem = await ProblemAsync(response);
        Assert.Equal("token_invalid", problem.RootElement.GetProperty("reason").GetString());
        Assert.Equal("urn:assurance-gateway:token_invalid", problem.RootElement.GetProperty("type").GetString());
        Assert.Equal(401, problem.RootElement.GetProperty("status").GetInt32());
        Assert.Equal(detail, problem.RootElement.GetProperty("detail").GetString());
        Assert.Equal(traceId, problem.RootElement.GetProperty("traceId").GetString());
        Assert.Equal(0, _gateway.Upstream.Count);
        var span = Assert.Single(_gateway.Spans.Enforce(traceId));
        Assert.Equal("deny", span.GetTagItem("assurance.decision"));
        Assert.Equal("token_invalid", span.GetTagItem("assurance.reason"));
    }

    private static async Task<JsonDocument> ProblemAsync(HttpResponseMessage response) =>
        JsonDocument.Parse(await response.Content.ReadAsStringAsync());

    private static JsonObject Claims(TokenAttackFixture f) => f.Gateway.Idp.Claims();

    private static JsonObject Header(TokenAttackFixture f, Action<JsonObject> edit)
    {
        var header = f.Gateway.Idp.Header();
        edit(header);
        return header;
    }

    private static string Signed(TokenAttackFixture f, Action<JsonObject> edit)
    {
        var claims = Claims(f);
        edit(claims);
        return f.Gateway.Idp.Sign(f.Gateway.Idp.Header(), claims.ToJsonString());
    }

    /// <summary>Sets iat/nbf/exp to now + the given offsets in seconds; null removes the claim.</summary>
    private static void Times(JsonObject claims, int? iat, int? nbf, long exp)
    {
        var now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        Set("iat", iat);
        Set("nbf", nbf);
        claims["exp"] = now + exp;

        void Set(string name, int? offset)
        {
            if (offset is null)
            {
                claims.Remove(name);
            }
            else
            {
                claims[name] = now + offset.Value;
            }
        }
    }
}
