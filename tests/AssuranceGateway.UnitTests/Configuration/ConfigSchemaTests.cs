using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using AssuranceGateway.Configuration;
using AssuranceGateway.Enforcement;
using Microsoft.Extensions.Configuration;

namespace AssuranceGateway.UnitTests.Configuration;

/// <summary>
/// config/gateway.schema.json stays true: the sample configurations validate against it, and its keys are exactly the
/// keys the compiler accepts (read from the compiler's own RejectUnknownKeys lists), so adding a setting to one
/// without the other fails here.
/// </summary>
public sealed partial class ConfigSchemaTests
{
    private static readonly string Root = RepositoryRoot();
    private static readonly JsonElement Schema = JsonDocument.Parse(File.ReadAllText(Path.Combine(Root, "config", "gateway.schema.json"))).RootElement;

    [Theory]
    [InlineData("config/gateway.json")]
    [InlineData("deploy/k8s/gateway.json")]
    public void SampleConfig_ValidatesAgainstSchema(string path)
    {
        var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(Root, path))).RootElement;

        var errors = new List<string>();
        Validate(Schema, config, "$", errors);

        Assert.Empty(errors);
    }

    [Theory]
    [InlineData("""{"Assurance":{"Policies":{"p":{"Binds":["token"]}}}}""", "$.Assurance.Policies.p.Binds")]
    [InlineData("""{"Assurance":{"Policies":{"p":{"Bind":["tokens"]}}}}""", "$.Assurance.Policies.p.Bind[0]")]
    [InlineData("""{"Assurance":{"Policies":{"p":{"MaxTtl":"300"}}}}""", "$.Assurance.Policies.p.MaxTtl")]
    [InlineData("""{"Assurance":{"Policies":{"p":{"MinimumAal":4}}}}""", "$.Assurance.Policies.p.MinimumAal")]
    [InlineData("""{"Assurance":{"Store":{"Timout":"00:00:01"}}}""", "$.Assurance.Store.Timout")]
    [InlineData("""{"Assurance":{"Tokens":{"Issuers":[{"Issuer":"x","JwksFile":"a","JwksUri":"http://b"}]}}}""", "$.Assurance.Tokens.Issuers[0]")]
    [InlineData("""{"Assurance":{"Policies":{"passthrough":{}}}}""", "$.Assurance.Policies")]
    public void BrokenConfig_FailsSchema(string json, string where)
    {
        var errors = new List<string>();
        Validate(Schema, JsonDocument.Parse(json).RootElement, "$", errors);

        Assert.Contains(errors, e => e.StartsWith(where, StringComparison.Ordinal));
    }

    [Fact]
    public void SchemaSections_HaveExactlyTheCompilersKeys()
    {
        var source = File.ReadAllText(Path.Combine(Root, "src", "AssuranceGateway", "Configuration", "GatewayConfigCompiler.cs"));
        var compilerLists = new List<SortedSet<string>>();
        foreach (Match call in RejectCall().Matches(source))
        {
            var text = call.Groups[1].Value;
            // A call may choose between two bracketed lists (issuers with or without Authority).
            var lists = Bracketed().Matches(text).Select(m => m.Groups[1].Value).DefaultIfEmpty(text);
            foreach (var list in lists)
            {
                // A list held in a field (the keys of YARP's own records) belongs to YARP's schema, not to this one.
                var keys = new SortedSet<string>(Quoted().Matches(list).Select(m => m.Groups[1].Value), StringComparer.Ordinal);
                if (keys.Count > 0)
                {
                    compilerLists.Add(keys);
                }
            }
        }

        var assurance = Schema.GetProperty("properties").GetProperty("Assurance");
        var sections = new Dictionary<string, JsonElement>
        {
            ["Assurance"] = assurance,
            ["Policy"] = assurance.GetProperty("properties").GetProperty("Policies").GetProperty("additionalProperties"),
            ["Tokens"] = Section(assurance, "Tokens"),
            ["Tokens.Issuer"] = Section(assurance, "Tokens").GetProperty("properties").GetProperty("Issuers").GetProperty("items"),
            ["Workload"] = Section(assurance, "Workload"),
            ["Workload.Issuer"] = Section(assurance, "Workload").GetProperty("properties").GetProperty("Issuers").GetProperty("items"),
            ["Store"] = Section(assurance, "Store"),
            ["Api"] = Section(assurance, "Api"),
            ["Evidence"] = Section(assurance, "Evidence"),
        };

        var unmatched = compilerLists.ToList();
        foreach (var (name, section) in sections)
        {
            var keys = new SortedSet<string>(section.GetProperty("properties").EnumerateObject().Select(p => p.Name), StringComparer.Ordinal);
            var match = unmatched.FirstOrDefault(l => l.SetEquals(keys));
            Assert.True(match is not null, $"schema section {name} ({string.Join(", ", keys)}) matches no compiler key list");
            unmatched.Remove(match);
        }

        Assert.True(unmatched.Count == 0, "compiler key lists missing from the schema: " + string.Join(" | ", unmatched.Select(l => string.Join(", ", l))));
    }

    /// <summary>
    /// Each enum of the schema holds exactly the names the compiler accepts: every schema value compiles with no
    /// problem on its key, a value outside the enum is refused there (so the check can fail), and the compiler's own
    /// list of names is the schema's list.
    /// </summary>
    [Theory]
    [InlineData("Bind")]
    [InlineData("Mode")]
    [InlineData("OnMissing")]
    [InlineData("RevokeOn")]
    [InlineData("Sources")]
    [InlineData("Tokens.Algorithms")]
    [InlineData("Workload.Algorithms")]
    public void SchemaEnum_IsExactlyWhatTheCompilerAccepts(string name)
    {
        var (schemaPath, key, compilerNames, comparer) = EnumCase(name);
        var schemaValues = schemaPath.Aggregate(Schema, (e, p) => e.GetProperty(p)).GetProperty("enum").EnumerateArray().Select(v => v.GetString()!).ToList();

        foreach (var value in schemaValues)
        {
            Assert.Empty(CompileErrors(key, value));
        }

        Assert.NotEmpty(CompileErrors(key, "bogus"));
        var compiler = new HashSet<string>(compilerNames, comparer);
        Assert.True(compiler.SetEquals(schemaValues), $"{name}: schema [{string.Join(", ", schemaValues)}], compiler [{string.Join(", ", compiler)}]");
    }

    private static (string[] SchemaPath, string Key, IEnumerable<string> CompilerNames, StringComparer Comparer) EnumCase(string name)
    {
        string[] policy = ["properties", "Assurance", "properties", "Policies", "additionalProperties", "properties"];
        string[] tokens = ["properties", "Assurance", "properties", "Tokens", "properties", "Issuers", "items", "properties"];
        string[] workload = ["properties", "Assurance", "properties", "Workload", "properties"];
        // Bindings and reason codes are matched in any case (the compiler lowercases), enum names ignoring case;
        // algorithms are compared ordinally, as the compiler does.
        return name switch
        {
            "Bind" => ([.. policy, "Bind", "items"], "Assurance:Policies:p:Bind:0", BindingNames.All.Select(b => b.Name), StringComparer.OrdinalIgnoreCase),
            "Mode" => ([.. policy, "Mode"], "Assurance:Policies:p:Mode", Enum.GetNames<PolicyMode>(), StringComparer.OrdinalIgnoreCase),
            "OnMissing" => ([.. policy, "OnMissing"], "Assurance:Policies:p:OnMissing", Enum.GetNames<MissingGrantAction>(), StringComparer.OrdinalIgnoreCase),
            "RevokeOn" => ([.. policy, "RevokeOn", "items"], "Assurance:Policies:p:RevokeOn:0", ReasonCodes.Mismatches, StringComparer.OrdinalIgnoreCase),
            "Sources" => ([.. workload, "Sources", "items"], "Assurance:Workload:Sources:0", Enum.GetNames<WorkloadSource>(), StringComparer.OrdinalIgnoreCase),
            "Tokens.Algorithms" => ([.. tokens, "Algorithms", "items"], "Assurance:Tokens:Issuers:0:Algorithms:0", AllowedAlgorithms(), StringComparer.Ordinal),
            "Workload.Algorithms" => (
                [.. workload, "Issuers", "items", "properties", "Algorithms", "items"], "Assurance:Workload:Issuers:0:Algorithms:0", AllowedAlgorithms(), StringComparer.Ordinal),
            _ => throw new ArgumentOutOfRangeException(nameof(name)),
        };
    }

    /// <summary>The compiler keeps its algorithm list private; it names it in the error for an algorithm it refuses.</summary>
    private static string[] AllowedAlgorithms()
    {
        var error = Assert.Single(CompileErrors("Assurance:Tokens:Issuers:0:Algorithms:0", "HS256"));
        return AllowedList().Match(error).Groups[1].Value.Split(", ");
    }

    /// <summary>
    /// Every default and range in the schema is the compiler's. A default equals what the compiler fills in when the
    /// key is absent, and a key the compiler fills in has a default in the schema. A minimum and maximum (for a
    /// duration, the "(from to to)" that ends its description) are accepted, and one step beyond each is refused.
    /// </summary>
    [Theory]
    [InlineData("Policy")]
    [InlineData("Tokens")]
    [InlineData("Tokens.Issuer")]
    [InlineData("Workload")]
    [InlineData("Workload.Issuer")]
    [InlineData("Store")]
    [InlineData("Api")]
    [InlineData("Evidence")]
    public void SchemaDefaultsAndRanges_AreTheCompilers(string name)
    {
        var (properties, prefix, read) = DefaultsCase(name);
        var (settings, errors) = Compile(null, null);
        Assert.Empty(errors);
        var compiled = read(settings!);

        foreach (var property in properties.EnumerateObject())
        {
            var key = prefix + property.Name;
            var schema = property.Value;
            if (!Baseline.Keys.Any(k => k == key || k.StartsWith(key + ":", StringComparison.Ordinal)))
            {
                var actual = compiled.GetType().GetProperty(property.Name)?.GetValue(compiled);
                if (schema.TryGetProperty("default", out var expected))
                {
                    Assert.True(SameValue(expected, actual), $"{key}: schema default {expected}, compiler default {Describe(actual)}");
                }
                else
                {
                    Assert.True(IsUnset(actual), $"{key}: the compiler defaults it to {Describe(actual)}; the schema gives no default");
                }
            }

            if (schema.TryGetProperty("minimum", out var minimum))
            {
                AssertBound(key, minimum.GetInt64().ToString(CultureInfo.InvariantCulture), (minimum.GetInt64() - 1).ToString(CultureInfo.InvariantCulture));
            }

            if (schema.TryGetProperty("maximum", out var maximum))
            {
                AssertBound(key, maximum.GetInt64().ToString(CultureInfo.InvariantCulture), (maximum.GetInt64() + 1).ToString(CultureInfo.InvariantCulture));
            }

            if (schema.TryGetProperty("pattern", out var pattern) && pattern.GetString()!.Contains(@":\d{2}:\d{2}", StringComparison.Ordinal))
            {
                var range = DurationRange().Match(schema.GetProperty("description").GetString()!);
                Assert.True(range.Success, $"{key}: a duration's description ends with its range, \"(00:00:01 to 01:00:00).\"");
                var (from, to) = (TimeSpan.Parse(range.Groups[1].Value, CultureInfo.InvariantCulture), TimeSpan.Parse(range.Groups[2].Value, CultureInfo.InvariantCulture));
                var step = TimeSpan.FromMilliseconds(1);
                AssertBound(key, from.ToString("c", CultureInfo.InvariantCulture), (from - step).ToString("c", CultureInfo.InvariantCulture));
                AssertBound(key, to.ToString("c", CultureInfo.InvariantCulture), (to + step).ToString("c", CultureInfo.InvariantCulture));
            }
        }
    }

    private static (JsonElement Properties, string Prefix, Func<GatewaySettings, object> Read) DefaultsCase(string name)
    {
        var assurance = Schema.GetProperty("properties").GetProperty("Assurance");
        JsonElement Properties(params string[] path) => path.Aggregate(assurance, (e, p) => e.GetProperty("properties").GetProperty(p)).GetProperty("properties");
        JsonElement Items(params string[] path) => path.Aggregate(assurance, (e, p) => e.GetProperty("properties").GetProperty(p)).GetProperty("items").GetProperty("properties");
        return name switch
        {
            "Policy" => (assurance.GetProperty("properties").GetProperty("Policies").GetProperty("additionalProperties").GetProperty("properties"),
                "Assurance:Policies:p:", s => s.Policies["p"]),
            "Tokens" => (Properties("Tokens"), "Assurance:Tokens:", s => s.Tokens),
            "Tokens.Issuer" => (Items("Tokens", "Issuers"), "Assurance:Tokens:Issuers:0:", s => s.Tokens.Issuers[0]),
            "Workload" => (Properties("Workload"), "Assurance:Workload:", s => s.Workload),
            "Workload.Issuer" => (Items("Workload", "Issuers"), "Assurance:Workload:Issuers:0:", s => s.Workload.Issuers[0]),
            "Store" => (Properties("Store"), "Assurance:Store:", s => s.Store),
            "Api" => (Properties("Api"), "Assurance:Api:", s => s.Api),
            "Evidence" => (Properties("Evidence"), "Assurance:Evidence:", s => s.Evidence),
            _ => throw new ArgumentOutOfRangeException(nameof(name)),
        };
    }

    /// <summary>The compiler accepts <paramref name="bound"/> for <paramref name="key"/> and refuses <paramref name="beyond"/>.</summary>
    private static void AssertBound(string key, string bound, string beyond)
    {
        Assert.True(CompileErrors(key, bound) is [], $"{key}: the schema's bound '{bound}' is refused by the compiler");
        Assert.True(CompileErrors(key, beyond) is not [], $"{key}: '{beyond}', beyond the schema's bound, is accepted by the compiler");
    }

    private static bool SameValue(JsonElement expected, object? actual) => actual switch
    {
        TimeSpan t => expected.ValueKind == JsonValueKind.String && TimeSpan.Parse(expected.GetString()!, CultureInfo.InvariantCulture) == t,
        int or long => expected.ValueKind == JsonValueKind.Number && expected.GetInt64() == Convert.ToInt64(actual, CultureInfo.InvariantCulture),
        bool b => expected.ValueKind == (b ? JsonValueKind.True : JsonValueKind.False),
        string text => expected.ValueKind == JsonValueKind.String && expected.GetString() == text,
        Bindings b => expected.ValueKind == JsonValueKind.Array
            && expected.EnumerateArray().Select(e => e.GetString()).ToHashSet().SetEquals(BindingNames.All.Where(n => b.HasFlag(n.Flag)).Select(n => n.Name)),
        Enum e => expected.ValueKind == JsonValueKind.String && string.Equals(expected.GetString(), e.ToString(), StringComparison.OrdinalIgnoreCase),
        IReadOnlyDictionary<string, int> map => expected.ValueKind == JsonValueKind.Object
            && expected.EnumerateObject().Count() == map.Count
            && expected.EnumerateObject().All(p => map.TryGetValue(p.Name, out var v) && p.Value.GetInt32() == v),
        IEnumerable<string> list => expected.ValueKind == JsonValueKind.Array && expected.EnumerateArray().Select(e => e.GetString()).ToHashSet().SetEquals(list),
        _ => false,
    };

    private static bool IsUnset(object? value) => value switch
    {
        null => true,
        string => false,
        Bindings b => b == Bindings.None,
        System.Collections.IEnumerable items => !items.GetEnumerator().MoveNext(),
        _ => false,
    };

    private static string Describe(object? value) => value switch
    {
        null => "none",
        string text => $"\"{text}\"",
        System.Collections.IEnumerable items => "[" + string.Join(", ", items.Cast<object>()) + "]",
        _ => Convert.ToString(value, CultureInfo.InvariantCulture) ?? "?",
    };

    /// <summary>
    /// Just enough configuration for every section to compile: a policy "p", one token issuer and one workload issuer
    /// (remote keys, fetched only when a token arrives), and the audience the "header" source needs.
    /// </summary>
    private static readonly Dictionary<string, string?> Baseline = new(StringComparer.Ordinal)
    {
        ["Assurance:Policies:p:RequireClaims:scope"] = "deploy",
        ["Assurance:Tokens:Issuers:0:Issuer"] = "https://idp.example",
        ["Assurance:Tokens:Issuers:0:Audiences:0"] = "gateway",
        ["Assurance:Tokens:Issuers:0:JwksUri"] = "https://idp.example/jwks.json",
        ["Assurance:Workload:Issuers:0:Issuer"] = "spiffe://prod.example",
        ["Assurance:Workload:Issuers:0:JwksUri"] = "https://spire.example/jwks.json",
        ["Assurance:Workload:Audience"] = "gateway",
        ["ReverseProxy:Routes:r:ClusterId"] = "c",
        ["ReverseProxy:Routes:r:Match:Path"] = "/{**rest}",
        ["ReverseProxy:Routes:r:Metadata:AssurancePolicy"] = "passthrough",
        ["ReverseProxy:Clusters:c:Destinations:d:Address"] = "http://127.0.0.1:5001",
    };

    /// <summary>
    /// Settings the compiler refuses where they could never apply (SPEC §7.6: replica acknowledgements without Redis; a
    /// body limit without the request binding; a challenge, which asks approval for exactly one request, without it):
    /// their bounds are checked with the setting they need present.
    /// </summary>
    private static readonly Dictionary<string, KeyValuePair<string, string>> Prerequisites = new(StringComparer.Ordinal)
    {
        ["Assurance:Store:RequireReplicaAcks"] = new("Assurance:Store:Redis", "127.0.0.1:6379"),
        ["Assurance:Policies:p:MaxBodyBytes"] = new("Assurance:Policies:p:Bind:0", "request"),
        ["Assurance:Policies:p:OnMissing"] = new("Assurance:Policies:p:Bind:0", "request"),
    };

    private static (GatewaySettings? Settings, IReadOnlyList<string> Errors) Compile(string? key, string? value)
    {
        var settings = new Dictionary<string, string?>(Baseline, StringComparer.Ordinal);
        if (key is not null)
        {
            settings[key] = value;
            if (Prerequisites.TryGetValue(key, out var prerequisite))
            {
                settings[prerequisite.Key] = prerequisite.Value;
            }
        }

        var configuration = new ConfigurationBuilder().AddInMemoryCollection(settings).Build();
        return (GatewayConfigCompiler.Compile(configuration, Root, out var errors), errors);
    }

    /// <summary>The problems the compiler reports on <paramref name="key"/> (or on its list, for a list item) when it holds <paramref name="value"/>.</summary>
    private static List<string> CompileErrors(string key, string value)
    {
        // Errors on a list name the list ("...:Bind: unknown binding"), not the item.
        var owner = ListIndex().Replace(key, string.Empty);
        return Compile(key, value).Errors.Where(e => e.StartsWith(owner + ":", StringComparison.Ordinal)).ToList();
    }

    private static JsonElement Section(JsonElement assurance, string name) => assurance.GetProperty("properties").GetProperty(name);

    [GeneratedRegex(":[0-9]+$")]
    private static partial Regex ListIndex();

    [GeneratedRegex(@"\((\S+) to (\S+)\)\.$")]
    private static partial Regex DurationRange();

    [GeneratedRegex(@"\(allowed: ([^;]+);")]
    private static partial Regex AllowedList();

    [GeneratedRegex("""RejectUnknownKeys\((.*?)\);""", RegexOptions.Singleline)]
    private static partial Regex RejectCall();

    [GeneratedRegex("""\[(.*?)\]""", RegexOptions.Singleline)]
    private static partial Regex Bracketed();

    [GeneratedRegex("\"([A-Za-z]+)\"")]
    private static partial Regex Quoted();

    /// <summary>The subset of JSON Schema 2020-12 this schema uses.</summary>
    private static void Validate(JsonElement schema, JsonElement value, string path, List<string> errors)
    {
        if (schema.ValueKind == JsonValueKind.False)
        {
            errors.Add($"{path}: not allowed");
            return;
        }

        if (schema.ValueKind != JsonValueKind.Object)
        {
            return;
        }

        if (schema.TryGetProperty("type", out var type) && !TypeMatches(type, value))
        {
            errors.Add($"{path}: expected {type}");
            return;
        }

        if (schema.TryGetProperty("enum", out var allowed) && !allowed.EnumerateArray().Any(a => a.ToString() == value.ToString() && a.ValueKind == value.ValueKind))
        {
            errors.Add($"{path}: '{value}' not in {allowed}");
        }

        if (value.ValueKind == JsonValueKind.String && schema.TryGetProperty("pattern", out var pattern) && !Regex.IsMatch(value.GetString()!, pattern.GetString()!))
        {
            errors.Add($"{path}: '{value}' does not match {pattern}");
        }

        if (value.ValueKind == JsonValueKind.String && schema.TryGetProperty("minLength", out var minLength) && value.GetString()!.Length < minLength.GetInt32())
        {
            errors.Add($"{path}: too short");
        }

        if (value.ValueKind == JsonValueKind.Number)
        {
            if (schema.TryGetProperty("minimum", out var min) && value.GetDouble() < min.GetDouble())
            {
                errors.Add($"{path}: below {min}");
            }

            if (schema.TryGetProperty("maximum", out var max) && value.GetDouble() > max.GetDouble())
            {
                errors.Add($"{path}: above {max}");
            }
        }

        if (value.ValueKind == JsonValueKind.Array)
        {
            if (schema.TryGetProperty("minItems", out var minItems) && value.GetArrayLength() < minItems.GetInt32())
            {
                errors.Add($"{path}: too few items");
            }

            if (schema.TryGetProperty("items", out var items))
            {
                var i = 0;
                foreach (var item in value.EnumerateArray())
                {
                    Validate(items, item, $"{path}[{i++}]", errors);
                }
            }
        }

        if (value.ValueKind == JsonValueKind.Object)
        {
            schema.TryGetProperty("properties", out var properties);
            foreach (var property in value.EnumerateObject())
            {
                if (schema.TryGetProperty("propertyNames", out var names) && names.TryGetProperty("not", out var not) && not.TryGetProperty("enum", out var forbidden)
                    && forbidden.EnumerateArray().Any(f => f.GetString() == property.Name))
                {
                    errors.Add($"{path}: property name '{property.Name}' is reserved");
                }

                if (properties.ValueKind == JsonValueKind.Object && properties.TryGetProperty(property.Name, out var propertySchema))
                {
                    Validate(propertySchema, property.Value, $"{path}.{property.Name}", errors);
                }
                else if (schema.TryGetProperty("additionalProperties", out var additional))
                {
                    Validate(additional, property.Value, $"{path}.{property.Name}", errors);
                }
            }

            if (schema.TryGetProperty("required", out var required))
            {
                foreach (var name in required.EnumerateArray().Select(r => r.GetString()!).Where(n => !value.TryGetProperty(n, out _)))
                {
                    errors.Add($"{path}: '{name}' is required");
                }
            }
        }

        if (schema.TryGetProperty("oneOf", out var oneOf))
        {
            var passing = oneOf.EnumerateArray().Count(s =>
            {
                var inner = new List<string>();
                Validate(s, value, path, inner);
                return inner.Count == 0;
            });
            if (passing != 1)
            {
                errors.Add($"{path}: must match exactly one of oneOf ({passing} matched)");
            }
        }
    }

    private static bool TypeMatches(JsonElement type, JsonElement value)
    {
        if (type.ValueKind == JsonValueKind.Array)
        {
            return type.EnumerateArray().Any(t => TypeMatches(t, value));
        }

        return type.GetString() switch
        {
            "object" => value.ValueKind == JsonValueKind.Object,
            "array" => value.ValueKind == JsonValueKind.Array,
            "string" => value.ValueKind == JsonValueKind.String,
            "integer" => value.ValueKind == JsonValueKind.Number && value.TryGetInt64(out _),
            "number" => value.ValueKind == JsonValueKind.Number,
            "boolean" => value.ValueKind is JsonValueKind.True or JsonValueKind.False,
            "null" => value.ValueKind == JsonValueKind.Null,
            _ => false,
        };
    }

    internal static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Gateway.sln")))
            {
                return dir.FullName;
            }
        }

        throw new DirectoryNotFoundException("Gateway.sln not found");
    }
}
