using System.Buffers.Text;
using System.Security.Cryptography;
using System.Text;
using AssuranceGateway.Requests;
using Microsoft.Extensions.Primitives;

namespace AssuranceGateway.UnitTests.Requests;

/// <summary>
/// Vectors for SPEC §4.2. The expected values were computed by an independent implementation (Python's hashlib
/// over the canonical string written out by hand), not by this code.
/// </summary>
public sealed class CanonicalRequestTests
{
    private static string Hash(string method, string path, string query, (string Name, string[] Values)[] headers, byte[] body)
    {
        var bound = headers.Select(h => h.Name).ToList();
        return CanonicalRequest.Compute(method, path, query, bound,
            n => headers.FirstOrDefault(h => h.Name == n).Values is { } v ? new StringValues(v) : StringValues.Empty, body).Hash;
    }

    [Fact]
    public void Compute_EmptyGet_MatchesVector() =>
        Assert.Equal("sha256:VY-oKU7wdnSudg2tiPxK59tRKwKXOkBS-Xarrr5AoAs", Hash("GET", "/", "", [], []));

    [Fact]
    public void Compute_EmptyPathAndLowerCaseMethod_NormalisedToSlashAndUpperCase() =>
        Assert.Equal("sha256:VY-oKU7wdnSudg2tiPxK59tRKwKXOkBS-Xarrr5AoAs", Hash("get", "", "", [], []));

    [Fact]
    public void Compute_QueryPairsSortedEmptyPairsDroppedRepeatedNamesKept_MatchesVector()
    {
        var body = "{\"x\":1}"u8.ToArray();
        var headers = new[] { ("content-type", new[] { "application/json" }) };

        Assert.Equal("sha256:EGGVGVzHbZDsRxeBzqVa94yAmVdTDKvoQEk81r6ZE88", Hash("POST", "/deploy/v1/releases", "b=2&a=1&&a=0", headers, body));
        Assert.Equal("sha256:EGGVGVzHbZDsRxeBzqVa94yAmVdTDKvoQEk81r6ZE88", Hash("POST", "/deploy/v1/releases", "?a=0&b=2&a=1", headers, body));
    }

    [Fact]
    public void Compute_PercentEncodingKeptAsReceived_MatchesVector()
    {
        Assert.Equal("sha256:FZpgbpzWFBXCMVGP5Adc107oRkhKWgqVB-glCvOX-5M", Hash("GET", "/files/a%2Fb%20c", "q=%41&Z=1", [], []));
        Assert.NotEqual(Hash("GET", "/files/a%2Fb%20c", "q=%41&Z=1", [], []), Hash("GET", "/files/a/b c", "q=A&Z=1", [], []));
    }

    [Fact]
    public void Compute_BoundHeaderAbsent_WrittenAsEmpty_MatchesVector() =>
        Assert.Equal("sha256:iR5L_TklPmjhXnhLJJbs8Gw83jMU0x_FeqQCC-Szh6Q",
            Hash("PUT", "/x", "", [("content-type", ["application/json"]), ("x-request-id", [])], "abc"u8.ToArray()));

    [Fact]
    public void Compute_MultiValuedHeaderWithSpaces_TrimmedAndJoined_MatchesVector() =>
        Assert.Equal("sha256:HXoIGdIV-rMKemCbkrXjSdrSyiHDKObkZ2mGSB3422c", Hash("POST", "/x", "", [("x-tag", [" a ", "b  "])], []));

    [Fact]
    public void Compute_HeaderValueWithOtherWhitespaceThanSpaceOrTab_KeptNotTrimmed()
    {
        var approved = Hash("POST", "/x", "", [("x-dry-run", ["true"])], []);

        Assert.Equal(approved, Hash("POST", "/x", "", [("x-dry-run", [" \ttrue\t "])], []));
        Assert.NotEqual(approved, Hash("POST", "/x", "", [("x-dry-run", ["true\v"])], []));
        Assert.NotEqual(approved, Hash("POST", "/x", "", [("x-dry-run", ["\ftrue"])], []));
        Assert.NotEqual(approved, Hash("POST", "/x", "", [("x-dry-run", ["true\u00a0"])], []));
    }

    [Fact]
    public void Compute_BinaryBody_MatchesVector() =>
        Assert.Equal("sha256:DT9cZX6vJRd5eDzPKpMlcjNWLcTH7L_vw1WKISUClHg", Hash("POST", "/bin", "", [], Enumerable.Range(0, 256).Select(i => (byte)i).ToArray()));

    [Fact]
    public void Compute_Digests_DifferOnlyInTheChangedComponent()
    {
        var a = CanonicalRequest.Compute("POST", "/x", "a=1", [], _ => default, "one"u8);
        var b = CanonicalRequest.Compute("POST", "/x", "a=1", [], _ => default, "two"u8);

        Assert.Equal(a.Digests.Method, b.Digests.Method);
        Assert.Equal(a.Digests.Path, b.Digests.Path);
        Assert.Equal(a.Digests.Query, b.Digests.Query);
        Assert.Equal(a.Digests.Headers, b.Digests.Headers);
        Assert.NotEqual(a.Digests.Body, b.Digests.Body);
    }

    [Fact]
    public void Compute_LongPathAndNonAsciiHeader_HashOfTheCanonicalTextAsUtf8()
    {
        // Longer than the stack buffer the hashes are written through, and not ASCII: the pooled path, UTF-8 counted.
        var path = "/" + new string('p', 3000);
        var body = "{}"u8.ToArray();
        var headers = "x-note:café ☃\n";
        var bodyHex = Convert.ToHexStringLower(SHA256.HashData(body));
        var text = $"AGW-REQUEST-V1\nPOST\n{path}\n\n{headers}{bodyHex}";

        var result = CanonicalRequest.Compute("POST", path, "", ["x-note"], _ => new StringValues("café ☃"), body);

        Assert.Equal("sha256:" + Base64Url.EncodeToString(SHA256.HashData(Encoding.UTF8.GetBytes(text))), result.Hash);
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(headers))), result.Digests.Headers);
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(path))), result.Digests.Path);
    }

    [Fact]
    public void TokenHash_OfRawJwtAscii_MatchesVector() =>
        Assert.Equal("sha256:Wz_TZxwYJqpL5WBRsNLly-rQQhsIKoLw3BkzTHP0GZo", Hashes.TokenHash("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"));

    [Theory]
    [InlineData("sha256:Wz_TZxwYJqpL5WBRsNLly-rQQhsIKoLw3BkzTHP0GZo", true)]
    [InlineData("sha256:Wz_TZxwYJqpL5WBRsNLly-rQQhsIKoLw3BkzTHP0GZ", false)]
    [InlineData("sha1:Wz_TZxwYJqpL5WBRsNLly-rQQhsIKoLw3BkzTHP0GZo", false)]
    [InlineData("sha256:Wz/TZxwYJqpL5WBRsNLly+rQQhsIKoLw3BkzTHP0GZo", false)]
    public void IsWellFormed_ChecksPrefixLengthAndAlphabet(string value, bool expected) =>
        Assert.Equal(expected, Hashes.IsWellFormed(value));

    [Theory]
    [InlineData("/")]
    [InlineData("/deploy/v1/releases")]
    [InlineData("/deploy/v1/releases/5.2%20hotfix")] // a space: sent escaped, and forwarded as sent
    [InlineData("/caf%C3%A9/x")] // UTF-8 bytes of a non-ASCII character, upper-case hex
    [InlineData("/%E2%82%AC%F0%9F%98%80x%C3%A9")] // several characters, runs of escapes
    [InlineData("/a%25b")] // '%' itself
    [InlineData("/a:b@c!$&'()*+,;=~_-./")]
    [InlineData("/..x/x../.x/")]
    [InlineData("/cart;jsessionid=0A1B/x.;v=1/a%20b/a%5Cb")]
    public void PathProblem_PathsARequestCanHave_None(string path) =>
        Assert.Null(CanonicalRequest.PathProblem(path));

    [Theory]
    [InlineData("", "must start with '/'")]
    [InlineData("deploy/v1", "must start with '/'")]
    [InlineData("/deploy?dry_run=true", "holds a '?'")]
    [InlineData("/deploy#top", "holds a '#'")]
    [InlineData("/a/../admin", "has a dot segment")]
    [InlineData("/a/./b", "has a dot segment")]
    [InlineData("/a/..", "has a dot segment")]
    [InlineData("/%2e%2e/admin", "has a '%' that is not an escape with two upper-case hex digits")]
    [InlineData("/%2E%2E/admin", "escapes '.'")]
    [InlineData("/deploy/v1/%72eleases", "escapes 'r'")]
    [InlineData("/a%2Fb", "escapes '/'")]
    [InlineData("/caf%c3%a9", "has a '%' that is not an escape with two upper-case hex digits")]
    [InlineData("/a%2", "has a '%' that is not an escape")]
    [InlineData("/a b", "holds ' '")]
    [InlineData("/café", "holds 'é'")]
    [InlineData("/a\tb", "holds '\\u0009'")]
    [InlineData("/a%FF", "has escapes that are not UTF-8")] // never valid in UTF-8
    [InlineData("/a%C3", "has escapes that are not UTF-8")] // cut short
    [InlineData("/a%80b", "has escapes that are not UTF-8")] // a lone continuation byte
    [InlineData("/a%C0%AF", "has escapes that are not UTF-8")] // an overlong '/'
    [InlineData("/a%ED%A0%80", "has escapes that are not UTF-8")] // a UTF-16 surrogate
    [InlineData("/a%F4%90%80%80", "has escapes that are not UTF-8")] // beyond U+10FFFF
    [InlineData("/a%00b", "escapes a NUL")]
    [InlineData("/caf%C3%a9", "has a '%' that is not an escape with two upper-case hex digits")] // the escape, not UTF-8, is the problem
    [InlineData("/caf%C3%A", "has a '%' that is not an escape with two upper-case hex digits")]
    [InlineData("/public/..;/deploy", "has a segment that some upstreams read as a dot segment")] // Tomcat, Jetty, Spring
    [InlineData("/public/.;x=1/deploy", "has a segment that some upstreams read as a dot segment")]
    [InlineData("/public/..%5Cdeploy", "has a segment that some upstreams read as a dot segment")] // IIS
    [InlineData("/public/..%20/deploy", "has a segment that some upstreams read as a dot segment")] // Windows
    [InlineData("/public/.../deploy", "has a segment that some upstreams read as a dot segment")]
    public void PathProblem_PathsNoRequestTheGatewayForwardsCanHave_Named(string path, string expected) =>
        Assert.StartsWith(expected, CanonicalRequest.PathProblem(path), StringComparison.Ordinal);
}
