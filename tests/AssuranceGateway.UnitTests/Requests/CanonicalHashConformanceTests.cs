using System.Text.Json.Nodes;
using AssuranceGateway.Configuration;
using AssuranceGateway.Requests;
using AssuranceGateway.Testing;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;

namespace AssuranceGateway.UnitTests.Requests;

/// <summary>
/// Differential test of SPEC §4.2 against tests/Conformance/canonical_hash.py, an independent reference written from the
/// SPEC text alone. The inputs come from its seeded generator (tests/Conformance/gen_cases.py): escapes of both cases,
/// reserved and unreserved characters, empty pairs and values, repeated names, '+' and %20, non-ASCII in path and query,
/// dot segments, bound header names in mixed case and listed twice, repeated header lines, optional white space, no body,
/// an empty body and large ones. The policy's BoundHeaders go through the real config compiler, and the wire headers
/// through a header dictionary, as the proxy reads them.
/// </summary>
public sealed class CanonicalHashConformanceTests
{
    private const int Seed = 20261122;

    [Fact]
    public async Task Compute_SeededAwkwardRequests_MatchesIndependentReference()
    {
        var cases = await ReferenceHash.GenerateAsync(Seed, 500, "any");

        var failures = new List<string>();
        foreach (var c in cases)
        {
            var policy = Policy(c.BoundHeaders);
            var headers = new HeaderDictionary();
            foreach (var (name, value) in c.Headers)
            {
                headers.Append(name, value);
            }

            var actual = CanonicalRequest.Compute(c.Method, c.Path, c.Query, policy.BoundHeaders, name => headers[name], c.Body ?? []).Hash;
            if (actual != c.Hash)
            {
                failures.Add($"{c}\ngateway: {actual}, reference: {c.Hash}");
            }
        }

        Assert.True(failures.Count == 0, $"{failures.Count} of {cases.Count} differ (seed {Seed}):\n{string.Join("\n\n", failures.Take(5))}");
    }

    /// <summary>
    /// SPEC §4.2 sorts the query's pairs "by ordinal byte order". UTF-16 ordinal order agrees with the byte order of the
    /// UTF-8 for every character but one pair of ranges: a character beyond U+FFFF (a surrogate pair, 0xD800-0xDFFF in
    /// UTF-16, UTF-8 lead byte 0xF0) against one in U+E000-U+FFFF (UTF-8 lead byte 0xEE/0xEF).
    /// </summary>
    [Theory]
    [InlineData("d=\U0001F600&d=\uE000")]
    [InlineData("d=\uFFFF&d=\U0001F600")]
    [InlineData("a=\uFF21&a=\U00010000&a=1")]
    public async Task CanonicalQuery_CharactersBeyondTheBasicPlane_SortedByUtf8ByteOrder(string query)
    {
        var input = new JsonObject { ["method"] = "GET", ["path"] = "/x", ["query"] = query, ["headers"] = new JsonArray(), ["boundHeaders"] = new JsonArray() };
        var expected = (await ReferenceHash.HashAsync([input]))[0];

        Assert.Equal(expected, CanonicalRequest.Compute("GET", "/x", query, [], _ => default, []).Hash);
    }

    [Fact]
    public async Task TokenHash_SeededTokens_MatchesIndependentReference()
    {
        const string Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        var random = new Random(Seed);
        string Part(int max) => new([.. Enumerable.Range(0, random.Next(1, max)).Select(_ => Alphabet[random.Next(Alphabet.Length)])]);
        var tokens = Enumerable.Range(0, 50).Select(i => $"{Part(80)}.{Part(i < 45 ? 400 : 8000)}.{Part(120)}").ToList();
        var directory = Directory.CreateTempSubdirectory("agw-tokenhash");
        try
        {
            tokens.Add(new TestIssuer("https://idp.test", directory.FullName).Token());
        }
        finally
        {
            directory.Delete(recursive: true);
        }

        var expected = await ReferenceHash.HashAsync([.. tokens.Select(t => (JsonNode)new JsonObject { ["token"] = t })]);

        Assert.Equal(expected, tokens.Select(Hashes.TokenHash).ToList());
    }

    /// <summary>A policy that binds the request with these BoundHeaders, read by the real config compiler.</summary>
    private static AssurancePolicy Policy(IReadOnlyList<string> boundHeaders)
    {
        var data = new Dictionary<string, string?> { ["p:Bind:0"] = "request" };
        for (var i = 0; i < boundHeaders.Count; i++)
        {
            data[$"p:BoundHeaders:{i}"] = boundHeaders[i];
        }

        var errors = new List<string>();
        var policy = GatewayConfigCompiler.ReadPolicy(new ConfigReader(errors), new ConfigurationBuilder().AddInMemoryCollection(data).Build().GetSection("p"));
        Assert.True(errors.Count == 0, string.Join("\n", errors));
        return policy;
    }
}
