using System.Net;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using AssuranceGateway.Configuration;
using AssuranceGateway.FunctionalTests.Grants;
using AssuranceGateway.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;
using static AssuranceGateway.Testing.GrantHelpers;

namespace AssuranceGateway.FunctionalTests.Evidence;

/// <summary>SPEC §5.6 from the upstream's side: it verifies, with the published key, which approval let a request in.</summary>
public sealed class SignedEvidenceTests : IAsyncLifetime
{
    // The gateway's clock, set by hand: evidence expiry (and with it how long a retired key stays published) is
    // judged by it, so the test moves past it without waiting.
    private readonly ManualTimeProvider _clock = new(DateTimeOffset.UtcNow);
    private GatewayHarness _gateway = null!;
    private JsonObject _config = null!;

    public async Task InitializeAsync()
    {
        var harness = await GatewayHarness.CreateAsync();
        var config = harness.DefaultConfig();
        config["Assurance"]!["Evidence"] = new JsonObject { ["SigningKeyFile"] = await WriteKeyAsync(harness, "evidence.jwk.json", "ev-1") };
        config["ReverseProxy"]!["Routes"]!["shadowed"] = TestConfig.Route("/shadowed/{**rest}", "shadow-approval");
        config["Assurance"]!["Policies"]!["shadow-approval"] = new JsonObject
        {
            ["Bind"] = new JsonArray("token", "workload", "request"),
            ["Mode"] = "shadow",
            ["BoundHeaders"] = new JsonArray("content-type"),
        };
        await harness.StartWithAsync(config, services => services.AddSingleton<TimeProvider>(_clock));
        _gateway = harness;
        _config = config;
    }

    public async Task DisposeAsync() => await _gateway.DisposeAsync();

    /// <summary>A new private P-256 JWK in the harness directory; returns its path.</summary>
    private static async Task<string> WriteKeyAsync(GatewayHarness harness, string name, string kid) =>
        (await EvidenceKeys.WriteAsync(harness.Directory, kid, name: name)).Path;

    private Task<TokenValidationResult> VerifyAsync(string evidence) => EvidenceKeys.VerifyAsync(_gateway, evidence);

    private Task<string> AllowedEvidenceAsync() => EvidenceKeys.AllowedEvidenceAsync(_gateway);

    private Task<List<string>> PublishedKidsAsync() => EvidenceKeys.PublishedKidsAsync(_gateway);

    [Fact]
    public async Task AllowedRequest_CarriesEvidenceThatVerifiesWithPublishedKey()
    {
        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token));
        var grant = await _gateway.GetGrantAsync(id);

        using var request = DeployRequest(token, _gateway.WorkloadIssuer.Svid(), id, out var traceId);
        request.Headers.TryAddWithoutValidation("Assurance-Evidence", "forged-by-client");
        using var response = await _gateway.Proxy.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var evidence = Assert.Single(_gateway.Upstream.Received).Headers["Assurance-Evidence"];
        Assert.NotEqual("forged-by-client", evidence);
        var jwks = new JsonWebKeySet(await _gateway.Api.GetStringAsync("/.well-known/jwks.json"));
        Assert.DoesNotContain(jwks.Keys, k => k.HasPrivateKey);
        var result = await new JsonWebTokenHandler().ValidateTokenAsync(evidence, new TokenValidationParameters
        {
            ValidIssuer = "urn:assurance-gateway",
            ValidateAudience = false,
            IssuerSigningKeys = jwks.Keys,
            ValidTypes = ["assurance-evidence+jwt"],
            ValidAlgorithms = ["ES256"],
        });
        Assert.True(result.IsValid, result.Exception?.Message);
        var jwt = (JsonWebToken)result.SecurityToken;
        Assert.Equal(id, jwt.GetClaim("grantId").Value);
        Assert.Equal(grant.GetProperty("requestHash").GetString(), jwt.GetClaim("requestHash").Value);
        Assert.Equal("deploy", jwt.GetClaim("route").Value);
        Assert.Equal("alice", jwt.Subject);
        Assert.Equal(Deployer, jwt.GetClaim("workload").Value);
        Assert.Equal("approver", jwt.GetClaim("approvers").Value);
        Assert.Equal(traceId, jwt.GetClaim("traceId").Value);
        Assert.True(jwt.ValidTo - jwt.IssuedAt <= TimeSpan.FromMinutes(1));
        Assert.Equal("ev-1", jwt.Kid);
        Assert.Equal("ES256", jwt.Alg);
        Assert.Equal("assurance-evidence+jwt", jwt.Typ);
        Assert.Equal(grant.GetProperty("usesRemaining").GetInt32() - 1, int.Parse(jwt.GetClaim("usesRemaining").Value, System.Globalization.CultureInfo.InvariantCulture));
    }

    [Fact]
    public async Task Evidence_SignedByAnotherKey_DoesNotVerify()
    {
        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token));
        using var response = await _gateway.Proxy.SendAsync(DeployRequest(token, _gateway.WorkloadIssuer.Svid(), id, out _));
        var evidence = Assert.Single(_gateway.Upstream.Received).Headers["Assurance-Evidence"];
        using var other = ECDsa.Create(ECCurve.NamedCurves.nistP256);

        var result = await new JsonWebTokenHandler().ValidateTokenAsync(evidence, new TokenValidationParameters
        {
            ValidateIssuer = false,
            ValidateAudience = false,
            IssuerSigningKey = new ECDsaSecurityKey(other),
        });

        Assert.False(result.IsValid);
    }

    [Fact]
    public async Task Jwks_IsServedOnlyOnTheApiListener()
    {
        using var onProxy = await _gateway.Proxy.GetAsync("/.well-known/jwks.json");
        var onApi = await _gateway.Api.GetFromJsonAsync<JsonElement>("/.well-known/jwks.json");

        Assert.Equal(HttpStatusCode.NotFound, onProxy.StatusCode);
        Assert.Equal("ev-1", onApi.GetProperty("keys")[0].GetProperty("kid").GetString());
        Assert.False(onApi.GetProperty("keys")[0].TryGetProperty("d", out _));
    }

    [Fact]
    public async Task ShadowPolicy_SingleUseGrantUsedTwice_UpstreamReceivesNoEvidence()
    {
        // Shadow mode consumes nothing: evidence signed for it would say a single-use approval protected two requests,
        // indistinguishable by the upstream from enforced evidence.
        var token = _gateway.Idp.Token();
        var grant = DeployGrant(token, path: "/shadowed/v1/releases", maxUses: 1);
        grant["route"] = "shadowed";
        var id = await _gateway.CreateGrantAsync(grant);

        for (var i = 0; i < 2; i++)
        {
            using var request = DeployRequest(token, _gateway.WorkloadIssuer.Svid(), id, out _, path: "/shadowed/v1/releases");
            request.Headers.TryAddWithoutValidation("Assurance-Evidence", "forged-by-client");
            using var response = await _gateway.Proxy.SendAsync(request);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }

        Assert.Equal(2, _gateway.Upstream.Count);
        Assert.All(_gateway.Upstream.Received, r => Assert.False(r.Headers.ContainsKey("Assurance-Evidence")));
        Assert.Equal(1, (await _gateway.GetGrantAsync(id)).GetProperty("usesRemaining").GetInt32());

        // The same gateway still signs what it enforced.
        Assert.True((await VerifyAsync(await AllowedEvidenceAsync())).IsValid);
    }

    [Fact]
    public async Task SigningKeyRotatedByReload_OldEvidenceVerifiesUntilItExpiresThenOldKeyIsDropped()
    {
        var before = await AllowedEvidenceAsync();
        Assert.True((await VerifyAsync(before)).IsValid);

        _config["Assurance"]!["Evidence"]!["SigningKeyFile"] = await WriteKeyAsync(_gateway, "evidence-2.jwk.json", "ev-2");
        Assert.True(await _gateway.ReloadAsync(_config));
        var after = await AllowedEvidenceAsync();

        Assert.Equal("ev-2", new JsonWebToken(after).Kid);
        Assert.Equal(["ev-2", "ev-1"], await PublishedKidsAsync());
        var old = await VerifyAsync(before);
        Assert.True(old.IsValid, old.Exception?.Message);
        var current = await VerifyAsync(after);
        Assert.True(current.IsValid, current.Exception?.Message);

        // Evidence lifetime (60 s by default) plus the clock skew allowed for it (Tokens:ClockSkew, 30 s here): until
        // then an upstream may still accept evidence signed with ev-1; one second later none is left.
        _clock.Advance(TimeSpan.FromSeconds(60 + 30));
        Assert.Equal(["ev-2", "ev-1"], await PublishedKidsAsync());
        _clock.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(["ev-2"], await PublishedKidsAsync());
        Assert.False((await VerifyAsync(before)).IsValid);
    }

    [Fact]
    public async Task Reload_AnotherKeyUnderAPublishedKid_RefusedAndTheKidKeepsNamingOneKey()
    {
        // Two keys under one kid: an upstream that cached ev-1 rejects the new evidence, one that re-fetched picks either
        // key for either evidence. Rewriting the key file with a new key and the same kid is refused; the old key signs on.
        var before = await AllowedEvidenceAsync();
        var keyFile = _config["Assurance"]!["Evidence"]!["SigningKeyFile"]!.GetValue<string>();
        var published = await _gateway.Api.GetStringAsync("/.well-known/jwks.json");
        var otherKey = await File.ReadAllTextAsync(await WriteKeyAsync(_gateway, "evidence-other.jwk.json", "ev-1"));

        Assert.False(await _gateway.ReplaceKeyFileAsync(keyFile, otherKey));

        var refused = Assert.Single(_gateway.RefusedReloads());
        Assert.Contains($"Assurance:Evidence:SigningKeyFile: '{keyFile}' holds another key under kid 'ev-1'", refused, StringComparison.Ordinal);
        var after = await AllowedEvidenceAsync();
        Assert.Equal(published, await _gateway.Api.GetStringAsync("/.well-known/jwks.json"));
        var result = await VerifyAsync(after);
        Assert.True(result.IsValid, result.Exception?.Message);
        Assert.True((await VerifyAsync(before)).IsValid);
    }

    [Fact]
    public async Task Reload_EvidenceKeyHalvesDisagree_RefusedEvidenceStillSigned()
    {
        // The broken key would only fail when signing, after the grant use was consumed: refused at reload instead.
        using var a = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        using var b = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var config = _gateway.DefaultConfig();
        config["Assurance"]!["Evidence"] = new JsonObject
        {
            ["SigningKeyFile"] = await WriteKeyAsync(_gateway.Directory, a.ExportParameters(false), b.ExportParameters(true)),
        };

        Assert.False(await _gateway.ReloadAsync(config));

        Assert.Contains("Assurance:Evidence:SigningKeyFile: ", Assert.Single(_gateway.RefusedReloads()), StringComparison.Ordinal);
        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token));
        using var response = await _gateway.Proxy.SendAsync(DeployRequest(token, _gateway.WorkloadIssuer.Svid(), id, out _));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.True(Assert.Single(_gateway.Upstream.Received).Headers.ContainsKey("Assurance-Evidence"));
    }

    /// <summary>A private EC P-256 JWK whose public point is <paramref name="publicHalf"/>'s and private scalar <paramref name="privateHalf"/>'s.</summary>
    internal static async Task<string> WriteKeyAsync(string directory, ECParameters publicHalf, ECParameters privateHalf)
    {
        var path = Path.Combine(directory, $"evidence-{Guid.NewGuid():N}.jwk.json");
        await File.WriteAllTextAsync(path, new JsonObject
        {
            ["kty"] = "EC", ["crv"] = "P-256", ["kid"] = "ev-2",
            ["x"] = Base64UrlEncoder.Encode(publicHalf.Q.X), ["y"] = Base64UrlEncoder.Encode(publicHalf.Q.Y), ["d"] = Base64UrlEncoder.Encode(privateHalf.D),
        }.ToJsonString());
        return path;
    }
}

/// <summary>SPEC §3 and §5.6: an evidence key that cannot sign stops the start, before any grant use can be consumed.</summary>
public sealed class SignedEvidenceKeyTests
{
    [Fact]
    public async Task Start_EvidenceKeyHalvesDisagree_RefusedNamingTheKey()
    {
        await using var harness = await GatewayHarness.CreateAsync();
        using var a = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        using var b = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var keyFile = await SignedEvidenceTests.WriteKeyAsync(harness.Directory, a.ExportParameters(false), b.ExportParameters(true));
        var config = harness.DefaultConfig();
        config["Assurance"]!["Evidence"] = new JsonObject { ["SigningKeyFile"] = keyFile };

        var refused = await Assert.ThrowsAsync<GatewayConfigurationException>(() => harness.StartWithAsync(config));

        var problem = Assert.Single(refused.Problems);
        Assert.StartsWith($"Assurance:Evidence:SigningKeyFile: '{keyFile}' does not hold a usable EC P-256 key pair", problem, StringComparison.Ordinal);
    }
}
