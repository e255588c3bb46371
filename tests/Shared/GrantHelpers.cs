using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace AssuranceGateway.Testing;

/// <summary>Issuing grants through the real API, and the credentials callers present.</summary>
public static class GrantHelpers
{
    public const string AllScopes = "assurance:grant assurance:read assurance:revoke assurance:approve";
    public const string Deployer = "spiffe://prod.test/ns/ci/sa/deployer";
    public const string OtherWorkload = "spiffe://prod.test/ns/dev/sa/intruder";
    public const string ReleaseBody = """{"release":"5.2","env":"prod"}""";

    /// <summary>A token for the assurance API (audience assurance-api) with the given scopes.</summary>
    public static string ApiToken(this TestIssuer idp, string subject = "approver", string scope = AllScopes, string? acr = "urn:aal2") =>
        idp.Token(subject, TestConfig.ApiAudience, acr, edit: c => c["scope"] = scope);

    /// <summary>A JWT-SVID for the Workload-Identity header.</summary>
    public static string Svid(this TestIssuer workloadIssuer, string spiffeId = Deployer, string audience = TestConfig.Audience, Action<JsonObject>? edit = null)
    {
        var now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var claims = new JsonObject { ["iss"] = workloadIssuer.Issuer, ["sub"] = spiffeId, ["aud"] = audience, ["iat"] = now, ["exp"] = now + 300 };
        edit?.Invoke(claims);
        return workloadIssuer.Sign(workloadIssuer.Header("JWT"), claims.ToJsonString());
    }

    public static string TokenHash(string token) => Requests.Hashes.TokenHash(token);

    /// <summary>The grant body for the deploy route: the given token, workload and the release request.</summary>
    public static JsonObject DeployGrant(string token, string workload = Deployer, string body = ReleaseBody, int maxUses = 1, string path = "/deploy/v1/releases") => new()
    {
        ["route"] = "deploy",
        ["subject"] = "alice",
        ["tokenHash"] = TokenHash(token),
        ["workload"] = workload,
        ["request"] = new JsonObject
        {
            ["method"] = "POST",
            ["path"] = path,
            ["query"] = string.Empty,
            ["headers"] = new JsonObject { ["content-type"] = "application/json" },
            ["body"] = Convert.ToBase64String(Encoding.UTF8.GetBytes(body)),
        },
        ["maxUses"] = maxUses,
        ["ttlSeconds"] = 300,
        ["reason"] = "CHG-1234 release 5.2",
    };

    public static async Task<HttpResponseMessage> PostGrantAsync(this GatewayHarness gateway, JsonNode body, string? apiToken = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/assurance/v1/grants")
        {
            Content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json"),
        };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", apiToken ?? gateway.Idp.ApiToken());
        return await gateway.Api.SendAsync(request);
    }

    /// <summary>Creates a grant and returns its id (asserting 201).</summary>
    public static async Task<string> CreateGrantAsync(this GatewayHarness gateway, JsonNode body, string? apiToken = null)
    {
        using var response = await gateway.PostGrantAsync(body, apiToken);
        var text = await response.Content.ReadAsStringAsync();
        if (response.StatusCode != HttpStatusCode.Created)
        {
            throw new InvalidOperationException($"grant not created: {(int)response.StatusCode} {text}");
        }

        using var json = JsonDocument.Parse(text);
        return json.RootElement.GetProperty("id").GetString()!;
    }

    public static async Task<JsonElement> GetGrantAsync(this GatewayHarness gateway, string id)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, $"/assurance/v1/grants/{id}");
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", gateway.Idp.ApiToken());
        using var response = await gateway.Api.SendAsync(request);
        response.EnsureSuccessStatusCode();
        return (await response.Content.ReadFromJsonAsync<JsonElement>()).Clone();
    }

    /// <summary>The deploy request as a client sends it: token, workload JWT, grant id and exact body.</summary>
    public static HttpRequestMessage DeployRequest(string token, string? svid, string? grantId, out string traceId, string body = ReleaseBody,
        string contentType = "application/json", string path = "/deploy/v1/releases")
    {
        var request = GatewayHarness.Request(HttpMethod.Post, path, token, out traceId);
        request.Content = new ByteArrayContent(Encoding.UTF8.GetBytes(body));
        request.Content.Headers.TryAddWithoutValidation("Content-Type", contentType);
        if (svid is not null)
        {
            request.Headers.TryAddWithoutValidation("Workload-Identity", svid);
        }

        if (grantId is not null)
        {
            request.Headers.TryAddWithoutValidation("Assurance-Id", grantId);
        }

        return request;
    }

    /// <summary>GET <paramref name="path"/> with <paramref name="token"/>: the status and, on a denial, the problem's detail.</summary>
    public static async Task<(HttpStatusCode Status, string? Detail)> StatusAndDetailAsync(this GatewayHarness gateway, string token, string path = "/status")
    {
        using var request = GatewayHarness.Request(HttpMethod.Get, path, token, out _);
        using var response = await gateway.Proxy.SendAsync(request);
        if (response.IsSuccessStatusCode)
        {
            return (response.StatusCode, null);
        }

        var text = await response.Content.ReadAsStringAsync();
        try
        {
            using var problem = JsonDocument.Parse(text);
            return (response.StatusCode, problem.RootElement.TryGetProperty("detail", out var d) ? d.GetString() : null);
        }
        catch (JsonException)
        {
            return (response.StatusCode, text);
        }
    }

    public static async Task<JsonElement> ProblemAsync(this HttpResponseMessage response)
    {
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        return (await response.Content.ReadFromJsonAsync<JsonElement>()).Clone();
    }

    public static async Task<string> ReasonAsync(this HttpResponseMessage response) =>
        (await response.ProblemAsync()).GetProperty("reason").GetString()!;
}
