using System.Text.Json;
using AssuranceGateway.Configuration;
using AssuranceGateway.Enforcement;
using Microsoft.AspNetCore.Http;

namespace AssuranceGateway.UnitTests.Enforcement;

/// <summary>SPEC §4.3: RFC 9457 problem documents, with the RFC 6750 / RFC 9470 challenges on 401s.</summary>
public sealed class ProblemResponsesTests
{
    private const string TraceId = "0af7651916cd43dd8448eb211c80319c";

    [Fact]
    public async Task WriteDenialAsync_TokenMissing_BearerChallengeWithoutError()
    {
        var (context, problem) = await WriteAsync(ReasonCodes.TokenMissing, "send an access token");

        // RFC 6750 §3.1: a request without credentials gets no error code.
        Assert.Equal("Bearer", context.Response.Headers.WWWAuthenticate.ToString());
        Assert.Equal(401, context.Response.StatusCode);
        Assert.Equal("token_missing", problem.GetProperty("reason").GetString());
    }

    [Fact]
    public async Task WriteDenialAsync_TokenInvalid_InvalidTokenChallengeAndProblem()
    {
        var (context, problem) = await WriteAsync(ReasonCodes.TokenInvalid, "token expired");

        Assert.Equal("Bearer error=\"invalid_token\"", context.Response.Headers.WWWAuthenticate.ToString());
        Assert.Equal(401, context.Response.StatusCode);
        Assert.Equal("application/problem+json", context.Response.ContentType);
        Assert.Equal("no-store", context.Response.Headers.CacheControl.ToString());
        Assert.Equal("urn:assurance-gateway:token_invalid", problem.GetProperty("type").GetString());
        Assert.Equal("Access token invalid", problem.GetProperty("title").GetString());
        Assert.Equal(401, problem.GetProperty("status").GetInt32());
        Assert.Equal("token expired", problem.GetProperty("detail").GetString());
        Assert.Equal("token_invalid", problem.GetProperty("reason").GetString());
        Assert.Equal(TraceId, problem.GetProperty("traceId").GetString());
    }

    [Fact]
    public async Task WriteDenialAsync_InsufficientAal_Rfc9470ChallengeWithAcrValues()
    {
        var (context, problem) = await WriteAsync(ReasonCodes.InsufficientAal, "authentication level 1 is below the required 2",
            d => d.AcceptableAcr = ["urn:aal2", "urn:aal3"]);

        Assert.Equal(
            "Bearer error=\"insufficient_user_authentication\", error_description=\"A stronger authentication is required\", acr_values=\"urn:aal2 urn:aal3\"",
            context.Response.Headers.WWWAuthenticate.ToString());
        Assert.Equal(401, problem.GetProperty("status").GetInt32());
    }

    [Fact]
    public async Task WriteDenialAsync_NoDetail_DetailMemberOmitted()
    {
        var (_, problem) = await WriteAsync(ReasonCodes.GrantNotFound, detail: null);

        Assert.False(problem.TryGetProperty("detail", out _));
        Assert.Equal(403, problem.GetProperty("status").GetInt32());
    }

    [Fact]
    public async Task WriteDenialAsync_DetailWithQuotesAndAngles_ValidJsonSameText()
    {
        var (_, problem) = await WriteAsync(ReasonCodes.TokenInvalid, "algorithm '\"<x>' not allowed");

        Assert.Equal("algorithm '\"<x>' not allowed", problem.GetProperty("detail").GetString());
    }

    [Fact]
    public async Task WriteDenialAsync_StoreUnavailable_503RetryAfterNoChallenge()
    {
        var (context, _) = await WriteAsync(ReasonCodes.StoreUnavailable, "the grant store is unreachable");

        Assert.Equal(503, context.Response.StatusCode);
        Assert.Equal("1", context.Response.Headers.RetryAfter.ToString());
        Assert.False(context.Response.Headers.ContainsKey("WWW-Authenticate"));
    }

    [Fact]
    public async Task WriteDenialAsync_ContentLengthMatchesBody()
    {
        var (context, _) = await WriteAsync(ReasonCodes.TokenInvalid, "x");

        Assert.Equal(context.Response.Body.Length, context.Response.ContentLength);
    }

    private static async Task<(DefaultHttpContext Context, JsonElement Problem)> WriteAsync(
        string reason, string? detail, Action<AssuranceDecision>? edit = null)
    {
        var context = new DefaultHttpContext();
        context.Response.Body = new MemoryStream();
        var decision = new AssuranceDecision
        {
            Route = "status",
            Policy = AssurancePolicy.Passthrough with { Name = "token-only", RequiresToken = true },
            Reason = reason,
            Detail = detail,
            TraceId = TraceId,
        };
        edit?.Invoke(decision);

        await ProblemResponses.WriteDenialAsync(context, decision);

        context.Response.Body.Position = 0;
        using var document = await JsonDocument.ParseAsync(context.Response.Body);
        return (context, document.RootElement.Clone());
    }
}
