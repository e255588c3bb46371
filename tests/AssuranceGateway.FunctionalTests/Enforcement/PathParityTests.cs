using System.Text;
using AssuranceGateway.Requests;
using AssuranceGateway.Testing;
using Microsoft.Extensions.Primitives;
using Xunit.Abstractions;
using static AssuranceGateway.Testing.GrantHelpers;

namespace AssuranceGateway.FunctionalTests.Enforcement;

/// <summary>
/// CanonicalRequest.PathProblem and QueryProblem (what the API's request.path and request.query, and agw, refuse) must
/// refuse exactly the targets the gateway would not forward: for many paths and queries, a grant is issued by
/// requestHash (which neither check sees) and the real request is sent through the gateway.
/// </summary>
public sealed class PathParityTests(ITestOutputHelper output)
{
    private static IEnumerable<string> Suffixes()
    {
        for (var c = 0x21; c <= 0x7E; c++)
        {
            if (c is '?' or '#')
            {
                continue; // would end the path on the wire
            }

            yield return "a" + (char)c + "b";
        }

        for (var b = 0; b <= 0xFF; b++)
        {
            yield return $"a%{b:X2}b";
        }

        foreach (var s in new[]
        {
            "a%c3%a9", "a%C3%A9", "a%E2%82%AC", "a%F0%9F%98%80", "a%C3", "a%C3b", "a%FF", "a%C0%AF", "a%ED%A0%80", "a%EF%BF%BF",
            "a%EF%BB%BF", "a%F4%90%80%80", "a%E0%80%AF", "%25", "a%2541", "a%252F", "a%25%41",
            "", "/", "//", "a//b", "a/", "a//", "~a", "a~", "a;b=c", "a;b", "a@b:c", ":a", "@", ".a", "a.", "...", ".",
            "..", "a/.", "a/..", "a/./b", "%2E", ".%2E", "a/%2E%2E/b", "a%20b", "a+b", "a%2Bb", "a%7Eb", "a%7Fb", "a%00b", "x/y;v=1/z",
            "..;", "..;x=1", ".;", "a/..;/b", "..;/..;/public", "..%5Cpublic", "a%5C..%5Cb", "..%20", ".%20", "..%20.", "a.", "a%20",
            "a;b/c", ";a", "a%5Cb",
        })
        {
            yield return s;
        }
    }

    private static IEnumerable<string> Queries()
    {
        for (var c = 0x21; c <= 0x7E; c++)
        {
            if (c != '#')
            {
                yield return "q=a" + (char)c + "b";
            }
        }

        for (var b = 0; b <= 0xFF; b++)
        {
            yield return $"q=a%{b:X2}b";
        }

        foreach (var s in new[]
        {
            "", "?q=1", "??q=1", "q=%c3%a9", "q=%C3%A9", "q={x}", "q=%7e", "q=%7E", "q=a+b", "q=%2B", "a=1&a=2", "a=2&a=1", "a&&b", "&", "=",
            "q=", "q", "a=1;b=2", "q=%", "q=%4", "q=%G1", "q=%25", "q=%2525", "q=é",
        })
        {
            yield return s;
        }
    }

    [Fact]
    public Task PathProblem_IsNullExactlyWhenTheGatewayForwardsThePath() =>
        AgreesWithTheGatewayAsync(Suffixes().Select(s => ("/deploy/" + s, string.Empty)), (path, _) => CanonicalRequest.PathProblem(path));

    /// <summary>The same for the API's request.query and agw's --query: a grant for a query the gateway never forwards as is could never be used.</summary>
    [Fact]
    public Task QueryProblem_IsNullExactlyWhenTheGatewayForwardsTheQuery() =>
        AgreesWithTheGatewayAsync(Queries().Select(q => ("/deploy/v1/releases", q)), (_, query) => CanonicalRequest.QueryProblem(query));

    private async Task AgreesWithTheGatewayAsync(IEnumerable<(string Path, string Query)> targets, Func<string, string, string?> problemOf)
    {
        await using var gateway = await GatewayHarness.StartAsync();
        var token = gateway.Idp.Token();
        var body = Encoding.UTF8.GetBytes(ReleaseBody);
        var disagreements = new List<string>();
        foreach (var (path, query) in targets)
        {
            var hash = CanonicalRequest.Compute("POST", path, query, ["content-type"],
                n => n == "content-type" ? new StringValues("application/json") : StringValues.Empty, body).Hash;
            var grant = DeployGrant(token);
            grant.Remove("request");
            grant["requestHash"] = hash;
            var id = await gateway.CreateGrantAsync(grant);
            gateway.Upstream.Clear();
            var target = query.Length == 0 ? path : $"{path}?{(query.StartsWith('?') ? query[1..] : query)}";
            var head = $"POST {target} HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {token}\r\n"
                + $"Workload-Identity: {gateway.WorkloadIssuer.Svid()}\r\nAssurance-Id: {id}\r\nContent-Type: application/json\r\n"
                + $"Content-Length: {body.Length}\r\nConnection: close\r\n";
            int status;
            string content;
            try
            {
                (status, content) = await RawHttp.SendAsync(gateway.ProxyAddress, head, body, Encoding.UTF8);
            }
            catch (IOException e)
            {
                (status, content) = (0, e.Message);
            }

            var forwarded = status == 200 && gateway.Upstream.Count == 1;
            var problem = problemOf(path, query);
            if (forwarded != (problem is null))
            {
                var reason = content.Contains("request_ambiguous") ? "request_ambiguous" : content.Length > 60 ? content[..60] : content;
                disagreements.Add($"{target}: gateway {(forwarded ? "forwards" : $"refuses ({status} {reason})")}, the check {(problem is null ? "accepts" : "refuses: " + problem[..Math.Min(40, problem.Length)])}");
            }
        }

        foreach (var d in disagreements)
        {
            output.WriteLine(d);
        }

        Assert.True(disagreements.Count == 0, string.Join("\n", disagreements));
    }
}
