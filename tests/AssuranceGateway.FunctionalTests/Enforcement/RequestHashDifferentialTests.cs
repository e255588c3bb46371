using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using AssuranceGateway.Testing;
using static AssuranceGateway.Testing.GrantHelpers;

namespace AssuranceGateway.FunctionalTests.Enforcement;

/// <summary>
/// The gateway's three ways to a request hash (the assurance API, <c>agw hash</c>, the proxy itself) against
/// tests/Conformance/canonical_hash.py, an independent reference of SPEC §4.2 written from the SPEC text alone, on inputs
/// from its seeded generator. Through the proxy, a grant bound to the reference's hashes (request and token) must be
/// accepted for exactly the generated request, which then reaches the upstream as hashed, and for nothing else.
/// </summary>
public sealed class RequestHashDifferentialTests(RequestHashDifferentialTests.Gateway fixture) : IClassFixture<RequestHashDifferentialTests.Gateway>
{
    private const int Seed = 20261122;

    /// <summary>As an operator may write them: mixed case, one name twice. The compiler lower-cases, sorts and dedupes.</summary>
    private static readonly string[] Bound = ["Content-Type", "x-tag", "ACCEPT", "x-request-id", "X-Tag"];

    private readonly GatewayHarness _gateway = fixture.Harness;

    /// <summary>One gateway for the class (a start per test was most of its run time): each test counts upstream requests from its own start.</summary>
    public sealed class Gateway : IAsyncLifetime
    {
        public GatewayHarness Harness { get; private set; } = null!;

        public async Task InitializeAsync() => Harness = await GatewayHarness.StartAsync(configure: c =>
        {
            c["ReverseProxy"]!["Routes"]!["conf"] = TestConfig.Route("/conf/{**rest}", "conformance");
            c["Assurance"]!["Policies"]!["conformance"] = new JsonObject
            {
                ["Bind"] = new JsonArray("token", "request"),
                ["MinimumAal"] = 1,
                ["MaxUses"] = 1,
                ["MaxTtl"] = "00:05:00",
                ["BoundHeaders"] = new JsonArray([.. Bound.Select(b => JsonValue.Create(b))]),
                ["MaxBodyBytes"] = 100_000,
            };
        });

        public async Task DisposeAsync() => await Harness.DisposeAsync();
    }

    [Fact]
    public async Task CreateGrant_SeededRequests_RequestHashMatchesIndependentReference()
    {
        var cases = await ReferenceHash.GenerateAsync(Seed, 200, "api", Bound, "/conf");
        var tokenHash = (await ReferenceHash.HashAsync([new JsonObject { ["token"] = _gateway.Idp.Token() }]))[0];

        var failures = new List<string>();
        foreach (var c in cases)
        {
            var grant = new JsonObject { ["route"] = "conf", ["tokenHash"] = tokenHash, ["request"] = ApiRequest(c), ["ttlSeconds"] = 60 };
            using var response = await _gateway.PostGrantAsync(grant);
            var text = await response.Content.ReadAsStringAsync();
            if (response.StatusCode != HttpStatusCode.Created)
            {
                failures.Add($"{c}\nAPI: {(int)response.StatusCode} {text}");
                continue;
            }

            using var json = JsonDocument.Parse(text);
            if (json.RootElement.GetProperty("requestHash").GetString() is var actual && actual != c.Hash)
            {
                failures.Add($"{c}\nAPI: {actual}, reference: {c.Hash}");
            }
        }

        Assert.True(failures.Count == 0, $"{failures.Count} of {cases.Count} differ (seed {Seed}):\n{string.Join("\n\n", failures.Take(5))}");
    }

    /// <summary>
    /// Each generated request, sent as written (header lines in order and case, repeated lines, white space around
    /// values, no body or an empty one), uses a grant bound to the reference's hashes and reaches the upstream with the
    /// target and body that were hashed; the same request with one more query pair, one more bound header line or another
    /// body is a request_mismatch that reaches nothing.
    /// </summary>
    [Fact]
    public async Task Use_SeededWireRequests_AcceptedExactlyWhenTheyMatch()
    {
        var cases = await ReferenceHash.GenerateAsync(Seed + 1, 30, "wire", Bound, "/conf");
        var token = _gateway.Idp.Token();
        var tokenHash = (await ReferenceHash.HashAsync([new JsonObject { ["token"] = token }]))[0];

        var failures = new List<string>();
        foreach (var c in cases)
        {
            var approved = await CreateAsync(tokenHash, c.Hash);
            var before = _gateway.Upstream.Count;
            var (status, content) = await RawHttp.SendAsync(_gateway.ProxyAddress, Head(c, token, approved, c.Body?.Length), c.Body ?? []);
            var received = _gateway.Upstream.Received;
            if (status != 200 || _gateway.Upstream.Count != before + 1)
            {
                failures.Add($"{c}\nexpected 200 and one upstream request, got {status} {content}");
                continue;
            }

            var forwarded = received[^1];
            var (path, query) = (c.Path, c.Query);
            if (forwarded.Path != path || forwarded.Query != query || !forwarded.Body.AsSpan().SequenceEqual(c.Body ?? []))
            {
                failures.Add($"{c}\nupstream received {forwarded.Method} {forwarded.Path}?{forwarded.Query} with {forwarded.Body.Length} body bytes");
            }

            // One change the SPEC's canonical form always sees, chosen by the case.
            var other = await CreateAsync(tokenHash, c.Hash);
            var (head, body) = (c.Index % 3) switch
            {
                0 => (Head(c with { Query = c.Query.Length == 0 ? "zz=1" : c.Query + "&zz=1" }, token, other, c.Body?.Length), c.Body ?? []),
                1 => (Head(c with { Headers = [.. c.Headers, KeyValuePair.Create("X-Tag", "evil")] }, token, other, c.Body?.Length), c.Body ?? []),
                _ => (Head(c, token, other, (c.Body?.Length ?? 0) + 1), [.. c.Body ?? [], (byte)'!']),
            };
            before = _gateway.Upstream.Count;
            (status, content) = await RawHttp.SendAsync(_gateway.ProxyAddress, head, body);
            if (status != 403 || !content.Contains("\"request_mismatch\"", StringComparison.Ordinal) || _gateway.Upstream.Count != before)
            {
                failures.Add($"{c}\nchange {c.Index % 3}: expected 403 request_mismatch and nothing upstream, got {status} {content}");
            }
        }

        Assert.True(failures.Count == 0, $"{failures.Count} of {cases.Count} failed (seed {Seed + 1}):\n{string.Join("\n\n", failures.Take(5))}");
    }

    /// <summary><c>agw hash</c> computes the hash client-side: the same inputs, given as options, must hash alike.</summary>
    [Fact]
    public async Task AgwHash_SeededRequests_MatchesIndependentReference()
    {
        var cases = await ReferenceHash.GenerateAsync(Seed + 2, 4, "api", Bound, "/conf");

        var failures = new List<string>();
        foreach (var c in cases)
        {
            var args = new List<string> { "hash", "--method", c.Method, "--path", c.Path, "--query", c.Query };
            foreach (var name in Bound)
            {
                args.AddRange(["--bound", name]);
            }

            foreach (var (name, value) in c.Headers)
            {
                args.AddRange(["--header", $"{name}:{value}"]);
            }

            var bodyFile = Path.Combine(_gateway.Directory, $"body-{c.Index}.bin");
            if (c.Body is not null)
            {
                await File.WriteAllBytesAsync(bodyFile, c.Body);
                args.AddRange(["--body", bodyFile]);
            }

            var (code, output, error) = await AgwAsync(args);
            if (code != 0 || output != c.Hash)
            {
                failures.Add($"{c}\nagw hash: exit {code}, {output} {error}; reference: {c.Hash}");
            }
        }

        Assert.True(failures.Count == 0, $"{failures.Count} of {cases.Count} differ (seed {Seed + 2}):\n{string.Join("\n\n", failures.Take(5))}");
    }

    /// <summary>
    /// SPEC §4.2 hashes the path "exactly as received on the wire", which for an absolute-form target (RFC 9112 §3.2.2)
    /// could be read as its raw path. The gateway hashes the path as it forwards it (Kestrel's decoded path, escaped again),
    /// so the grant to use is the one for the path the upstream receives; one for the raw spelling is a mismatch that
    /// reaches nothing. This pins the reading the gateway implements.
    /// </summary>
    [Theory]
    [InlineData("/conf/a%7Eb", "/conf/a~b")]
    [InlineData("/conf/%c3%a9", "/conf/%C3%A9")]
    public async Task Use_AbsoluteFormTarget_HashesThePathAsForwarded(string wirePath, string forwardedPath)
    {
        var token = _gateway.Idp.Token();
        JsonObject Input(string path) => new() { ["method"] = "POST", ["path"] = path, ["query"] = "x=1", ["headers"] = new JsonArray(), ["boundHeaders"] = new JsonArray([.. Bound.Select(b => JsonValue.Create(b))]) };
        var hashes = await ReferenceHash.HashAsync([new JsonObject { ["token"] = token }, Input(wirePath), Input(forwardedPath)]);
        string Head(string id) => $"POST http://gateway.test{wirePath}?x=1 HTTP/1.1\r\nHost: gateway.test\r\nAuthorization: Bearer {token}\r\nAssurance-Id: {id}\r\nContent-Length: 0\r\n";

        var before = _gateway.Upstream.Count;
        var (rawStatus, rawContent) = await RawHttp.SendAsync(_gateway.ProxyAddress, Head(await CreateAsync(hashes[0], hashes[1])), Array.Empty<byte>());
        Assert.True(rawStatus == 403 && rawContent.Contains("\"request_mismatch\"", StringComparison.Ordinal), $"{rawStatus} {rawContent}");
        Assert.Equal(before, _gateway.Upstream.Count);

        var (status, content) = await RawHttp.SendAsync(_gateway.ProxyAddress, Head(await CreateAsync(hashes[0], hashes[2])), Array.Empty<byte>());
        Assert.True(status == 200, $"{status} {content}");
        Assert.Equal(before + 1, _gateway.Upstream.Count);
        Assert.Equal(forwardedPath, _gateway.Upstream.Received[^1].Path);
    }

    private async Task<string> CreateAsync(string tokenHash, string requestHash) =>
        await _gateway.CreateGrantAsync(new JsonObject { ["route"] = "conf", ["tokenHash"] = tokenHash, ["requestHash"] = requestHash, ["ttlSeconds"] = 60 });

    /// <summary>The case as the API takes it: one member per header (its values in wire order), the body in base64.</summary>
    private static JsonObject ApiRequest(ReferenceHash.Input c)
    {
        var headers = new JsonObject();
        foreach (var group in c.Headers.GroupBy(h => h.Key.ToLowerInvariant()))
        {
            headers[group.First().Key] = new JsonArray([.. group.Select(h => JsonValue.Create(h.Value))]);
        }

        return new JsonObject
        {
            ["method"] = c.Method, ["path"] = c.Path, ["query"] = c.Query, ["headers"] = headers,
            ["body"] = c.Body is null ? null : Convert.ToBase64String(c.Body),
        };
    }

    /// <summary>The request head as the case writes it; no Content-Length at all when the case has no body.</summary>
    private static string Head(ReferenceHash.Input c, string token, string grantId, int? contentLength)
    {
        var head = new StringBuilder()
            .Append(c.Method).Append(' ').Append(c.Path).Append(c.Query.Length > 0 ? "?" + c.Query : string.Empty).Append(" HTTP/1.1\r\n")
            .Append("Host: gateway.test\r\n")
            .Append("Authorization: Bearer ").Append(token).Append("\r\n")
            .Append("Assurance-Id: ").Append(grantId).Append("\r\n");
        foreach (var (name, value) in c.Headers)
        {
            head.Append(name).Append(':').Append(value).Append("\r\n");
        }

        if (contentLength is { } length)
        {
            head.Append("Content-Length: ").Append(length).Append("\r\n");
        }

        return head.ToString();
    }

    private static async Task<(int Code, string Out, string Err)> AgwAsync(List<string> args)
    {
        var start = new ProcessStartInfo(GatewayProcess.DotnetHost()) { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(GatewayProcess.CliDll());
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }

        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await process.WaitForExitAsync(timeout.Token);
        return (process.ExitCode, (await output).Trim(), (await error).Trim());
    }
}
