using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json;
using AssuranceGateway.Testing;
using static AssuranceGateway.Testing.GrantHelpers;

namespace AssuranceGateway.FunctionalTests.Cli;

/// <summary>agw as an issuer or a CI pipeline uses it: the same hash as the gateway, grants created and used, exit codes.</summary>
public sealed partial class AgwCliTests : IAsyncLifetime
{
    private GatewayHarness _gateway = null!;

    public async Task InitializeAsync() => _gateway = await GatewayHarness.StartAsync();

    public async Task DisposeAsync() => await _gateway.DisposeAsync();

    private static Task<(int Code, string Out, string Err)> AgwAsync(params string[] args) => AgwAsync(new Dictionary<string, string>(), args);

    private static async Task<(int Code, string Out, string Err)> AgwAsync(Dictionary<string, string> environment, params string[] args)
    {
        var start = new ProcessStartInfo(GatewayProcess.DotnetHost()) { RedirectStandardOutput = true, RedirectStandardError = true };
        start.ArgumentList.Add(GatewayProcess.CliDll());
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }

        start.Environment.Remove("AGW_TOKEN");
        start.Environment.Remove("AGW_API");
        foreach (var (name, value) in environment)
        {
            start.Environment[name] = value;
        }
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await process.WaitForExitAsync(timeout.Token);
        return (process.ExitCode, (await output).Trim(), (await error).Trim());
    }

    [Fact]
    public async Task Hash_EqualsTheHashTheGatewayComputesForTheSameRequest()
    {
        var bodyFile = Path.Combine(_gateway.Directory, "release.json");
        await File.WriteAllTextAsync(bodyFile, ReleaseBody);
        var id = await _gateway.CreateGrantAsync(DeployGrant(_gateway.Idp.Token()));
        var expected = (await _gateway.GetGrantAsync(id)).GetProperty("requestHash").GetString();

        var (code, output, _) = await AgwAsync("hash", "--method", "POST", "--path", "/deploy/v1/releases",
            "--header", "Content-Type: application/json", "--body", bodyFile);

        Assert.Equal(0, code);
        Assert.Equal(expected, output);
    }

    [Theory]
    [InlineData("application/json\v")]
    [InlineData("\fapplication/json")]
    public async Task Hash_HeaderValueWithWhitespaceBeyondSpaceAndTab_KeptLikeTheGatewayKeepsIt(string value)
    {
        // The gateway hashes \v or \f around a value as sent (the upstream receives them): so must agw.
        var expected = Requests.CanonicalRequest.Compute(
            "POST", "/deploy/v1/releases", string.Empty, ["content-type"], _ => new Microsoft.Extensions.Primitives.StringValues(value), []).Hash;

        var (code, output, _) = await AgwAsync("hash", "--method", "POST", "--path", "/deploy/v1/releases", "--header", "Content-Type: " + value);

        Assert.Equal(0, code);
        Assert.Equal(expected, output);
    }

    [Theory]
    [InlineData(" : value")]
    [InlineData(":value")]
    public async Task Hash_HeaderWithoutAName_ExitsTwo(string header)
    {
        var (code, _, error) = await AgwAsync("hash", "--method", "GET", "--path", "/", "--header", header);

        Assert.Equal(2, code);
        Assert.Contains("expected 'name: value'", error, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("--query", "b=2&b=1", "repeats 'b' out of canonical order")]
    [InlineData("--header", "x-flag:  ", "'x-flag' is empty")]
    [InlineData("--query", "??dry_run=true", "starts with a second '?'")]
    public async Task Hash_ForARequestTheGatewayRefuses_ExitsTwoSayingWhy(string option, string value, string expected)
    {
        // The gateway refuses a repeated query name out of canonical order and a bound header sent empty (the hash
        // cannot bind either): a hash for such a request could never be used.
        var (code, output, error) = await AgwAsync("hash", "--method", "GET", "--path", "/", option, value);

        Assert.Equal(2, code);
        Assert.Empty(output);
        Assert.Contains(expected, error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task GrantShow_ApiNeverAnswers_ExitsTwoWithOneLine()
    {
        // Something accepts the connection and never answers: HttpClient's timeout, cut short here by AGW_HTTP_TIMEOUT.
        using var silent = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        silent.Start();
        var address = $"http://127.0.0.1:{((IPEndPoint)silent.LocalEndpoint).Port}/";

        var (code, _, error) = await AgwAsync(
            new Dictionary<string, string> { ["AGW_HTTP_TIMEOUT"] = "1" },
            "grant", "show", "--api", address, "--as", _gateway.Idp.ApiToken(scope: "assurance:read"), "some-grant");

        Assert.Equal(2, code);
        Assert.Contains(address, error, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task GrantRevoke_AnswerWithAControlInItsReasonPhrase_PrintedEscaped()
    {
        // A wrong --api (another service on that port) answers 200 with no body: agw printed the status line's reason
        // phrase as it came, and HTTP reads its bytes as Latin-1, so 0x9B reached the terminal as U+009B (a CSI).
        using var other = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        other.Start();
        var address = $"http://127.0.0.1:{((IPEndPoint)other.LocalEndpoint).Port}/";
        var answering = Task.Run(async () =>
        {
            using var client = await other.AcceptTcpClientAsync();
            var stream = client.GetStream();
            var buffer = new byte[8192];
            var read = 0;
            while (!System.Text.Encoding.ASCII.GetString(buffer, 0, read).Contains("\r\n\r\n", StringComparison.Ordinal))
            {
                var n = await stream.ReadAsync(buffer.AsMemory(read));
                if (n == 0)
                {
                    return;
                }

                read += n;
            }

            await stream.WriteAsync((byte[])[.. "HTTP/1.1 200 OK"u8, 0x9B, .. "2J\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"u8]);
        });

        var (code, output, _) = await AgwAsync("grant", "revoke", "--api", address, "--as", _gateway.Idp.ApiToken(), "some-grant");
        await answering;

        Assert.Equal(0, code);
        Assert.DoesNotContain('\u009B', output);
        Assert.Contains("\\u009B2J", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task GrantCreate_PrintsAnIdThatTheGatewayAccepts_ThenShowAndRevoke()
    {
        var token = _gateway.Idp.Token();
        var bodyFile = Path.Combine(_gateway.Directory, "release.json");
        await File.WriteAllTextAsync(bodyFile, ReleaseBody);
        var approver = _gateway.Idp.ApiToken();

        var created = await AgwAsync("grant", "create", "--api", _gateway.ApiAddress, "--as", approver, "-q", "--route", "deploy", "--subject", "alice",
            "--token", token, "--workload", Deployer, "--method", "POST", "--path", "/deploy/v1/releases",
            "--header", "content-type: application/json", "--body", bodyFile, "--reason", "CHG-1");
        Assert.Equal(0, created.Code);
        var id = created.Out;
        using var used = await _gateway.Proxy.SendAsync(DeployRequest(token, _gateway.WorkloadIssuer.Svid(), id, out _));
        var shown = await AgwAsync("grant", "show", "--api", _gateway.ApiAddress, "--as", approver, id);
        var revoked = await AgwAsync("grant", "revoke", "--api", _gateway.ApiAddress, "--as", approver, id);

        Assert.Equal(HttpStatusCode.OK, used.StatusCode);
        Assert.Equal(0, shown.Code);
        using var json = JsonDocument.Parse(shown.Out);
        Assert.Equal("consumed", json.RootElement.GetProperty("status").GetString());
        Assert.DoesNotContain(token, shown.Out, StringComparison.Ordinal);
        Assert.Equal(0, revoked.Code);
    }

    // `agw grant list --route` asks for one route's pending grants; a route the gateway lacks is an error, not "nothing".
    [Fact]
    public async Task GrantList_ByRoute_OnlyThatRoutesPendingGrants_UnknownRouteFails()
    {
        var agentToken = _gateway.Idp.Token("carol", acr: "urn:aal1", sid: "agent-session-3");
        using var call = GatewayHarness.Request(HttpMethod.Post, "/agent/tools/exec", agentToken, out _);
        call.Headers.TryAddWithoutValidation("Workload-Identity", _gateway.WorkloadIssuer.Svid());
        call.Content = new StringContent("{}");
        using var challenged = await _gateway.Proxy.SendAsync(call);
        var pending = (await challenged.ProblemAsync()).GetProperty("grantId").GetString()!;
        var reader = _gateway.Idp.ApiToken(scope: "assurance:read");

        var agent = await AgwAsync("grant", "list", "--api", _gateway.ApiAddress, "--as", reader, "--route", "agent");
        var deploy = await AgwAsync("grant", "list", "--api", _gateway.ApiAddress, "--as", reader, "--route", "deploy");
        var misspelt = await AgwAsync("grant", "list", "--api", _gateway.ApiAddress, "--as", reader, "--route", "agnet");

        Assert.Equal(0, agent.Code);
        Assert.Equal([pending], JsonDocument.Parse(agent.Out).RootElement.GetProperty("grants").EnumerateArray().Select(g => g.GetProperty("id").GetString()!));
        Assert.Equal(0, deploy.Code);
        Assert.Equal(0, JsonDocument.Parse(deploy.Out).RootElement.GetProperty("grants").GetArrayLength());
        Assert.NotEqual(0, misspelt.Code);
        Assert.Contains("unknown route 'agnet'", misspelt.Out + misspelt.Err, StringComparison.Ordinal);
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task GrantCreate_RepeatedHeader_BindsTheHashOfAgwHashAndTheRealRequestIsAllowed()
    {
        var token = _gateway.Idp.Token();
        var bodyFile = Path.Combine(_gateway.Directory, "release.json");
        await File.WriteAllTextAsync(bodyFile, ReleaseBody);
        string[] request = ["--method", "POST", "--path", "/deploy/v1/releases",
            "--header", "content-type: application/json", "--header", "Content-Type: charset=utf-8", "--body", bodyFile];

        var hashed = await AgwAsync(["hash", .. request]);
        var created = await AgwAsync(["grant", "create", "--api", _gateway.ApiAddress, "--as", _gateway.Idp.ApiToken(), "-q", "--route", "deploy",
            "--subject", "alice", "--token", token, "--workload", Deployer, .. request]);
        Assert.Equal(0, hashed.Code);
        Assert.Equal(0, created.Code);
        var bound = (await _gateway.GetGrantAsync(created.Out)).GetProperty("requestHash").GetString();
        // Two Content-Type lines on the wire (HttpClient would fold them into one): the gateway joins them with ",".
        var status = await SendDeployWithHeaderLinesAsync(token, created.Out, "Content-Type: application/json", "Content-Type: charset=utf-8");

        Assert.Equal(hashed.Out, bound);
        Assert.Equal(200, status);
    }

    [Fact]
    public async Task GrantCreate_HeaderWithoutColon_ExitsTwoAndCreatesNothing()
    {
        var (code, output, error) = await AgwAsync("grant", "create", "--api", _gateway.ApiAddress, "--as", _gateway.Idp.ApiToken(), "-q",
            "--route", "deploy", "--subject", "alice", "--token", _gateway.Idp.Token(), "--workload", Deployer,
            "--method", "POST", "--path", "/deploy/v1/releases", "--header", "content-type");

        Assert.Equal(2, code);
        Assert.Empty(output);
        Assert.Equal("--header 'content-type': expected 'name: value'", error);
    }

    /// <summary>The deploy request written by hand, so that each header line is sent as given; returns the status code.</summary>
    private async Task<int> SendDeployWithHeaderLinesAsync(string token, string grantId, params string[] headerLines)
    {
        var body = Encoding.UTF8.GetBytes(ReleaseBody);
        var head = $"POST /deploy/v1/releases HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {token}\r\n"
            + $"Workload-Identity: {_gateway.WorkloadIssuer.Svid()}\r\nAssurance-Id: {grantId}\r\n"
            + string.Concat(headerLines.Select(h => h + "\r\n"))
            + $"Content-Length: {body.Length}\r\nConnection: close\r\n";
        return (await RawHttp.SendAsync(_gateway.ProxyAddress, head, body)).Status;
    }

    [Fact]
    public async Task GrantShow_ApiUnreachable_ExitsWithTheAddressNotAStackTrace()
    {
        using var closed = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        closed.Start();
        var address = $"http://127.0.0.1:{((System.Net.IPEndPoint)closed.LocalEndpoint).Port}/";
        closed.Stop(); // nothing listens there any more

        var (code, output, error) = await AgwAsync("grant", "show", "--api", address, "--as", _gateway.Idp.ApiToken(scope: "assurance:read"), "some-grant");

        Assert.Equal(2, code);
        Assert.Empty(output);
        Assert.StartsWith("cannot reach the assurance API at " + address, error, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Token_KeyFileMissing_ExitsTwoWithOneLineNotAStackTrace()
    {
        var missing = Path.Combine(_gateway.Directory, "absent.jwk.json");

        var result = await AgwAsync("token", "--sub", "alice", "--key", missing);

        AssertUsageError(result, $"'{missing}' does not exist: run 'agw keys init' first");
    }

    [Fact]
    public async Task Hash_BodyFileMissing_ExitsTwoWithOneLineNotAStackTrace()
    {
        var missing = Path.Combine(_gateway.Directory, "absent.json");

        var result = await AgwAsync("hash", "--method", "POST", "--path", "/deploy/v1/releases", "--body", missing);

        AssertUsageError(result, $"--body '{missing}': no such file");
    }

    [Fact]
    public async Task GrantShow_ApiNotAnHttpUrl_ExitsTwoWithOneLineNotAStackTrace()
    {
        var result = await AgwAsync("grant", "show", "--api", "gateway:8081", "--as", _gateway.Idp.ApiToken(scope: "assurance:read"), "some-grant");

        AssertUsageError(result, "--api 'gateway:8081': expected an absolute http:// or https:// URL");
    }

    [Fact]
    public async Task KeysInit_Forced_ReplacedKeysGetNewKids()
    {
        // A verifier caches keys by kid and refetches the JWKS on an unknown one: a replaced key must not reuse its kid.
        var dir = Path.Combine(_gateway.Directory, "rotated");
        string Kid(string file) => JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, file))).RootElement.GetProperty("kid").GetString()!;
        Assert.Equal(0, (await AgwAsync("keys", "init", "--dir", dir)).Code);
        var before = (Kid("evidence.jwk.json"), Kid("idp.private.jwk.json"));

        Assert.Equal(0, (await AgwAsync("keys", "init", "--dir", dir, "--force")).Code);

        Assert.NotEqual(before.Item1, Kid("evidence.jwk.json"));
        Assert.NotEqual(before.Item2, Kid("idp.private.jwk.json"));
        Assert.StartsWith("evidence-", Kid("evidence.jwk.json"), StringComparison.Ordinal);
    }

    [Fact]
    public async Task KeysInit_PublicJwksDeleted_KeepsThePrivateKeyAndDerivesThePublicSetFromIt()
    {
        var dir = Path.Combine(_gateway.Directory, "keys");
        var privatePath = Path.Combine(dir, "idp.private.jwk.json");
        var publicPath = Path.Combine(dir, "idp.jwks.json");
        Assert.Equal(0, (await AgwAsync("keys", "init", "--dir", dir)).Code);
        var before = await File.ReadAllTextAsync(privatePath);
        File.Delete(publicPath);

        var (code, output, _) = await AgwAsync("keys", "init", "--dir", dir); // no --force

        Assert.Equal(0, code);
        Assert.Equal($"wrote {publicPath} from {privatePath}", output);
        Assert.Equal(before, await File.ReadAllTextAsync(privatePath));
        using var privateJwk = JsonDocument.Parse(before);
        using var publicSet = JsonDocument.Parse(await File.ReadAllTextAsync(publicPath));
        var publicJwk = Assert.Single(publicSet.RootElement.GetProperty("keys").EnumerateArray());
        foreach (var member in new[] { "kty", "crv", "kid", "x", "y" })
        {
            Assert.Equal(privateJwk.RootElement.GetProperty(member).GetString(), publicJwk.GetProperty(member).GetString());
        }

        Assert.False(publicJwk.TryGetProperty("d", out _));
    }

    [Fact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public async Task KeysInit_NewDirectory_DirectoryOwnerOnlyAndKeyFilesOwnerReadWrite()
    {
        var dir = Path.Combine(_gateway.Directory, "fresh", "keys");

        Assert.Equal(0, (await AgwAsync("keys", "init", "--dir", dir)).Code);
        Assert.Equal(0, (await AgwAsync("keys", "init", "--dir", dir, "--force")).Code); // replaced files too

        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(dir));
        var files = Directory.GetFiles(dir);
        Assert.Equal(5, files.Length); // and no temporary file left behind
        Assert.All(files, file => Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(file)));
    }

    private static void AssertUsageError((int Code, string Out, string Err) result, string expectedStart)
    {
        Assert.Equal(2, result.Code);
        Assert.Empty(result.Out);
        Assert.StartsWith(expectedStart, result.Err, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', result.Err);
        Assert.DoesNotContain("   at ", result.Err, StringComparison.Ordinal);
    }

    [Fact]
    public async Task GrantCreate_Refused_ExitsNonZeroWithTheProblem()
    {
        var (code, _, error) = await AgwAsync("grant", "create", "--api", _gateway.ApiAddress, "--as", _gateway.Idp.ApiToken(scope: "assurance:read"),
            "--route", "deploy", "--subject", "alice");

        Assert.Equal(1, code);
        Assert.Contains("insufficient_scope", error, StringComparison.Ordinal);
    }
}
