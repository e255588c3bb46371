using System.Text.Json.Nodes;

namespace AssuranceGateway.Testing;

/// <summary>
/// The gateway configuration used by functional tests, as JSON the test can edit before starting (or reloading).
/// Routes: /deploy/** (single-use approval: token + workload + request), /status (token only), /public/** (passthrough),
/// /agent/** (challenge on missing grant, session + workload + request bound).
/// </summary>
public static class TestConfig
{
    public const string Audience = "gateway";
    public const string ApiAudience = "assurance-api";

    public static JsonObject Create(string upstream, TestIssuer idp, TestIssuer workloadIssuer, string? redis = null) => new()
    {
        ["Urls"] = "http://127.0.0.1:0",
        ["ReverseProxy"] = new JsonObject
        {
            ["Routes"] = new JsonObject
            {
                ["deploy"] = Route("/deploy/{**rest}", "single-use-approval"),
                ["status"] = Route("/status", "token-only"),
                ["public"] = Route("/public/{**rest}", "passthrough"),
                ["agent"] = Route("/agent/{**rest}", "agent-approval"),
            },
            ["Clusters"] = new JsonObject
            {
                ["upstream"] = new JsonObject { ["Destinations"] = new JsonObject { ["d1"] = new JsonObject { ["Address"] = upstream } } },
            },
        },
        ["Assurance"] = new JsonObject
        {
            ["Policies"] = new JsonObject
            {
                ["single-use-approval"] = new JsonObject
                {
                    ["Bind"] = new JsonArray("token", "workload", "request"),
                    ["MinimumAal"] = 2,
                    ["MinimumApprovalAal"] = 2,
                    ["MaxUses"] = 5,
                    ["MaxTtl"] = "00:05:00",
                    ["RevokeOn"] = new JsonArray("token_mismatch", "session_mismatch", "subject_mismatch", "workload_mismatch", "origin_mismatch"),
                    ["BoundHeaders"] = new JsonArray("content-type"),
                    ["MaxBodyBytes"] = 4096,
                },
                ["token-only"] = new JsonObject { ["Bind"] = new JsonArray(), ["RequiresGrant"] = false },
                ["agent-approval"] = new JsonObject
                {
                    ["Bind"] = new JsonArray("session", "workload", "request"),
                    ["MinimumAal"] = 1,
                    ["MinimumApprovalAal"] = 2,
                    ["OnMissing"] = "challenge",
                    ["Approvals"] = 1,
                    ["BoundHeaders"] = new JsonArray("content-type"),
                },
            },
            ["Tokens"] = new JsonObject
            {
                ["Issuers"] = new JsonArray(new JsonObject
                {
                    ["Issuer"] = idp.Issuer,
                    ["Audiences"] = new JsonArray(Audience),
                    ["JwksFile"] = idp.JwksPath,
                    ["Algorithms"] = new JsonArray("ES256"),
                }),
                ["ClockSkew"] = "00:00:30",
                ["MaxLifetime"] = "01:00:00",
                ["MaxTokenBytes"] = 8192,
            },
            ["Workload"] = new JsonObject
            {
                ["Sources"] = new JsonArray("header", "claim"),
                ["TrustedProxies"] = new JsonArray(),
                ["Issuers"] = new JsonArray(new JsonObject { ["Issuer"] = workloadIssuer.Issuer, ["JwksFile"] = workloadIssuer.JwksPath }),
                ["Audience"] = Audience,
                ["Claim"] = "azp",
            },
            ["Store"] = new JsonObject { ["Redis"] = redis ?? string.Empty, ["KeyPrefix"] = $"t{Guid.NewGuid():N}:", ["Timeout"] = "00:00:00.250" },
            ["Api"] = new JsonObject { ["Url"] = "http://127.0.0.1:0", ["Audience"] = ApiAudience },
        },
    };

    public static JsonObject Route(string path, string? policy, string cluster = "upstream")
    {
        var route = new JsonObject { ["ClusterId"] = cluster, ["Match"] = new JsonObject { ["Path"] = path } };
        if (policy is not null)
        {
            route["Metadata"] = new JsonObject { ["AssurancePolicy"] = policy };
        }

        return route;
    }
}
