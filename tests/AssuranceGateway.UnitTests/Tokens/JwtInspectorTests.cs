using AssuranceGateway.Testing;
using AssuranceGateway.Tokens;

namespace AssuranceGateway.UnitTests.Tokens;

/// <summary>
/// The structural checks that run before any cryptography. Tokens here are built from raw JSON and never signed:
/// the inspector must decide on structure alone.
/// </summary>
public sealed class JwtInspectorTests
{
    private const string Header = """{"alg":"ES256","typ":"at+jwt","kid":"k1"}""";
    private const string Payload = """{"iss":"https://idp.test","sub":"alice","exp":2000000000,"nbf":1900000000,"iat":1900000001}""";
    private const string Signature = "c2ln";

    [Fact]
    public void TryInspect_WellFormed_ReadsHeaderAndDates()
    {
        Assert.True(JwtInspector.TryInspect(Jwt(Header, Payload), out var shape, out var failure), failure);

        Assert.Equal(new JwtShape("ES256", "at+jwt", "k1", "https://idp.test", 2000000000, 1900000000, 1900000001), shape);
    }

    [Theory]
    [InlineData("")]
    [InlineData("abc")]
    [InlineData("a.b")]
    [InlineData("a.b.c.d")]
    [InlineData("a.b.c.d.e")]
    [InlineData(".b.c")]
    public void TryInspect_NotThreeSegments_Rejected(string token)
    {
        Assert.False(JwtInspector.TryInspect(token, out _, out var failure));
        Assert.Equal("not a compact JWS (three segments expected)", failure);
    }

    [Fact]
    public void TryInspect_JweShaped_Rejected()
    {
        Assert.False(JwtInspector.TryInspect(HostileTokens.JweShaped(new() { ["sub"] = "alice" }), out _, out var failure));
        Assert.Equal("not a compact JWS (three segments expected)", failure);
    }

    [Fact]
    public void TryInspect_EmptySignature_Rejected()
    {
        Assert.False(JwtInspector.TryInspect(Jwt(Header, Payload, signature: string.Empty), out _, out var failure));
        Assert.Equal("signature missing", failure);
    }

    [Theory]
    [InlineData("!!!", "header is not base64url")]
    [InlineData("e30=====", "header is not base64url")]
    public void TryInspect_HeaderNotBase64Url_Rejected(string header, string expected)
    {
        Assert.False(JwtInspector.TryInspect($"{header}.{HostileTokens.Segment(Payload)}.{Signature}", out _, out var failure));
        Assert.Equal(expected, failure);
    }

    [Theory]
    [InlineData("""["alg","ES256"]""", "header is not a JSON object")]
    [InlineData("\"ES256\"", "header is not a JSON object")]
    [InlineData("""{"alg":"ES256" """, "header is not valid JSON")]
    [InlineData("""{"alg":"ES256"}{"alg":"none"}""", "header is not valid JSON")]
    [InlineData("""{"alg":"ES256"} x""", "header is not valid JSON")]
    [InlineData("not json", "header is not valid JSON")]
    public void TryInspect_HeaderNotOneJsonObject_Rejected(string header, string expected)
    {
        Assert.False(JwtInspector.TryInspect(Jwt(header, Payload), out _, out var failure));
        Assert.Equal(expected, failure);
    }

    [Theory]
    [InlineData("""{"typ":"at+jwt"}""", "alg missing")]
    [InlineData("""{"alg":""}""", "alg missing")]
    [InlineData("""{"alg":null}""", "'alg' is not a string")]
    [InlineData("""{"alg":["ES256"]}""", "'alg' is not a string")]
    [InlineData("""{"alg":"ES256","kid":7}""", "'kid' is not a string")]
    [InlineData("""{"alg":"ES256","typ":{"x":1}}""", "'typ' is not a string")]
    public void TryInspect_HeaderMembersOfWrongShape_Rejected(string header, string expected)
    {
        Assert.False(JwtInspector.TryInspect(Jwt(header, Payload), out _, out var failure));
        Assert.Equal(expected, failure);
    }

    [Theory]
    [InlineData("""{"alg":"HS256","typ":"at+jwt","alg":"ES256"}""", "duplicate header name 'alg'")]
    [InlineData("""{"alg":"ES256","kid":"k1","kid":"k2"}""", "duplicate header name 'kid'")]
    [InlineData("""{"alg":"ES256","typ":"dpop+jwt","typ":"at+jwt"}""", "duplicate header name 'typ'")]
    [InlineData("""{"alg":"ES256","x":1,"x":2}""", "duplicate header name 'x'")]
    // The same name spelled with a JSON escape is still the same name (RFC 8259 §7).
    [InlineData("""{"alg":"none","\u0061lg":"ES256"}""", "duplicate header name 'alg'")]
    public void TryInspect_DuplicateHeaderName_Rejected(string header, string expected)
    {
        Assert.False(JwtInspector.TryInspect(Jwt(header, Payload), out _, out var failure));
        Assert.Equal(expected, failure);
    }

    [Theory]
    [InlineData("sub", "\"mallory\"")]
    [InlineData("iss", "\"https://evil.test\"")]
    [InlineData("exp", "4000000000")]
    [InlineData("aud", "\"gateway\"")]
    [InlineData("acr", "\"urn:aal3\"")]
    public void TryInspect_DuplicatePayloadName_Rejected(string name, string value)
    {
        var payload = """{"iss":"https://idp.test","sub":"alice","aud":"api","acr":"urn:aal1","exp":2000000000}""";

        Assert.False(JwtInspector.TryInspect(Jwt(Header, HostileTokens.WithLeadingMember(payload, $"\"{name}\":{value}")), out _, out var failure));
        Assert.Equal($"duplicate payload name '{name}'", failure);
    }

    [Fact]
    public void TryInspect_DuplicateNameWithControlCharacters_EchoedPrintableAndShort()
    {
        // The failure reaches the deny log line: a name carrying CR/LF must not be able to forge log lines.
        var name = @"x\r\nINFO forged: decision=allow " + new string('y', 500); // JSON escapes: CR LF once parsed
        var header = $$"""{"alg":"ES256","{{name}}":1,"{{name}}":2}""";

        Assert.False(JwtInspector.TryInspect(Jwt(header, Payload), out _, out var failure));

        Assert.Equal("duplicate header name 'x??INFO forged: decision=allow y...'", failure);
    }

    [Fact]
    public void TryInspect_DuplicatePayloadNameViaEscape_Rejected()
    {
        var payload = """{"sub":"alice","s\u0075b":"mallory","iss":"https://idp.test","exp":2000000000}""";

        Assert.False(JwtInspector.TryInspect(Jwt(Header, payload), out _, out var failure));
        Assert.Equal("duplicate payload name 'sub'", failure);
    }

    [Fact]
    public void TryInspect_SameNameInNestedObject_NotADuplicate()
    {
        var payload = """{"iss":"https://idp.test","sub":"alice","exp":2000000000,"cnf":{"sub":"x"},"act":{"sub":"y"}}""";

        Assert.True(JwtInspector.TryInspect(Jwt(Header, payload), out _, out var failure), failure);
    }

    [Theory]
    [InlineData("""{"alg":"ES256","crit":["exp"]}""")]
    [InlineData("""{"alg":"ES256","crit":[]}""")]
    [InlineData("""{"alg":"ES256","crit":"b64"}""")]
    [InlineData("""{"alg":"ES256","cr\u0069t":["exp"]}""")]
    public void TryInspect_CritHeader_Rejected(string header)
    {
        Assert.False(JwtInspector.TryInspect(Jwt(header, Payload), out _, out var failure));
        Assert.Equal("crit header present", failure);
    }

    [Theory]
    [InlineData("jwk", """{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}""")]
    [InlineData("jku", "\"https://evil.test/jwks.json\"")]
    [InlineData("x5u", "\"https://evil.test/cert.pem\"")]
    [InlineData("x5c", """["MIIB"]""")]
    public void TryInspect_EmbeddedKeyHeader_Rejected(string name, string value)
    {
        var header = $$"""{"alg":"ES256","kid":"k1","{{name}}":{{value}}}""";

        Assert.False(JwtInspector.TryInspect(Jwt(header, Payload), out _, out var failure));
        Assert.Equal($"embedded key header '{name}' present", failure);
    }

    [Fact]
    public void TryInspect_UnknownHeaderMembers_Ignored()
    {
        var header = """{"alg":"ES256","kid":"k1","x5t":"abc","cty":"JWT","nested":{"a":[1,2,{"b":null}]}}""";

        Assert.True(JwtInspector.TryInspect(Jwt(header, Payload), out var shape, out var failure), failure);
        Assert.Equal("k1", shape.KeyId);
    }

    [Theory]
    [InlineData("\"2000000000\"", "'exp' is not a NumericDate")]
    [InlineData("null", "'exp' is not a NumericDate")]
    [InlineData("true", "'exp' is not a NumericDate")]
    [InlineData("[2000000000]", "'exp' is not a NumericDate")]
    [InlineData("1e300", "'exp' is out of range")]
    [InlineData("-1e300", "'exp' is out of range")]
    public void TryInspect_ExpNotANumericDate_Rejected(string exp, string expected)
    {
        Assert.False(JwtInspector.TryInspect(Jwt(Header, $$"""{"iss":"i","exp":{{exp}}}"""), out _, out var failure));
        Assert.Equal(expected, failure);
    }

    [Theory]
    [InlineData("nbf")]
    [InlineData("iat")]
    public void TryInspect_OtherDateAsString_Rejected(string name)
    {
        Assert.False(JwtInspector.TryInspect(Jwt(Header, $$"""{"iss":"i","exp":2000000000,"{{name}}":"1900000000"}"""), out _, out var failure));
        Assert.Equal($"'{name}' is not a NumericDate", failure);
    }

    [Theory]
    [InlineData("2000000000.75", 2000000000)]
    [InlineData("2e9", 2000000000)]
    public void TryInspect_FractionalOrExponentExp_FlooredToSeconds(string exp, long expected)
    {
        Assert.True(JwtInspector.TryInspect(Jwt(Header, $$"""{"iss":"i","exp":{{exp}}}"""), out var shape, out var failure), failure);
        Assert.Equal(expected, shape.Expires);
    }

    [Fact]
    public void TryInspect_ExpMissing_Rejected()
    {
        Assert.False(JwtInspector.TryInspect(Jwt(Header, """{"iss":"i","sub":"alice","iat":1900000000}"""), out _, out var failure));
        Assert.Equal("exp missing", failure);
    }

    [Fact]
    public void TryInspect_OptionalDatesMissing_ShapeHasNulls()
    {
        Assert.True(JwtInspector.TryInspect(Jwt(Header, """{"exp":2000000000}"""), out var shape, out var failure), failure);

        Assert.Null(shape.Issuer);
        Assert.Null(shape.NotBefore);
        Assert.Null(shape.IssuedAt);
    }

    [Fact]
    public void TryInspect_IssuerNotAString_Rejected()
    {
        Assert.False(JwtInspector.TryInspect(Jwt(Header, """{"iss":["https://idp.test"],"exp":2000000000}"""), out _, out var failure));
        Assert.Equal("'iss' is not a string", failure);
    }

    [Fact]
    public void TryInspect_PayloadDeeperThanLimit_Rejected()
    {
        var deep = new string('[', 40) + new string(']', 40);

        Assert.False(JwtInspector.TryInspect(Jwt(Header, $$"""{"exp":2000000000,"x":{{deep}}}"""), out _, out var failure));
        Assert.Equal("payload is not valid JSON", failure);
    }

    [Fact]
    public void TryInspect_SegmentOverSixteenKilobytes_RejectedWithoutDecoding()
    {
        var huge = new string('A', (16 * 1024) + 4);

        Assert.False(JwtInspector.TryInspect($"{HostileTokens.Segment(Header)}.{huge}.{Signature}", out _, out var failure));
        Assert.Equal("payload too large", failure);
    }

    private static string Jwt(string headerJson, string payloadJson, string signature = Signature) =>
        $"{HostileTokens.Segment(headerJson)}.{HostileTokens.Segment(payloadJson)}.{signature}";
}
