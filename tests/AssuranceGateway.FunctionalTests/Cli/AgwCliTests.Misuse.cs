using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using AssuranceGateway.Testing;
using Microsoft.AspNetCore.Http;
using static AssuranceGateway.Testing.GrantHelpers;

namespace AssuranceGateway.FunctionalTests.Cli;

/// <summary>agw used the way people misuse it: pasted tokens, broken key files, paths no request has, wrong API addresses.</summary>
public sealed partial class AgwCliTests
{
    private async Task<string> ReleaseFileAsync()
    {
        var bodyFile = Path.Combine(_gateway.Directory, "release.json");
        await File.WriteAllTextAsync(bodyFile, ReleaseBody);
        return bodyFile;
    }

    // The gateway hashes the token after "Bearer " with white space trimmed. Hashed verbatim, a value copied with its
    // scheme, or read from a file with a trailing CR, bound a hash no request ever has: the first use was token_mismatch,
    // which on deploy (RevokeOn) burns the grant.
    [Theory]
    [InlineData("Bearer {0}")]
    [InlineData("{0}\r")]
    [InlineData(" {0} ")]
    public async Task GrantCreate_TokenWithSchemeOrWhiteSpace_BindsTheTokenTheGatewaySeesOrIsRefused(string format)
    {
        var token = _gateway.Idp.Token();
        var bodyFile = await ReleaseFileAsync();

        var (code, output, _) = await AgwAsync("grant", "create", "--api", _gateway.ApiAddress, "--as", _gateway.Idp.ApiToken(), "-q",
            "--route", "deploy", "--subject", "alice", "--token", string.Format(format, token), "--workload", Deployer,
            "--method", "POST", "--path", "/deploy/v1/releases", "--header", "content-type: application/json", "--body", bodyFile);

        if (code == 0)
        {
            using var used = await _gateway.Proxy.SendAsync(DeployRequest(token, _gateway.WorkloadIssuer.Svid(), output, out _));
            Assert.Equal(HttpStatusCode.OK, used.StatusCode);
        }
        else
        {
            Assert.Equal(2, code);
            Assert.Empty(output);
        }
    }

    // A private JWK file with a syntax error: IdentityModel's exception quotes the whole file, and agw printed the
    // exception, so the private key ("d") landed on stderr (CI logs).
    [Theory]
    [InlineData("token", "--sub", "alice")]
    [InlineData("svid", "--id", "spiffe://prod.example/ns/ci/sa/deployer")]
    public async Task TokenOrSvid_PrivateKeyFileMalformed_NeverPrintsTheKeyNorAStackTrace(string command, string option, string value)
    {
        var dir = Path.Combine(_gateway.Directory, "keys-" + command);
        Assert.Equal(0, (await AgwAsync("keys", "init", "--dir", dir)).Code);
        var good = await File.ReadAllTextAsync(Path.Combine(dir, "idp.private.jwk.json"));
        var d = JsonDocument.Parse(good).RootElement.GetProperty("d").GetString()!;
        var broken = Path.Combine(dir, "broken.jwk.json");
        await File.WriteAllTextAsync(broken, good.TrimEnd()[..^1]); // the closing brace lost in an edit

        var (code, output, error) = await AgwAsync(command, option, value, "--key", broken);

        Assert.DoesNotContain(d, error, StringComparison.Ordinal);
        Assert.DoesNotContain(d, output, StringComparison.Ordinal);
        Assert.Equal(2, code);
        Assert.DoesNotContain("   at ", error, StringComparison.Ordinal);
    }

    // The public JWK Set (a natural mistake: idp.jwks.json instead of idp.private.jwk.json) is a usage error, once
    // reported as "agw: unexpected error" with a stack trace.
    [Fact]
    public async Task Token_KeyFileIsThePublicJwks_ExitsTwoWithOneLine()
    {
        var dir = Path.Combine(_gateway.Directory, "keys-public");
        Assert.Equal(0, (await AgwAsync("keys", "init", "--dir", dir)).Code);

        var (code, output, error) = await AgwAsync("token", "--sub", "alice", "--key", Path.Combine(dir, "idp.jwks.json"));

        Assert.Equal(2, code);
        Assert.Empty(output);
        Assert.DoesNotContain("   at ", error, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', error);
    }

    // A --path that no request the gateway lets through can have: the path never holds '?', always starts with '/', and
    // a target not in normal form is refused (request_ambiguous). A hash or grant for it could never be used, as for the
    // query's equivalents ("??", repeated names out of order).
    [Theory]
    [InlineData("/deploy/v1/releases?dry_run=true")]
    [InlineData("deploy/v1/releases")]
    [InlineData("/deploy/v1/rel%65ases")]
    [InlineData("/deploy/v1/releases%2Fx")]
    public async Task Hash_PathNoRequestCanHave_ExitsTwo(string path)
    {
        var (code, output, _) = await AgwAsync("hash", "--method", "POST", "--path", path, "--header", "content-type: application/json");

        Assert.Equal(2, code);
        Assert.Empty(output);
    }

    [Fact]
    public async Task GrantCreate_PathWithQuery_GrantIsUsableByThatRequestOrRefused()
    {
        var token = _gateway.Idp.Token();
        var bodyFile = await ReleaseFileAsync();
        const string target = "/deploy/v1/releases?dry_run=true";

        var (code, output, _) = await AgwAsync("grant", "create", "--api", _gateway.ApiAddress, "--as", _gateway.Idp.ApiToken(), "-q",
            "--route", "deploy", "--subject", "alice", "--token", token, "--workload", Deployer,
            "--method", "POST", "--path", target, "--header", "content-type: application/json", "--body", bodyFile);

        if (code == 0)
        {
            using var used = await _gateway.Proxy.SendAsync(DeployRequest(token, _gateway.WorkloadIssuer.Svid(), output, out _, path: target));
            Assert.Equal(HttpStatusCode.OK, used.StatusCode); // is request_mismatch: the grant can never be used
        }
        else
        {
            Assert.Equal(2, code);
        }
    }

    // With -q, a 2xx answer without "id" (wrong --api: the sample upstream, another service) printed an empty line and
    // exited 0, so ID=$(agw grant create -q ...) went on with an empty id.
    [Fact]
    public async Task GrantCreate_Quiet_AnswerWithoutAnId_ExitsNonZero()
    {
        var (app, address) = await LoopbackServer.StartAsync(async context =>
        {
            context.Response.ContentType = "application/json";
            await context.Response.WriteAsync("""{"upstream":"sample","method":"POST"}""");
        });
        await using var _ = app;

        var (code, output, _) = await AgwAsync("grant", "create", "--api", address, "--as", _gateway.Idp.ApiToken(), "-q",
            "--route", "deploy", "--subject", "alice", "--token", _gateway.Idp.Token());

        Assert.Empty(output);
        Assert.NotEqual(0, code);
    }

    // With -q the id is printed as it came, for ID=$(agw grant create -q ...): an answer whose id holds an escape
    // sequence (a wrong --api) drove the terminal, or the next command that echoed "$ID". Refused, shown escaped.
    [Fact]
    public async Task GrantCreate_Quiet_IdWithHiddenCharacters_ExitsNonZeroPrintsNothing()
    {
        var (app, address) = await LoopbackServer.StartAsync(async context =>
        {
            context.Response.ContentType = "application/json";
            await context.Response.WriteAsync("""{"id":"g1\u001b]0;owned\u0007\u202E"}""");
        });
        await using var _ = app;

        var (code, output, error) = await AgwAsync("grant", "create", "--api", address, "--as", _gateway.Idp.ApiToken(), "-q",
            "--route", "deploy", "--subject", "alice", "--token", _gateway.Idp.Token());

        Assert.NotEqual(0, code);
        Assert.Empty(output);
        Assert.Contains("g1\\u001B]0;owned\\u0007\\u202E", error, StringComparison.Ordinal);
        Assert.DoesNotContain('\u001b', error);
    }

    // A 2xx answer that is not JSON (a login page of an ingress, the wrong service) or JSON null: one line, not a stack
    // trace ("agw: unexpected error: System.Text.Json.JsonReaderException ..." / NullReferenceException).
    [Theory]
    [InlineData("text/html", "<html><body>Sign in</body></html>")]
    [InlineData("application/json", "null")]
    public async Task GrantShow_AnswerNotAGrant_ExitsWithOneLineNotAStackTrace(string contentType, string body)
    {
        var (app, address) = await LoopbackServer.StartAsync(async context =>
        {
            context.Response.ContentType = contentType;
            await context.Response.WriteAsync(body);
        });
        await using var _ = app;

        var (code, _, error) = await AgwAsync("grant", "show", "--api", address, "--as", _gateway.Idp.ApiToken(), "some-grant");

        Assert.NotEqual(0, code);
        Assert.DoesNotContain("   at ", error, StringComparison.Ordinal);
        Assert.DoesNotContain("unexpected error", error, StringComparison.Ordinal);
    }

    // A parse error (bad --ttl, missing --route) is a usage error: stderr and exit 2, stdout empty. It once wrote the help
    // to stdout and exited 1 (the code of an API refusal), and ID=$(agw grant create -q ...) captured the help.
    [Theory]
    [InlineData("--ttl", "5m")]
    [InlineData("--not-before", "tomorrow")]
    public async Task GrantCreate_Quiet_UnparsableOption_NothingOnStdoutAndExitTwo(string option, string value)
    {
        var (code, output, error) = await AgwAsync("grant", "create", "--api", _gateway.ApiAddress, "--as", _gateway.Idp.ApiToken(), "-q",
            "--route", "deploy", option, value);

        Assert.Contains(option, error, StringComparison.Ordinal);
        Assert.Empty(output);
        Assert.Equal(2, code);
    }

    // --not-before without an offset was read in agw's local time zone and sent with that offset: on a laptop in
    // another zone than the change calendar the window opened hours away from the one meant.
    [Theory]
    [InlineData("2030-01-01T09:00:00")]
    [InlineData("2030-01-01")]
    public async Task GrantCreate_NotBeforeWithoutOffset_ExitsTwoNamingTheOption(string value)
    {
        var (code, output, error) = await AgwAsync("grant", "create", "--api", _gateway.ApiAddress, "--as", _gateway.Idp.ApiToken(), "-q",
            "--route", "deploy", "--subject", "alice", "--token", _gateway.Idp.Token(), "--not-before", value);

        Assert.Equal(2, code);
        Assert.Empty(output);
        Assert.Contains("--not-before", error, StringComparison.Ordinal);
        Assert.Contains("offset", error, StringComparison.Ordinal);
    }

    // agw token --ttl 0 or negative would mint a token that is already expired; the gateway answers token_invalid and
    // the README's advice ("mint again when token_invalid") would loop.
    [Theory]
    [InlineData("0")]
    [InlineData("-60")]
    public async Task Token_NonPositiveTtl_ExitsTwo(string ttl)
    {
        var dir = Path.Combine(_gateway.Directory, "keys-ttl" + ttl);
        Assert.Equal(0, (await AgwAsync("keys", "init", "--dir", dir)).Code);

        var (code, output, _) = await AgwAsync("token", "--sub", "alice", "--ttl", ttl, "--key", Path.Combine(dir, "idp.private.jwk.json"));

        Assert.Equal(2, code);
        Assert.Empty(output);
    }

    // A private JWK whose "d" (or crv, or x) was damaged in an edit: one usage line (exit 2), once "agw: unexpected
    // error" with a stack trace (exit 1) from the signing library.
    [Theory]
    [InlineData("d")]
    [InlineData("crv")]
    [InlineData("x")]
    public async Task Token_PrivateKeyFieldDamaged_ExitsTwoWithOneLine(string field)
    {
        var dir = Path.Combine(_gateway.Directory, "keys-damaged-" + field);
        Assert.Equal(0, (await AgwAsync("keys", "init", "--dir", dir)).Code);
        var key = JsonNode.Parse(await File.ReadAllTextAsync(Path.Combine(dir, "idp.private.jwk.json")))!.AsObject();
        var d = key["d"]!.GetValue<string>();
        switch (field)
        {
            case "d": key["d"] = d[..^3]; break;         // a few characters lost
            case "crv": key["crv"] = "P-999"; break;
            default: key.Remove("x"); break;
        }

        var broken = Path.Combine(dir, "damaged.jwk.json");
        await File.WriteAllTextAsync(broken, key.ToJsonString());

        var (code, output, error) = await AgwAsync("token", "--sub", "alice", "--key", broken);

        Assert.Empty(output);
        Assert.DoesNotContain("   at ", error, StringComparison.Ordinal);
        Assert.DoesNotContain("unexpected error", error, StringComparison.Ordinal);
        Assert.Equal(2, code);
    }

    // -q with a 2xx answer without a body (another service on that port): once "200 OK" on stdout and exit 0, so that
    // ID=$(agw grant create -q ...) carried on with ID="200 OK".
    [Fact]
    public async Task GrantCreate_Quiet_EmptySuccessAnswer_NothingOnStdoutAndNonZero()
    {
        var (app, address) = await LoopbackServer.StartAsync(context =>
        {
            context.Response.StatusCode = 200;
            return Task.CompletedTask;
        });
        await using var _ = app;

        var (code, output, _) = await AgwAsync("grant", "create", "--api", address, "--as", _gateway.Idp.ApiToken(), "-q",
            "--route", "deploy", "--subject", "alice", "--token", _gateway.Idp.Token());

        Assert.Empty(output);
        Assert.NotEqual(0, code);
    }

    // -q with a JSON array answer: once JsonArray["id"] threw, and agw printed "unexpected error" and a stack trace.
    [Fact]
    public async Task GrantCreate_Quiet_JsonArrayAnswer_OneLineNotAStackTrace()
    {
        var (app, address) = await LoopbackServer.StartAsync(async context =>
        {
            context.Response.ContentType = "application/json";
            await context.Response.WriteAsync("""[{"id":"x"}]""");
        });
        await using var _ = app;

        var (code, output, error) = await AgwAsync("grant", "create", "--api", address, "--as", _gateway.Idp.ApiToken(), "-q",
            "--route", "deploy", "--subject", "alice", "--token", _gateway.Idp.Token());

        Assert.Empty(output);
        Assert.NotEqual(0, code);
        Assert.DoesNotContain("   at ", error, StringComparison.Ordinal);
        Assert.DoesNotContain("unexpected error", error, StringComparison.Ordinal);
    }

    // The grant id went into the URL unescaped, and HttpClient removes dot segments: `agw grant revoke "x/../<id>"`
    // revoked <id> (exit 0) while the operator believed to act on another grant. An id that is not 1-64 characters of
    // [A-Za-z0-9_-] (SPEC §4.1) is a usage error before any call.
    [Theory]
    [InlineData("not-this-one/../{0}")]
    [InlineData("./{0}")]
    public async Task GrantRevoke_IdNotAGrantId_ExitsTwoNamingTheIdAndRevokesNothing(string format)
    {
        var id = await _gateway.CreateGrantAsync(DeployGrant(_gateway.Idp.Token()));
        var given = string.Format(format, id);

        var result = await AgwAsync("grant", "revoke", "--api", _gateway.ApiAddress, "--as", _gateway.Idp.ApiToken(), given);

        Assert.Equal("active", (await _gateway.GetGrantAsync(id)).GetProperty("status").GetString()); // was "revoked"
        AssertUsageError(result, $"grant id '{given}': expected 1 to 64 characters");
    }

    // An id read from a file with CRLF line ends, or pasted with an escape sequence, was echoed as it came: the carriage
    // return moved the cursor back and the terminal showed "': expected 1 to 64 characters…" over the id, and an escape
    // sequence reached the operator's terminal. The id is shown escaped, and a long one cut.
    [Fact]
    public async Task GrantRevoke_IdWithControlCharacters_IsShownEscapedAndRevokesNothing()
    {
        var id = await _gateway.CreateGrantAsync(DeployGrant(_gateway.Idp.Token()));

        var result = await AgwAsync("grant", "revoke", "--api", _gateway.ApiAddress, "--as", _gateway.Idp.ApiToken(), id + "\r\u001b[2J" + new string('x', 200));

        Assert.Equal("active", (await _gateway.GetGrantAsync(id)).GetProperty("status").GetString());
        AssertUsageError(result, $"grant id '{id}\\r\\u001B[2Jxxxxxxxxxx");
        Assert.DoesNotContain('\r', result.Err);
        Assert.DoesNotContain('\u001b', result.Err);
        Assert.DoesNotContain(new string('x', 100), result.Err, StringComparison.Ordinal);
    }

    // `agw grant revoke $(cat ids.txt)` with a CRLF file gives one argument per line, each ending in a carriage return:
    // the second is an argument too many, and the parser's error quoted it raw, so the carriage return and an escape
    // sequence reached the terminal as they did for an id before usage errors were escaped.
    [Fact]
    public async Task GrantRevoke_ExtraArgumentWithControlCharacters_ParseErrorShownEscapedRevokesNothing()
    {
        var id = await _gateway.CreateGrantAsync(DeployGrant(_gateway.Idp.Token()));

        var result = await AgwAsync("grant", "revoke", "--api", _gateway.ApiAddress, "--as", _gateway.Idp.ApiToken(), id, "second\r\u001b]0;owned\u0007\u001b[2J");

        Assert.Equal(2, result.Code);
        Assert.Empty(result.Out);
        Assert.Equal("active", (await _gateway.GetGrantAsync(id)).GetProperty("status").GetString());
        Assert.Contains("second\\r\\u001B]0;owned\\u0007\\u001B[2J", result.Err, StringComparison.Ordinal);
        Assert.DoesNotContain('\r', result.Err);
        Assert.DoesNotContain('\u001b', result.Err);
        Assert.DoesNotContain('\u0007', result.Err);
    }

    // The second approver of a quorum reads the grant with `agw grant show` before approving it, and its reason was
    // written by the creator. JSON escapes C0 controls, but agw printed the rest raw: a right-to-left override (U+202E)
    // or isolate (U+2066) showed the reason in another order than stored, a C1 CSI (U+009B) reached the terminal as an
    // escape sequence, and zero-width and tag characters (U+200B, U+E0041) hid text. Each is escaped, and the output is
    // still JSON with the same reason.
    [Fact]
    public async Task GrantShow_ReasonWithBidiAndInvisibleCharacters_IsShownEscaped()
    {
        const string Reason = "CHG-1 \u202Eyalp\u2066x\u2069 \u009B2J \u200Bhidden\U000E0041 end";
        var grant = DeployGrant(_gateway.Idp.Token());
        grant["reason"] = Reason;
        var id = await _gateway.CreateGrantAsync(grant);

        var (code, output, _) = await AgwAsync("grant", "show", "--api", _gateway.ApiAddress, "--as", _gateway.Idp.ApiToken(), id);

        Assert.Equal(0, code);
        foreach (var hidden in new[] { "\u202E", "\u2066", "\u2069", "\u009B", "\u200B", "\U000E0041" })
        {
            Assert.DoesNotContain(hidden, output, StringComparison.Ordinal);
        }

        Assert.Contains("\\u202Eyalp\\u2066x\\u2069 \\u009B2J \\u200Bhidden\\uDB40\\uDC41 end", output, StringComparison.Ordinal);
        Assert.Equal(Reason, JsonNode.Parse(output)!["reason"]!.GetValue<string>());
    }

    // ID=$(agw grant create -q ...) failed earlier in a script: `agw grant show "$ID"` listed pending grants' refusal
    // ("only 'pending' can be listed"), approve said unknown_route, revoke method_not_allowed, none naming the empty id.
    [Theory]
    [InlineData("show")]
    [InlineData("approve")]
    [InlineData("deny")]
    [InlineData("revoke")]
    public async Task Grant_EmptyId_ExitsTwoSayingTheIdIsEmpty(string command)
    {
        var result = await AgwAsync("grant", command, "--api", _gateway.ApiAddress, "--as", _gateway.Idp.ApiToken(), "");

        AssertUsageError(result, "grant id is empty");
    }

    // --api / AGW_API pointed at the proxy listener (the likeliest slip): its bare 404 (no problem+json) was printed as
    // "404 ", without the address asked nor that the answer is not from the assurance API. Its 404 is problem+json now
    // (no_route), which agw recognises as the proxy's.
    [Fact]
    public async Task GrantShow_ErrorAnswerNotFromTheApi_SaysWhichAddressAnsweredAndThatItIsNotTheApi()
    {
        var (code, output, error) = await AgwAsync("grant", "show", "--api", _gateway.ProxyAddress, "--as", _gateway.Idp.ApiToken(), "some-grant");

        Assert.Equal(1, code);
        Assert.Empty(output);
        Assert.StartsWith($"unexpected answer from {new Uri(_gateway.ProxyAddress)}: 404", error, StringComparison.Ordinal);
        Assert.Contains("is --api / AGW_API the assurance API?", error, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', error);
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    // Mistyped local-setup commands of the quickstart ended in "agw: unexpected error" with a stack trace (IOException:
    // the --dir is a file, or lies under one; FormatException: --urls without a scheme): one usage line naming it instead.
    [Theory]
    [InlineData("keys-dir-is-a-file")]
    [InlineData("keys-dir-under-a-file")]
    [InlineData("upstream-urls-without-scheme")]
    public async Task LocalSetupCommands_DirectoryOrUrlUnusable_ExitTwoWithOneLineNamingIt(string mistake)
    {
        var file = Path.Combine(_gateway.Directory, "a-file.json");
        await File.WriteAllTextAsync(file, "{}");
        var (args, named) = mistake switch
        {
            "keys-dir-is-a-file" => (new[] { "keys", "init", "--dir", file }, $"--dir '{file}'"),
            "keys-dir-under-a-file" => (["keys", "init", "--dir", Path.Combine(file, "keys")], $"--dir '{Path.Combine(file, "keys")}'"),
            _ => (["upstream", "--urls", "127.0.0.1:5001"], "--urls '127.0.0.1:5001'"),
        };

        var result = await AgwAsync(args);

        AssertUsageError(result, named);
        Assert.Equal("{}", await File.ReadAllTextAsync(file));
    }

    // A method no request can have (empty, with a space): agw hash printed a hash (exit 0) that no request matches.
    [Theory]
    [InlineData("")]
    [InlineData("P OST")]
    [InlineData("POST\r")]
    public async Task Hash_MethodNotAnHttpToken_ExitsTwo(string method)
    {
        var result = await AgwAsync("hash", "--method", method, "--path", "/deploy/v1/releases");

        AssertUsageError(result, $"--method '{method.Replace("\r", "\\r", StringComparison.Ordinal)}'"); // shown escaped: one printable line
    }

    // --path, --query, --header and --body describe the bound request, which is sent only with --method: without it they
    // were dropped silently, and the API answered "request: required" about an option that was given.
    [Theory]
    [InlineData("--path", "/deploy/v1/releases")]
    [InlineData("--query", "dry_run=true")]
    [InlineData("--header", "content-type: application/json")]
    [InlineData("--body", "{body}")]
    public async Task GrantCreate_RequestOptionWithoutMethod_ExitsTwoSayingMethodIsNeeded(string option, string value)
    {
        var given = value == "{body}" ? await ReleaseFileAsync() : value;

        var result = await AgwAsync("grant", "create", "--api", _gateway.ApiAddress, "--as", _gateway.Idp.ApiToken(), "-q",
            "--route", "deploy", "--subject", "alice", "--token", _gateway.Idp.Token(), "--workload", Deployer, option, given);

        AssertUsageError(result, $"{option} needs --method");
    }
}
