using AssuranceGateway.Grants;
using AssuranceGateway.Requests;

namespace AssuranceGateway.UnitTests.Requests;

/// <summary>Spellings that one reader takes for another.</summary>
public sealed class SpellingTests
{
    /// <summary>
    /// Names the upstream decodes alike are one name: form decoding reads '+' and '%20' as a space and '%2A' and '*' as
    /// '*' (Go, PHP, Flask, ASP.NET Core), and ASP.NET Core's query collection ignores case. Both orders hash alike
    /// (the pairs sort the same), the forwarder sends them as received (Uri leaves them alone), and the upstream's first
    /// or last value differs: only the canonical order may be accepted.
    /// </summary>
    [Theory]
    [InlineData("a+b=2&a%20b=1")]       // canonical: a%20b=1&a+b=2
    [InlineData("x*=2&x%2A=1")]         // canonical: x%2A=1&x*=2
    [InlineData("x%2a=2&x%2A=1")]       // canonical: x%2A=1&x%2a=2
    [InlineData("env=prod&Env=staging")] // canonical: Env=staging&env=prod
    // PHP reads ' ', '.' and an unmatched '[' in a name as '_' and keeps the last value: all are $_GET['dry_run'].
    [InlineData("dry_run=true&dry.run=false")]
    [InlineData("dry_run=true&dry+run=false")]
    [InlineData("dry_run=true&dry%20run=false")]
    [InlineData("dry_run=true&dry[run=false")]
    // Rack 2, Python's parse_qs before 3.9.2 and Go before 1.17 also split on ';': env comes first in the second pair.
    [InlineData("v=1;env=staging&env=prod")]      // canonical: env=prod&v=1;env=staging
    [InlineData("w=2;env=prod&v=1;env=staging")]  // canonical: v=1;env=staging&w=2;env=prod
    public void RepeatedNameOutOfOrder_NameSpelledTwoWaysTheUpstreamReadsAsOne_Refused(string query) =>
        Assert.NotNull(CanonicalRequest.RepeatedNameOutOfOrder(query));

    [Theory]
    [InlineData("a%20b=1&a+b=2")]
    [InlineData("Env=staging&env=prod")]
    [InlineData("env=prod&env=staging&x=1&env=test")]
    [InlineData("a&a=1&b=2&a=2")]
    [InlineData("env=prod")]
    [InlineData("env=prod&v=1;env=staging")]
    [InlineData("v=1;env=staging;env=prod&x=1")]   // one '&' pair: its order is part of the hash
    [InlineData("env=prod&env=prod")]              // the same pair twice: either order is the one request the hash stands for
    public void RepeatedNameOutOfOrder_CanonicalOrder_Accepted(string query) =>
        Assert.Null(CanonicalRequest.RepeatedNameOutOfOrder(query));

    /// <summary>
    /// The strict reader exists so that a typo cannot bind or trust other machines than meant; IPAddress.TryParse also
    /// takes "[::1]:80" (URI authority syntax, port dropped), which is neither an address nor a range.
    /// </summary>
    [Theory]
    [InlineData("[::1]")]
    [InlineData("[::1]:80")]
    [InlineData("[2001:db8::]:32")]
    [InlineData("10.0.0.0/08")]
    [InlineData("2001:db8::/032")]
    public void TryParseNetwork_BracketedOrWithPort_Refused(string text) =>
        Assert.False(GrantRules.TryParseNetwork(text, out var network, out _), $"accepted as {network}");
}
