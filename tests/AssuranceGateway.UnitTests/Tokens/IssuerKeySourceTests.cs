using AssuranceGateway.Tokens;
using Microsoft.IdentityModel.Tokens;

namespace AssuranceGateway.UnitTests.Tokens;

public sealed class IssuerKeySourceTests
{
    private const string Ec1 = """{"kty":"EC","crv":"P-256","kid":"k1","use":"sig","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}""";
    private const string Ec2 = """{"kty":"EC","crv":"P-256","kid":"k2","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}""";
    private const string EcNoKid = """{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}""";
    private const string EcEnc = """{"kty":"EC","crv":"P-256","kid":"e1","use":"enc","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}""";
    private const string Oct = """{"kty":"oct","kid":"h1","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}""";

    [Fact]
    public void Find_ByKid_OnlyThatKey()
    {
        var keys = From(Ec1, Ec2);

        Assert.Equal("k1", keys.Find("k1", "ES256")?.KeyId);
        Assert.Equal("k2", keys.Find("k2", "ES256")?.KeyId);
        Assert.Null(keys.Find("k3", "ES256"));
        Assert.Null(keys.Find("K1", "ES256"));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Find_KeysOfTwoTypesUnderOneKid_TheOneThatFitsTheAlgorithm(bool rsaFirst)
    {
        using var rsa = System.Security.Cryptography.RSA.Create(2048);
        var p = rsa.ExportParameters(false);
        var rsaJwk = $$"""{"kty":"RSA","kid":"k1","n":"{{Base64UrlEncoder.Encode(p.Modulus)}}","e":"{{Base64UrlEncoder.Encode(p.Exponent)}}"}""";
        var keys = rsaFirst ? From(rsaJwk, Ec1) : From(Ec1, rsaJwk);

        Assert.Equal("EC", (keys.Find("k1", "ES256") as JsonWebKey)?.Kty);
        Assert.Equal("RSA", (keys.Find("k1", "RS256") as JsonWebKey)?.Kty);
        Assert.Equal("RSA", (keys.Find("k1", "PS256") as JsonWebKey)?.Kty);
        Assert.Equal(2, keys.Count);
        Assert.Null(keys.Find(null, "ES256"));
    }

    [Fact]
    public void Find_NoKidWithOneKey_ThatKey()
    {
        Assert.Equal("k1", From(Ec1).Find(null, "ES256")?.KeyId);
        Assert.NotNull(From(EcNoKid).Find(null, "ES256"));
    }

    [Fact]
    public void Find_NoKidWithTwoKeys_NoKey()
    {
        // Trying each key in turn is what SPEC §3.1 forbids; without a kid there is no choice to make.
        Assert.Null(From(Ec1, Ec2).Find(null, "ES256"));
        Assert.Null(From(Ec1, EcNoKid).Find(null, "ES256"));
    }

    [Fact]
    public void From_EncryptionAndSymmetricKeys_NeverUsedForSignatures()
    {
        var keys = From(Ec1, EcEnc, Oct);

        Assert.Null(keys.Find("e1", "ES256"));
        Assert.Null(keys.Find("h1", "ES256"));
        Assert.Equal(1, keys.Count);
        Assert.Equal("k1", keys.Find(null, "ES256")?.KeyId);
    }

    [Fact]
    public void From_OnlySymmetricKey_Empty()
    {
        var keys = From(Oct);

        Assert.Equal(0, keys.Count);
        Assert.Null(keys.Find(null, "ES256"));
        Assert.Null(keys.Find("h1", "ES256"));
    }

    [Fact]
    public async Task StaticKeySource_RequestRefresh_KeysUnchanged()
    {
        var keys = From(Ec1);
        var source = new StaticKeySource(keys);

        source.RequestRefresh();

        Assert.Same(keys, await source.GetKeysAsync(default));
    }

    private static IssuerKeys From(params string[] jwks) =>
        IssuerKeys.From(new JsonWebKeySet("{\"keys\":[" + string.Join(',', jwks) + "]}"));

    /// <summary>
    /// "At least 2048 bits" counts bits, not bytes: a 256-byte modulus whose first byte is 0x01 is a 2041-bit key, and
    /// one whose first byte has its top bit set is a 2048-bit key.
    /// </summary>
    [Theory]
    [InlineData(0x01, false)]
    [InlineData(0x7F, false)]
    [InlineData(0x80, true)]
    public void From_RsaKeySize_CountedInBitsNotBytes(byte firstByte, bool used)
    {
        var modulus = new byte[256];
        Array.Fill(modulus, (byte)0xC5);
        modulus[0] = firstByte;
        var jwk = $$"""{"kty":"RSA","kid":"r1","use":"sig","n":"{{Base64UrlEncoder.Encode(modulus)}}","e":"AQAB"}""";

        var keys = IssuerKeys.From(new JsonWebKeySet($$"""{"keys":[{{jwk}}]}"""));

        Assert.Equal(used ? 1 : 0, keys.Count);
    }
}
