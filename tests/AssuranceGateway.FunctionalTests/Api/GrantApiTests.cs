using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using AssuranceGateway.Testing;
using static AssuranceGateway.Testing.GrantHelpers;

namespace AssuranceGateway.FunctionalTests.Api;

/// <summary>SPEC §5.1–§5.4 from the caller's side: who may issue what, and every refusal named.</summary>
public sealed class GrantApiTests : IAsyncLifetime
{
    private GatewayHarness _gateway = null!;

    public async Task InitializeAsync() => _gateway = await GatewayHarness.StartAsync();

    public async Task DisposeAsync() => await _gateway.DisposeAsync();

    [Fact]
    public async Task Create_Valid_201WithLocationAndHash()
    {
        var token = _gateway.Idp.Token();

        using var response = await _gateway.PostGrantAsync(DeployGrant(token));

        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();
        var id = body.GetProperty("id").GetString()!;
        Assert.Equal($"/assurance/v1/grants/{id}", response.Headers.Location?.OriginalString);
        Assert.Equal("active", body.GetProperty("status").GetString());
        Assert.Equal(1, body.GetProperty("usesRemaining").GetInt32());
        // The hash the API reports is the one the CLI and the proxy compute for the same request.
        var expected = Requests.CanonicalRequest.Compute("POST", "/deploy/v1/releases", string.Empty, ["content-type"],
            n => n == "content-type" ? "application/json" : default, Encoding.UTF8.GetBytes(ReleaseBody)).Hash;
        Assert.Equal(expected, body.GetProperty("requestHash").GetString());
        var grant = await _gateway.GetGrantAsync(id);
        Assert.Equal(TokenHash(token), grant.GetProperty("tokenHash").GetString());
        Assert.DoesNotContain(token, grant.GetRawText(), StringComparison.Ordinal);
        Assert.Equal("approver", grant.GetProperty("createdBy").GetString());
    }

    [Fact]
    public async Task Deny_ActiveGrantWithOnlyTheApproveScope_409AndTheGrantStaysActive()
    {
        // Deny is an approver's "no" to a pending request; revoking a live grant takes the revoke scope.
        using var created = await _gateway.PostGrantAsync(DeployGrant(_gateway.Idp.Token()));
        var id = (await created.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("id").GetString()!;
        using var request = new HttpRequestMessage(HttpMethod.Post, $"/assurance/v1/grants/{id}/deny");
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _gateway.Idp.ApiToken("mallory", scope: "assurance:approve", acr: "urn:aal1"));

        using var response = await _gateway.Api.SendAsync(request);

        Assert.Equal(HttpStatusCode.Conflict, response.StatusCode);
        Assert.Equal("conflict", await response.ReasonAsync());
        Assert.Equal("active", (await _gateway.GetGrantAsync(id)).GetProperty("status").GetString());
    }

    [Fact]
    public async Task Create_ChunkedBodyOverTheLimit_413()
    {
        // No Content-Length to check up front: the limit must hold while the body is read.
        var grant = DeployGrant(_gateway.Idp.Token());
        grant["reason"] = new string('x', 3 * 1024 * 1024);
        using var request = new HttpRequestMessage(HttpMethod.Post, "/assurance/v1/grants")
        {
            Content = new StreamContent(new MemoryStream(Encoding.UTF8.GetBytes(grant.ToJsonString()))),
        };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        request.Headers.TransferEncodingChunked = true;
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _gateway.Idp.ApiToken());

        using var response = await _gateway.Api.SendAsync(request);

        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
    }

    [Theory]
    [InlineData("subject")]
    [InlineData("workload")]
    public async Task Create_OversizedIdentifier_400NamesTheField(string field)
    {
        var grant = DeployGrant(_gateway.Idp.Token());
        grant[field] = new string('a', 100_000);

        using var response = await _gateway.PostGrantAsync(grant);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.StartsWith($"{field}: at most", (await response.ProblemAsync()).GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Create_RequestHashInsteadOfRequest_Accepted()
    {
        var grant = DeployGrant(_gateway.Idp.Token());
        grant.Remove("request");
        grant["requestHash"] = "sha256:" + new string('A', 43);

        using var response = await _gateway.PostGrantAsync(grant);

        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
    }

    [Fact]
    public async Task Create_NoToken_401()
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/assurance/v1/grants") { Content = JsonContent.Create(new { route = "deploy" }) };

        using var response = await _gateway.Api.SendAsync(request);

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("token_missing", await response.ReasonAsync());
    }

    [Fact]
    public async Task Create_ProxyAudienceToken_401()
    {
        // A token for the gateway audience must not administer grants.
        using var response = await _gateway.PostGrantAsync(DeployGrant(_gateway.Idp.Token()), apiToken: _gateway.Idp.Token("approver", edit: c => c["scope"] = AllScopes));

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("token_invalid", await response.ReasonAsync());
    }

    [Fact]
    public async Task Create_MissingScope_403()
    {
        using var response = await _gateway.PostGrantAsync(DeployGrant(_gateway.Idp.Token()), apiToken: _gateway.Idp.ApiToken(scope: "assurance:read"));

        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        Assert.Equal("insufficient_scope", await response.ReasonAsync());
    }

    [Fact]
    public async Task Create_LowApproverAal_401WithRfc9470Challenge()
    {
        using var response = await _gateway.PostGrantAsync(DeployGrant(_gateway.Idp.Token()), apiToken: _gateway.Idp.ApiToken(acr: "urn:aal1"));

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("insufficient_aal", await response.ReasonAsync());
        var challenge = response.Headers.WwwAuthenticate.ToString();
        Assert.Contains("error=\"insufficient_user_authentication\"", challenge, StringComparison.Ordinal);
        Assert.Contains("acr_values=\"urn:aal2 urn:aal3\"", challenge, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Create_SelfApproval_403()
    {
        using var response = await _gateway.PostGrantAsync(DeployGrant(_gateway.Idp.Token()), apiToken: _gateway.Idp.ApiToken(subject: "alice"));

        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        Assert.Equal("self_approval", await response.ReasonAsync());
    }

    [Theory]
    [InlineData("tokenHash", "tokenHash: required")]
    [InlineData("workload", "workload: required")]
    [InlineData("request", "request: required")]
    [InlineData("route", "route: required")]
    public async Task Create_MissingBinding_400NamingIt(string field, string detail)
    {
        var grant = DeployGrant(_gateway.Idp.Token());
        grant.Remove(field);

        using var response = await _gateway.PostGrantAsync(grant);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var problem = await response.ProblemAsync();
        Assert.Equal("invalid_request", problem.GetProperty("reason").GetString());
        Assert.StartsWith(detail, problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("maxUses", 6, "maxUses: must be from 1 to 5")]
    [InlineData("maxUses", 0, "maxUses: must be from 1 to 5")]
    [InlineData("ttlSeconds", 301, "ttlSeconds: must be from 1 to 300")]
    public async Task Create_AbovePolicyLimits_400(string field, int value, string detail)
    {
        var grant = DeployGrant(_gateway.Idp.Token());
        grant[field] = value;

        using var response = await _gateway.PostGrantAsync(grant);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.StartsWith(detail, (await response.ProblemAsync()).GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("{not json", "body: malformed JSON or wrong type")]
    [InlineData("""{"route":"deploy","maxUses":"many"}""", "maxUses: malformed JSON or wrong type")]
    [InlineData("""{"route":"deploy","bindings":"all"}""", "bindings: unknown member")]
    [InlineData("""{"route":"nope"}""", "route: unknown route 'nope'")]
    [InlineData("""{"route":"status"}""", "route: policy 'token-only' of route 'status' does not use grants")]
    // Without an offset the time would be read in the server's time zone: a window hours away from the one meant.
    [InlineData("""{"route":"deploy","notBefore":"2030-01-01T09:00:00"}""", "notBefore: a date and time with its offset (Z or +hh:mm), as ISO 8601")]
    [InlineData("""{"route":"deploy","notBefore":"2030-01-01"}""", "notBefore: a date and time with its offset (Z or +hh:mm), as ISO 8601")]
    [InlineData("""{"route":"deploy","notBefore":1893488400}""", "notBefore: a date and time with its offset (Z or +hh:mm), as ISO 8601")]
    public async Task Create_MalformedBody_400NamingTheField(string json, string detail)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/assurance/v1/grants") { Content = new StringContent(json, Encoding.UTF8, "application/json") };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _gateway.Idp.ApiToken());

        using var response = await _gateway.Api.SendAsync(request);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal(detail, (await response.ProblemAsync()).GetProperty("detail").GetString());
    }

    // The gateway refuses these targets as request_ambiguous (the proxy would forward '~', upper-case hex, escaped braces):
    // a grant for one could never be used. PathParityTests checks QueryProblem against the gateway itself.
    [Theory]
    [InlineData("q=%7E")]
    [InlineData("q=%c3%a9")]
    [InlineData("q={x}")]
    public async Task Create_QueryTheGatewayNeverForwardsAsWritten_400(string query)
    {
        var grant = DeployGrant(_gateway.Idp.Token());
        grant["request"]!["query"] = query;

        using var response = await _gateway.PostGrantAsync(grant);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.StartsWith("request.query: would not reach the upstream as written", (await response.ProblemAsync()).GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("tokenHash", "abc", "tokenHash: expected")]
    [InlineData("origin", "[\"not-an-ip\"]", "origin[0]:")]
    public async Task Create_BadBindingValue_400(string field, string value, string detail)
    {
        var grant = DeployGrant(_gateway.Idp.Token());
        grant[field] = value.StartsWith('[') ? JsonNode.Parse(value) : value;

        using var response = await _gateway.PostGrantAsync(grant);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.StartsWith(detail, (await response.ProblemAsync()).GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Create_HeaderNotBoundByPolicy_400()
    {
        var grant = DeployGrant(_gateway.Idp.Token());
        grant["request"]!["headers"]!["x-team"] = "sre";

        using var response = await _gateway.PostGrantAsync(grant);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.StartsWith("request.headers.x-team: not a bound header", (await response.ProblemAsync()).GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task GetAndRevoke_UnknownOrMalformedId_404And400()
    {
        using var get = new HttpRequestMessage(HttpMethod.Get, "/assurance/v1/grants/doesNotExist");
        get.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _gateway.Idp.ApiToken());
        using var delete = new HttpRequestMessage(HttpMethod.Delete, "/assurance/v1/grants/doesNotExist");
        delete.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _gateway.Idp.ApiToken());
        using var malformed = new HttpRequestMessage(HttpMethod.Get, "/assurance/v1/grants/" + new string('a', 65));
        malformed.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _gateway.Idp.ApiToken());

        using var getResponse = await _gateway.Api.SendAsync(get);
        using var deleteResponse = await _gateway.Api.SendAsync(delete);
        using var malformedResponse = await _gateway.Api.SendAsync(malformed);

        Assert.Equal(HttpStatusCode.NotFound, getResponse.StatusCode);
        Assert.Equal("grant_not_found", await getResponse.ReasonAsync());
        Assert.Equal(HttpStatusCode.NotFound, deleteResponse.StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, malformedResponse.StatusCode);
        Assert.Equal("invalid_request", await malformedResponse.ReasonAsync()); // not "Assurance-Id malformed": no header was sent
    }

    // RFC 9068 allows scope as a string; Okta and others send scp as an array. The array was read as its JSON text,
    // and the caller was told that the scope it had was missing.
    [Theory]
    [InlineData("scope")]
    [InlineData("scp")]
    public async Task Read_ScopeGivenAsJsonArray_Honoured(string claim)
    {
        var id = await _gateway.CreateGrantAsync(DeployGrant(_gateway.Idp.Token()));
        using var request = new HttpRequestMessage(HttpMethod.Get, $"/assurance/v1/grants/{id}");
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer",
            _gateway.Idp.Token("reader", TestConfig.ApiAudience, edit: c => c[claim] = new JsonArray("openid", "assurance:read")));

        using var response = await _gateway.Api.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    // Route "deploy" matches /deploy/{**rest}: a request to /status goes to route "status" and never presents this grant.
    [Fact]
    public async Task Create_PathThatTheRouteDoesNotMatch_400()
    {
        using var response = await _gateway.PostGrantAsync(DeployGrant(_gateway.Idp.Token(), path: "/status"));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.StartsWith("request.path: route 'deploy' matches", (await response.ProblemAsync()).GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    // A null among the origins threw in the validator: a 500 with an empty body.
    [Fact]
    public async Task Create_OriginArrayHoldingNull_400NamingTheField()
    {
        var grant = DeployGrant(_gateway.Idp.Token());
        grant["origin"] = new JsonArray((JsonNode?)null);

        using var response = await _gateway.PostGrantAsync(grant);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.StartsWith("origin[0]:", (await response.ProblemAsync()).GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    /// <summary>
    /// SPEC §5.1 lets an issuer give the request itself; its body travels as base64, a third larger than the body. A
    /// policy that accepts 3 MiB bodies gets grants for them through the API (and the approved body passes the proxy),
    /// while a body beyond what the API takes is answered with the way round: requestHash.
    /// </summary>
    [Fact]
    public async Task Create_BodyTheRoutesPolicyAccepts_GrantIssuedAndUsable_LargerOnesToldToSendTheHash()
    {
        await using var gateway = await GatewayHarness.StartAsync(configure: c =>
        {
            c["ReverseProxy"]!["Routes"]!.AsObject()["uploads"] = TestConfig.Route("/uploads/{**rest}", "upload-approval");
            c["Assurance"]!["Policies"]!.AsObject()["upload-approval"] = new JsonObject
            {
                ["Bind"] = new JsonArray("token", "request"),
                ["MaxBodyBytes"] = 3 * 1024 * 1024,
            };
        });
        var token = gateway.Idp.Token();
        var body = new byte[2 * 1024 * 1024];
        Random.Shared.NextBytes(body);
        JsonObject Grant(byte[] content) => new()
        {
            ["route"] = "uploads",
            ["tokenHash"] = TokenHash(token),
            ["request"] = new JsonObject { ["method"] = "POST", ["path"] = "/uploads/artifact", ["body"] = Convert.ToBase64String(content) },
        };

        var id = await gateway.CreateGrantAsync(Grant(body));
        using var use = GatewayHarness.Request(HttpMethod.Post, "/uploads/artifact", token, out _);
        use.Headers.TryAddWithoutValidation("Assurance-Id", id);
        use.Content = new ByteArrayContent(body);
        using var used = await gateway.Proxy.SendAsync(use);
        using var tooLarge = await gateway.PostGrantAsync(Grant(new byte[5 * 1024 * 1024]));

        Assert.Equal(HttpStatusCode.OK, used.StatusCode);
        Assert.Equal(body, Assert.Single(gateway.Upstream.Received).Body);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, tooLarge.StatusCode);
        Assert.Contains("send requestHash", (await tooLarge.ProblemAsync()).GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    // A problem's type and status agree (SPEC §4.3: 413 is body_too_large); a 405 names the method, not a missing endpoint.
    [Fact]
    public async Task Create_BodyOverTheLimit_413IsBodyTooLarge_And_WrongMethod_405IsMethodNotAllowed()
    {
        var grant = DeployGrant(_gateway.Idp.Token());
        grant["reason"] = new string('x', 3 * 1024 * 1024);
        using var tooLarge = await _gateway.PostGrantAsync(grant);
        using var put = new HttpRequestMessage(HttpMethod.Put, "/assurance/v1/grants") { Content = new StringContent("{}", Encoding.UTF8, "application/json") };
        put.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _gateway.Idp.ApiToken());
        using var wrongMethod = await _gateway.Api.SendAsync(put);

        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, tooLarge.StatusCode);
        Assert.Equal("urn:assurance-gateway:body_too_large", (await tooLarge.ProblemAsync()).GetProperty("type").GetString());
        Assert.Equal(HttpStatusCode.MethodNotAllowed, wrongMethod.StatusCode);
        var problem = await wrongMethod.ProblemAsync();
        Assert.Equal("method_not_allowed", problem.GetProperty("reason").GetString());
        Assert.Equal(405, problem.GetProperty("status").GetInt32());
        Assert.Contains("PUT", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Read_WithoutReadScope_403()
    {
        var id = await _gateway.CreateGrantAsync(DeployGrant(_gateway.Idp.Token()));
        using var get = new HttpRequestMessage(HttpMethod.Get, $"/assurance/v1/grants/{id}");
        get.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _gateway.Idp.ApiToken(scope: "assurance:grant"));

        using var response = await _gateway.Api.SendAsync(get);

        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
    }

    // Hostile input and lifetimes.

    [Fact]
    public async Task Create_BrokenChunkedFraming_400IsProblemJson()
    {
        // Every error of the API is problem+json (SPEC §5): a body Kestrel cannot de-chunk is a 400 like any other.
        var head = "POST /assurance/v1/grants HTTP/1.1\r\nHost: api\r\n"
            + $"Authorization: Bearer {_gateway.Idp.ApiToken()}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n";

        var (status, content) = await RawHttp.SendAsync(_gateway.ApiAddress, head, Encoding.ASCII.GetBytes("5\r\n{\"rou\r\nZZ\r\nxx\r\n0\r\n\r\n"));

        Assert.Equal(400, status);
        Assert.Contains("\"reason\":\"invalid_request\"", content, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Create_DuplicateMember_400NotLastOneWins()
    {
        // Ambiguous JSON: a ticketing system or approval UI that reads the first "subject" shows alice, the gateway
        // stores the last one. A security API should refuse duplicates, not pick one.
        var json = DeployGrant(_gateway.Idp.Token()).ToJsonString()
            .Replace("\"subject\":\"alice\"", "\"subject\":\"alice\",\"subject\":\"mallory\"", StringComparison.Ordinal);
        using var request = new HttpRequestMessage(HttpMethod.Post, "/assurance/v1/grants") { Content = new StringContent(json, Encoding.UTF8, "application/json") };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _gateway.Idp.ApiToken());

        using var response = await _gateway.Api.SendAsync(request);

        var stored = response.StatusCode == HttpStatusCode.Created
            ? (await _gateway.GetGrantAsync((await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("id").GetString()!)).GetProperty("subject").GetString()
            : null;
        Assert.True(response.StatusCode == HttpStatusCode.BadRequest, $"{(int)response.StatusCode}, stored subject '{stored}'");
    }

    // Another reading of the same JSON: a change ticket, a policy check or an approval UI that reads the body as written
    // (camelCase, numbers as numbers) sees no maxUses (one use) or no number at all, and the gateway issued five uses.
    // The Web defaults matched member names ignoring case and read numbers from strings.
    [Theory]
    [InlineData("MaxUses", "5", "MaxUses: unknown member")]
    [InlineData("MAXUSES", "5", "MAXUSES: unknown member")]
    [InlineData("maxUses", "\"5\"", "maxUses: malformed JSON or wrong type")]
    [InlineData("TtlSeconds", "300", "TtlSeconds: unknown member")]
    [InlineData("ttlSeconds", "\"300\"", "ttlSeconds: malformed JSON or wrong type")]
    public async Task Create_MemberSpelledOtherThanCamelCaseOrNumberAsString_400NotReadAnyway(string member, string value, string detail)
    {
        var grant = DeployGrant(_gateway.Idp.Token());
        grant.Remove("maxUses");
        grant.Remove("ttlSeconds");
        grant[member] = JsonNode.Parse(value);

        using var response = await _gateway.PostGrantAsync(grant);

        var issued = response.StatusCode == HttpStatusCode.Created
            ? $", issued with {(await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("usesRemaining").GetInt32()} uses"
            : string.Empty;
        Assert.True(response.StatusCode == HttpStatusCode.BadRequest, $"{(int)response.StatusCode}{issued}");
        Assert.Equal(detail, (await response.ProblemAsync()).GetProperty("detail").GetString());
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    // The pending list is what a second approver decides from (README: agw grant list, then agw grant approve). It named
    // the action, its subject and its expiry, but not how broad the first approver made it: twenty uses instead of one,
    // a window that opens in a week, the networks it may be used from.
    [Fact]
    public async Task ListPending_GrantAwaitingASecondApprover_ShowsItsUsesWindowAndOrigins()
    {
        await using var gateway = await GatewayHarness.StartAsync(configure: c =>
        {
            c["ReverseProxy"]!["Routes"]!.AsObject()["breakglass"] = TestConfig.Route("/breakglass/{**rest}", "two-person");
            c["Assurance"]!["Policies"]!.AsObject()["two-person"] = new JsonObject
            {
                ["Bind"] = new JsonArray("subject", "origin", "request"),
                ["Approvals"] = 2,
                ["MinimumApprovalAal"] = 2,
                ["MaxUses"] = 20,
                ["MaxTtl"] = "01:00:00",
            };
        });
        var opens = new DateTimeOffset(DateTime.UtcNow.Date.AddDays(7).AddHours(9), TimeSpan.Zero);
        var id = await gateway.CreateGrantAsync(new JsonObject
        {
            ["route"] = "breakglass",
            ["subject"] = "oncall",
            ["origin"] = new JsonArray("10.20.0.0/16"),
            ["request"] = new JsonObject { ["method"] = "POST", ["path"] = "/breakglass/db-7/shell" },
            ["maxUses"] = 20,
            ["ttlSeconds"] = 3600,
            ["notBefore"] = opens.ToString("O", System.Globalization.CultureInfo.InvariantCulture),
            ["reason"] = "INC-42",
        }, gateway.Idp.ApiToken("lead-1"));
        using var list = new HttpRequestMessage(HttpMethod.Get, "/assurance/v1/grants?status=pending");
        list.Headers.Authorization = new AuthenticationHeaderValue("Bearer", gateway.Idp.ApiToken("lead-2"));

        using var response = await gateway.Api.SendAsync(list);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var entry = Assert.Single((await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("grants").EnumerateArray());
        Assert.Equal(id, entry.GetProperty("id").GetString());
        Assert.True(entry.TryGetProperty("maxUses", out var uses), entry.GetRawText());
        Assert.Equal(20, uses.GetInt32());
        Assert.True(entry.TryGetProperty("notBefore", out var notBefore), entry.GetRawText());
        Assert.Equal(opens, notBefore.GetDateTimeOffset());
        Assert.True(entry.TryGetProperty("origin", out var origin), entry.GetRawText());
        Assert.Equal(["10.20.0.0/16"], origin.EnumerateArray().Select(o => o.GetString()!).ToArray());
    }

    // MinimumApprovalAal raised at reload while a two-person grant waits. The second approver is judged by the policy in
    // force, but the creator's approval at AAL 2 still counted: the grant became active, approvalAal 2, under a policy
    // that demands 3 of "the approver's token when the grant became active" (SPEC §3), and the break-glass shell ran.
    [Fact]
    public async Task Approve_AfterReloadRaisedMinimumApprovalAal_EarlierWeakerApprovalDoesNotActivate()
    {
        static void TwoPerson(JsonObject c, int approvalAal)
        {
            c["ReverseProxy"]!["Routes"]!.AsObject()["breakglass"] = TestConfig.Route("/breakglass/{**rest}", "two-person");
            c["Assurance"]!["Policies"]!.AsObject()["two-person"] = new JsonObject
            {
                ["Bind"] = new JsonArray("subject", "request"),
                ["Approvals"] = 2,
                ["MinimumApprovalAal"] = approvalAal,
            };
        }

        await using var gateway = await GatewayHarness.StartAsync(configure: c => TwoPerson(c, 2));
        var id = await gateway.CreateGrantAsync(new JsonObject
        {
            ["route"] = "breakglass",
            ["subject"] = "oncall",
            ["request"] = new JsonObject { ["method"] = "POST", ["path"] = "/breakglass/db-7/shell" },
        }, gateway.Idp.ApiToken("lead-1", acr: "urn:aal2"));
        var config = gateway.DefaultConfig();
        TwoPerson(config, 3);
        Assert.True(await gateway.ReloadAsync(config), string.Join(Environment.NewLine, gateway.RefusedReloads()));
        using var approve = new HttpRequestMessage(HttpMethod.Post, $"/assurance/v1/grants/{id}/approve");
        approve.Headers.Authorization = new AuthenticationHeaderValue("Bearer", gateway.Idp.ApiToken("lead-2", acr: "urn:aal3"));

        using var approved = await gateway.Api.SendAsync(approve);
        using var shell = GatewayHarness.Request(HttpMethod.Post, "/breakglass/db-7/shell", gateway.Idp.Token("oncall"), out _);
        shell.Headers.TryAddWithoutValidation("Assurance-Id", id);
        using var used = await gateway.Proxy.SendAsync(shell);

        Assert.Equal(0, gateway.Upstream.Count);
        Assert.Equal("grant_pending", await used.ReasonAsync());
        Assert.Equal(HttpStatusCode.Conflict, approved.StatusCode);
        Assert.Contains("AAL 2", (await approved.ProblemAsync()).GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Equal("pending", (await gateway.GetGrantAsync(id)).GetProperty("status").GetString());
    }

    [Fact]
    public async Task Challenge_ApprovedGrant_LivesNoLongerThanPolicyMaxTtl()
    {
        // agent-approval: MaxTtl 5 min (default), PendingTtl 15 min (default). MaxTtl is "the upper limit for grants of
        // this policy"; an approved challenge grant must not be usable longer than an API-issued one could be.
        var agentToken = _gateway.Idp.Token("alice", acr: "urn:aal1", sid: "agent-session-7");
        using var call = GatewayHarness.Request(HttpMethod.Post, "/agent/tools/exec", agentToken, out _);
        call.Content = new StringContent("{}", Encoding.UTF8);
        call.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        call.Headers.TryAddWithoutValidation("Workload-Identity", _gateway.WorkloadIssuer.Svid("spiffe://prod.test/ns/agents/sa/copilot"));
        using var challenged = await _gateway.Proxy.SendAsync(call);
        var grantId = (await challenged.ProblemAsync()).GetProperty("grantId").GetString()!;
        using var approve = new HttpRequestMessage(HttpMethod.Post, $"/assurance/v1/grants/{grantId}/approve");
        approve.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _gateway.Idp.ApiToken("bob"));
        using var approved = await _gateway.Api.SendAsync(approve);
        Assert.Equal(HttpStatusCode.OK, approved.StatusCode);
        var approvedAt = DateTimeOffset.UtcNow;

        var grant = await _gateway.GetGrantAsync(grantId);

        Assert.Equal("active", grant.GetProperty("status").GetString());
        var activeFor = grant.GetProperty("expiresAt").GetDateTimeOffset() - approvedAt;
        Assert.True(activeFor <= TimeSpan.FromMinutes(5), $"active grant usable for {activeFor} after approval; policy MaxTtl is 00:05:00");
    }
}
