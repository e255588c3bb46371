using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using AssuranceGateway.Configuration;
using AssuranceGateway.Enforcement;
using AssuranceGateway.Grants;
using AssuranceGateway.Requests;
using AssuranceGateway.Testing;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Primitives;

namespace AssuranceGateway.FunctionalTests.Fuzz;

/// <summary>
/// Seeded, bounded, deterministic fuzzing of every input surface: the proxy (headers, query, path, body of a route that
/// binds token + workload + request), the assurance API, and the parsers used directly (canonical request, RESP replies,
/// config compiler). Each case is a mutation of a valid input. The properties: never a 500 or an unhandled exception,
/// never a hang, never a forwarded request unless it is (canonically) the approved one, and every refusal is
/// problem+json with a reason code. A failing case prints its seed and index so that it can be replayed; the minimal
/// cases found are kept below as their own facts.
/// </summary>
public sealed class InputFuzzTests
{
    private const int Seed = 20261122;

    private static readonly HashSet<string> ProxyReasons =
    [
        ReasonCodes.AssuranceMalformed, ReasonCodes.RequestAmbiguous, ReasonCodes.TokenMissing, ReasonCodes.TokenInvalid,
        ReasonCodes.InsufficientAal, ReasonCodes.WorkloadUnidentified, ReasonCodes.WorkloadInvalid, ReasonCodes.ClaimsMismatch,
        ReasonCodes.AssuranceRequired, ReasonCodes.GrantNotFound, ReasonCodes.GrantPending, ReasonCodes.GrantRevoked,
        ReasonCodes.GrantExpired, ReasonCodes.GrantNotYetValid, ReasonCodes.RouteMismatch, ReasonCodes.SubjectMismatch,
        ReasonCodes.SessionMismatch, ReasonCodes.TokenMismatch, ReasonCodes.WorkloadMismatch, ReasonCodes.OriginMismatch,
        ReasonCodes.RequestMismatch, ReasonCodes.Replayed, ReasonCodes.BodyTooLarge, ReasonCodes.GrantUnreadable,
        ReasonCodes.NoRoute,
    ];

    private static readonly HashSet<string> ApiReasons =
    [
        ReasonCodes.InvalidRequest, ReasonCodes.InsufficientScope, ReasonCodes.SelfApproval, ReasonCodes.UnknownRoute,
        ReasonCodes.Conflict, ReasonCodes.MethodNotAllowed, ReasonCodes.TokenMissing, ReasonCodes.TokenInvalid,
        ReasonCodes.InsufficientAal, ReasonCodes.GrantNotFound, ReasonCodes.BodyTooLarge,
    ];

    private static readonly string[] Odd =
    [
        "%", "%zz", "%00", "%2F", "%2f", "%C0%AF", "%25", "\\u0000", "\\", "\"", "..", "/./", "//", "?", "#", "&", "=", ";", ",",
        "\t", " ", "\u00e9", "\\ud800", "\uffff", "\u202e", "2147483648", "-2147483649", "9223372036854775808",
        "-9223372036854775809", "1e309", "-0", "NaN", "null", "{}", "[]", "\r", "\n", "\0",
    ];

    // ---------------------------------------------------------------- 1. the proxy

    [Fact]
    public async Task Proxy_MutatedDeployRequests_NeverForwardedUnlessCanonicallyApproved()
    {
        await using var gateway = await GatewayHarness.StartAsync();
        var random = new Random(Seed);
        var token = gateway.Idp.Token("alice", TestConfig.Audience, "urn:aal2");
        var svid = gateway.WorkloadIssuer.Svid();
        var valid = ProxyCase.Valid(token, svid);
        var approved = valid.Hash();
        var failures = new List<string>();

        // The control: the untouched request with its grant is forwarded, as sent. Without it, an oracle that allows
        // only the approved request would pass just as well if no request could ever be approved here.
        var controlId = await gateway.CreateGrantAsync(Grant(token, valid));
        var control = await SendRawAsync(gateway.ProxyAddress, (valid with { GrantId = controlId }).Head(), valid.Body);
        Assert.True(control.Status == 200, $"the unmutated request: {control.Status} {control.Content}");
        Assert.Equal(valid.Body, Assert.Single(gateway.Upstream.Received).Body);
        var forwardedCases = 0;
        var watch = Stopwatch.StartNew();

        for (var i = 0; i < 800 && watch.Elapsed < TimeSpan.FromSeconds(20); i++)
        {
            var grantId = await gateway.CreateGrantAsync(Grant(token, valid));
            var mutant = valid.Mutate(random, grantId, out var what);
            var before = gateway.Upstream.Count;
            var (status, contentType, content) = await SendRawAsync(gateway.ProxyAddress, mutant.Head(), mutant.Body);
            var forwarded = gateway.Upstream.Count - before;
            var label = $"case {i} ({what}): {status} {Shorten(content)}";

            if (status >= 500 && status != 503)
            {
                failures.Add(label);
            }
            else if (forwarded > 0)
            {
                // Only the approved request (canonically the same, same credentials and grant) may pass.
                if (status is < 200 or > 299 || forwarded != 1 || mutant.Token != valid.Token || mutant.Svid != valid.Svid
                    || mutant.GrantId != grantId || mutant.Hash() != approved)
                {
                    failures.Add($"forwarded: {label}");
                }
                else
                {
                    forwardedCases++;
                    failures.AddRange(SpoofedHeadersForwarded(mutant, gateway.Upstream.Received[^1]).Select(h => $"{h} forwarded as the client sent it: {label}"));
                }
            }
            else if (status is >= 200 and <= 299)
            {
                failures.Add($"2xx but not forwarded: {label}");
            }
            else if (status == 404 && !(what.StartsWith("path", StringComparison.Ordinal) || what.StartsWith("target", StringComparison.Ordinal)))
            {
                // Only a mutated path or target can leave every route (no_route, a problem like the rest).
                failures.Add($"404 for a request whose path was not mutated: {label}");
            }
            else if (!IsKestrelRefusal(status, content) && !IsProblem(contentType, content, ProxyReasons))
            {
                failures.Add($"not a problem with a reason: {label}");
            }
        }

        failures.AddRange(Unhandled(gateway));
        Assert.True(failures.Count == 0, string.Join('\n', failures));
        // Mutations that leave the request as it was (a surface mutated into itself, a header the policy does not bind)
        // reach the forwarded branch: if none did, what it checks was never checked.
        Assert.True(forwardedCases > 0, "no mutated case was forwarded: the forwarded branch was never checked");
    }

    /// <summary>
    /// Headers the client may not set for the upstream (SPEC §5.6, README step 7): its own <c>Assurance-Evidence</c> and,
    /// with no trusted proxy, <c>X-Forwarded-Client-Cert</c>. A forwarded request must not carry the value the client sent.
    /// </summary>
    private static IEnumerable<string> SpoofedHeadersForwarded(ProxyCase sent, ReceivedRequest received)
    {
        foreach (var line in sent.ExtraLines)
        {
            var colon = line.IndexOf(':', StringComparison.Ordinal);
            var (name, value) = (line[..colon], line[(colon + 1)..].Trim());
            if (name is "Assurance-Evidence" or "X-Forwarded-Client-Cert" && value.Length > 0
                && received.Headers.TryGetValue(name, out var forwarded)
                && (forwarded == value || forwarded.Split(',').Any(part => part.Trim() == value)))
            {
                yield return name;
            }
        }
    }

    // ---------------------------------------------------------------- 2. the assurance API

    [Fact]
    public async Task Api_MutatedGrantRequests_NeverServerErrorAlwaysProblem()
    {
        await using var gateway = await GatewayHarness.StartAsync();
        var random = new Random(Seed + 1);
        var token = gateway.Idp.Token("alice", TestConfig.Audience, "urn:aal2");
        var valid = GrantHelpers.DeployGrant(token);
        var validText = valid.ToJsonString();
        var failures = new List<string>();
        var watch = Stopwatch.StartNew();

        for (var i = 0; i < 800 && watch.Elapsed < TimeSpan.FromSeconds(15); i++)
        {
            string what;
            byte[] body;
            if (i % 2 == 0)
            {
                var tree = JsonNode.Parse(validText)!;
                what = MutateTree(random, tree);
                body = Encoding.UTF8.GetBytes(tree.ToJsonString());
            }
            else
            {
                body = MutateBytes(random, Encoding.UTF8.GetBytes(validText), out what);
            }

            if (i % 7 == 3)
            {
                // Duplicate members, at the top and inside request.
                var text = Encoding.UTF8.GetString(body);
                body = Encoding.UTF8.GetBytes(random.Next(2) == 0
                    ? text.Replace("\"maxUses\":", "\"maxUses\":1,\"maxUses\":", StringComparison.Ordinal)
                    : text.Replace("\"method\":", "\"method\":\"GET\",\"method\":", StringComparison.Ordinal));
                what += " + duplicate member";
            }

            using var request = new HttpRequestMessage(HttpMethod.Post, "/assurance/v1/grants") { Content = new ByteArrayContent(body) };
            request.Content.Headers.TryAddWithoutValidation("Content-Type", "application/json");
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", gateway.Idp.ApiToken());
            await CheckApiAsync(gateway, request, $"create case {i} ({what})", failures, HttpStatusCode.Created);
        }

        // Ids, approve, deny, revoke and the list's query, with mutated path segments and parameters.
        var id = await gateway.CreateGrantAsync(valid);
        for (var i = 0; i < 400 && watch.Elapsed < TimeSpan.FromSeconds(25); i++)
        {
            var mutated = Escape(MutateString(random, id, out var what));
            var (method, path) = (i % 5) switch
            {
                0 => (HttpMethod.Get, $"/assurance/v1/grants/{mutated}"),
                1 => (HttpMethod.Post, $"/assurance/v1/grants/{mutated}/approve"),
                2 => (HttpMethod.Post, $"/assurance/v1/grants/{mutated}/deny"),
                3 => (HttpMethod.Delete, $"/assurance/v1/grants/{mutated}"),
                _ => (HttpMethod.Get, "/assurance/v1/grants?" + MutateString(random, "status=pending&limit=10&route=agent", out what)),
            };

            HttpRequestMessage request;
            try
            {
                request = new HttpRequestMessage(method, path);
            }
            catch (UriFormatException)
            {
                continue; // HttpClient cannot send it at all
            }

            using var _ = request;
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", gateway.Idp.ApiToken("bob"));
            await CheckApiAsync(gateway, request, $"{method} case {i} ({what}) {path}", failures, null);
        }

        failures.AddRange(Unhandled(gateway));
        Assert.True(failures.Count == 0, string.Join('\n', failures));
    }

    /// <summary>Found by the API fuzz (create case 461): a bound header's value that is not UTF-8 was a 500.</summary>
    [Fact]
    public async Task Api_CreateGrant_HeaderValueNotUtf8_InvalidRequestNotServerError()
    {
        await using var gateway = await GatewayHarness.StartAsync();
        var text = GrantHelpers.DeployGrant(gateway.Idp.Token("alice", TestConfig.Audience, "urn:aal2")).ToJsonString();
        // The bound header's value with a raw 0xFF byte (never valid in UTF-8) in place of one letter.
        var body = Encoding.UTF8.GetBytes(text.Replace("application/json", "applic~tion/json", StringComparison.Ordinal));
        body[Array.IndexOf(body, (byte)'~')] = 0xff;
        using var request = new HttpRequestMessage(HttpMethod.Post, "/assurance/v1/grants") { Content = new ByteArrayContent(body) };
        request.Content.Headers.TryAddWithoutValidation("Content-Type", "application/json");
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", gateway.Idp.ApiToken());

        using var response = await gateway.Api.SendAsync(request);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var problem = await response.ProblemAsync();
        Assert.Equal(ReasonCodes.InvalidRequest, problem.GetProperty("reason").GetString());
        Assert.Contains("request.headers.content-type", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Empty(Unhandled(gateway));
    }

    // ---------------------------------------------------------------- 3. parsers used directly

    [Fact]
    public void CanonicalRequest_MutatedInputs_NeverThrow()
    {
        var random = new Random(Seed + 2);
        var failures = new List<string>();
        string[] bound = ["content-type", "x-a"];
        for (var i = 0; i < 2000; i++)
        {
            var method = MutateString(random, "POST", out _);
            var path = MutateString(random, "/deploy/v1/releases", out _);
            var query = MutateString(random, "b=2&a=1&a=0", out _);
            var header = MutateString(random, "application/json", out _);
            var body = MutateBytes(random, "{\"release\":\"5.2\"}"u8.ToArray(), out _);
            try
            {
                var first = CanonicalRequest.Compute(method, path, query, bound, n => n == "content-type" ? new StringValues([header, header]) : StringValues.Empty, body);
                var again = CanonicalRequest.Compute(method, path, query, bound, n => n == "content-type" ? new StringValues([header, header]) : StringValues.Empty, body);
                Assert.Equal(first.Hash, again.Hash);
                _ = CanonicalRequest.PathProblem(path);
                _ = CanonicalRequest.QueryProblem(query);
                _ = CanonicalRequest.QueryForwardedAsIs(query);
                _ = CanonicalRequest.RepeatedNameOutOfOrder(query);
                _ = CanonicalRequest.TrimOptionalWhiteSpace(header);
                _ = CanonicalRequest.IsToken(method);
            }
            catch (Exception e)
            {
                failures.Add($"case {i}: {e.GetType().Name} {e.Message} for {JsonSerializer.Serialize(new[] { method, path, query, header })}");
            }
        }

        Assert.True(failures.Count == 0, string.Join('\n', failures.Take(20)));
    }

    [Fact]
    public void RespReader_RandomAndMutatedBytes_ParseOrFormatException()
    {
        var random = new Random(Seed + 3);
        string[] valid =
        [
            "*5\r\n$2\r\nok\r\n:1\r\n$-1\r\n+PONG\r\n*1\r\n$0\r\n\r\n",
            "-NOSCRIPT No matching script\r\n$3\r\nabc\r\n",
            "*3\r\n*2\r\n:9223372036854775807\r\n:-9223372036854775808\r\n$5\r\nhello\r\n*-1\r\n",
            ":0\r\n", "+OK\r\n", "$-1\r\n", "*0\r\n",
        ];
        var failures = new List<string>();
        var watch = Stopwatch.StartNew();
        for (var i = 0; i < 3000; i++)
        {
            var data = i % 4 == 0
                ? RandomBytes(random, random.Next(0, 64), resp: true)
                : MutateBytes(random, Encoding.UTF8.GetBytes(valid[random.Next(valid.Length)]), out _);
            try
            {
                var position = 0;
                var reads = 0;
                while (position < data.Length && RespPipe.TryRead(data, ref position, 0, out _))
                {
                    if (++reads > data.Length)
                    {
                        failures.Add($"case {i}: no progress on {Convert.ToHexString(data)}");
                        break;
                    }
                }
            }
            catch (FormatException)
            {
            }
            catch (Exception e)
            {
                failures.Add($"case {i}: {e.GetType().Name} {e.Message} on {Convert.ToHexString(data)}");
            }
        }

        // Replies arrive in pieces: every prefix of a valid reply is "not yet" (or its complete leading replies), never a
        // FormatException, which would break the connection. Accepting any FormatException above does not check that.
        foreach (var reply in valid.Select(Encoding.UTF8.GetBytes))
        {
            for (var length = 0; length < reply.Length; length++)
            {
                try
                {
                    var position = 0;
                    while (RespPipe.TryRead(reply.AsSpan(0, length), ref position, 0, out _))
                    {
                    }
                }
                catch (Exception e)
                {
                    failures.Add($"prefix {length} of {Printable(Encoding.UTF8.GetString(reply))}: {e.GetType().Name} {e.Message}");
                }
            }
        }

        Assert.True(failures.Count == 0, string.Join('\n', failures.Take(20)));
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(10), $"3000 small replies took {watch.Elapsed}");
    }

    [Fact]
    public void ConfigCompiler_MutatedConfig_AcceptsOrNamesProblems()
    {
        var random = new Random(Seed + 4);
        var directory = Path.Combine(Path.GetTempPath(), "agw-fuzz", Guid.NewGuid().ToString("N"));
        using var idp = new TestIssuer("https://idp.test", directory);
        using var workload = new TestIssuer("spiffe://prod.test", directory, "w1");
        var failures = new List<string>();
        try
        {
            for (var i = 0; i < 1000; i++)
            {
                var config = TestConfig.Create("http://127.0.0.1:5001", idp, workload);
                var what = MutateTree(random, config);
                if (i % 3 == 0)
                {
                    what += "; " + MutateTree(random, config);
                }

                IConfiguration configuration;
                try
                {
                    configuration = new ConfigurationBuilder()
                        .AddJsonStream(new MemoryStream(Encoding.UTF8.GetBytes(config.ToJsonString())))
                        .Build();
                }
                catch (Exception e) when (e is FormatException or JsonException)
                {
                    continue; // the JSON provider refused it (not the compiler's input)
                }

                try
                {
                    var settings = GatewayConfigCompiler.Compile(configuration, directory, out var errors);
                    if ((settings is null) == (errors.Count == 0))
                    {
                        failures.Add($"case {i} ({what}): settings {(settings is null ? "null" : "given")} with {errors.Count} errors");
                    }

                    foreach (var error in errors.Where(e => !e.Contains(':', StringComparison.Ordinal)))
                    {
                        failures.Add($"case {i} ({what}): problem names no key: {error}");
                    }
                }
                catch (Exception e)
                {
                    failures.Add($"case {i} ({what}): {e.GetType().Name} {e.Message}");
                }
            }
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }

        Assert.True(failures.Count == 0, string.Join('\n', failures.Take(20)));
    }

    // ---------------------------------------------------------------- helpers

    private static JsonObject Grant(string token, ProxyCase valid)
    {
        var grant = GrantHelpers.DeployGrant(token, body: Encoding.UTF8.GetString(valid.Body));
        grant["request"]!["query"] = valid.Query;
        return grant;
    }

    private static async Task CheckApiAsync(GatewayHarness gateway, HttpRequestMessage request, string label, List<string> failures, HttpStatusCode? success)
    {
        using var response = await gateway.Api.SendAsync(request);
        var content = await response.Content.ReadAsStringAsync();
        var status = (int)response.StatusCode;
        var line = $"{label}: {status} {Shorten(content)}";
        if (status >= 500 && status != 503)
        {
            failures.Add(line);
        }
        else if (status >= 400 && !IsKestrelRefusal(status, content) && !IsProblem(response.Content.Headers.ContentType?.MediaType, content, ApiReasons))
        {
            failures.Add($"not a problem with a reason: {line}");
        }
        else if (status < 400 && success is { } expected && response.StatusCode != expected)
        {
            failures.Add($"unexpected success: {line}");
        }
    }

    private static bool IsProblem(string? contentType, string content, HashSet<string> reasons)
    {
        if (contentType != "application/problem+json")
        {
            return false;
        }

        try
        {
            using var json = JsonDocument.Parse(content);
            return json.RootElement.TryGetProperty("reason", out var reason) && reason.ValueKind == JsonValueKind.String
                && (reasons.Contains(reason.GetString()!) || reason.GetString() == ReasonCodes.StoreUnavailable);
        }
        catch (JsonException)
        {
            return false;
        }
    }

    /// <summary>Kestrel's own refusal of a request that is not HTTP (framing, header syntax): a bodiless 4xx.</summary>
    private static bool IsKestrelRefusal(int status, string content) => status is 400 or 405 or 413 or 414 or 431 && content.Length == 0;

    private static IEnumerable<string> Unhandled(GatewayHarness gateway) =>
        gateway.Logs.Lines.Where(l => l.Contains("nhandled", StringComparison.OrdinalIgnoreCase)
            || l.Contains("NullReferenceException", StringComparison.Ordinal) || l.Contains("IndexOutOfRange", StringComparison.Ordinal)
            || l.Contains("ArgumentOutOfRange", StringComparison.Ordinal) || l.Contains("InvalidCastException", StringComparison.Ordinal))
            .Select(l => "log: " + Shorten(l, 600));

    private static string Shorten(string text, int max = 200) => text.Length <= max ? text : text[..max] + "…";

    private static string Printable(string text) =>
        string.Concat(text.Select(c => c < 0x20 || c == 0x7f || char.IsSurrogate(c) ? $"\\u{(int)c:x4}" : c.ToString()));

    private static string Escape(string segment) => Uri.EscapeDataString(segment.Replace("\0", string.Empty, StringComparison.Ordinal));

    private static byte[] RandomBytes(Random random, int length, bool resp)
    {
        var bytes = new byte[length];
        random.NextBytes(bytes);
        if (resp)
        {
            // Mostly RESP-looking: type bytes, digits, CRLF, so that the parser gets past its first line.
            const string alphabet = "*$:+-0123456789\r\n-";
            for (var i = 0; i < bytes.Length; i++)
            {
                if (random.Next(4) != 0)
                {
                    bytes[i] = (byte)alphabet[random.Next(alphabet.Length)];
                }
            }
        }

        return bytes;
    }

    private static string MutateString(Random random, string value, out string what)
    {
        var bytes = MutateBytes(random, Encoding.UTF8.GetBytes(value), out what);
        return Encoding.UTF8.GetString(bytes);
    }

    private static byte[] MutateBytes(Random random, byte[] value, out string what)
    {
        var list = new List<byte>(value);
        var at = list.Count == 0 ? 0 : random.Next(list.Count + 1);
        switch (random.Next(11))
        {
            case 0 when list.Count > 0:
                var bit = random.Next(list.Count);
                list[bit] ^= (byte)(1 << random.Next(8));
                what = $"bit flip at {bit}";
                break;
            case 1:
                list.RemoveRange(at, list.Count - at);
                what = $"truncated at {at}";
                break;
            case 2 when list.Count > 0:
                var start = random.Next(list.Count);
                var length = random.Next(1, list.Count - start + 1);
                list.InsertRange(start, list.GetRange(start, length));
                what = $"duplicated {length} at {start}";
                break;
            case 3:
                list.Clear();
                what = "empty";
                break;
            case 4:
                var huge = random.Next(2) == 0 ? 9000 : 70000;
                list.InsertRange(at, Enumerable.Repeat((byte)"aA9%/.=&"[random.Next(8)], huge));
                what = $"{huge} bytes inserted";
                break;
            case 5:
                var control = (byte)(random.Next(3) == 0 ? 0x7f : random.Next(0x20));
                list.Insert(at, control);
                what = $"control 0x{control:x2} at {at}";
                break;
            case 6:
                byte[][] invalid = [[0xc3, 0x28], [0xff], [0xed, 0xa0, 0x80], [0xc0, 0xaf], [0xf4, 0x90, 0x80, 0x80], [0x80]];
                var pick = invalid[random.Next(invalid.Length)];
                list.InsertRange(at, pick);
                what = $"invalid UTF-8 {Convert.ToHexString(pick)} at {at}";
                break;
            case 7 or 8:
                var odd = Odd[random.Next(Odd.Length)];
                list.InsertRange(at, Encoding.UTF8.GetBytes(odd));
                what = $"'{Printable(odd)}' at {at}";
                break;
            case 9 when list.Count > 0:
                var removed = random.Next(list.Count);
                list.RemoveAt(removed);
                what = $"byte {removed} removed";
                break;
            default:
                var replaced = Odd[random.Next(Odd.Length)];
                list = [.. Encoding.UTF8.GetBytes(replaced)];
                what = $"replaced by '{Printable(replaced)}'";
                break;
        }

        return [.. list];
    }

    /// <summary>Replaces one node of the tree (a value, an object, an array) by a hostile one; says which.</summary>
    private static string MutateTree(Random random, JsonNode root)
    {
        var nodes = new List<JsonNode>();
        Collect(root, nodes);
        var target = nodes[random.Next(nodes.Count)];
        var path = target.GetPath();
        JsonNode? replacement = random.Next(16) switch
        {
            0 => null,
            1 => JsonValue.Create(string.Empty),
            2 => JsonValue.Create(new string('a', 70000)),
            3 => JsonValue.Create((long)int.MaxValue + 1),
            4 => JsonValue.Create(long.MinValue),
            5 => JsonValue.Create(-1),
            6 => JsonValue.Create(0),
            7 => JsonValue.Create(1.5e308),
            8 => new JsonObject(),
            9 => new JsonArray(),
            10 => Deep(random.Next(2) == 0 ? 40 : 200),
            11 => JsonValue.Create("\u0000\ufffd\u202e"),
            12 => JsonValue.Create(random.Next(2) == 0 ? "-00:00:01" : "10675199.02:48:05.4775808"),
            13 => JsonValue.Create(true),
            14 => new JsonArray(JsonValue.Create("x"), null, new JsonObject()),
            _ => JsonValue.Create(Odd[random.Next(Odd.Length)]),
        };

        switch (target.Parent)
        {
            case JsonObject parent:
                parent[target.GetPropertyName()] = replacement;
                break;
            case JsonArray array:
                array[target.GetElementIndex()] = replacement;
                break;
            default:
                return "root untouched";
        }

        return $"{path} := {Shorten(replacement?.ToJsonString() ?? "null", 40)}";
    }

    private static void Collect(JsonNode? node, List<JsonNode> nodes)
    {
        if (node is null)
        {
            return;
        }

        if (node.Parent is not null)
        {
            nodes.Add(node);
        }

        switch (node)
        {
            case JsonObject o:
                foreach (var (_, child) in o)
                {
                    Collect(child, nodes);
                }

                break;
            case JsonArray a:
                foreach (var child in a)
                {
                    Collect(child, nodes);
                }

                break;
        }
    }

    private static JsonNode Deep(int depth)
    {
        JsonNode node = JsonValue.Create(1);
        for (var i = 0; i < depth; i++)
        {
            node = i % 2 == 0 ? new JsonArray(node) : new JsonObject { ["a"] = node };
        }

        return node;
    }

    /// <summary>
    /// One response to raw bytes: status, content type and body (Content-Length or to the close). A connection that
    /// closes without a response counts as a refusal by Kestrel (status 0 is never acceptable, so it is reported as 400
    /// without body only when Kestrel closed before answering anything).
    /// </summary>
    private static async Task<(int Status, string? ContentType, string Content)> SendRawAsync(string address, byte[] head, byte[] body)
    {
        var uri = new Uri(address);
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(uri.Host, uri.Port);
        await using var stream = tcp.GetStream();
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        try
        {
            await stream.WriteAsync(head, deadline.Token);
            await stream.WriteAsync(body, deadline.Token);
        }
        catch (IOException)
        {
            // Kestrel may answer and close before it reads everything.
        }

        var received = new List<byte>();
        var buffer = new byte[8192];
        int headerEnd;
        while ((headerEnd = IndexOf(received, "\r\n\r\n"u8)) < 0)
        {
            int n;
            try
            {
                n = await stream.ReadAsync(buffer, deadline.Token);
            }
            catch (IOException)
            {
                n = 0;
            }

            if (n == 0)
            {
                throw new IOException("the connection closed before a response");
            }

            received.AddRange(buffer.AsSpan(0, n));
        }

        var responseHead = Encoding.Latin1.GetString([.. received], 0, headerEnd);
        var lines = responseHead.Split("\r\n");
        string? contentType = null;
        var length = 0;
        foreach (var line in lines.Skip(1))
        {
            var colon = line.IndexOf(':', StringComparison.Ordinal);
            var name = line[..colon].Trim();
            var value = line[(colon + 1)..].Trim();
            if (name.Equals("Content-Type", StringComparison.OrdinalIgnoreCase))
            {
                contentType = value.Split(';')[0].Trim();
            }
            else if (name.Equals("Content-Length", StringComparison.OrdinalIgnoreCase))
            {
                length = int.Parse(value, CultureInfo.InvariantCulture);
            }
        }

        while (received.Count < headerEnd + 4 + length)
        {
            var n = await stream.ReadAsync(buffer, deadline.Token);
            if (n == 0)
            {
                break;
            }

            received.AddRange(buffer.AsSpan(0, n));
        }

        var status = int.Parse(lines[0].AsSpan(9, 3), CultureInfo.InvariantCulture);
        return (status, contentType, Encoding.UTF8.GetString([.. received], headerEnd + 4, Math.Min(length, received.Count - headerEnd - 4)));
    }

    private static int IndexOf(List<byte> data, ReadOnlySpan<byte> pattern)
    {
        for (var i = 0; i + pattern.Length <= data.Count; i++)
        {
            var match = true;
            for (var j = 0; j < pattern.Length && match; j++)
            {
                match = data[i + j] == pattern[j];
            }

            if (match)
            {
                return i;
            }
        }

        return -1;
    }

    /// <summary>The deploy request as bytes on the wire, each part mutable on its own.</summary>
    private sealed record ProxyCase(string Method, string Path, string Query, string Token, string Svid, string? GrantId, string ContentType,
        IReadOnlyList<string> ExtraLines, byte[] Body)
    {
        public byte[]? RawToken { get; init; }
        public byte[]? RawSvid { get; init; }
        public byte[]? RawGrantId { get; init; }
        public byte[]? RawContentType { get; init; }
        public byte[]? RawTarget { get; init; }
        public byte[]? RawMethod { get; init; }

        public static ProxyCase Valid(string token, string svid) =>
            new("POST", "/deploy/v1/releases", "b=2&a=1", token, svid, null, "application/json", ["X-Assurance-Note: ok"],
                Encoding.UTF8.GetBytes(GrantHelpers.ReleaseBody));

        public string Hash() =>
            CanonicalRequest.Compute(Method, Path, Query, ["content-type"],
                n => n == "content-type" ? new StringValues(ContentType) : StringValues.Empty, Body).Hash;

        public ProxyCase Mutate(Random random, string grantId, out string what)
        {
            var valid = this with { GrantId = grantId };
            var surface = random.Next(11);
            switch (surface)
            {
                case 0:
                    var token = MutateBytes(random, Encoding.ASCII.GetBytes(Token), out what);
                    return Same(token, Token) ? valid : (valid with { Token = Latin(token), RawToken = token }).Note("authorization", ref what);
                case 1:
                    var svid = MutateBytes(random, Encoding.ASCII.GetBytes(Svid), out what);
                    return Same(svid, Svid) ? valid : (valid with { Svid = Latin(svid), RawSvid = svid }).Note("workload-identity", ref what);
                case 2:
                    var id = MutateBytes(random, Encoding.ASCII.GetBytes(grantId), out what);
                    return Same(id, grantId) ? valid : (valid with { GrantId = Latin(id), RawGrantId = id }).Note("assurance-id", ref what);
                case 3:
                    var type = MutateBytes(random, Encoding.ASCII.GetBytes(ContentType), out what);
                    return Same(type, ContentType) ? valid : (valid with { ContentType = Latin(type), RawContentType = type }).Note("content-type", ref what);
                case 4:
                    var query = MutateString(random, Query, out what);
                    return (valid with { Query = query }).Note("query", ref what);
                case 5:
                    var path = MutateString(random, Path, out what);
                    return (valid with { Path = path }).Note("path", ref what);
                case 6:
                    var body = MutateBytes(random, Body, out what);
                    return (valid with { Body = body }).Note("body", ref what);
                case 7:
                    // RFC 9112 §2.2: empty lines before a request line are ignored, so "\nPOST" is POST.
                    var method = MutateBytes(random, Encoding.ASCII.GetBytes(Method), out what);
                    return Same(method, Method) ? valid
                        : (valid with { Method = Latin(method).TrimStart('\r', '\n'), RawMethod = method }).Note("method", ref what);
                case 8:
                    // A second line of a credential or grant header, same or mutated value.
                    string[] names = ["Authorization", "Workload-Identity", "Assurance-Id", "Content-Type"];
                    var name = names[random.Next(names.Length)];
                    var value = name switch
                    {
                        "Authorization" => "Bearer " + Token,
                        "Workload-Identity" => Svid,
                        "Assurance-Id" => grantId,
                        _ => ContentType,
                    };
                    var second = random.Next(2) == 0 ? value : MutateString(random, value, out _);
                    what = $"second {name} line";
                    return valid with { ExtraLines = [.. ExtraLines, $"{name}: {second}"], Token = name == "Authorization" ? "(two)" : Token,
                        Svid = name == "Workload-Identity" ? "(two)" : Svid, GrantId = name == "Assurance-Id" ? "(two)" : grantId,
                        ContentType = name == "Content-Type" ? ContentType + "," + second : ContentType };
                case 9:
                    // X-Assurance-* and Assurance-* headers the gateway sets or might trust.
                    string[] spoof = ["X-Assurance-Id", "Assurance-Evidence", "X-Assurance-Evidence", "X-Forwarded-For", "X-Forwarded-Client-Cert", "Traceparent"];
                    var header = spoof[random.Next(spoof.Length)];
                    what = $"{header} added";
                    return valid with { ExtraLines = [.. ExtraLines, $"{header}: {MutateString(random, "spiffe://prod.test/ns/ci/sa/deployer", out _)}"] };
                default:
                    var target = MutateBytes(random, Encoding.ASCII.GetBytes(Path + "?" + Query), out what);
                    return Same(target, Path + "?" + Query) ? valid : (valid with { Path = "(raw target)", RawTarget = target }).Note("target", ref what);
            }
        }

        private ProxyCase Note(string surface, ref string what)
        {
            what = $"{surface}: {what}";
            return this;
        }

        private static bool Same(byte[] bytes, string value) => bytes.AsSpan().SequenceEqual(Encoding.ASCII.GetBytes(value));

        private static string Latin(byte[] bytes) => Encoding.Latin1.GetString(bytes);

        public byte[] Head()
        {
            var head = new List<byte>();
            void Add(string text) => head.AddRange(Encoding.ASCII.GetBytes(text));
            void Line(string name, byte[]? raw, string value)
            {
                Add(name + ": ");
                head.AddRange(raw ?? Encoding.ASCII.GetBytes(value));
                Add("\r\n");
            }

            head.AddRange(RawMethod ?? Encoding.ASCII.GetBytes(Method));
            Add(" ");
            head.AddRange(RawTarget ?? Encoding.UTF8.GetBytes(Query.Length == 0 ? Path : Path + "?" + Query));
            Add(" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
            Line("Authorization", RawToken is null ? null : [.. "Bearer "u8, .. RawToken], "Bearer " + Token);
            Line("Workload-Identity", RawSvid, Svid);
            Line("Assurance-Id", RawGrantId, GrantId ?? string.Empty);
            Line("Content-Type", RawContentType, ContentType.Split(',')[0]);
            foreach (var extra in ExtraLines)
            {
                head.AddRange(Encoding.UTF8.GetBytes(extra + "\r\n"));
            }

            Add($"Content-Length: {Body.Length}\r\n\r\n");
            return [.. head];
        }
    }
}
