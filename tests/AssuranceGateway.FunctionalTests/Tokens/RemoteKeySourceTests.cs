using System.Diagnostics;
using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using AssuranceGateway.Testing;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.IdentityModel.Tokens;

namespace AssuranceGateway.FunctionalTests.Tokens;

/// <summary>A loopback IdP whose every answer the test scripts, counting requests by path.</summary>
public sealed class ScriptedIdp : IAsyncDisposable
{
    private readonly Dictionary<string, int> _hits = new();
    private WebApplication _app = null!;

    public string Address { get; private set; } = string.Empty;

    public Func<HttpContext, Task> Handler { get; set; } = c => { c.Response.StatusCode = 404; return Task.CompletedTask; };

    public int Hits(string path)
    {
        lock (_hits)
        {
            return _hits.GetValueOrDefault(path);
        }
    }

    public static async Task<ScriptedIdp> StartAsync()
    {
        var idp = new ScriptedIdp();
        (idp._app, idp.Address) = await LoopbackServer.StartAsync(idp.AnswerAsync);
        return idp;
    }

    private Task AnswerAsync(HttpContext context)
    {
        lock (_hits)
        {
            _hits[context.Request.Path.Value!] = _hits.GetValueOrDefault(context.Request.Path.Value!) + 1;
        }

        return Handler(context);
    }

    public async ValueTask DisposeAsync() => await _app.DisposeAsync();
}

/// <summary>
/// Issuer keys fetched from a JwksUri or by OIDC discovery, from the attacker's and the operator's side: a hanging or
/// failing IdP, a huge or redirected answer, a discovery document for another issuer, keys that must not verify.
/// </summary>
public sealed class RemoteKeySourceTests : IAsyncLifetime
{
    private GatewayHarness _gateway = null!;
    private ScriptedIdp _idp = null!;

    public async Task InitializeAsync()
    {
        _gateway = await GatewayHarness.CreateAsync();
        _idp = await ScriptedIdp.StartAsync();
    }

    public async Task DisposeAsync()
    {
        await _gateway.DisposeAsync();
        await _idp.DisposeAsync();
    }

    // ---------- DoS ----------

    [Fact]
    public async Task ColdStart_IdpFailing_NotFetchedOncePerRequest()
    {
        _idp.Handler = c => { c.Response.StatusCode = 500; return Task.CompletedTask; };
        await StartAsync("JwksUri", _idp.Address + "/jwks.json");

        for (var i = 0; i < 20; i++)
        {
            var (status, detail) = await SendForDetailAsync(_gateway.Idp.Token());
            Assert.Equal((HttpStatusCode.Unauthorized, "signing keys of this issuer are unavailable"), (status, detail));
        }

        Assert.Equal(0, _gateway.Upstream.Count);
        // 20 requests in well under 20 s: a source that "backs off by itself" fetches a handful of times at most.
        Assert.InRange(_idp.Hits("/jwks.json"), 1, 5);
    }

    [Fact]
    public async Task ColdStart_HangingJwks_AnsweredWithinSecondsNothingForwarded()
    {
        _idp.Handler = async c => await Task.Delay(Timeout.Infinite, c.RequestAborted);
        await StartAsync("JwksUri", _idp.Address + "/jwks.json");

        using var client = new HttpClient { BaseAddress = new Uri(_gateway.ProxyAddress), Timeout = TimeSpan.FromSeconds(15) };
        var watch = Stopwatch.StartNew();
        HttpStatusCode? status = null;
        try
        {
            using var request = GatewayHarness.Request(HttpMethod.Get, "/status", _gateway.Idp.Token(), out _);
            using var response = await client.SendAsync(request);
            status = response.StatusCode;
        }
        catch (TaskCanceledException)
        {
        }

        Assert.Equal(0, _gateway.Upstream.Count);
        Assert.True(status is HttpStatusCode.Unauthorized or HttpStatusCode.ServiceUnavailable,
            $"no answer after {watch.Elapsed.TotalSeconds:F1} s (status {status?.ToString() ?? "none"})");
    }

    [Fact]
    public async Task ColdStart_ConcurrentRequests_OneFetch()
    {
        using var rsa = RSA.Create(2048);
        _idp.Handler = async c => { await Task.Delay(300); await c.Response.WriteAsync(Jwks(EcJwk(_gateway.Idp.Key, _gateway.Idp.Kid))); };
        await StartAsync("JwksUri", _idp.Address + "/jwks.json");

        var statuses = await Task.WhenAll(Enumerable.Range(0, 20).Select(_ => SendAsync(_gateway.Idp.Token())));

        Assert.All(statuses, s => Assert.Equal(HttpStatusCode.OK, s));
        Assert.Equal(20, _gateway.Upstream.Count);
        Assert.Equal(1, _idp.Hits("/jwks.json"));
    }

    [Fact]
    public async Task HugeJwks_NotReadWithoutLimit()
    {
        // A valid JWKS padded with 64 MiB of whitespace: the key fetch must be bounded.
        var body = Jwks(EcJwk(_gateway.Idp.Key, _gateway.Idp.Kid));
        var padded = body[..^1] + new string(' ', 64 << 20) + "}";
        _idp.Handler = c => c.Response.WriteAsync(padded);
        await StartAsync("JwksUri", _idp.Address + "/jwks.json");

        var (status, _) = await SendForDetailAsync(_gateway.Idp.Token());

        Assert.Equal(HttpStatusCode.Unauthorized, status);
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    // ---------- Correctness ----------

    [Fact]
    public async Task Discovery_IssuerDiffersFromAuthority_KeysNotUsed()
    {
        // The discovery document at the configured Authority names another issuer (OIDC Discovery §4.3: must be identical).
        _idp.Handler = c => c.Request.Path.Value switch
        {
            "/.well-known/openid-configuration" => c.Response.WriteAsync(new JsonObject
            {
                ["issuer"] = "https://other-tenant.test",
                ["jwks_uri"] = _idp.Address + "/jwks.json",
            }.ToJsonString()),
            "/jwks.json" => c.Response.WriteAsync(Jwks(EcJwk(_gateway.Idp.Key, _gateway.Idp.Kid))),
            _ => Task.CompletedTask,
        };
        await StartAsync("Authority", _idp.Address);

        var (status, _) = await SendForDetailAsync(_gateway.Idp.Token());

        Assert.Equal(HttpStatusCode.Unauthorized, status);
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task CachedToken_KeyRemovedAtIdp_RefusedOnceRefreshed()
    {
        using var k2 = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var jwks = Jwks(EcJwk(_gateway.Idp.Key, _gateway.Idp.Kid));
        _idp.Handler = c => c.Response.WriteAsync(jwks);
        await StartAsync("JwksUri", _idp.Address + "/jwks.json");
        var token = _gateway.Idp.Token();
        Assert.Equal(HttpStatusCode.OK, await SendAsync(token));
        Assert.Equal(HttpStatusCode.OK, await SendAsync(token)); // held from this second verification on
        Assert.Equal(HttpStatusCode.OK, await SendAsync(token)); // now a cache hit

        jwks = Jwks(EcJwk(k2, "k2"));
        // A k2 token triggers the refresh (first RequestRefresh is honoured at once).
        var header = _gateway.Idp.Header();
        header["kid"] = "k2";
        var byK2 = _gateway.Idp.Sign(header, _gateway.Idp.Claims().ToJsonString(), k2);
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (await SendAsync(byK2) != HttpStatusCode.OK && DateTime.UtcNow < deadline)
        {
            await Task.Delay(100);
        }

        var forwarded = _gateway.Upstream.Count;
        var (status, detail) = await SendForDetailAsync(token);
        Assert.Equal((HttpStatusCode.Unauthorized, "unknown kid"), (status, detail));
        Assert.Equal(forwarded, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task RefreshFailsAfterKeysKnown_LastGoodKeysKept()
    {
        var down = false;
        _idp.Handler = ServesTheIdpKeyUnless(() => down);
        await StartAsync("JwksUri", _idp.Address + "/jwks.json");
        Assert.Equal(HttpStatusCode.OK, await SendAsync(_gateway.Idp.Token()));

        down = true;
        var header = _gateway.Idp.Header();
        header["kid"] = "random";
        Assert.Equal(HttpStatusCode.Unauthorized, await SendAsync(_gateway.Idp.Sign(header, _gateway.Idp.Claims().ToJsonString())));
        await Task.Delay(500);

        Assert.Equal(HttpStatusCode.OK, await SendAsync(_gateway.Idp.Token()));
        Assert.Equal(2, _gateway.Upstream.Count);
    }

    // ---------- Key hygiene ----------

    [Fact]
    public async Task Jwks_Rsa1024Key_NotUsed()
    {
        using var rsa = RSA.Create(1024);
        _idp.Handler = c => c.Response.WriteAsync(Jwks(RsaJwk(rsa, "r1")));
        await StartAsync("JwksUri", _idp.Address + "/jwks.json", "RS256");

        var (status, detail) = await SendForDetailAsync(RsaToken(rsa, "r1", "RS256"));

        Assert.Equal(HttpStatusCode.Unauthorized, status);
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Jwks_RsaAndEcKeyUnderOneKid_EachVerifiesTokensOfItsOwnAlgorithm(bool rsaFirst)
    {
        // RFC 7517 §4.5 lets keys of different types share a kid (an issuer moving from RSA to EC publishes both).
        // The last one published used to win the kid, so the other key's valid tokens were refused.
        using var rsa = RSA.Create(2048);
        var keys = new[] { RsaJwk(rsa, "k1"), EcJwk(_gateway.Idp.Key, "k1") };
        _idp.Handler = c => c.Response.WriteAsync(Jwks(rsaFirst ? keys : [keys[1], keys[0]]));
        await StartAsync("JwksUri", _idp.Address + "/jwks.json", "RS256", "ES256");

        var byRsa = await SendAsync(RsaToken(rsa, "k1", "RS256"));
        var byEc = await SendAsync(_gateway.Idp.Token());
        var byRsaAgain = await SendAsync(RsaToken(rsa, "k1", "RS256"));

        Assert.Equal((HttpStatusCode.OK, HttpStatusCode.OK, HttpStatusCode.OK), (byRsa, byEc, byRsaAgain));
        Assert.Equal(3, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task Jwks_EcKeyOfAnotherCurveUnderTheTokensKid_Refused()
    {
        // Two EC keys under one kid: only the one on the algorithm's curve verifies; a P-384 key is never tried for ES256.
        using var p384 = ECDsa.Create(ECCurve.NamedCurves.nistP384);
        var other = EcJwk(p384, "k1");
        other["crv"] = "P-384";
        other.Remove("alg");
        _idp.Handler = c => c.Response.WriteAsync(Jwks(other));
        await StartAsync("JwksUri", _idp.Address + "/jwks.json", "ES256", "ES384");

        var (status, detail) = await SendForDetailAsync(_gateway.Idp.Token());

        Assert.Equal(HttpStatusCode.Unauthorized, status);
        Assert.Contains("curve", detail, StringComparison.Ordinal);
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task Jwks_KeyAlgDiffersFromTokenAlg_NotUsed()
    {
        // The key is published for PS256 only; a token claiming RS256 with it must not verify (RFC 7517 §4.4).
        using var rsa = RSA.Create(2048);
        var jwk = RsaJwk(rsa, "r1");
        jwk["alg"] = "PS256";
        _idp.Handler = c => c.Response.WriteAsync(Jwks(jwk));
        await StartAsync("JwksUri", _idp.Address + "/jwks.json", "RS256", "PS256");

        var (status, detail) = await SendForDetailAsync(RsaToken(rsa, "r1", "RS256"));

        Assert.Equal(HttpStatusCode.Unauthorized, status);
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task Jwks_X5cCertDiffersFromModulus_OnlyTheKeyItsMembersDescribeVerifies()
    {
        // n/e say key A; x5c carries a certificate for key B (RFC 7517 §4.7: they MUST match). B must not verify.
        using var a = RSA.Create(2048);
        using var b = RSA.Create(2048);
        var request = new CertificateRequest("CN=b", b, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        using var cert = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(30));
        var jwk = RsaJwk(a, "r1");
        jwk["x5c"] = new JsonArray(Convert.ToBase64String(cert.RawData));
        _idp.Handler = c => c.Response.WriteAsync(Jwks(jwk));
        await StartAsync("JwksUri", _idp.Address + "/jwks.json", "RS256");

        var byB = await SendAsync(RsaToken(b, "r1", "RS256"));
        var byA = await SendAsync(RsaToken(a, "r1", "RS256"));

        // The key an auditor reads in n/e is the key that verifies; the certificate's key does not.
        Assert.Equal((HttpStatusCode.Unauthorized, HttpStatusCode.OK), (byB, byA));
        Assert.Equal(1, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task Jwks_EncKeyAndOctKey_NotUsed_KidExact()
    {
        var enc = EcJwk(_gateway.Idp.Key, "e1");
        enc["use"] = "enc";
        _idp.Handler = c => c.Response.WriteAsync(Jwks(enc, EcJwk(_gateway.Idp.Key, "K1")));
        await StartAsync("JwksUri", _idp.Address + "/jwks.json");

        foreach (var kid in new[] { "e1", "k1", " K1", "K1 " })
        {
            var header = _gateway.Idp.Header();
            header["kid"] = kid;
            Assert.Equal(HttpStatusCode.Unauthorized, await SendAsync(_gateway.Idp.Sign(header, _gateway.Idp.Claims().ToJsonString())));
        }

        var ok = _gateway.Idp.Header();
        ok["kid"] = "K1";
        Assert.Equal(HttpStatusCode.OK, await SendAsync(_gateway.Idp.Sign(ok, _gateway.Idp.Claims().ToJsonString())));
        Assert.Equal(1, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task JwksRedirect_ToAnotherOrigin_NotFollowed()
    {
        var other = _idp.Address.Replace("127.0.0.1", "localhost", StringComparison.Ordinal);
        _idp.Handler = c =>
        {
            if (c.Request.Path == "/jwks.json")
            {
                c.Response.Redirect(other + "/elsewhere.json");
                return Task.CompletedTask;
            }

            return c.Response.WriteAsync(Jwks(EcJwk(_gateway.Idp.Key, _gateway.Idp.Kid)));
        };
        await StartAsync("JwksUri", _idp.Address + "/jwks.json");

        var (status, _) = await SendForDetailAsync(_gateway.Idp.Token());

        Assert.Equal(HttpStatusCode.Unauthorized, status);
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task WorkloadJwksUri_X509SvidKey_NotUsedForJwtSvid()
    {
        // SPIFFE bundle: "use": "x509-svid" marks an X.509 authority, not a JWT-SVID signing key.
        var jwk = EcJwk(_gateway.WorkloadIssuer.Key, _gateway.WorkloadIssuer.Kid);
        jwk["use"] = "x509-svid";
        jwk.Remove("alg");
        _idp.Handler = c => c.Response.WriteAsync(Jwks(jwk));
        var config = _gateway.DefaultConfig();
        var w = (JsonObject)config["Assurance"]!["Workload"]!["Issuers"]![0]!;
        w.Remove("JwksFile");
        w["JwksUri"] = _idp.Address + "/jwks.json";
        config["ReverseProxy"]!["Routes"]!.AsObject()["wl"] = TestConfig.Route("/wl/{**rest}", "wl-only");
        config["Assurance"]!["Policies"]!.AsObject()["wl-only"] = new JsonObject { ["Bind"] = new JsonArray("workload"), ["RequiresGrant"] = false };
        config["Assurance"]!["Workload"]!["Sources"] = new JsonArray("header");
        await _gateway.StartWithAsync(config);

        using var request = GatewayHarness.Request(HttpMethod.Get, "/wl/x", _gateway.Idp.Token(), out _);
        request.Headers.TryAddWithoutValidation("Workload-Identity", _gateway.WorkloadIssuer.Svid());
        using var response = await _gateway.Proxy.SendAsync(request);

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task Reload_WhileIdpDown_LastGoodKeysKept()
    {
        var down = false;
        _idp.Handler = ServesTheIdpKeyUnless(() => down);
        var config = _gateway.DefaultConfig();
        var issuer = (JsonObject)config["Assurance"]!["Tokens"]!["Issuers"]![0]!;
        issuer.Remove("JwksFile");
        issuer["JwksUri"] = _idp.Address + "/jwks.json";
        await _gateway.StartWithAsync(config);
        Assert.Equal(HttpStatusCode.OK, await SendAsync(_gateway.Idp.Token()));

        // The IdP has an outage; meanwhile an operator changes an unrelated setting.
        down = true;
        config["Assurance"]!["Tokens"]!["ClockSkew"] = "00:00:20";
        Assert.True(await _gateway.ReloadAsync(config));

        var (status, detail) = await SendForDetailAsync(_gateway.Idp.Token());
        Assert.Equal((HttpStatusCode.OK, null), (status, detail));
        Assert.Equal(2, _gateway.Upstream.Count);
    }

    // ---------- helpers ----------

    /// <summary>
    /// Keys are known, the automatic refresh (12-hourly) falls due, and the IdP is down at that moment. IdentityModel
    /// moves its next refresh only on success, so each call into it started another fetch: the gateway hit the failing
    /// IdP at its own request rate (cache hits too, which re-read the keys). Now at most once a second; requests are
    /// still answered from the last good keys.
    /// </summary>
    [Fact]
    public async Task AutomaticRefreshDueWhileIdpDown_IdpNotHitOncePerRequest_LastGoodKeysServe()
    {
        var down = false;
        _idp.Handler = c =>
        {
            if (Volatile.Read(ref down))
            {
                c.Response.StatusCode = 500;
                return Task.CompletedTask;
            }

            return c.Response.WriteAsync(Jwks(EcJwk(_gateway.Idp.Key, _gateway.Idp.Kid)));
        };
        var uri = _idp.Address + "/jwks.json";
        await StartAsync("JwksUri", uri);
        var token = _gateway.Idp.Token();
        Assert.Equal(HttpStatusCode.OK, await SendAsync(token));

        Volatile.Write(ref down, true);
        MakeAutomaticRefreshDue("jwks " + uri);
        var before = _idp.Hits("/jwks.json");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        const int Requests = 40;
        for (var i = 0; i < Requests; i++)
        {
            Assert.Equal(HttpStatusCode.OK, await SendAsync(i % 2 == 0 ? token : _gateway.Idp.Token()));
            await Task.Delay(25);
        }

        var hits = _idp.Hits("/jwks.json") - before;
        Assert.True(hits <= (int)Math.Ceiling(clock.Elapsed.TotalSeconds) + 1, $"{hits} fetches of a failing JWKS in {clock.Elapsed.TotalSeconds:F1} s of {Requests} requests");
        Assert.Equal(Requests + 1, _gateway.Upstream.Count);
    }

    /// <summary>Makes IdentityModel's next automatic refresh of a shared source due now (its private schedule).</summary>
    private static void MakeAutomaticRefreshDue(string sharedKey)
    {
        const System.Reflection.BindingFlags Any = System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.Static
            | System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Public;
        var shared = (System.Collections.IDictionary)typeof(AssuranceGateway.Tokens.RemoteKeySource).GetField("Shared", Any)!.GetValue(null)!;
        var fetch = (Delegate)shared[sharedKey]!.GetType().GetField("_fetch", Any)!.GetValue(shared[sharedKey])!;
        var manager = fetch.Target!.GetType().GetFields(Any).Select(f => f.GetValue(fetch.Target)).First(v => v is BaseConfigurationManager)!;
        System.Reflection.FieldInfo? field = null;
        for (var t = manager.GetType(); t is not null && field is null; t = t.BaseType)
        {
            field = t.GetField("_syncAfter", Any);
        }

        Assert.True(field is not null, "IdentityModel no longer keeps its schedule in _syncAfter: update this test");
        field!.SetValue(manager, field.FieldType == typeof(DateTimeOffset) ? DateTimeOffset.UtcNow.AddMinutes(-1)
            : field.FieldType == typeof(DateTime) ? DateTime.UtcNow.AddMinutes(-1) : (object)DateTimeOffset.UtcNow.AddMinutes(-1).UtcTicks);
    }

    private async Task StartAsync(string keySource, string value, params string[] algorithms)
    {
        var config = _gateway.DefaultConfig();
        var issuer = (JsonObject)config["Assurance"]!["Tokens"]!["Issuers"]![0]!;
        issuer.Remove("JwksFile");
        issuer[keySource] = value;
        if (algorithms.Length > 0)
        {
            issuer["Algorithms"] = new JsonArray(algorithms.Select(a => (JsonNode)a!).ToArray());
        }

        await _gateway.StartWithAsync(config);
    }

    /// <summary>The IdP's JWKS, or 500 while <paramref name="down"/> says so.</summary>
    private Func<HttpContext, Task> ServesTheIdpKeyUnless(Func<bool> down) => c =>
    {
        if (down())
        {
            c.Response.StatusCode = 500;
            return Task.CompletedTask;
        }

        return c.Response.WriteAsync(Jwks(EcJwk(_gateway.Idp.Key, _gateway.Idp.Kid)));
    };

    private static string Jwks(params JsonObject[] keys) => new JsonObject { ["keys"] = new JsonArray(keys) }.ToJsonString();

    private static JsonObject EcJwk(ECDsa key, string kid)
    {
        var p = key.ExportParameters(false);
        return new JsonObject
        {
            ["kty"] = "EC", ["crv"] = "P-256", ["kid"] = kid, ["use"] = "sig", ["alg"] = "ES256",
            ["x"] = Base64UrlEncoder.Encode(p.Q.X), ["y"] = Base64UrlEncoder.Encode(p.Q.Y),
        };
    }

    private static JsonObject RsaJwk(RSA key, string kid)
    {
        var p = key.ExportParameters(false);
        return new JsonObject
        {
            ["kty"] = "RSA", ["kid"] = kid, ["use"] = "sig",
            ["n"] = Base64UrlEncoder.Encode(p.Modulus), ["e"] = Base64UrlEncoder.Encode(p.Exponent),
        };
    }

    private string RsaToken(RSA key, string kid, string alg)
    {
        var header = new JsonObject { ["alg"] = alg, ["typ"] = "at+jwt", ["kid"] = kid }.ToJsonString();
        var input = Base64UrlEncoder.Encode(Encoding.UTF8.GetBytes(header)) + "." + Base64UrlEncoder.Encode(Encoding.UTF8.GetBytes(_gateway.Idp.Claims().ToJsonString()));
        var padding = alg.StartsWith("PS", StringComparison.Ordinal) ? RSASignaturePadding.Pss : RSASignaturePadding.Pkcs1;
        return input + "." + Base64UrlEncoder.Encode(key.SignData(Encoding.ASCII.GetBytes(input), HashAlgorithmName.SHA256, padding));
    }

    private async Task<HttpStatusCode> SendAsync(string token) => (await SendForDetailAsync(token)).Status;

    private Task<(HttpStatusCode Status, string? Detail)> SendForDetailAsync(string token) => _gateway.StatusAndDetailAsync(token);
}
