using System.Net;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using AssuranceGateway.Configuration;
using AssuranceGateway.Testing;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;
using static AssuranceGateway.Testing.GrantHelpers;

namespace AssuranceGateway.FunctionalTests.Evidence;

/// <summary>EC P-256 JWK files for the evidence key tests, and what an upstream does with the published set.</summary>
internal static class EvidenceKeys
{
    /// <summary>A new EC P-256 JWK file under <paramref name="kid"/>; with <paramref name="withPrivate"/>, its <c>d</c> too. Returns the path and d.</summary>
    public static async Task<(string Path, string D)> WriteAsync(string directory, string kid, bool withPrivate = true, string? name = null)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var p = key.ExportParameters(true);
        var d = Base64UrlEncoder.Encode(p.D);
        var jwk = new JsonObject
        {
            ["kty"] = "EC", ["crv"] = "P-256", ["kid"] = kid, ["x"] = Base64UrlEncoder.Encode(p.Q.X), ["y"] = Base64UrlEncoder.Encode(p.Q.Y),
        };
        if (withPrivate)
        {
            jwk["d"] = d;
        }

        var path = System.IO.Path.Combine(directory, name ?? $"{kid}-{Guid.NewGuid():N}.jwk.json");
        await File.WriteAllTextAsync(path, jwk.ToJsonString());
        return (path, d);
    }

    /// <summary>The kids a gateway publishes, in order; asserts that no key carries a private member.</summary>
    public static async Task<List<string>> PublishedKidsAsync(GatewayHarness gateway)
    {
        var jwks = await gateway.Api.GetFromJsonAsync<JsonElement>("/.well-known/jwks.json");
        var keys = jwks.GetProperty("keys").EnumerateArray().ToList();
        Assert.All(keys, k => Assert.False(k.TryGetProperty("d", out _)));
        return keys.ConvertAll(k => k.GetProperty("kid").GetString()!);
    }

    /// <summary>What an upstream does: fetch the JWKS from <paramref name="jwksFrom"/> (any replica) and validate with it.</summary>
    public static async Task<TokenValidationResult> VerifyAsync(GatewayHarness jwksFrom, string evidence)
    {
        var jwks = new JsonWebKeySet(await jwksFrom.Api.GetStringAsync("/.well-known/jwks.json"));
        return await new JsonWebTokenHandler().ValidateTokenAsync(evidence, new TokenValidationParameters
        {
            ValidIssuer = "urn:assurance-gateway",
            ValidateAudience = false,
            IssuerSigningKeys = jwks.Keys,
            ValidTypes = ["assurance-evidence+jwt"],
            ValidAlgorithms = ["ES256"],
        });
    }

    /// <summary>One allowed deploy request with a fresh grant; returns the evidence the upstream received.</summary>
    public static async Task<string> AllowedEvidenceAsync(GatewayHarness gateway)
    {
        var token = gateway.Idp.Token();
        var id = await gateway.CreateGrantAsync(DeployGrant(token));
        var before = gateway.Upstream.Count;
        using var response = await gateway.Proxy.SendAsync(DeployRequest(token, gateway.WorkloadIssuer.Svid(), id, out _));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(before + 1, gateway.Upstream.Count);
        return gateway.Upstream.Received[^1].Headers["Assurance-Evidence"];
    }

    public static JsonObject Evidence(JsonObject config) => (JsonObject)config["Assurance"]!["Evidence"]!;

    public static JsonArray Files(params string[] paths) => new([.. paths.Select(p => (JsonNode)JsonValue.Create(p))]);
}

/// <summary>
/// <c>Assurance:Evidence:PublishedKeyFiles</c> (an addition to SPEC §3/§5.6): keys published in the JWKS beside the
/// signing key, never used to sign, validated and watched like <c>SigningKeyFile</c>.
/// </summary>
public sealed class PublishedEvidenceKeyTests : IAsyncLifetime
{
    private GatewayHarness _gateway = null!;
    private JsonObject _config = null!;
    private string _signingKeyFile = null!;
    private string _signingD = null!;

    public async Task InitializeAsync()
    {
        _gateway = await GatewayHarness.CreateAsync();
        (_signingKeyFile, _signingD) = await EvidenceKeys.WriteAsync(_gateway.Directory, "ev-1");
        _config = _gateway.DefaultConfig();
        _config["Assurance"]!["Evidence"] = new JsonObject { ["SigningKeyFile"] = _signingKeyFile };
    }

    public async Task DisposeAsync() => await _gateway.DisposeAsync();

    [Fact]
    public async Task Jwks_SigningAndPublishedKeys_SigningKeyFirstPublicPartsOnlyEachOnce()
    {
        var (privateFile, privateD) = await EvidenceKeys.WriteAsync(_gateway.Directory, "ev-2");
        var (publicFile, _) = await EvidenceKeys.WriteAsync(_gateway.Directory, "ev-3", withPrivate: false);
        // The signing key listed again (as it is after a rotation's last step, until the old file is dropped): one entry.
        EvidenceKeys.Evidence(_config)["PublishedKeyFiles"] = EvidenceKeys.Files(privateFile, publicFile, _signingKeyFile);

        await _gateway.StartWithAsync(_config);

        Assert.Equal(["ev-1", "ev-2", "ev-3"], await EvidenceKeys.PublishedKidsAsync(_gateway));
        var raw = await _gateway.Api.GetStringAsync("/.well-known/jwks.json");
        Assert.DoesNotContain(privateD, raw, StringComparison.Ordinal);
        Assert.DoesNotContain(_signingD, raw, StringComparison.Ordinal);
        Assert.DoesNotContain(_gateway.Logs.Lines, l => l.Contains(privateD, StringComparison.Ordinal));
        Assert.DoesNotContain(new JsonWebKeySet(raw).Keys, k => k.HasPrivateKey);
    }

    [Fact]
    public async Task AllowedRequest_WithPublishedKeys_SignedWithTheSigningKeyOnly()
    {
        var (published, _) = await EvidenceKeys.WriteAsync(_gateway.Directory, "ev-2");
        EvidenceKeys.Evidence(_config)["PublishedKeyFiles"] = EvidenceKeys.Files(published);
        await _gateway.StartWithAsync(_config);

        var evidence = await EvidenceKeys.AllowedEvidenceAsync(_gateway);

        Assert.Equal("ev-1", new JsonWebToken(evidence).Kid);
        var signing = new JsonWebKey(await File.ReadAllTextAsync(_signingKeyFile));
        var result = await new JsonWebTokenHandler().ValidateTokenAsync(evidence, new TokenValidationParameters
        {
            ValidIssuer = "urn:assurance-gateway", ValidateAudience = false, IssuerSigningKey = signing, ValidAlgorithms = ["ES256"],
        });
        Assert.True(result.IsValid, result.Exception?.Message);
        Assert.True((await EvidenceKeys.VerifyAsync(_gateway, evidence)).IsValid);
    }

    [Fact]
    public async Task Reload_AddsPublishedKey_PublishedWithoutRestartAndItsFileIsWatched()
    {
        await _gateway.StartWithAsync(_config);
        Assert.Equal(["ev-1"], await EvidenceKeys.PublishedKidsAsync(_gateway));
        var (published, _) = await EvidenceKeys.WriteAsync(_gateway.Directory, "ev-2");

        EvidenceKeys.Evidence(_config)["PublishedKeyFiles"] = EvidenceKeys.Files(published);
        Assert.True(await _gateway.ReloadAsync(_config));

        Assert.Equal(["ev-1", "ev-2"], await EvidenceKeys.PublishedKidsAsync(_gateway));
        // The file is watched like SigningKeyFile: rewritten with the next key (a new kid), it is published at once.
        var (next, _) = await EvidenceKeys.WriteAsync(_gateway.Directory, "ev-3");
        Assert.True(await _gateway.ReplaceKeyFileAsync(published, await File.ReadAllTextAsync(next)));
        Assert.Equal(["ev-1", "ev-3"], await EvidenceKeys.PublishedKidsAsync(_gateway));
        Assert.Equal("ev-1", new JsonWebToken(await EvidenceKeys.AllowedEvidenceAsync(_gateway)).Kid);
    }

    [Fact]
    public async Task Start_InvalidPublishedKeyFiles_RefusedNamingEveryProblem()
    {
        var missing = Path.Combine(_gateway.Directory, "missing.jwk.json");
        // A private file cut off half-way (a Secret written in two steps): its d must not reach the problem lines.
        const string TruncatedD = "c2VjcmV0LWQtdGhhdC1tdXN0LW5vdC1iZS1sb2dnZWQ";
        var notJson = Path.Combine(_gateway.Directory, "broken.jwk.json");
        await File.WriteAllTextAsync(notJson, $"{{\"kty\":\"EC\",\"d\":\"{TruncatedD}\",\"x\":");
        var rsa = Path.Combine(_gateway.Directory, "rsa.jwk.json");
        using (var key = RSA.Create(2048))
        {
            var p = key.ExportParameters(false);
            await File.WriteAllTextAsync(rsa, new JsonObject
            {
                ["kty"] = "RSA", ["kid"] = "rsa-1", ["n"] = Base64UrlEncoder.Encode(p.Modulus), ["e"] = Base64UrlEncoder.Encode(p.Exponent),
            }.ToJsonString());
        }

        var p384 = Path.Combine(_gateway.Directory, "p384.jwk.json");
        using (var key = ECDsa.Create(ECCurve.NamedCurves.nistP384))
        {
            var p = key.ExportParameters(false);
            await File.WriteAllTextAsync(p384, new JsonObject
            {
                ["kty"] = "EC", ["crv"] = "P-384", ["kid"] = "p384", ["x"] = Base64UrlEncoder.Encode(p.Q.X), ["y"] = Base64UrlEncoder.Encode(p.Q.Y),
            }.ToJsonString());
        }

        var (noKid, _) = await EvidenceKeys.WriteAsync(_gateway.Directory, string.Empty, withPrivate: false, name: "no-kid.jwk.json");
        var (underSigningKid, otherD) = await EvidenceKeys.WriteAsync(_gateway.Directory, "ev-1");
        EvidenceKeys.Evidence(_config)["PublishedKeyFiles"] = EvidenceKeys.Files(missing, notJson, rsa, p384, noKid, underSigningKid);

        var refused = await Assert.ThrowsAsync<GatewayConfigurationException>(() => _gateway.StartWithAsync(_config));

        const string Key = "Assurance:Evidence:PublishedKeyFiles";
        Assert.Collection(
            refused.Problems,
            p => Assert.StartsWith($"{Key}:0: cannot read a JWK from '{missing}'", p, StringComparison.Ordinal),
            p => Assert.StartsWith($"{Key}:1: cannot read a JWK from '{notJson}'", p, StringComparison.Ordinal),
            p => Assert.Equal($"{Key}:2: '{rsa}' must hold an EC P-256 JWK (ES256)", p),
            p => Assert.Equal($"{Key}:3: '{p384}' must hold an EC P-256 JWK (ES256)", p),
            p => Assert.Equal($"{Key}:4: '{noKid}' holds a key without a kid: upstreams pick the verification key by kid", p),
            p => Assert.Equal(
                $"{Key}:5: '{underSigningKid}' holds another key under kid 'ev-1' than Assurance:Evidence:SigningKeyFile '{_signingKeyFile}': a kid names one key", p));
        Assert.DoesNotContain(refused.Problems, p => p.Contains(otherD, StringComparison.Ordinal) || p.Contains(TruncatedD, StringComparison.Ordinal));
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task Reload_PublishedFileRewrittenWithAnotherKeyUnderItsKid_RefusedAndTheKidKeepsNamingOneKey()
    {
        var (published, _) = await EvidenceKeys.WriteAsync(_gateway.Directory, "ev-2");
        EvidenceKeys.Evidence(_config)["PublishedKeyFiles"] = EvidenceKeys.Files(published);
        await _gateway.StartWithAsync(_config);
        var before = await _gateway.Api.GetStringAsync("/.well-known/jwks.json");
        var (other, _) = await EvidenceKeys.WriteAsync(_gateway.Directory, "ev-2");

        Assert.False(await _gateway.ReplaceKeyFileAsync(published, await File.ReadAllTextAsync(other)));

        Assert.Contains(
            $"Assurance:Evidence:PublishedKeyFiles:0: '{published}' holds another key under kid 'ev-2', which this gateway has already published",
            Assert.Single(_gateway.RefusedReloads()), StringComparison.Ordinal);
        Assert.Equal(before, await _gateway.Api.GetStringAsync("/.well-known/jwks.json"));

        // Dropped from the list and brought back later with other material: still the same kid, still refused.
        EvidenceKeys.Evidence(_config).Remove("PublishedKeyFiles");
        Assert.True(await _gateway.ReloadAsync(_config));
        Assert.Equal(["ev-1"], await EvidenceKeys.PublishedKidsAsync(_gateway));
        EvidenceKeys.Evidence(_config)["PublishedKeyFiles"] = EvidenceKeys.Files(published);
        Assert.False(await _gateway.ReloadAsync(_config));
        Assert.Equal(["ev-1"], await EvidenceKeys.PublishedKidsAsync(_gateway));
    }

    [Fact]
    public async Task Reload_PublishedKeyUnderTheSigningKidWithOtherMaterial_RefusedEvidenceStillSigned()
    {
        await _gateway.StartWithAsync(_config);
        var (impostor, _) = await EvidenceKeys.WriteAsync(_gateway.Directory, "ev-1", withPrivate: false);

        EvidenceKeys.Evidence(_config)["PublishedKeyFiles"] = EvidenceKeys.Files(impostor);
        Assert.False(await _gateway.ReloadAsync(_config));

        Assert.Contains(
            $"Assurance:Evidence:PublishedKeyFiles:0: '{impostor}' holds another key under kid 'ev-1' than Assurance:Evidence:SigningKeyFile",
            Assert.Single(_gateway.RefusedReloads()), StringComparison.Ordinal);
        Assert.Equal(["ev-1"], await EvidenceKeys.PublishedKidsAsync(_gateway));
        var evidence = await EvidenceKeys.AllowedEvidenceAsync(_gateway);
        Assert.True((await EvidenceKeys.VerifyAsync(_gateway, evidence)).IsValid);
    }
}

/// <summary>
/// The rotation the README describes, seen by an upstream behind one Service: replica A has been rotated, replica B not
/// yet, and the upstream that meets an unknown kid re-fetches the JWKS from whichever replica answers.
/// </summary>
public sealed class EvidenceKeyRotationAcrossReplicasTests : IAsyncLifetime
{
    private GatewayHarness _a = null!;
    private GatewayHarness _b = null!;
    private JsonObject _configA = null!;
    private JsonObject _configB = null!;
    private string _oldKey = null!;
    private string _newKey = null!;
    private readonly string _secret = Path.Combine(Path.GetTempPath(), "agw-tests", "secret-" + Guid.NewGuid().ToString("N"));

    public async Task InitializeAsync()
    {
        var created = await Task.WhenAll(GatewayHarness.CreateAsync(), GatewayHarness.CreateAsync());
        (_a, _b) = (created[0], created[1]);
        // One Secret mounted in every pod: both replicas read the same files, which outlive either replica.
        Directory.CreateDirectory(_secret);
        _oldKey = (await EvidenceKeys.WriteAsync(_secret, "ev-1")).Path;
        _newKey = (await EvidenceKeys.WriteAsync(_secret, "ev-2")).Path;
        _configA = _a.DefaultConfig();
        _configB = _b.DefaultConfig();
        _configA["Assurance"]!["Evidence"] = new JsonObject { ["SigningKeyFile"] = _oldKey };
        _configB["Assurance"]!["Evidence"] = new JsonObject { ["SigningKeyFile"] = _oldKey };
        await Task.WhenAll(_a.StartWithAsync(_configA), _b.StartWithAsync(_configB));
    }

    public async Task DisposeAsync()
    {
        await _a.DisposeAsync();
        await _b.DisposeAsync();
        Directory.Delete(_secret, recursive: true);
    }

    [Fact]
    public async Task RotationWithPrePublication_EvidenceOfTheRotatedReplicaVerifiesAgainstTheLaggingOne()
    {
        // Step 1, on every replica: publish the new key.
        EvidenceKeys.Evidence(_configA)["PublishedKeyFiles"] = EvidenceKeys.Files(_newKey);
        EvidenceKeys.Evidence(_configB)["PublishedKeyFiles"] = EvidenceKeys.Files(_newKey);
        Assert.True(await _a.ReloadAsync(_configA));
        Assert.True(await _b.ReloadAsync(_configB));
        Assert.Equal(["ev-1", "ev-2"], await EvidenceKeys.PublishedKidsAsync(_a));
        Assert.Equal(["ev-1", "ev-2"], await EvidenceKeys.PublishedKidsAsync(_b));

        // Step 2 reaches A first: it signs with the new key and keeps publishing the old one.
        EvidenceKeys.Evidence(_configA)["SigningKeyFile"] = _newKey;
        EvidenceKeys.Evidence(_configA)["PublishedKeyFiles"] = EvidenceKeys.Files(_oldKey);
        Assert.True(await _a.ReloadAsync(_configA));

        var fromA = await EvidenceKeys.AllowedEvidenceAsync(_a);
        var fromB = await EvidenceKeys.AllowedEvidenceAsync(_b);
        Assert.Equal("ev-2", new JsonWebToken(fromA).Kid);
        Assert.Equal("ev-1", new JsonWebToken(fromB).Kid);
        var aVerifiedByB = await EvidenceKeys.VerifyAsync(_b, fromA);
        Assert.True(aVerifiedByB.IsValid, aVerifiedByB.Exception?.Message);
        var bVerifiedByA = await EvidenceKeys.VerifyAsync(_a, fromB);
        Assert.True(bVerifiedByA.IsValid, bVerifiedByA.Exception?.Message);

        // Step 2 reaches B: every replica now signs with ev-2, and both still verify the other's evidence.
        EvidenceKeys.Evidence(_configB)["SigningKeyFile"] = _newKey;
        EvidenceKeys.Evidence(_configB)["PublishedKeyFiles"] = EvidenceKeys.Files(_oldKey);
        Assert.True(await _b.ReloadAsync(_configB));
        Assert.Equal(["ev-2", "ev-1"], await EvidenceKeys.PublishedKidsAsync(_b));
        Assert.True((await EvidenceKeys.VerifyAsync(_b, fromB)).IsValid);
        Assert.True((await EvidenceKeys.VerifyAsync(_a, await EvidenceKeys.AllowedEvidenceAsync(_b))).IsValid);
    }

    [Fact]
    public async Task RotationWithoutPrePublication_EvidenceOfTheRotatedReplicaFailsAgainstTheLaggingOne()
    {
        // The failure the pre-publication step exists for (and the proof that the test above can fail): A switched
        // straight to the new key, and the JWKS the upstream re-fetched came from B.
        EvidenceKeys.Evidence(_configA)["SigningKeyFile"] = _newKey;
        Assert.True(await _a.ReloadAsync(_configA));

        var fromA = await EvidenceKeys.AllowedEvidenceAsync(_a);

        Assert.Equal("ev-2", new JsonWebToken(fromA).Kid);
        Assert.Equal(["ev-1"], await EvidenceKeys.PublishedKidsAsync(_b));
        Assert.False((await EvidenceKeys.VerifyAsync(_b, fromA)).IsValid);
    }

    [Fact]
    public async Task RestartAfterRotation_RetiredKeyListed_StillPublished()
    {
        // Previous keys are otherwise kept in memory only: a replica restarted after its rotation publishes the
        // retired key when it is listed, so evidence another replica signed with it before still verifies.
        var fromB = await EvidenceKeys.AllowedEvidenceAsync(_b);
        await _a.DisposeAsync();
        _a = await GatewayHarness.CreateAsync();
        _configA = _a.DefaultConfig();
        _configA["Assurance"]!["Evidence"] = new JsonObject { ["SigningKeyFile"] = _newKey, ["PublishedKeyFiles"] = EvidenceKeys.Files(_oldKey) };

        await _a.StartWithAsync(_configA);

        Assert.Equal(["ev-2", "ev-1"], await EvidenceKeys.PublishedKidsAsync(_a));
        Assert.True((await EvidenceKeys.VerifyAsync(_a, fromB)).IsValid);
    }
}
