using System.Collections.Frozen;
using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using AssuranceGateway.Enforcement;
using AssuranceGateway.Grants;
using AssuranceGateway.Tokens;
using AssuranceGateway.Workload;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Console;
using Microsoft.Extensions.Options;
using Microsoft.IdentityModel.Tokens;
using Yarp.ReverseProxy.Configuration;
using BindingAddress = Microsoft.AspNetCore.Http.BindingAddress;

namespace AssuranceGateway.Configuration;

/// <summary>
/// Turns the configuration (SPEC §3) into one immutable <see cref="GatewaySettings"/>, or into the full list of
/// problems, one line per problem, each naming its key. Nothing half-valid is ever returned.
/// </summary>
public static class GatewayConfigCompiler
{
    public const string AssuranceSection = "Assurance";
    public const string ReverseProxySection = "ReverseProxy";
    public const string PolicyMetadataKey = "AssurancePolicy";

    private static readonly string[] SupportedAlgorithms =
        ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"];

    // YARP's transforms (https://microsoft.github.io/reverse-proxy/articles/transforms.html), by what they do to the
    // request the upstream receives. Keys compared in any case: refusing "pathset" costs nothing.
    private static readonly FrozenSet<string> TargetTransforms = new[]
    {
        "PathSet", "PathPrefix", "PathRemovePrefix", "PathPattern", "QueryValueParameter", "QueryRouteParameter", "QueryRemoveParameter",
        "HttpMethodChange",
    }.ToFrozenSet(StringComparer.OrdinalIgnoreCase);

    // The value names the one request header they set, append to or remove (ClientCert: the header it writes the
    // client certificate into).
    private static readonly FrozenSet<string> RequestHeaderTransforms =
        new[] { "RequestHeader", "RequestHeaderRouteValue", "RequestHeaderRemove", "ClientCert" }.ToFrozenSet(StringComparer.OrdinalIgnoreCase);

    private static readonly FrozenSet<string> UnchangingTransforms = new[]
    {
        "X-Forwarded", "Forwarded", "RequestHeaderOriginalHost", "ResponseHeadersCopy", "ResponseHeader", "ResponseHeaderRemove",
        "ResponseHeadersAllowed", "ResponseTrailersCopy", "ResponseTrailer", "ResponseTrailerRemove", "ResponseTrailersAllowed",
    }.ToFrozenSet(StringComparer.OrdinalIgnoreCase);

    private static readonly string[] XForwardedSuffixes = ["For", "Proto", "Host", "Prefix"];

    // Keys that qualify a transform ("Set", "When", X-Forwarded's "For"...) rather than name one.
    private static readonly FrozenSet<string> TransformModifiers = new[]
    {
        "Set", "Append", "When", "For", "Proto", "Host", "Prefix", "HeaderPrefix", "ByFormat", "ForFormat", "Action",
    }.ToFrozenSet(StringComparer.OrdinalIgnoreCase);

    // What only a grant carries or only the grant path reads (MaxBodyBytes: the body is read for the request hash only).
    private static readonly string[] GrantOnlySettings =
    [
        "MinimumApprovalAal", "MaxUses", "MaxTtl", "OnMissing", "Approvals", "PendingTtl", "MaxPendingPerSubject", "RevokeOn", "BoundHeaders",
        "MaxBodyBytes",
    ];

    /// <param name="configuration">The whole configuration (both the Assurance and the ReverseProxy sections).</param>
    /// <param name="baseDirectory">Relative key file paths are resolved against this directory.</param>
    /// <param name="errors">Every problem found; empty when settings are returned.</param>
    public static GatewaySettings? Compile(IConfiguration configuration, string baseDirectory, out IReadOnlyList<string> errors) =>
        Compile(configuration, baseDirectory, out errors, out _, out _);

    /// <summary>
    /// As <see cref="Compile(IConfiguration, string, out IReadOnlyList{string})"/>, and also gives the routes and
    /// clusters as read even when something else is invalid, so that YARP's validator can judge them in the same pass
    /// and one run names every problem.
    /// </summary>
    /// <param name="warnings">Given when compiling a change to a running gateway: what an operator does on purpose at run
    /// time (emptying a JWKS file to revoke an issuer's only key) is then a warning added here, not a refusal.</param>
    internal static GatewaySettings? Compile(
        IConfiguration configuration, string baseDirectory, out IReadOnlyList<string> errors,
        out IReadOnlyList<RouteConfig> routesRead, out IReadOnlyList<ClusterConfig> clustersRead, List<string>? warnings = null)
    {
        var list = new List<string>();
        var reader = new ConfigReader(list) { Warnings = warnings };
        var assurance = configuration.GetSection(AssuranceSection);
        reader.RejectUnknownKeys(assurance, "DefaultPolicy", "Policies", "Tokens", "Workload", "Store", "Api", "Evidence");

        var policies = ReadPolicies(reader, reader.Section(assurance, "Policies"));
        var tokens = ReadTokens(reader, reader.Section(assurance, "Tokens"), baseDirectory);
        var workload = ReadWorkload(reader, reader.Section(assurance, "Workload"), baseDirectory);
        var store = ReadStore(reader, reader.Section(assurance, "Store"));
        var api = ReadApi(reader, reader.Section(assurance, "Api"));
        var evidence = ReadEvidence(reader, reader.Section(assurance, "Evidence"), baseDirectory);
        var (routes, clusters, routePolicies) = ReadProxy(reader, configuration, assurance, policies);
        if (evidence.SigningKeyFile is not null)
        {
            CheckEvidenceForwarding(reader, routes, routePolicies);
        }

        CrossCheck(reader, assurance, routePolicies, tokens, workload, api);
        CheckListeners(reader, configuration, api);
        CheckLogging(reader, configuration.GetSection("Logging"));
        CheckTelemetryExport(reader, configuration);

        errors = list;
        routesRead = routes;
        clustersRead = clusters;
        if (list.Count > 0)
        {
            return null;
        }

        return new GatewaySettings
        {
            Policies = policies.ToFrozenDictionary(StringComparer.OrdinalIgnoreCase),
            RoutePolicies = routePolicies.ToFrozenDictionary(StringComparer.OrdinalIgnoreCase),
            Tokens = tokens,
            Workload = workload,
            Store = store,
            Api = api,
            Evidence = evidence,
            Routes = routes,
            Clusters = clusters,
            Urls = configuration["Urls"] ?? string.Empty,
            Kestrel = configuration.GetSection("Kestrel").AsEnumerable()
                .Where(e => e.Value is not null)
                .ToFrozenDictionary(e => e.Key, e => e.Value, StringComparer.OrdinalIgnoreCase),
            Logging = configuration.GetSection("Logging").AsEnumerable()
                .Where(e => e.Value is not null)
                .ToFrozenDictionary(e => e.Key, e => e.Value, StringComparer.OrdinalIgnoreCase),
        };
    }

    private static Dictionary<string, AssurancePolicy> ReadPolicies(ConfigReader reader, IConfigurationSection section)
    {
        var policies = new Dictionary<string, AssurancePolicy>(StringComparer.OrdinalIgnoreCase)
        {
            [AssurancePolicy.PassthroughName] = AssurancePolicy.Passthrough,
        };

        foreach (var child in section.GetChildren())
        {
            if (string.Equals(child.Key, AssurancePolicy.PassthroughName, StringComparison.OrdinalIgnoreCase))
            {
                reader.Error(child, "'passthrough' is built in and cannot be redefined");
                continue;
            }

            if (child.Value is null && !child.GetChildren().Any())
            {
                // {} or null: most likely a value lost on the way (a template, an override); every setting would be its
                // default. A policy that means to bind nothing says so with "Bind": [].
                reader.Error(child, "is empty: give the policy its settings (\"Bind\": [] for one that binds the route alone)");
                continue;
            }

            policies[child.Key] = ReadPolicy(reader, reader.Section(child));
        }

        return policies;
    }

    internal static AssurancePolicy ReadPolicy(ConfigReader reader, IConfigurationSection s)
    {
        reader.RejectUnknownKeys(s, "Bind", "MinimumAal", "MinimumApprovalAal", "MaxUses", "MaxTtl", "Mode", "OnMissing",
            "Approvals", "RequireClaims", "PendingTtl", "MaxPendingPerSubject", "RevokeOn", "BoundHeaders", "MaxBodyBytes", "RequiresGrant");

        var bind = Bindings.None;
        var problemsBefore = reader.Errors.Count;
        foreach (var name in reader.List(s, "Bind"))
        {
            if (!BindingNames.TryParse(name.ToLowerInvariant(), out var flag))
            {
                reader.Error(s.GetSection("Bind"), $"unknown binding '{name}' (known: subject, session, token, workload, origin, request)");
            }
            else if ((bind & flag) != 0)
            {
                reader.Error(s.GetSection("Bind"), $"binding '{name}' listed twice");
            }

            bind |= flag;
        }

        var bindRead = reader.Errors.Count == problemsBefore;

        var requiresGrant = reader.Bool(s, "RequiresGrant", true);
        if (!requiresGrant && (bind & ~Bindings.Workload) != 0)
        {
            reader.Error(s.GetSection("Bind"), "only 'workload' can be bound when RequiresGrant is false: the other bindings live on a grant");
        }

        var revokeOn = new List<string>();
        foreach (var reason in reader.List(s, "RevokeOn"))
        {
            var code = reason.ToLowerInvariant();
            if (!ReasonCodes.Mismatches.Contains(code))
            {
                reader.Error(s.GetSection("RevokeOn"), $"'{reason}' is not a mismatch reason (known: {string.Join(", ", ReasonCodes.Mismatches)})");
            }
            else if (!revokeOn.Contains(code))
            {
                revokeOn.Add(code);
            }
        }

        var headers = new List<string>();
        foreach (var header in reader.List(s, "BoundHeaders"))
        {
            var name = header.ToLowerInvariant();
            if (!Requests.CanonicalRequest.IsToken(name))
            {
                reader.Error(s.GetSection("BoundHeaders"), $"'{header}' is not a valid header name");
            }
            else if (UnbindableHeaders.TryGetValue(name, out var why))
            {
                reader.Error(s.GetSection("BoundHeaders"), $"'{header}' cannot be bound: {why}, so the upstream would not receive the value that was hashed");
            }
            else if (!headers.Contains(name))
            {
                headers.Add(name);
            }
        }

        headers.Sort(StringComparer.Ordinal);

        // Claim names may contain ':' (URL-named claims), the configuration path separator; a trailing ":<n>" is a list index.
        var claimValues = new Dictionary<string, List<string>>(StringComparer.Ordinal);
        var claimSection = reader.Section(s, "RequireClaims");
        foreach (var (path, value) in claimSection.AsEnumerable(makePathsRelative: true))
        {
            if (value is null)
            {
                continue;
            }

            var colon = path.LastIndexOf(':');
            var name = colon > 0 && int.TryParse(path.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out _) ? path[..colon] : path;
            if (value.Length == 0)
            {
                reader.Error($"{claimSection.Path}:{path}", "must be a non-empty string");
                continue;
            }

            if (!claimValues.TryGetValue(name, out var list))
            {
                claimValues[name] = list = [];
            }

            // A JSON true or false in the file reaches here as "True" or "False", which a token's boolean claim ("true")
            // must match; the configuration cannot tell it from the string "True", which a string claim must match.
            list.Add(value);
            if (value is "True" or "False")
            {
                list.Add(value.ToLowerInvariant());
            }
        }

        var claims = claimValues.ToDictionary(e => e.Key, e => e.Value.ToArray(), StringComparer.Ordinal);

        var policy = new AssurancePolicy
        {
            Name = s.Key,
            RequiresGrant = requiresGrant,
            Bind = bind,
            MinimumAal = reader.Int(s, "MinimumAal", 0, 0, 3),
            MinimumApprovalAal = reader.Int(s, "MinimumApprovalAal", 0, 0, 3),
            MaxUses = reader.Int(s, "MaxUses", 1, 1, 1_000_000),
            MaxTtl = reader.Duration(s, "MaxTtl", TimeSpan.FromMinutes(5), TimeSpan.FromSeconds(1), TimeSpan.FromDays(366)),
            Mode = reader.Enum(s, "Mode", PolicyMode.Enforce),
            OnMissing = reader.Enum(s, "OnMissing", MissingGrantAction.Deny),
            Approvals = reader.Int(s, "Approvals", 1, 1, 10),
            RequireClaims = claims.ToFrozenDictionary(StringComparer.Ordinal),
            PendingTtl = reader.Duration(s, "PendingTtl", TimeSpan.FromMinutes(15), TimeSpan.FromSeconds(1), TimeSpan.FromDays(30)),
            MaxPendingPerSubject = reader.Int(s, "MaxPendingPerSubject", 10, 1, 10_000),
            RevokeOn = revokeOn,
            BoundHeaders = headers,
            MaxBodyBytes = reader.Long(s, "MaxBodyBytes", 1024 * 1024, 0, 1024L * 1024 * 1024),
        };

        if (!requiresGrant && policy.OnMissing == MissingGrantAction.Challenge)
        {
            reader.Error(s.GetSection("OnMissing"), "'challenge' needs a grant, but RequiresGrant is false");
        }
        else if (policy.OnMissing == MissingGrantAction.Challenge && (bind & Bindings.Request) == 0 && bindRead)
        {
            // SPEC §2 step 5: a challenge asks approval for exactly this request, and the approver is shown its method and
            // path. Without the request binding the approved grant would let the subject send any request on the route.
            reader.Error(s.GetSection("OnMissing"), "'challenge' asks approval for exactly the challenged request, so Bind must include request");
        }

        // A setting that can never apply is refused, not ignored: whoever wrote MaxUses on a policy without grants
        // believes something counts the uses. Keys already refused for their value are not reported twice, nor the
        // request settings when Bind itself is broken (a misspelt "request" is the likelier mistake).
        if (!requiresGrant)
        {
            foreach (var key in GrantOnlySettings)
            {
                NeverApplies(reader, s.GetSection(key), "RequiresGrant is false, so no grant is ever checked");
            }
        }
        else if ((bind & Bindings.Request) == 0 && bindRead)
        {
            NeverApplies(reader, s.GetSection("BoundHeaders"), "only the 'request' binding hashes headers, and this policy does not bind request");
            NeverApplies(reader, s.GetSection("MaxBodyBytes"), "only the 'request' binding reads the body, and this policy does not bind request");
        }

        return policy;
    }

    private static void NeverApplies(ConfigReader reader, IConfigurationSection setting, string why)
    {
        if (setting.Exists() && !reader.Errors.Any(e => e.StartsWith(setting.Path + ":", StringComparison.Ordinal)))
        {
            reader.Error(setting, $"never applies: {why}");
        }
    }

    private static TokenSettings ReadTokens(ConfigReader reader, IConfigurationSection s, string baseDirectory)
    {
        reader.RejectUnknownKeys(s, "Issuers", "ClockSkew", "MaxLifetime", "Types", "MaxTokenBytes", "AalClaim", "SessionClaim", "AalMap");
        var issuers = new List<TokenIssuer>();
        var sections = new List<(TokenIssuer Issuer, IConfigurationSection Section)>();
        foreach (var child in s.GetSection("Issuers").GetChildren())
        {
            var issuer = ReadIssuer(reader, child, baseDirectory, requireAudiences: true, allowAuthority: true);
            if (issuer is not null)
            {
                if (issuers.Any(i => i.Issuer == issuer.Issuer))
                {
                    reader.Error(child.GetSection("Issuer"), $"issuer '{issuer.Issuer}' is configured twice");
                }

                issuers.Add(issuer);
                sections.Add((issuer, child));
            }
        }

        CheckSubjectNamespaces(reader, s, sections);

        // Keys such as "urn:aal2" contain ':', the configuration path separator: rebuild them from relative paths.
        var aalMap = new Dictionary<string, int>(StringComparer.Ordinal);
        var mapSection = reader.Section(s, "AalMap");
        foreach (var (name, value) in mapSection.AsEnumerable(makePathsRelative: true))
        {
            if (value is null)
            {
                continue;
            }

            if (!int.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out var level) || level is < 0 or > 3)
            {
                reader.Error($"{mapSection.Path}:{name}", $"'{value}' is not an AAL from 0 to 3");
                continue;
            }

            aalMap[name] = level;
        }

        if (aalMap.Count == 0)
        {
            aalMap["urn:aal1"] = 1;
            aalMap["urn:aal2"] = 2;
            aalMap["urn:aal3"] = 3;
        }

        var types = reader.List(s, "Types");
        return new TokenSettings
        {
            Issuers = issuers,
            ClockSkew = reader.Duration(s, "ClockSkew", TimeSpan.FromSeconds(30), TimeSpan.Zero, TimeSpan.FromMinutes(5)),
            MaxLifetime = reader.Duration(s, "MaxLifetime", TimeSpan.FromHours(1), TimeSpan.FromSeconds(1), TimeSpan.FromDays(1)),
            Types = types.Count > 0 ? types : ["at+jwt", "JWT"],
            MaxTokenBytes = reader.Int(s, "MaxTokenBytes", 8192, 256, 65536),
            AalClaim = reader.String(s, "AalClaim") ?? "acr",
            SessionClaim = reader.String(s, "SessionClaim") ?? "sid",
            AalMap = aalMap.ToFrozenDictionary(StringComparer.Ordinal),
        };
    }

    /// <summary>An access-token issuer's <c>SubjectPrefix</c>: printable ASCII without spaces, at most 64 characters.</summary>
    private static string SubjectPrefix(ConfigReader reader, IConfigurationSection s)
    {
        var prefix = s.GetSection("SubjectPrefix").Value;
        if (string.IsNullOrEmpty(prefix))
        {
            return string.Empty;
        }

        if (prefix.Length > 64 || prefix.Any(c => c is <= ' ' or > '~'))
        {
            reader.Error(s.GetSection("SubjectPrefix"), "must be at most 64 printable ASCII characters without spaces, such as 'partner:'");
            return string.Empty;
        }

        return prefix;
    }

    /// <summary>
    /// Subjects, sessions, approvers and claim workloads are compared as strings (SPEC: the subject is the token's
    /// <c>sub</c>), so two issuers that can both say <c>sub: alice</c> would be one alice: the other IdP's alice could use
    /// her grants, fill her pending quota, or approve as her. A lone issuer needs nothing; with more than one, each must
    /// name a prefix, and no prefix may begin another's ('corp:' and 'corp:eu:' would let 'corp:' say sub 'eu:alice'), so
    /// a name the gateway records tells its issuer. Refused rather than defaulted: a prefix changes what grants must name,
    /// which the operator who adds the second issuer has to decide and tell the grant issuers.
    /// </summary>
    private static void CheckSubjectNamespaces(ConfigReader reader, IConfigurationSection s, List<(TokenIssuer Issuer, IConfigurationSection Section)> issuers)
    {
        if (issuers.Count < 2)
        {
            return;
        }

        for (var i = 0; i < issuers.Count; i++)
        {
            var (issuer, section) = issuers[i];
            var key = section.GetSection("SubjectPrefix");
            if (issuer.SubjectPrefix.Length == 0)
            {
                // A prefix refused for its characters is already named: it is not also "required".
                if (!reader.Errors.Any(e => e.StartsWith(key.Path + ":", StringComparison.Ordinal)))
                {
                    reader.Error(key, $"required when {s.GetSection("Issuers").Path} lists more than one issuer (such as 'idp:'): "
                        + $"a subject of issuer '{issuer.Issuer}' could otherwise be taken for another issuer's");
                }

                continue;
            }

            // Each clash is named once, at the longer prefix (at the later issuer when both are the same).
            for (var j = 0; j < issuers.Count; j++)
            {
                var other = issuers[j].Issuer;
                if (j != i && other.SubjectPrefix.Length > 0 && issuer.SubjectPrefix.StartsWith(other.SubjectPrefix, StringComparison.Ordinal)
                    && (issuer.SubjectPrefix.Length > other.SubjectPrefix.Length || j < i))
                {
                    reader.Error(key, $"'{issuer.SubjectPrefix}' begins with '{other.SubjectPrefix}', the prefix of issuer '{other.Issuer}': "
                        + "a subject of one could be taken for the other's");
                }
            }
        }
    }

    private static TokenIssuer? ReadIssuer(
        ConfigReader reader, IConfigurationSection s, string baseDirectory, bool requireAudiences, bool allowAuthority)
    {
        reader.RejectUnknownKeys(s, allowAuthority
            ? ["Issuer", "Audiences", "JwksFile", "JwksUri", "Authority", "Algorithms", "SubjectPrefix"]
            : ["Issuer", "JwksFile", "JwksUri", "Algorithms"]);
        var prefix = allowAuthority ? SubjectPrefix(reader, s) : string.Empty;
        var name = reader.String(s, "Issuer");
        if (name is null)
        {
            reader.Error(s.GetSection("Issuer"), "missing");
        }

        var audiences = requireAudiences ? reader.List(s, "Audiences") : [];
        if (requireAudiences && audiences.Count == 0)
        {
            reader.Error(s.GetSection("Audiences"), "at least one audience is required");
        }

        var algorithms = reader.List(s, "Algorithms");
        if (algorithms.Count == 0)
        {
            algorithms = ["ES256", "RS256"];
        }

        foreach (var alg in algorithms)
        {
            if (!SupportedAlgorithms.Contains(alg, StringComparer.Ordinal))
            {
                reader.Error(s.GetSection("Algorithms"), $"'{alg}' is not allowed (allowed: {string.Join(", ", SupportedAlgorithms)}; 'none' and HMAC are never accepted)");
            }
        }

        var file = reader.String(s, "JwksFile");
        var uri = reader.String(s, "JwksUri");
        var authority = allowAuthority ? reader.String(s, "Authority") : null;
        var sources = (file is null ? 0 : 1) + (uri is null ? 0 : 1) + (authority is null ? 0 : 1);
        if (sources != 1)
        {
            reader.Error(s.Path, allowAuthority
                ? "exactly one of JwksFile, JwksUri or Authority is required"
                : "exactly one of JwksFile or JwksUri is required");
            return null;
        }

        IIssuerKeySource? keys = null;
        string location;
        if (file is not null)
        {
            var full = ResolvePath(reader, s.GetSection("JwksFile"), file, baseDirectory);
            location = full ?? file;
            var set = full is null ? null : LoadJwks(reader, s.GetSection("JwksFile"), full);
            if (set is not null)
            {
                var issuerKeys = IssuerKeys.From(set);
                // At start a mistake; at run time the way to revoke an issuer's only (compromised) key: applied, and
                // every token of the issuer is then refused.
                if (issuerKeys.Count == 0)
                {
                    reader.ErrorAtStart(s.GetSection("JwksFile"), $"'{file}' holds no signing key: every token of this issuer is refused");
                }
                else if (!algorithms.Any(a => issuerKeys.Usable.Any(k => IssuerKeys.Fits(k, a))))
                {
                    reader.ErrorAtStart(s.GetSection("JwksFile"), $"no key in '{file}' fits the algorithms {string.Join(", ", algorithms)}: every token of this issuer is refused");
                }

                keys = new StaticKeySource(issuerKeys);
            }
        }
        else if (uri is not null)
        {
            location = uri;
            if (!IsHttpUrl(uri))
            {
                reader.Error(s.GetSection("JwksUri"), $"'{uri}' is not an absolute http(s) URL");
            }
            else if (!IsHttpsOrLoopback(uri))
            {
                reader.Error(s.GetSection("JwksUri"), PlainHttpKeySource(uri));
            }
            else
            {
                keys = RemoteKeySource.ForJwksUri(uri);
            }
        }
        else
        {
            location = authority!;
            if (!IsHttpUrl(authority!))
            {
                reader.Error(s.GetSection("Authority"), $"'{authority}' is not an absolute http(s) URL");
            }
            else if (!IsHttpsOrLoopback(authority!))
            {
                reader.Error(s.GetSection("Authority"), PlainHttpKeySource(authority!));
            }
            else
            {
                keys = RemoteKeySource.ForAuthority(authority!, name ?? authority!);
            }
        }

        if (name is null || keys is null)
        {
            return null;
        }

        return new TokenIssuer
        {
            Issuer = name,
            Audiences = audiences,
            Algorithms = algorithms.ToFrozenSet(StringComparer.Ordinal),
            Keys = keys,
            KeyLocation = location,
            SubjectPrefix = prefix,
        };
    }

    /// <summary>
    /// The full path of the file named at <paramref name="key"/>, or null after a problem naming the key. Path.GetFullPath
    /// throws on a NUL character: escaping the compiler, that would crash the start (or the reload) instead.
    /// </summary>
    private static string? ResolvePath(ConfigReader reader, IConfigurationSection key, string file, string baseDirectory)
    {
        try
        {
            return Path.GetFullPath(file, baseDirectory);
        }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
        {
            reader.Error(key, $"'{file}' is not a valid file path: {e.Message}");
            return null;
        }
    }

    private static JsonWebKeySet? LoadJwks(ConfigReader reader, IConfigurationSection key, string path)
    {
        string json;
        try
        {
            json = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException or ArgumentException)
        {
            reader.Error(key, $"cannot read '{path}': {e.Message}");
            return null;
        }

        try
        {
            var set = new JsonWebKeySet(json);
            if (set.Keys.Any(k => k.HasPrivateKey))
            {
                reader.Error(key, $"'{path}' contains a private key: publish only public keys to the gateway");
                return null;
            }

            return set;
        }
        catch (Exception e) when (e is ArgumentException or System.Text.Json.JsonException)
        {
            reader.Error(key, $"'{path}' is not a JWK Set: {e.Message}");
            return null;
        }
    }

    private static WorkloadSettings ReadWorkload(ConfigReader reader, IConfigurationSection s, string baseDirectory)
    {
        reader.RejectUnknownKeys(s, "Sources", "TrustedProxies", "Issuers", "Audience", "Claim", "ClientCaFile");
        var sources = new List<WorkloadSource>();
        foreach (var name in reader.List(s, "Sources"))
        {
            if (!ConfigReader.TryParseName<WorkloadSource>(name, out var source))
            {
                reader.Error(s.GetSection("Sources"), $"unknown workload source '{name}' (known: mtls, xfcc, header, claim)");
            }
            else if (sources.Contains(source))
            {
                reader.Error(s.GetSection("Sources"), $"source '{name}' listed twice");
            }
            else
            {
                sources.Add(source);
            }
        }

        var proxies = new List<IPNetwork>();
        foreach (var cidr in reader.List(s, "TrustedProxies"))
        {
            // A trusted proxy may set X-Forwarded-For and X-Forwarded-Client-Cert: a typo here trusts the wrong machine.
            if (GrantRules.TryParseNetwork(cidr, out var network, out var problem))
            {
                proxies.Add(network);
            }
            else
            {
                reader.Error(s.GetSection("TrustedProxies"), problem);
            }
        }

        var issuers = new List<TokenIssuer>();
        foreach (var child in s.GetSection("Issuers").GetChildren())
        {
            if (ReadIssuer(reader, child, baseDirectory, requireAudiences: false, allowAuthority: false) is { } issuer)
            {
                if (issuers.Any(i => i.Issuer == issuer.Issuer))
                {
                    reader.Error(child.GetSection("Issuer"), $"issuer '{issuer.Issuer}' is configured twice");
                }

                issuers.Add(issuer);
            }
        }

        var audience = reader.String(s, "Audience");
        if (sources.Contains(WorkloadSource.Header))
        {
            // An issuer refused above is already named: it is not also "missing".
            if (issuers.Count == 0 && !reader.Errors.Any(e => e.StartsWith(s.GetSection("Issuers").Path + ":", StringComparison.Ordinal)))
            {
                reader.Error(s.GetSection("Issuers"), "the 'header' source needs at least one workload issuer");
            }

            if (audience is null)
            {
                reader.Error(s.GetSection("Audience"), "the 'header' source needs the audience that workload JWTs must carry");
            }
        }

        var ca = reader.String(s, "ClientCaFile");
        string? caPath = null;
        if (ca is not null && ResolvePath(reader, s.GetSection("ClientCaFile"), ca, baseDirectory) is { } resolved)
        {
            caPath = resolved;
            try
            {
                var bundle = new System.Security.Cryptography.X509Certificates.X509Certificate2Collection();
                bundle.ImportFromPemFile(caPath);
                if (bundle.Count == 0)
                {
                    reader.Error(s.GetSection("ClientCaFile"), $"'{caPath}' holds no PEM certificate");
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Security.Cryptography.CryptographicException)
            {
                reader.Error(s.GetSection("ClientCaFile"), $"cannot read a PEM certificate bundle from '{caPath}': {e.Message}");
            }
        }

        return new WorkloadSettings
        {
            Sources = sources,
            TrustedProxies = proxies,
            Issuers = issuers,
            Audience = audience,
            Claim = reader.String(s, "Claim") ?? "azp",
            ClientCaFile = caPath,
        };
    }

    private static StoreSettings ReadStore(ConfigReader reader, IConfigurationSection s)
    {
        reader.RejectUnknownKeys(s, "Redis", "KeyPrefix", "Timeout", "EvidenceRetention", "RequireReplicaAcks");
        var redis = reader.String(s, "Redis");
        if (redis is not null)
        {
            try
            {
                StackExchange.Redis.ConfigurationOptions.Parse(redis);
            }
            catch (ArgumentException e)
            {
                // The value is not echoed: a connection string holds the Redis password, and this line goes to stderr
                // and to the "change refused" log. The parser's message names the keyword at fault.
                reader.Error(s.GetSection("Redis"), $"not a Redis connection string: {e.Message}");
            }
        }

        var prefix = reader.String(s, "KeyPrefix") ?? "agw:";
        if (prefix.AsSpan().IndexOfAny('{', '}') >= 0)
        {
            reader.Error(s.GetSection("KeyPrefix"), "must not contain '{' or '}': the gateway hash-tags keys itself");
        }

        // SPEC §7.6: a use counts only once N replicas acknowledged it. The embedded store has no replica: accepting the
        // setting there would promise a durability that nothing provides.
        var acks = reader.Int(s, "RequireReplicaAcks", 0, 0, 16);
        if (acks > 0 && redis is null)
        {
            reader.Error(s.GetSection("RequireReplicaAcks"), $"needs Redis replicas, but {s.GetSection("Redis").Path} is empty (the embedded store has none)");
        }

        return new StoreSettings
        {
            Redis = redis,
            KeyPrefix = prefix,
            Timeout = reader.Duration(s, "Timeout", TimeSpan.FromMilliseconds(250), TimeSpan.FromMilliseconds(1), TimeSpan.FromSeconds(30)),
            EvidenceRetention = reader.Duration(s, "EvidenceRetention", TimeSpan.FromDays(7), TimeSpan.Zero, TimeSpan.FromDays(3660)),
            RequireReplicaAcks = acks,
        };
    }

    private static ApiSettings ReadApi(ConfigReader reader, IConfigurationSection s)
    {
        reader.RejectUnknownKeys(s, "Url", "Audience");
        var url = reader.String(s, "Url") ?? "http://127.0.0.1:8081";
        if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || uri.Scheme != Uri.UriSchemeHttp)
        {
            // The API host serves plain HTTP on loopback or behind a TLS-terminating proxy; it has no certificate to serve
            // https with, and Kestrel would fail at start.
            reader.Error(s.GetSection("Url"), IsHttpUrl(url)
                ? $"'{url}': the assurance API listens on plain http (terminate TLS in front of it)"
                : $"'{url}' is not an absolute http URL");
        }
        else if (ParseListener(url) is { PathBase.Length: > 0 } withPath)
        {
            reader.Error(s.GetSection("Url"), $"'{url}' has a path ('{withPath.PathBase}'): a listener is scheme://host:port only");
        }

        return new ApiSettings { Url = url, Audience = reader.String(s, "Audience") ?? "assurance-api" };
    }

    private static EvidenceSettings ReadEvidence(ConfigReader reader, IConfigurationSection s, string baseDirectory)
    {
        reader.RejectUnknownKeys(s, "SigningKeyFile", "PublishedKeyFiles", "Lifetime");
        var file = reader.String(s, "SigningKeyFile");
        JsonWebKey? key = null;
        string? path = null;
        if (file is not null && (path = ResolvePath(reader, s.GetSection("SigningKeyFile"), file, baseDirectory)) is not null)
        {
            try
            {
                key = new JsonWebKey(File.ReadAllText(path));
                if (!key.HasPrivateKey || key.Kty != JsonWebAlgorithmsKeyTypes.EllipticCurve || key.Crv != "P-256")
                {
                    reader.Error(s.GetSection("SigningKeyFile"), $"'{path}' must hold a private EC P-256 JWK (ES256)");
                    key = null;
                }
                else if (EcJwk.ProveKeyPair(key) is { } problem)
                {
                    reader.Error(s.GetSection("SigningKeyFile"), $"'{path}' does not hold a usable EC P-256 key pair: {problem}");
                    key = null;
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or System.Text.Json.JsonException)
            {
                reader.Error(s.GetSection("SigningKeyFile"), $"cannot read a JWK from '{path}': {e.Message}");
            }
        }

        var (publishedFiles, publishedKeys) = ReadPublishedKeys(reader, s, baseDirectory, key, path);
        return new EvidenceSettings
        {
            SigningKeyFile = file,
            SigningKey = key,
            PublishedKeyFiles = publishedFiles,
            PublishedKeys = publishedKeys,
            Lifetime = reader.Duration(s, "Lifetime", TimeSpan.FromSeconds(60), TimeSpan.FromSeconds(1), TimeSpan.FromHours(1)),
        };
    }

    /// <summary>
    /// <c>PublishedKeyFiles</c>: keys served in the JWKS beside the signing key and never used to sign. Replicas take a
    /// changed key file at different moments, so a rotation first publishes the next key on every replica and only then
    /// signs with it: an upstream that re-fetches the JWKS on an unknown kid may be answered by any replica. A kid names
    /// one key among all of them (a verifier picks by kid); the same key listed again, the signing key included, is fine.
    /// </summary>
    private static (List<string> Files, List<JsonWebKey> Keys) ReadPublishedKeys(
        ConfigReader reader, IConfigurationSection s, string baseDirectory, JsonWebKey? signingKey, string? signingPath)
    {
        var files = new List<string>();
        var keys = new List<JsonWebKey>();
        var named = new Dictionary<string, (string Where, string Point)>(StringComparer.Ordinal);
        if (signingKey is { Kid.Length: > 0 })
        {
            named[signingKey.Kid] = ($"Assurance:Evidence:SigningKeyFile '{signingPath}'", AssuranceGateway.Evidence.EvidenceKeyHistory.PublicPoint(signingKey));
        }

        foreach (var (entry, file) in reader.Entries(s, "PublishedKeyFiles"))
        {
            files.Add(file);
            if (ResolvePath(reader, entry, file, baseDirectory) is not { } path || ReadPublicKey(reader, entry, path) is not { } key)
            {
                continue;
            }

            var point = AssuranceGateway.Evidence.EvidenceKeyHistory.PublicPoint(key);
            if (named.TryGetValue(key.Kid, out var first))
            {
                if (!string.Equals(first.Point, point, StringComparison.Ordinal))
                {
                    reader.Error(entry, $"'{path}' holds another key under kid '{key.Kid}' than {first.Where}: a kid names one key");
                    continue;
                }
            }
            else
            {
                named[key.Kid] = ($"{entry.Path} '{path}'", point);
            }

            keys.Add(key);
        }

        if (files.Count > 0 && signingKey is { Kid: null or "" })
        {
            // Evidence without a kid leaves a verifier holding several keys to guess (or to try each, which many do not).
            reader.Error(s.GetSection("SigningKeyFile"),
                $"'{signingPath}' holds a key without a kid, and PublishedKeyFiles publishes others beside it: upstreams pick the verification key by kid");
        }

        return (files, keys);
    }

    /// <summary>
    /// An EC P-256 JWK with a kid, public or private; only its public part is returned, so a private file (the next
    /// signing key, mounted ahead of its use) leaves no <c>d</c> in the settings the JWKS is served from.
    /// </summary>
    private static JsonWebKey? ReadPublicKey(ConfigReader reader, IConfigurationSection entry, string path)
    {
        JsonWebKey key;
        try
        {
            key = new JsonWebKey(File.ReadAllText(path));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or System.Text.Json.JsonException)
        {
            reader.Error(entry, $"cannot read a JWK from '{path}': {e.Message}");
            return null;
        }

        if (key.Kty != JsonWebAlgorithmsKeyTypes.EllipticCurve || key.Crv != "P-256")
        {
            reader.Error(entry, $"'{path}' must hold an EC P-256 JWK (ES256)");
            return null;
        }

        if (string.IsNullOrEmpty(key.Kid))
        {
            reader.Error(entry, $"'{path}' holds a key without a kid: upstreams pick the verification key by kid");
            return null;
        }

        // A private file is checked as a pair: it is meant to become SigningKeyFile, and should fail now, not then.
        if ((key.HasPrivateKey ? EcJwk.ProveKeyPair(key) : EcJwk.ProvePublicKey(key)) is { } problem)
        {
            reader.Error(entry, $"'{path}' does not hold a usable EC P-256 {(key.HasPrivateKey ? "key pair" : "public key")}: {problem}");
            return null;
        }

        return new JsonWebKey { Kty = key.Kty, Crv = key.Crv, X = key.X, Y = key.Y, Kid = key.Kid };
    }

    // The settings YARP reads for a route, its match, a cluster and a destination: the properties of its config records,
    // which is what its configuration binder fills (keys are case-insensitive).
    private static readonly string[] RouteKeys = PropertyNames(typeof(RouteConfig));
    private static readonly string[] MatchKeys = PropertyNames(typeof(RouteMatch));
    private static readonly string[] ClusterKeys = PropertyNames(typeof(ClusterConfig));
    private static readonly string[] DestinationKeys = PropertyNames(typeof(DestinationConfig));

    private static string[] PropertyNames(Type type) =>
        [.. type.GetProperties(System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.Instance).Where(p => p.CanWrite).Select(p => p.Name)];

    private static (List<RouteConfig>, List<ClusterConfig>, Dictionary<string, AssurancePolicy>) ReadProxy(
        ConfigReader reader, IConfiguration configuration, IConfigurationSection assurance, Dictionary<string, AssurancePolicy> policies)
    {
        var proxy = configuration.GetSection(ReverseProxySection);
        var defaultName = reader.String(assurance, "DefaultPolicy");
        AssurancePolicy? defaultPolicy = null;
        if (defaultName is not null && !policies.TryGetValue(defaultName, out defaultPolicy))
        {
            reader.Error(assurance.GetSection("DefaultPolicy"), $"unknown policy '{defaultName}'");
        }

        var routes = new List<RouteConfig>();
        var routePolicies = new Dictionary<string, AssurancePolicy>(StringComparer.OrdinalIgnoreCase);
        var routeSections = proxy.GetSection("Routes").GetChildren().ToList();
        if (routeSections.Count == 0)
        {
            // A gateway that forwards nothing is a wrong or truncated file far more often than an intent, and applied as a
            // change it would turn every protected API into a 404 (and stay the "last good" configuration).
            reader.Error($"{ReverseProxySection}:Routes", "no routes: the gateway would forward nothing (is this the gateway's file?)");
        }

        foreach (var child in routeSections)
        {
            RouteConfig route;
            try
            {
                route = (child.Get<RouteConfig>() ?? new RouteConfig()) with { RouteId = child.Key };
            }
            catch (InvalidOperationException e)
            {
                reader.Error(child, $"cannot be read as a YARP route: {e.Message}");
                continue;
            }

            routes.Add(route);
            // YARP's binder skips keys it does not know: a misspelt "Metdata" would leave the route without its policy,
            // and with a DefaultPolicy such as passthrough it would be forwarded unprotected.
            var match = child.GetSection("Match");
            reader.RejectUnknownKeys(child, RouteKeys);
            reader.RejectUnknownKeys(match, MatchKeys);
            var metadataKey = $"{child.Path}:Metadata:{PolicyMetadataKey}";
            // Read from the section, not the bound dictionary: keys there are case-sensitive ("assurancePolicy" would be
            // missed), and a value that is not one string (an array, an empty string) would be dropped without a word.
            var entry = child.GetSection("Metadata").GetChildren()
                .FirstOrDefault(c => string.Equals(c.Key, PolicyMetadataKey, StringComparison.OrdinalIgnoreCase));
            var name = entry?.Value?.Trim();
            if (entry is not null && string.IsNullOrEmpty(name))
            {
                reader.Error(metadataKey, "must name one policy (a non-empty string)");
                continue;
            }

            if (name is null)
            {
                if (defaultPolicy is not null)
                {
                    routePolicies[child.Key] = defaultPolicy;
                }
                else if (defaultName is null)
                {
                    reader.Error(metadataKey, "missing, and Assurance:DefaultPolicy is not set (name \"passthrough\" to forward without enforcement)");
                }
            }
            else if (policies.TryGetValue(name, out var policy))
            {
                routePolicies[child.Key] = policy;
            }
            else
            {
                reader.Error(metadataKey, $"unknown policy '{name}'");
            }
        }

        var clusters = new List<ClusterConfig>();
        foreach (var child in proxy.GetSection("Clusters").GetChildren())
        {
            reader.RejectUnknownKeys(child, ClusterKeys);
            foreach (var destination in child.GetSection("Destinations").GetChildren())
            {
                reader.RejectUnknownKeys(destination, DestinationKeys);
                var address = destination["Address"];
                if (address is null || !IsHttpUrl(address))
                {
                    // YARP accepts any string here and fails each request with 502 (UriFormatException) instead.
                    reader.Error(destination.GetSection("Address"), address is null ? "missing" : $"'{address}' is not an absolute http(s) URL");
                }
            }

            try
            {
                clusters.Add((child.Get<ClusterConfig>() ?? new ClusterConfig()) with { ClusterId = child.Key });
            }
            catch (InvalidOperationException e)
            {
                reader.Error(child, $"cannot be read as a YARP cluster: {e.Message}");
            }
        }

        var clusterIds = proxy.GetSection("Clusters").GetChildren().Select(c => c.Key).ToHashSet(StringComparer.OrdinalIgnoreCase);
        foreach (var route in routes)
        {
            if (routePolicies.TryGetValue(route.RouteId, out var policy) && (policy.Bind & Bindings.Request) != 0)
            {
                CheckTransforms(reader, route, policy);
            }

            // Against the cluster sections, not the clusters read: one that could not be read is reported once, above,
            // not again for every route that uses it.
            if (route.ClusterId is not null && !clusterIds.Contains(route.ClusterId))
            {
                reader.Error($"{ReverseProxySection}:Routes:{route.RouteId}:ClusterId", $"unknown cluster '{route.ClusterId}'");
            }
        }

        return (routes, clusters, routePolicies);
    }

    /// <summary>
    /// The request hash (SPEC §4.2) is checked before YARP applies a route's transforms, so on a route whose policy
    /// binds request a transform that rewrites the method, path, query or a bound header would forward another request
    /// than the one approved (SPEC §7.4). Only transforms known to leave all of these alone are accepted there; an
    /// unknown key (a custom transform, a typo) may do anything and is refused too.
    /// </summary>
    private static void CheckTransforms(ConfigReader reader, RouteConfig route, AssurancePolicy policy)
    {
        for (var i = 0; i < (route.Transforms?.Count ?? 0); i++)
        {
            if (JudgeTransform(route.Transforms![i], policy.BoundHeaders) is { } problem)
            {
                reader.Error($"{ReverseProxySection}:Routes:{route.RouteId}:Transforms[{i}]", $"{problem}, but policy '{policy.Name}' binds request: the upstream must receive the request that was approved");
            }
        }
    }

    /// <summary>Why <paramref name="transform"/> changes the approved request, or null when it leaves it alone.</summary>
    private static string? JudgeTransform(IReadOnlyDictionary<string, string> transform, IReadOnlyList<string> boundHeaders)
    {
        string? Bound(string? header) =>
            boundHeaders.FirstOrDefault(b => string.Equals(b, header?.Trim(), StringComparison.OrdinalIgnoreCase));

        var named = false;
        foreach (var (key, value) in transform)
        {
            if (TransformModifiers.Contains(key))
            {
                continue;
            }

            named = true;
            if (TargetTransforms.Contains(key))
            {
                return $"'{key}' changes the method, path or query";
            }

            if (HeaderEffect(key, value, boundHeaders) is { } effect)
            {
                return $"'{key}' {effect.What} the bound header '{effect.Header}'";
            }

            if (IsRequestHeaderTransform(key))
            {
                continue;
            }

            if (string.Equals(key, "X-Forwarded", StringComparison.OrdinalIgnoreCase))
            {
                // It writes <prefix>For, Proto, Host and Prefix itself (the default prefix is never bindable).
                var prefix = transform.FirstOrDefault(t => string.Equals(t.Key, "HeaderPrefix", StringComparison.OrdinalIgnoreCase)).Value ?? "X-Forwarded-";
                if (XForwardedSuffixes.Select(suffix => Bound(prefix + suffix)).FirstOrDefault(h => h is not null) is { } header)
                {
                    return $"'{key}' writes the bound header '{header}'";
                }

                // A bound host reaches the upstream as X-Forwarded-Host only while the proxy sets that header: appended to,
                // or left alone, the client's own value (which no hash covers) comes first.
                var hostAction = transform.FirstOrDefault(t => string.Equals(t.Key, "Host", StringComparison.OrdinalIgnoreCase)).Value ?? value;
                if (Bound("host") is not null && !string.Equals(hostAction, "Set", StringComparison.OrdinalIgnoreCase)
                    && !string.Equals(hostAction, "Remove", StringComparison.OrdinalIgnoreCase))
                {
                    return $"'{key}' with '{hostAction}' lets the client's own {prefix}Host reach the upstream, which the bound host does not cover (use Set)";
                }
            }
            else if (!UnchangingTransforms.Contains(key))
            {
                return $"'{key}' is not a transform the gateway knows to leave the request unchanged";
            }
        }

        return named ? null : $"'{string.Join(", ", transform.Keys)}' names no transform the gateway knows to leave the request unchanged";
    }

    private static bool IsRequestHeaderTransform(string key) =>
        RequestHeaderTransforms.Contains(key) || string.Equals(key, "RequestHeadersAllowed", StringComparison.OrdinalIgnoreCase)
        || string.Equals(key, "RequestHeadersCopy", StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// Whether the request-header transform entry <paramref name="key"/>: <paramref name="value"/> drops or changes one of
    /// <paramref name="headers"/> (names compared in any case): which, and how; null when it leaves them all alone.
    /// </summary>
    private static (string What, string Header)? HeaderEffect(string key, string value, IReadOnlyList<string> headers)
    {
        if (RequestHeaderTransforms.Contains(key))
        {
            var named = headers.FirstOrDefault(h => string.Equals(h, value?.Trim(), StringComparison.OrdinalIgnoreCase));
            return named is null ? null : (string.Equals(key, "RequestHeaderRemove", StringComparison.OrdinalIgnoreCase) ? "drops" : "changes", named);
        }

        if (string.Equals(key, "RequestHeadersAllowed", StringComparison.OrdinalIgnoreCase))
        {
            var allowed = value.Split(';', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
            return headers.FirstOrDefault(h => !allowed.Contains(h, StringComparer.OrdinalIgnoreCase)) is { } dropped ? ("drops", dropped) : null;
        }

        if (string.Equals(key, "RequestHeadersCopy", StringComparison.OrdinalIgnoreCase) && (!bool.TryParse(value, out var copy) || !copy))
        {
            return headers.Count > 0 ? ("drops", headers[0]) : null;
        }

        return null;
    }

    /// <summary>
    /// With an evidence key, every request a token-checking policy allows reaches the upstream with
    /// <c>Assurance-Evidence</c> (SPEC §5.6), set on the request before YARP copies its headers. A transform that copies
    /// no request header, copies an allow-list without it, or names it would consume the grant and forward the request
    /// without its evidence (or with another value): an upstream that requires evidence then refuses an approved request
    /// whose single use is already spent.
    /// </summary>
    private static readonly string[] Evidence = [AssuranceMiddleware.EvidenceHeader];

    private static void CheckEvidenceForwarding(ConfigReader reader, List<RouteConfig> routes, Dictionary<string, AssurancePolicy> routePolicies)
    {
        foreach (var route in routes)
        {
            if (!routePolicies.TryGetValue(route.RouteId, out var policy) || !policy.RequiresToken)
            {
                continue;
            }

            for (var i = 0; i < (route.Transforms?.Count ?? 0); i++)
            {
                string? problem = null;
                foreach (var (key, value) in route.Transforms![i])
                {
                    if (HeaderEffect(key, value, Evidence) is { } effect)
                    {
                        problem = $"'{key}' {effect.What} {effect.Header}";
                    }
                }

                if (problem is not null)
                {
                    reader.Error($"{ReverseProxySection}:Routes:{route.RouteId}:Transforms[{i}]",
                        $"{problem}, which the gateway sets for the upstream on every request policy '{policy.Name}' allows (Assurance:Evidence:SigningKeyFile is set)");
                }
            }
        }
    }

    /// <summary>
    /// Every <c>LogLevel</c> value under <c>Logging</c> (the default's, a category's, a provider's): the host would
    /// otherwise fail at its first log line with an unhandled exception and a stack trace ("Verbose" is Serilog's word,
    /// not a level here), and a reload would be applied only for the next start to fail. Read as the logging options
    /// read them: a level name in any case, or its number.
    /// </summary>
    private static void CheckLogging(ConfigReader reader, IConfigurationSection logging)
    {
        foreach (var section in logging.AsEnumerable(makePathsRelative: false))
        {
            if (section.Value is not { Length: > 0 } value)
            {
                continue;
            }

            var parts = section.Key.Split(':');
            var underLevels = Array.FindLastIndex(parts, p => string.Equals(p, "LogLevel", StringComparison.OrdinalIgnoreCase));
            if (underLevels > 0 && underLevels < parts.Length - 1)
            {
                if (!Enum.TryParse<Microsoft.Extensions.Logging.LogLevel>(value, ignoreCase: true, out _))
                {
                    reader.Error(section.Key, $"'{value}' is not a log level (Trace, Debug, Information, Warning, Error, Critical, None)");
                }
            }
            else if (ConsoleLoggerRefuses(section.Key, value) is { } refusal)
            {
                reader.Error(section.Key, $"'{value}' is not taken by the console logger: {refusal}");
            }
        }
    }

    /// <summary>
    /// Why the console logger cannot bind <paramref name="key"/> (its options, <c>Logging:Console:*</c>, and its formatters',
    /// <c>Logging:Console:FormatterOptions:*</c>, under the provider's alias or its full name), or null. It binds them on
    /// its own: a value it cannot bind ("Verbose" for LogToStandardErrorThreshold, a MaxQueueLength of 0, a ColorBehavior
    /// it lacks) ended the host at its first log line with exit 134. Asked of the console logger itself, the key alone in a
    /// configuration of its own, so that every problem is named by its key and what it accepts never drifts from this check.
    /// </summary>
    private static string? ConsoleLoggerRefuses(string key, string value)
    {
        var single = new ConfigurationBuilder().AddInMemoryCollection([new KeyValuePair<string, string?>(key, value)]).Build();
        var services = new ServiceCollection().AddLogging(logging => logging.AddConfiguration(single.GetSection("Logging")).AddConsole());
        using var provider = services.BuildServiceProvider();
        try
        {
            _ = provider.GetRequiredService<IOptions<ConsoleLoggerOptions>>().Value;
            _ = provider.GetRequiredService<IOptions<SimpleConsoleFormatterOptions>>().Value;
            _ = provider.GetRequiredService<IOptions<JsonConsoleFormatterOptions>>().Value;
            _ = provider.GetRequiredService<IOptions<ConsoleFormatterOptions>>().Value;
            return null;
        }
        catch (Exception e) when (e is InvalidOperationException or ArgumentException or FormatException or OverflowException
            or System.Reflection.TargetInvocationException)
        {
            return e.Message;
        }
    }

    /// <summary>
    /// The standard OTLP exporter variables (SPEC §6), read here as configuration keys (the environment is part of it).
    /// A malformed endpoint made the exporter send nothing, without a word: the evidence an SRE needs in an incident was
    /// missing, and nobody knew until then.
    /// </summary>
    private static void CheckTelemetryExport(ConfigReader reader, IConfiguration configuration)
    {
        foreach (var signal in (string[])["", "TRACES_", "METRICS_", "LOGS_"])
        {
            var endpoint = $"OTEL_EXPORTER_OTLP_{signal}ENDPOINT";
            if (configuration[endpoint] is { Length: > 0 } url && !IsHttpUrl(url.Trim()))
            {
                reader.Error(endpoint, $"'{url}' is not an absolute http(s) URL (e.g. http://collector:4318)");
            }

            var protocol = $"OTEL_EXPORTER_OTLP_{signal}PROTOCOL";
            if (configuration[protocol] is { Length: > 0 } name && name.Trim() is not ("grpc" or "http/protobuf"))
            {
                reader.Error(protocol, $"'{name}' is not an OTLP protocol this gateway exports with (grpc, http/protobuf)");
            }

            var headers = $"OTEL_EXPORTER_OTLP_{signal}HEADERS";
            if (configuration[headers] is { Length: > 0 } list && MalformedHeader(list) is { } entry)
            {
                // Neither the entry nor its value is shown: these headers carry the collector's credentials.
                reader.Error(headers, $"entry {entry} is not name=value with a header name (comma-separated, e.g. api-key=…); values not shown");
            }
        }
    }

    /// <summary>
    /// The 1-based position of the first entry of an OTEL_EXPORTER_OTLP_*HEADERS list the exporter cannot send, or null.
    /// The exporter reads the list when it is built: an entry without '=' ended the host at start with an unhandled
    /// exception (exit 134); a name that is no HTTP header name (empty, with a space) cannot be sent on any export.
    /// Read as the exporter reads it: percent-decoded, split at commas, only an empty last entry (a trailing comma) skipped.
    /// </summary>
    private static int? MalformedHeader(string list)
    {
        string decoded;
        try
        {
            decoded = Uri.UnescapeDataString(list);
        }
        catch (UriFormatException)
        {
            return 1;
        }

        var entries = decoded.Split(',');
        for (var i = 0; i < entries.Length; i++)
        {
            // The exporter reads every entry up to the last comma: one after it may be empty (a trailing comma), no
            // other may (an empty or blank entry between commas ended the host at start, exit 134).
            if (i == entries.Length - 1 && entries[i].Length == 0)
            {
                continue;
            }

            var equals = entries[i].IndexOf('=', StringComparison.Ordinal);
            var name = equals < 0 ? string.Empty : entries[i][..equals].Trim();
            if (name.Length == 0 || !name.All(IsTokenChar) || entries[i].AsSpan(equals + 1).IndexOfAny('\r', '\n', '\0') >= 0)
            {
                return i + 1;
            }
        }

        return null;

        // RFC 9110 §5.6.2: tchar.
        static bool IsTokenChar(char c) => char.IsAsciiLetterOrDigit(c) || "!#$%&'*+-.^_`|~".Contains(c, StringComparison.Ordinal);
    }

    private static void CrossCheck(
        ConfigReader reader, IConfigurationSection assurance, Dictionary<string, AssurancePolicy> routePolicies, TokenSettings tokens,
        WorkloadSettings workload, ApiSettings api)
    {
        // A token minted for the assurance API (which creates and approves grants) must never double as an access
        // token on the proxy, nor the reverse: the two audiences keep the two kinds of token apart.
        foreach (var issuer in assurance.GetSection("Tokens:Issuers").GetChildren())
        {
            var audiences = issuer.GetSection("Audiences");
            var values = audiences.Value is { } single ? [single] : audiences.GetChildren().Select(c => c.Value);
            if (values.Any(v => string.Equals(v?.Trim(), api.Audience, StringComparison.Ordinal)))
            {
                reader.Error(audiences, $"'{api.Audience}' is the audience of the assurance API (Assurance:Api:Audience): API tokens must not be accepted on the proxy");
            }
        }

        var needsToken = routePolicies.Values.Any(p => p.RequiresToken);
        if (needsToken && tokens.Issuers.Count == 0 && !reader.Errors.Any(e => e.StartsWith("Assurance:Tokens:Issuers", StringComparison.Ordinal)))
        {
            reader.Error("Assurance:Tokens:Issuers", "at least one issuer is required: routes use policies that validate tokens");
        }

        foreach (var policy in routePolicies.Values.Distinct())
        {
            if (policy.NeedsWorkload && workload.Sources.Count == 0)
            {
                reader.Error($"Assurance:Policies:{policy.Name}", "needs a workload identity, but Assurance:Workload:Sources is empty");
            }
        }
    }

    /// <summary>
    /// The proxy and the assurance API listen on their own sockets (SPEC §5: the API is never served on the proxy
    /// listener). The proxy listens where <c>Kestrel:Endpoints</c> says when that section names any endpoint (Kestrel then
    /// ignores <c>Urls</c>), else on <c>Urls</c> (';'-separated). An API address that takes a proxy address makes Kestrel
    /// fail at start; both are read with Kestrel's own parser, and a host that is neither an IP address nor "localhost"
    /// binds every address.
    /// </summary>
    private static void CheckListeners(ConfigReader reader, IConfiguration configuration, ApiSettings api)
    {
        var apiAddress = IsHttpUrl(api.Url) ? ParseListener(api.Url) : null;
        foreach (var (key, url) in ProxyListeners(configuration))
        {
            if (url is null)
            {
                reader.Error(key, "is missing: each Kestrel endpoint needs a listener URL (scheme://host:port)");
            }
            else if (ParseListener(url) is not { } proxy)
            {
                reader.Error(key, $"'{url}' is not a listener URL (scheme://host:port)");
            }
            else if (proxy.PathBase.Length > 0)
            {
                // Kestrel refuses it at start with a stack trace ("A path base can only be configured using UsePathBase").
                reader.Error(key, $"'{url}' has a path ('{proxy.PathBase}'): a listener is scheme://host:port only");
            }
            else if (string.Equals(proxy.Scheme, "https", StringComparison.OrdinalIgnoreCase) && !HasCertificate(configuration, key))
            {
                reader.Error(key, $"'{url}' is https, but no server certificate is configured (Kestrel:Certificates:Default, or the endpoint's Certificate)");
            }
            else if (apiAddress is not null && Overlap(proxy, apiAddress))
            {
                reader.Error($"{AssuranceSection}:Api:Url", $"'{api.Url}' takes the host and port of the proxy listener '{url}' in {key}: the assurance API needs its own listener");
            }
        }
    }

    /// <summary>Kestrel's default certificate, or, for an endpoint of Kestrel:Endpoints, its own or its SNI ones.</summary>
    private static bool HasCertificate(IConfiguration configuration, string key)
    {
        // Kestrel loads a certificate from a file (Path) or a store (Subject); a KeyPath or Password alone is none.
        static bool IsCertificate(IConfigurationSection section) =>
            !string.IsNullOrWhiteSpace(section["Path"]) || !string.IsNullOrWhiteSpace(section["Subject"]);

        if (IsCertificate(configuration.GetSection("Kestrel:Certificates:Default")))
        {
            return true;
        }

        if (!key.StartsWith("Kestrel:Endpoints:", StringComparison.Ordinal))
        {
            return false;
        }

        // An SNI host without a certificate of its own falls back to the endpoint's: all of them need one then.
        var endpoint = configuration.GetSection(key[..^":Url".Length]);
        var hosts = endpoint.GetSection("Sni").GetChildren().ToList();
        return IsCertificate(endpoint.GetSection("Certificate"))
            || (hosts.Count > 0 && hosts.All(host => IsCertificate(host.GetSection("Certificate"))));
    }

    /// <summary>The proxy's listener URLs, each with the key it comes from (null URL: an endpoint without one).</summary>
    private static IEnumerable<(string Key, string? Url)> ProxyListeners(IConfiguration configuration)
    {
        var endpoints = configuration.GetSection("Kestrel:Endpoints").GetChildren().ToList();
        if (endpoints.Count > 0)
        {
            foreach (var endpoint in endpoints)
            {
                var url = endpoint["Url"];
                yield return ($"Kestrel:Endpoints:{endpoint.Key}:Url", string.IsNullOrWhiteSpace(url) ? null : url);
            }

            yield break;
        }

        var urls = configuration["Urls"];
        if (string.IsNullOrWhiteSpace(urls))
        {
            yield break;
        }

        foreach (var url in urls.Split(';', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            yield return ("Urls", url);
        }
    }

    private static BindingAddress? ParseListener(string url)
    {
        try
        {
            return BindingAddress.Parse(url);
        }
        catch (Exception e) when (e is FormatException or InvalidOperationException or ArgumentException)
        {
            return null;
        }
    }

    private static bool Overlap(BindingAddress a, BindingAddress b)
    {
        if (a.IsUnixPipe || b.IsUnixPipe || a.IsNamedPipe || b.IsNamedPipe || a.Port != b.Port || a.Port == 0)
        {
            return false; // pipes are not ports, and port 0 is a fresh port for each listener
        }

        var (x, y) = (ListenAddresses(a), ListenAddresses(b));
        return x is null || y is null || x.Any(p => y.Any(q => p.Equals(q) || IsAnyV4(p, q) || IsAnyV4(q, p)));

        static bool IsAnyV4(IPAddress any, IPAddress other) =>
            any.Equals(IPAddress.Any) && other.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork;
    }

    /// <summary>What Kestrel binds for this host (its AddressBinder): null for every address.</summary>
    private static IPAddress[]? ListenAddresses(BindingAddress address)
    {
        if (string.Equals(address.Host, "localhost", StringComparison.OrdinalIgnoreCase))
        {
            return [IPAddress.Loopback, IPAddress.IPv6Loopback];
        }

        return IPAddress.TryParse(address.Host, out var ip) && !ip.Equals(IPAddress.IPv6Any) ? [ip] : null;
    }

    /// <summary>
    /// RemoteKeySource requires https for key material except on loopback (IdentityModel's RequireHttps): anything else
    /// would start and then fail every token of the issuer, so it is refused here with the reason.
    /// </summary>
    private static bool IsHttpsOrLoopback(string value) =>
        Uri.TryCreate(value, UriKind.Absolute, out var uri) && (uri.Scheme == Uri.UriSchemeHttps || uri.IsLoopback);

    private static string PlainHttpKeySource(string value) =>
        $"'{value}' uses plain http: keys are fetched only over https (http only for a loopback address)";

    private static bool IsHttpUrl(string value) =>
        Uri.TryCreate(value, UriKind.Absolute, out var uri) && (uri.Scheme == Uri.UriSchemeHttp || uri.Scheme == Uri.UriSchemeHttps);

    /// <summary>
    /// Headers whose hashed value would not be what the upstream receives (SPEC §7.4): the proxy drops hop-by-hop headers
    /// (RFC 9110 §7.6.1), writes the X-Forwarded-* set itself, and the gateway removes its own protocol headers. Host may
    /// be bound: the proxy sends the destination's host as Host, and the client's as X-Forwarded-Host (or as Host with
    /// RequestHeaderOriginalHost), which is what an upstream serving several hosts or tenants reads.
    /// </summary>
    private static readonly Dictionary<string, string> UnbindableHeaders = new(StringComparer.Ordinal)
    {
        ["connection"] = "a hop-by-hop header the proxy drops",
        ["keep-alive"] = "a hop-by-hop header the proxy drops",
        ["proxy-connection"] = "a hop-by-hop header the proxy drops",
        ["proxy-authorization"] = "a hop-by-hop header the proxy drops",
        ["te"] = "a hop-by-hop header the proxy drops",
        ["trailer"] = "a hop-by-hop header the proxy drops",
        ["transfer-encoding"] = "a hop-by-hop header the proxy drops",
        ["upgrade"] = "a hop-by-hop header the proxy drops",
        ["http2-settings"] = "a hop-by-hop header the proxy drops",
        ["x-forwarded-for"] = "the proxy writes it",
        ["x-forwarded-host"] = "the proxy writes it",
        ["x-forwarded-proto"] = "the proxy writes it",
        ["x-forwarded-prefix"] = "the proxy writes it",
        ["forwarded"] = "the proxy may write it",
        ["traceparent"] = "the proxy's trace propagation rewrites it",
        ["tracestate"] = "the proxy's trace propagation rewrites it",
        ["baggage"] = "the proxy's trace propagation rewrites it",
        ["request-id"] = "the proxy's trace propagation rewrites it",
        ["correlation-context"] = "the proxy's trace propagation rewrites it",
        [WorkloadResolver.ClientCertHeader.ToLowerInvariant()] = "the gateway removes it when an untrusted peer sends it",
        [AssuranceMiddleware.AssuranceIdHeader.ToLowerInvariant()] = "the gateway removes it before forwarding",
        [WorkloadResolver.WorkloadIdentityHeader.ToLowerInvariant()] = "the gateway removes it before forwarding",
        [AssuranceMiddleware.EvidenceHeader.ToLowerInvariant()] = "the gateway removes it before forwarding",
    };
}
