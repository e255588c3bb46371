using System.Text;
using System.Text.Json.Nodes;
using AssuranceGateway.Configuration;
using AssuranceGateway.Testing;
using Microsoft.Extensions.Configuration;

namespace AssuranceGateway.UnitTests.Configuration;

/// <summary>
/// Values that a lenient reader would accept silently although they are malformed, and that would leave the
/// gateway enforcing less than the file says (or crashing later).
/// </summary>
public sealed class ConfigStrictnessTests : IDisposable
{
    private const string DeployPath = "Assurance:Policies:single-use-approval";

    private readonly string _directory = Path.Combine(Path.GetTempPath(), "agw-unit", Guid.NewGuid().ToString("N"));
    private readonly TestIssuer _idp;
    private readonly TestIssuer _workload;

    public ConfigStrictnessTests()
    {
        _idp = new TestIssuer("https://idp.test", _directory);
        _workload = new TestIssuer("spiffe://prod.test", _directory, "w1");
    }

    public void Dispose()
    {
        _idp.Dispose();
        _workload.Dispose();
        Directory.Delete(_directory, recursive: true);
    }

    /// <summary>
    /// A typo in a YARP route key ("Metdata") is never reported: with a DefaultPolicy the protected route silently gets
    /// the default (here passthrough: no token, no grant). Typos in the Assurance section are refused; here they are not.
    /// </summary>
    [Fact]
    public void Compile_RouteMetadataKeyMisspeltWithPassthroughDefault_Refused()
    {
        var (settings, errors) = Compile(c =>
        {
            Assurance(c)["DefaultPolicy"] = "passthrough";
            var deploy = Route(c, "deploy");
            deploy["Metdata"] = deploy["Metadata"]!.DeepClone();
            deploy.Remove("Metadata");
        });

        Assert.True(settings is null, $"accepted: route 'deploy' got policy '{settings?.PolicyForRoute("deploy")?.Name}'");
        Assert.Contains(errors, e => e.StartsWith("ReverseProxy:Routes:deploy:Metdata:", StringComparison.Ordinal));
    }

    /// <summary>
    /// An AssurancePolicy value that is not a single non-empty name (an array, an empty string) is treated as "no
    /// policy": the route silently gets the DefaultPolicy instead of the policy the operator named.
    /// </summary>
    [Theory]
    [InlineData("""["single-use-approval"]""")]
    [InlineData("\"\"")]
    public void Compile_RouteAssurancePolicyNotASingleNameWithDefault_Refused(string value)
    {
        var (settings, errors) = Compile(c =>
        {
            Assurance(c)["DefaultPolicy"] = "token-only";
            Route(c, "deploy")["Metadata"]!["AssurancePolicy"] = JsonNode.Parse(value);
        });

        Assert.True(settings is null, $"accepted: route 'deploy' got policy '{settings?.PolicyForRoute("deploy")?.Name}'");
        Assert.Contains(errors, e => e.StartsWith("ReverseProxy:Routes:deploy:Metadata:AssurancePolicy", StringComparison.Ordinal));
    }

    /// <summary>RequireClaims given as a single value (not an object) is dropped: the policy requires no claim at all.</summary>
    [Theory]
    [InlineData("\"admin\"")]
    [InlineData("true")]
    public void Compile_RequireClaimsScalar_Refused(string value)
    {
        var (settings, errors) = Compile(c => Policy(c, "single-use-approval")["RequireClaims"] = JsonNode.Parse(value));

        Assert.True(settings is null, $"accepted with {settings?.Policies["single-use-approval"].RequireClaims.Count} required claims");
        Assert.Contains(errors, e => e.StartsWith($"{DeployPath}:RequireClaims", StringComparison.Ordinal));
    }

    /// <summary>
    /// An empty value ("" or {}) is read as "not set": the default is used silently. For MinimumAal that default is 0, so
    /// an empty environment override (Assurance__Policies__single-use-approval__MinimumAal=) drops the file's AAL 2.
    /// </summary>
    [Theory]
    [InlineData("MinimumAal")]
    [InlineData("MinimumApprovalAal")]
    [InlineData("Approvals")]
    public void Compile_EmptyOverrideOfAStrictSetting_Refused(string key)
    {
        var json = TestConfig.Create("http://127.0.0.1:5001", _idp, _workload);
        Policy(json, "single-use-approval")["Approvals"] = 2;
        var configuration = new ConfigurationBuilder()
            .AddJsonStream(new MemoryStream(Encoding.UTF8.GetBytes(json.ToJsonString())))
            .AddInMemoryCollection(new Dictionary<string, string?> { [$"{DeployPath}:{key}"] = "" }) // as an empty env var does
            .Build();

        var settings = GatewayConfigCompiler.Compile(configuration, _directory, out var errors);

        var policy = settings?.Policies["single-use-approval"];
        Assert.True(settings is null, $"accepted: MinimumAal={policy?.MinimumAal}, MinimumApprovalAal={policy?.MinimumApprovalAal}, Approvals={policy?.Approvals}");
        Assert.Contains(errors, e => e.StartsWith($"{DeployPath}:{key}:", StringComparison.Ordinal));
    }

    /// <summary>A JSON empty object where a number is expected is read as "not set" too.</summary>
    [Fact]
    public void Compile_MinimumAalEmptyObject_Refused()
    {
        var (settings, errors) = Compile(c => Policy(c, "single-use-approval")["MinimumAal"] = new JsonObject());

        Assert.True(settings is null, $"accepted: MinimumAal={settings?.Policies["single-use-approval"].MinimumAal}");
        Assert.Contains(errors, e => e.StartsWith($"{DeployPath}:MinimumAal:", StringComparison.Ordinal));
    }

    /// <summary>
    /// A single value where a section is expected is ignored: "Store": "host:6379" gives the embedded single-instance
    /// store, "Evidence": "file" turns signed evidence off, a policy written as a string or null becomes a policy of
    /// defaults (no binding, AAL 0).
    /// </summary>
    [Theory]
    [InlineData("Assurance:Store", "\"127.0.0.1:6379\"")]
    [InlineData("Assurance:Evidence", "\"config/keys/evidence.jwk.json\"")]
    [InlineData("Assurance:Policies:single-use-approval", "\"strict\"")]
    [InlineData("Assurance:Policies:single-use-approval", "null")]
    public void Compile_SectionGivenAsSingleValue_Refused(string key, string value)
    {
        var (settings, errors) = Compile(c =>
        {
            var parts = key.Split(':');
            var parent = (JsonObject)c[parts[0]]!;
            foreach (var part in parts[1..^1])
            {
                parent = (JsonObject)parent[part]!;
            }

            parent[parts[^1]] = JsonNode.Parse(value);
        });

        Assert.True(settings is null, $"accepted: store={settings?.Store.Redis ?? "embedded"}, deploy bind={settings?.PolicyForRoute("deploy")?.Bind}");
        Assert.Contains(errors, e => e.StartsWith(key + ":", StringComparison.Ordinal));
    }

    /// <summary>
    /// Tokens:Issuers refuses an issuer configured twice; Workload:Issuers does not. The configuration compiles, and the
    /// runtime built from it throws (ArgumentException from ToFrozenDictionary): the host crashes at start with a stack
    /// trace, and a reload is neither applied nor logged.
    /// </summary>
    [Fact]
    public void Compile_WorkloadIssuerConfiguredTwice_RefusedNotThrownLater()
    {
        var (settings, errors) = Compile(c =>
        {
            var issuers = (JsonArray)Assurance(c)["Workload"]!["Issuers"]!;
            issuers.Add(issuers[0]!.DeepClone());
        });

        Exception? thrown = settings is null ? null : Record.Exception(() => new GatewayRuntime(settings, TimeProvider.System));
        Assert.True(settings is null, $"accepted; building its runtime then throws {thrown?.GetType().Name}: {thrown?.Message}");
        Assert.Contains(errors, e => e.StartsWith("Assurance:Workload:Issuers:1:Issuer:", StringComparison.Ordinal));
    }

    private (GatewaySettings? Settings, IReadOnlyList<string> Errors) Compile(Action<JsonObject>? edit = null)
    {
        var config = TestConfig.Create("http://127.0.0.1:5001", _idp, _workload);
        edit?.Invoke(config);
        var configuration = new ConfigurationBuilder()
            .AddJsonStream(new MemoryStream(Encoding.UTF8.GetBytes(config.ToJsonString())))
            .Build();
        var settings = GatewayConfigCompiler.Compile(configuration, _directory, out var errors);
        return (settings, errors);
    }

    private static JsonObject Assurance(JsonObject c) => (JsonObject)c["Assurance"]!;

    private static JsonObject Policy(JsonObject c, string name) => (JsonObject)Assurance(c)["Policies"]![name]!;

    private static JsonObject Route(JsonObject c, string id) => (JsonObject)c["ReverseProxy"]!["Routes"]![id]!;
}
