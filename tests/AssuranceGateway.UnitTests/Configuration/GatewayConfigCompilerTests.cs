using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using AssuranceGateway.Configuration;
using AssuranceGateway.Testing;
using Microsoft.Extensions.Configuration;

namespace AssuranceGateway.UnitTests.Configuration;

/// <summary>
/// SPEC §3: an invalid configuration is refused with one line per problem, each naming its key, all problems at
/// once. The base is the functional tests' configuration (valid); each test breaks one thing and checks the exact
/// lines, so that a message that stops naming its key, or a problem that stops being reported, fails here.
/// </summary>
public sealed class GatewayConfigCompilerTests : IDisposable
{
    private const string Deploy = "single-use-approval";
    private const string DeployPath = "Assurance:Policies:single-use-approval";
    private const string IssuerPath = "Assurance:Tokens:Issuers:0";

    private readonly string _directory = Path.Combine(Path.GetTempPath(), "agw-unit", Guid.NewGuid().ToString("N"));
    private readonly TestIssuer _idp;
    private readonly TestIssuer _workload;

    public GatewayConfigCompilerTests()
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

    [Fact]
    public void Compile_BaseConfiguration_Valid()
    {
        var (settings, errors) = Compile();

        Assert.Empty(errors);
        Assert.NotNull(settings);
        Assert.Equal(["agent", "deploy", "public", "status"], settings.RoutePolicies.Keys.Order(StringComparer.Ordinal));
        Assert.Equal("token-only", settings.PolicyForRoute("status")?.Name);
        Assert.Same(AssurancePolicy.Passthrough, settings.PolicyForRoute("public"));
    }

    [Fact]
    public void Compile_RouteNamesUnknownPolicy_Refused()
    {
        AssertProblems(
            c => Route(c, "status")["Metadata"]!["AssurancePolicy"] = "tokn-only",
            "ReverseProxy:Routes:status:Metadata:AssurancePolicy: unknown policy 'tokn-only'");
    }

    [Fact]
    public void Compile_RouteWithoutPolicyAndNoDefault_Refused()
    {
        AssertProblems(
            c => Route(c, "status").Remove("Metadata"),
            "ReverseProxy:Routes:status:Metadata:AssurancePolicy: missing, and Assurance:DefaultPolicy is not set (name \"passthrough\" to forward without enforcement)");
    }

    [Fact]
    public void Compile_RouteWithoutPolicyAndDefault_GetsDefault()
    {
        var (settings, errors) = Compile(c =>
        {
            Route(c, "status").Remove("Metadata");
            Assurance(c)["DefaultPolicy"] = Deploy;
        });

        Assert.Empty(errors);
        Assert.Equal(Deploy, settings!.PolicyForRoute("status")?.Name);
    }

    [Fact]
    public void Compile_PolicyMetadataKeyInOtherCase_StillThatRoutesPolicy()
    {
        // Configuration keys are case-insensitive everywhere in ASP.NET Core. Were this one not, a route written with
        // "assurancePolicy" would silently fall back to the default policy, here passthrough: unprotected.
        var (settings, errors) = Compile(c =>
        {
            Route(c, "deploy")["Metadata"] = new JsonObject { ["assurancePolicy"] = Deploy };
            Assurance(c)["DefaultPolicy"] = "passthrough";
        });

        Assert.Empty(errors);
        Assert.Equal(Deploy, settings!.PolicyForRoute("deploy")?.Name);
    }

    [Fact]
    public void Compile_UnknownDefaultPolicy_Refused()
    {
        AssertProblems(
            c => Assurance(c)["DefaultPolicy"] = "strict",
            "Assurance:DefaultPolicy: unknown policy 'strict'");
    }

    [Fact]
    public void Compile_UnknownBinding_Refused()
    {
        AssertProblems(
            c => Policy(c, Deploy)["Bind"] = new JsonArray("token", "workloads", "request"),
            $"{DeployPath}:Bind: unknown binding 'workloads' (known: subject, session, token, workload, origin, request)");
    }

    [Fact]
    public void Compile_DuplicatedBinding_Refused()
    {
        AssertProblems(
            c => Policy(c, Deploy)["Bind"] = new JsonArray("token", "workload", "request", "Token"),
            $"{DeployPath}:Bind: binding 'Token' listed twice");
    }

    [Theory]
    [InlineData("5 minutes")]
    [InlineData("00:05")]
    [InlineData("00:61:00")]
    // A bare number is ambiguous (TimeSpan reads "300" as 300 DAYS, not seconds): refused.
    [InlineData("300")]
    [InlineData("5")]
    public void Compile_BadDuration_Refused(string value)
    {
        AssertProblems(
            c => Policy(c, Deploy)["MaxTtl"] = value,
            $"{DeployPath}:MaxTtl: '{value}' is not a duration (expected [d.]hh:mm:ss[.fff], e.g. 00:05:00)");
    }

    [Fact]
    public void Compile_DurationOutOfRange_Refused()
    {
        AssertProblems(
            c => Tokens(c)["ClockSkew"] = "00:10:00",
            "Assurance:Tokens:ClockSkew: '00:10:00' must be from 00:00:00 to 00:05:00");
    }

    [Fact]
    public void Compile_DurationWithDays_Accepted()
    {
        var (settings, errors) = Compile(c => Policy(c, Deploy)["MaxTtl"] = "1.02:00:00");

        Assert.Empty(errors);
        Assert.Equal(TimeSpan.FromHours(26), settings!.Policies[Deploy].MaxTtl);
    }

    [Theory]
    [InlineData("4")]
    [InlineData("-1")]
    [InlineData("2.5")]
    [InlineData("two")]
    public void Compile_MinimumAalOutOfRange_Refused(string value)
    {
        AssertProblems(
            c => Policy(c, Deploy)["MinimumAal"] = value,
            $"{DeployPath}:MinimumAal: '{value}' is not a whole number from 0 to 3");
    }

    [Theory]
    [InlineData("audit")]
    [InlineData("1")]
    [InlineData("+1")]
    // Enum.TryParse reads "a,b" as a bitwise OR: "enforce,shadow" would quietly become shadow (forward everything).
    [InlineData("enforce,shadow")]
    [InlineData("enforce, shadow")]
    public void Compile_UnknownMode_Refused(string value)
    {
        AssertProblems(
            c => Policy(c, Deploy)["Mode"] = value,
            $"{DeployPath}:Mode: '{value}' is not one of enforce | shadow");
    }

    [Theory]
    [InlineData("allow")]
    [InlineData("deny,challenge")]
    public void Compile_UnknownOnMissing_Refused(string value)
    {
        AssertProblems(
            c => Policy(c, Deploy)["OnMissing"] = value,
            $"{DeployPath}:OnMissing: '{value}' is not one of deny | challenge");
    }

    [Fact]
    public void Compile_ModeAndOnMissingInAnyCase_Accepted()
    {
        var (settings, errors) = Compile(c =>
        {
            Policy(c, Deploy)["Mode"] = "Shadow";
            Policy(c, Deploy)["OnMissing"] = "CHALLENGE";
        });

        Assert.Empty(errors);
        Assert.Equal(PolicyMode.Shadow, settings!.Policies[Deploy].Mode);
        Assert.Equal(MissingGrantAction.Challenge, settings.Policies[Deploy].OnMissing);
    }

    [Fact]
    public void Compile_UnknownRevokeOnReason_Refused()
    {
        AssertProblems(
            c => Policy(c, Deploy)["RevokeOn"] = new JsonArray("token_mismatch", "replayed"),
            $"{DeployPath}:RevokeOn: 'replayed' is not a mismatch reason (known: route_mismatch, subject_mismatch, session_mismatch, token_mismatch, workload_mismatch, origin_mismatch, request_mismatch)");
    }

    [Theory]
    [InlineData("content type")]
    [InlineData("content-type:")]
    [InlineData("x-ünicode")]
    public void Compile_InvalidHeaderName_Refused(string header)
    {
        AssertProblems(
            c => Policy(c, Deploy)["BoundHeaders"] = new JsonArray("content-type", header),
            $"{DeployPath}:BoundHeaders: '{header}' is not a valid header name");
    }

    [Theory]
    [InlineData("keep-alive", "a hop-by-hop header the proxy drops")]
    [InlineData("TE", "a hop-by-hop header the proxy drops")]
    [InlineData("x-forwarded-host", "the proxy writes it")]
    [InlineData("X-Forwarded-Client-Cert", "the gateway removes it when an untrusted peer sends it")]
    [InlineData("traceparent", "the proxy's trace propagation rewrites it")]
    [InlineData("Assurance-Id", "the gateway removes it before forwarding")]
    public void Compile_BoundHeaderTheUpstreamNeverReceivesAsSent_Refused(string header, string why)
    {
        AssertProblems(
            c => Policy(c, Deploy)["BoundHeaders"] = new JsonArray("content-type", header),
            $"{DeployPath}:BoundHeaders: '{header}' cannot be bound: {why}, so the upstream would not receive the value that was hashed");
    }

    [Fact]
    public void Compile_BoundHeaders_LowerCasedDeduplicatedSorted()
    {
        var (settings, errors) = Compile(c => Policy(c, Deploy)["BoundHeaders"] = new JsonArray("X-Tenant", "content-type", "Content-Type"));

        Assert.Empty(errors);
        Assert.Equal(["content-type", "x-tenant"], settings!.Policies[Deploy].BoundHeaders);
    }

    [Fact]
    public void Compile_UnreadableJwksFile_Refused()
    {
        var missing = Path.Combine(_directory, "missing", "idp.jwks.json");

        var errors = CompileErrors(c => Issuer(c)["JwksFile"] = missing);

        var line = Assert.Single(errors);
        Assert.StartsWith($"{IssuerPath}:JwksFile: cannot read '{missing}': ", line, StringComparison.Ordinal);
    }

    [Fact]
    public void Compile_RelativeJwksFile_ResolvedAgainstBaseDirectory()
    {
        var (settings, errors) = Compile(c => Issuer(c)["JwksFile"] = Path.GetFileName(_idp.JwksPath));

        Assert.Empty(errors);
        Assert.Equal(_idp.JwksPath, settings!.Tokens.Issuers[0].KeyLocation);
    }

    [Theory]
    [InlineData("this is not json")]
    [InlineData("""{"keys": 42}""")]
    [InlineData("")]
    public void Compile_JwksFileNotAJwkSet_Refused(string content)
    {
        var path = Path.Combine(_directory, "broken.jwks.json");
        File.WriteAllText(path, content);

        var errors = CompileErrors(c => Issuer(c)["JwksFile"] = path);

        var line = Assert.Single(errors);
        Assert.StartsWith($"{IssuerPath}:JwksFile: '{path}' is not a JWK Set", line, StringComparison.Ordinal);
    }

    [Fact]
    public void Compile_JwksFileWithPrivateKey_Refused()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var p = key.ExportParameters(true);
        var path = Path.Combine(_directory, "private.jwks.json");
        File.WriteAllText(path, new JsonObject
        {
            ["keys"] = new JsonArray(new JsonObject
            {
                ["kty"] = "EC", ["crv"] = "P-256", ["kid"] = "k1",
                ["x"] = Microsoft.IdentityModel.Tokens.Base64UrlEncoder.Encode(p.Q.X),
                ["y"] = Microsoft.IdentityModel.Tokens.Base64UrlEncoder.Encode(p.Q.Y),
                ["d"] = Microsoft.IdentityModel.Tokens.Base64UrlEncoder.Encode(p.D),
            }),
        }.ToJsonString());

        AssertProblems(
            c => Issuer(c)["JwksFile"] = path,
            $"{IssuerPath}:JwksFile: '{path}' contains a private key: publish only public keys to the gateway");
    }

    [Fact]
    public void Compile_JwksFileWithoutSigningKey_Refused()
    {
        var path = Path.Combine(_directory, "hmac.jwks.json");
        File.WriteAllText(path, """{"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0"}]}""");

        var errors = CompileErrors(c => Issuer(c)["JwksFile"] = path);

        // Symmetric keys are never used to verify access tokens (HMAC would let anyone holding the secret mint them).
        Assert.Equal([$"{IssuerPath}:JwksFile: '{path}' holds no signing key: every token of this issuer is refused"], errors);
    }

    [Fact]
    public void Compile_JwksKeysDoNotFitAlgorithms_Refused()
    {
        AssertProblems(
            c => Issuer(c)["Algorithms"] = new JsonArray("RS256"),
            $"{IssuerPath}:JwksFile: no key in '{_idp.JwksPath}' fits the algorithms RS256: every token of this issuer is refused");
    }

    [Fact]
    public void Compile_JwksEcKeyOnAnotherCurveThanTheAlgorithms_Refused()
    {
        // ES384 signs on P-384: the issuer's P-256 key could never verify one of its tokens.
        AssertProblems(
            c => Issuer(c)["Algorithms"] = new JsonArray("ES384"),
            $"{IssuerPath}:JwksFile: no key in '{_idp.JwksPath}' fits the algorithms ES384: every token of this issuer is refused");
    }

    [Fact]
    public void Compile_NoRoutes_Refused()
    {
        AssertProblems(
            c => ((JsonObject)c["ReverseProxy"]!).Remove("Routes"),
            "ReverseProxy:Routes: no routes: the gateway would forward nothing (is this the gateway's file?)");
    }

    [Fact]
    public void Compile_IssuerWithoutName_Refused()
    {
        AssertProblems(c => Issuer(c).Remove("Issuer"), $"{IssuerPath}:Issuer: missing");
    }

    [Fact]
    public void Compile_IssuerWithoutAudiences_Refused()
    {
        AssertProblems(c => Issuer(c).Remove("Audiences"), $"{IssuerPath}:Audiences: at least one audience is required");
    }

    [Fact]
    public void Compile_IssuerWithoutKeySource_Refused()
    {
        AssertProblems(c => Issuer(c).Remove("JwksFile"), $"{IssuerPath}: exactly one of JwksFile, JwksUri or Authority is required");
    }

    [Theory]
    [InlineData("JwksUri", "https://idp.test/jwks.json")]
    [InlineData("Authority", "https://idp.test")]
    public void Compile_IssuerWithTwoKeySources_Refused(string key, string value)
    {
        AssertProblems(c => Issuer(c)[key] = value, $"{IssuerPath}: exactly one of JwksFile, JwksUri or Authority is required");
    }

    [Theory]
    [InlineData("JwksUri", "ftp://idp.test/jwks.json")]
    [InlineData("Authority", "idp.test")]
    public void Compile_KeySourceNotAnHttpUrl_Refused(string key, string value)
    {
        AssertProblems(
            c =>
            {
                Issuer(c).Remove("JwksFile");
                Issuer(c)[key] = value;
            },
            $"{IssuerPath}:{key}: '{value}' is not an absolute http(s) URL");
    }

    [Theory]
    [InlineData("none")]
    [InlineData("HS256")]
    [InlineData("es256")]
    public void Compile_UnsupportedAlgorithm_Refused(string algorithm)
    {
        AssertProblems(
            c => Issuer(c)["Algorithms"] = new JsonArray("ES256", algorithm),
            $"{IssuerPath}:Algorithms: '{algorithm}' is not allowed (allowed: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512; 'none' and HMAC are never accepted)");
    }

    [Fact]
    public void Compile_IssuerConfiguredTwice_Refused()
    {
        AssertProblems(
            c =>
            {
                Issuer(c)["SubjectPrefix"] = "a:";
                var twice = Issuer(c).DeepClone();
                twice["SubjectPrefix"] = "b:";
                Tokens(c)["Issuers"]!.AsArray().Add(twice);
            },
            "Assurance:Tokens:Issuers:1:Issuer: issuer 'https://idp.test' is configured twice");
    }

    private static void AddIssuer(JsonObject c, string issuer, string? prefix)
    {
        var second = Issuer(c).DeepClone().AsObject();
        second["Issuer"] = issuer;
        second.Remove("SubjectPrefix");
        if (prefix is not null)
        {
            second["SubjectPrefix"] = prefix;
        }

        Tokens(c)["Issuers"]!.AsArray().Add(second);
    }

    [Fact]
    public void Compile_TwoIssuersWithoutSubjectPrefixes_Refused()
    {
        // Both could say sub 'alice': one alice to every grant, approval and pending quota.
        AssertProblems(
            c => AddIssuer(c, "https://partner.test", null),
            "Assurance:Tokens:Issuers:0:SubjectPrefix: required when Assurance:Tokens:Issuers lists more than one issuer (such as 'idp:'): a subject of issuer 'https://idp.test' could otherwise be taken for another issuer's",
            "Assurance:Tokens:Issuers:1:SubjectPrefix: required when Assurance:Tokens:Issuers lists more than one issuer (such as 'idp:'): a subject of issuer 'https://partner.test' could otherwise be taken for another issuer's");
    }

    [Fact]
    public void Compile_OneOfTwoIssuersWithoutSubjectPrefix_Refused()
    {
        // A bare issuer could say sub 'partner:alice'.
        AssertProblems(
            c => AddIssuer(c, "https://partner.test", "partner:"),
            "Assurance:Tokens:Issuers:0:SubjectPrefix: required when Assurance:Tokens:Issuers lists more than one issuer (such as 'idp:'): a subject of issuer 'https://idp.test' could otherwise be taken for another issuer's");
    }

    [Theory]
    [InlineData("corp:", "corp:", "Assurance:Tokens:Issuers:1:SubjectPrefix: 'corp:' begins with 'corp:', the prefix of issuer 'https://idp.test': a subject of one could be taken for the other's")]
    [InlineData("corp:", "corp:eu:", "Assurance:Tokens:Issuers:1:SubjectPrefix: 'corp:eu:' begins with 'corp:', the prefix of issuer 'https://idp.test': a subject of one could be taken for the other's")]
    [InlineData("corp:eu:", "corp:", "Assurance:Tokens:Issuers:0:SubjectPrefix: 'corp:eu:' begins with 'corp:', the prefix of issuer 'https://partner.test': a subject of one could be taken for the other's")]
    [InlineData("idp :", "partner:", "Assurance:Tokens:Issuers:0:SubjectPrefix: must be at most 64 printable ASCII characters without spaces, such as 'partner:'")]
    public void Compile_SubjectPrefixesThatOverlapOrCannotBeWritten_Refused(string first, string second, string problem)
    {
        AssertProblems(
            c =>
            {
                Issuer(c)["SubjectPrefix"] = first;
                AddIssuer(c, "https://partner.test", second);
            },
            problem);
    }

    [Fact]
    public void Compile_IssuersWithTheirOwnSubjectPrefixes_Valid()
    {
        var (settings, errors) = Compile(c =>
        {
            Issuer(c)["SubjectPrefix"] = "idp:";
            AddIssuer(c, "https://partner.test", "partner:");
        });

        Assert.Empty(errors);
        Assert.Equal(["idp:", "partner:"], settings!.Tokens.Issuers.Select(i => i.SubjectPrefix));
    }

    [Fact]
    public void Compile_LoneIssuer_NeedsNoSubjectPrefix()
    {
        var (settings, errors) = Compile();

        Assert.Empty(errors);
        Assert.Equal(string.Empty, Assert.Single(settings!.Tokens.Issuers).SubjectPrefix);
    }

    [Fact]
    public void Compile_WorkloadIssuerSubjectPrefix_Refused()
    {
        // SPIFFE IDs name their trust domain already; a prefix there would only break the binding.
        Assert.Contains(CompileErrors(c => ((JsonObject)Workload(c)["Issuers"]![0]!)["SubjectPrefix"] = "w:"),
            e => e.StartsWith("Assurance:Workload:Issuers:0:SubjectPrefix", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("assurance-api")]
    [InlineData(" assurance-api ")]
    public void Compile_ProxyAudienceIsTheApiAudience_Refused(string audience)
    {
        AssertProblems(
            c => Issuer(c)["Audiences"] = new JsonArray("gateway", audience),
            $"{IssuerPath}:Audiences: 'assurance-api' is the audience of the assurance API (Assurance:Api:Audience): API tokens must not be accepted on the proxy");
    }

    [Fact]
    public void Compile_ProxyAudienceIsRenamedApiAudience_Refused()
    {
        AssertProblems(
            c =>
            {
                Assurance(c)["Api"]!["Audience"] = "approvals";
                Issuer(c)["Audiences"] = "approvals";
            },
            $"{IssuerPath}:Audiences: 'approvals' is the audience of the assurance API (Assurance:Api:Audience): API tokens must not be accepted on the proxy");
    }

    [Fact]
    public void Compile_NoIssuerButTokenRoutes_Refused()
    {
        AssertProblems(
            c => Tokens(c)["Issuers"] = new JsonArray(),
            "Assurance:Tokens:Issuers: at least one issuer is required: routes use policies that validate tokens");
    }

    [Theory]
    [InlineData("spiffe")]
    [InlineData("mtls,header")]
    [InlineData("2")]
    [InlineData("-1")]
    [InlineData("+2")]
    public void Compile_UnknownWorkloadSource_Refused(string source)
    {
        AssertProblems(
            c => Workload(c)["Sources"] = new JsonArray("header", source),
            $"Assurance:Workload:Sources: unknown workload source '{source}' (known: mtls, xfcc, header, claim)");
    }

    [Theory]
    [InlineData("10.0.0.0/33")]
    [InlineData("10.0.0.0/+8")]
    [InlineData("localhost")]
    [InlineData("010.0.0.1")]
    [InlineData("0x0a.0.0.1")]
    [InlineData("10.0.0.0/")]
    // IPAddress.TryParse reads "10" as 0.0.0.10 and "10.1" as 10.0.0.1: a typo would trust a different address.
    [InlineData("10")]
    [InlineData("10.1")]
    public void Compile_BadTrustedProxy_Refused(string cidr)
    {
        AssertProblems(
            c => Workload(c)["TrustedProxies"] = new JsonArray("127.0.0.1/32", cidr),
            $"Assurance:Workload:TrustedProxies: '{cidr}' is not an IP address or CIDR range (dotted-quad IPv4 without leading zeros, or IPv6)");
    }

    [Fact]
    public void Compile_TrustedProxyRangeWithHostBits_RefusedWithBothReadings()
    {
        // IPNetwork.TryParse would quietly widen this to all of 10.0.0.0/8.
        AssertProblems(
            c => Workload(c)["TrustedProxies"] = new JsonArray("10.0.0.1/8"),
            "Assurance:Workload:TrustedProxies: '10.0.0.1/8' has address bits set beyond the /8 prefix (write 10.0.0.0/8, or 10.0.0.1/32 for one address)");
    }

    [Fact]
    public void Compile_TrustedProxies_AddressesAndRanges()
    {
        var (settings, errors) = Compile(c => Workload(c)["TrustedProxies"] = new JsonArray("10.0.0.0/8", "192.168.1.7", "::1", "fd00::/8"));

        Assert.Empty(errors);
        Assert.Equal(["10.0.0.0/8", "192.168.1.7/32", "::1/128", "fd00::/8"], settings!.Workload.TrustedProxies.Select(n => n.ToString()));
    }

    [Fact]
    public void Compile_HeaderSourceWithoutWorkloadIssuersOrAudience_Refused()
    {
        AssertProblems(
            c =>
            {
                Workload(c)["Issuers"] = new JsonArray();
                Workload(c).Remove("Audience");
            },
            "Assurance:Workload:Issuers: the 'header' source needs at least one workload issuer",
            "Assurance:Workload:Audience: the 'header' source needs the audience that workload JWTs must carry");
    }

    [Fact]
    public void Compile_WorkloadPolicyWithoutSources_Refused()
    {
        AssertProblems(
            c => Workload(c)["Sources"] = new JsonArray(),
            // Routes are read in key order (agent, deploy, ...), as IConfiguration lists them.
            "Assurance:Policies:agent-approval: needs a workload identity, but Assurance:Workload:Sources is empty",
            "Assurance:Policies:single-use-approval: needs a workload identity, but Assurance:Workload:Sources is empty");
    }

    [Fact]
    public void Compile_UnknownPolicySetting_Refused()
    {
        AssertProblems(
            c => Policy(c, Deploy)["Binds"] = new JsonArray("origin"),
            $"{DeployPath}:Binds: unknown setting (known: Bind, MinimumAal, MinimumApprovalAal, MaxUses, MaxTtl, Mode, OnMissing, Approvals, RequireClaims, PendingTtl, MaxPendingPerSubject, RevokeOn, BoundHeaders, MaxBodyBytes, RequiresGrant)");
    }

    [Theory]
    [InlineData("Tokens", "ClockSkw", "Assurance:Tokens:ClockSkw: unknown setting (known: Issuers, ClockSkew, MaxLifetime, Types, MaxTokenBytes, AalClaim, SessionClaim, AalMap)")]
    [InlineData("Store", "TimeOut ", "Assurance:Store:TimeOut : unknown setting (known: Redis, KeyPrefix, Timeout, EvidenceRetention, RequireReplicaAcks)")]
    public void Compile_UnknownSectionSetting_Refused(string section, string key, string expected)
    {
        AssertProblems(c => ((JsonObject)Assurance(c)[section]!)[key] = "00:00:01", expected);
    }

    [Fact]
    public void Compile_UnknownAssuranceSection_Refused()
    {
        AssertProblems(
            c => Assurance(c)["Polices"] = new JsonObject(),
            "Assurance:Polices: unknown setting (known: DefaultPolicy, Policies, Tokens, Workload, Store, Api, Evidence)");
    }

    [Fact]
    public void Compile_RedefinedPassthrough_Refused()
    {
        AssertProblems(
            c => Policies(c)["passthrough"] = new JsonObject { ["Bind"] = new JsonArray("token") },
            "Assurance:Policies:passthrough: 'passthrough' is built in and cannot be redefined");
    }

    [Fact]
    public void Compile_RedefinedPassthroughInOtherCase_Refused()
    {
        AssertProblems(
            c => Policies(c)["PassThrough"] = new JsonObject { ["Bind"] = new JsonArray("token") },
            "Assurance:Policies:PassThrough: 'passthrough' is built in and cannot be redefined");
    }

    [Fact]
    public void Compile_NoGrantPolicyBindingRequest_Refused()
    {
        AssertProblems(
            c => Policy(c, "token-only")["Bind"] = new JsonArray("request"),
            "Assurance:Policies:token-only:Bind: only 'workload' can be bound when RequiresGrant is false: the other bindings live on a grant");
    }

    [Fact]
    public void Compile_NoGrantPolicyBindingWorkload_Accepted()
    {
        var (settings, errors) = Compile(c => Policy(c, "token-only")["Bind"] = new JsonArray("workload"));

        Assert.Empty(errors);
        Assert.True(settings!.Policies["token-only"].NeedsWorkload);
    }

    [Fact]
    public void Compile_RouteWithUnknownCluster_Refused()
    {
        AssertProblems(
            c => Route(c, "status")["ClusterId"] = "nowhere",
            "ReverseProxy:Routes:status:ClusterId: unknown cluster 'nowhere'");
    }

    [Fact]
    public void Compile_ClusterThatCannotBeRead_ReportedOnceNotForEveryRouteUsingIt()
    {
        var errors = CompileErrors(c =>
            ((JsonObject)((JsonObject)c["ReverseProxy"]!["Clusters"]!).First().Value!)["HttpClient"] = new JsonObject { ["MaxConnectionsPerServer"] = "abc" });

        var line = Assert.Single(errors);
        Assert.Contains("cannot be read as a YARP cluster", line, StringComparison.Ordinal);
    }

    [Fact]
    public void Compile_FiveProblems_AllReportedAtOnce()
    {
        AssertProblems(
            c =>
            {
                Route(c, "status")["Metadata"]!["AssurancePolicy"] = "tokn-only";
                Policy(c, Deploy)["MaxTtl"] = "soon";
                Policy(c, Deploy)["Mode"] = "audit";
                Issuer(c)["Algorithms"] = new JsonArray("ES256", "none");
                Workload(c)["TrustedProxies"] = new JsonArray("10.0.0.0/33");
            },
            $"{DeployPath}:MaxTtl: 'soon' is not a duration (expected [d.]hh:mm:ss[.fff], e.g. 00:05:00)",
            $"{DeployPath}:Mode: 'audit' is not one of enforce | shadow",
            $"{IssuerPath}:Algorithms: 'none' is not allowed (allowed: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512; 'none' and HMAC are never accepted)",
            "Assurance:Workload:TrustedProxies: '10.0.0.0/33' is not an IP address or CIDR range (dotted-quad IPv4 without leading zeros, or IPv6)",
            "ReverseProxy:Routes:status:Metadata:AssurancePolicy: unknown policy 'tokn-only'");
    }

    [Fact]
    public void Compile_AalMapKeysWithColons_ParsedWhole()
    {
        var (settings, errors) = Compile(c => Tokens(c)["AalMap"] = new JsonObject
        {
            ["urn:aal1"] = 1, ["urn:aal2"] = 2, ["urn:aal3"] = 3, ["http://idp.example/acr/mfa"] = 2, ["pwd"] = 1,
        });

        Assert.Empty(errors);
        Assert.Equal(
            [("http://idp.example/acr/mfa", 2), ("pwd", 1), ("urn:aal1", 1), ("urn:aal2", 2), ("urn:aal3", 3)],
            settings!.Tokens.AalMap.OrderBy(e => e.Key, StringComparer.Ordinal).Select(e => (e.Key, e.Value)));
    }

    [Fact]
    public void Compile_AalMapOmitted_DefaultUrnLevels()
    {
        var (settings, errors) = Compile(c => Tokens(c).Remove("AalMap"));

        Assert.Empty(errors);
        Assert.Equal(2, settings!.Tokens.AalMap["urn:aal2"]);
        Assert.Equal(3, settings.Tokens.AalMap.Count);
    }

    [Fact]
    public void Compile_AalMapLevelOutOfRange_Refused()
    {
        AssertProblems(
            c => Tokens(c)["AalMap"] = new JsonObject { ["urn:aal1"] = 1, ["urn:aal2"] = 5 },
            "Assurance:Tokens:AalMap:urn:aal2: '5' is not an AAL from 0 to 3");
    }

    [Fact]
    public void Compile_RequireClaimsWithListsAndUrlNames_Parsed()
    {
        var (settings, errors) = Compile(c => Policy(c, Deploy)["RequireClaims"] = new JsonObject
        {
            ["repository"] = "org/app",
            ["environment"] = new JsonArray("prod", "staging"),
            ["https://ci.example/claims/team"] = "sre",
        });

        Assert.Empty(errors);
        var claims = settings!.Policies[Deploy].RequireClaims;
        Assert.Equal(3, claims.Count);
        Assert.Equal(["org/app"], claims["repository"]);
        Assert.Equal(["prod", "staging"], claims["environment"].Order(StringComparer.Ordinal)); // any one value matches
        Assert.Equal(["sre"], claims["https://ci.example/claims/team"]);
    }

    [Fact]
    public void Compile_RequireClaimsEmpty_NoClaims()
    {
        var (settings, errors) = Compile(c => Policy(c, Deploy)["RequireClaims"] = new JsonObject());

        Assert.Empty(errors);
        Assert.Empty(settings!.Policies[Deploy].RequireClaims);
    }

    [Fact]
    public void Compile_RequireClaimsEmptyValue_Refused()
    {
        AssertProblems(
            c => Policy(c, Deploy)["RequireClaims"] = new JsonObject { ["environment"] = new JsonArray("prod", string.Empty) },
            $"{DeployPath}:RequireClaims:environment:1: must be a non-empty string");
    }

    [Fact]
    public void Compile_CommandLineOverride_WinsOverFileAndIsValidated()
    {
        var json = TestConfig.Create("http://127.0.0.1:5001", _idp, _workload).ToJsonString();
        var configuration = new ConfigurationBuilder()
            .AddJsonStream(new MemoryStream(Encoding.UTF8.GetBytes(json)))
            .AddCommandLine(["--Assurance:Store:Timeout=bad"])
            .Build();

        GatewayConfigCompiler.Compile(configuration, _directory, out var errors);

        Assert.Equal(["Assurance:Store:Timeout: 'bad' is not a duration (expected [d.]hh:mm:ss[.fff], e.g. 00:05:00)"], errors);
    }

    [Theory]
    [InlineData("""{"PathSet":"/admin/wipe-everything"}""", "PathSet")]
    [InlineData("""{"PathPrefix":"/v2"}""", "PathPrefix")]
    [InlineData("""{"PathRemovePrefix":"/deploy"}""", "PathRemovePrefix")]
    [InlineData("""{"PathPattern":"/admin/{**rest}"}""", "PathPattern")]
    [InlineData("""{"QueryValueParameter":"force","Append":"true"}""", "QueryValueParameter")]
    [InlineData("""{"QueryRouteParameter":"force","Set":"rest"}""", "QueryRouteParameter")]
    [InlineData("""{"QueryRemoveParameter":"dry-run"}""", "QueryRemoveParameter")]
    [InlineData("""{"HttpMethodChange":"POST","Set":"DELETE"}""", "HttpMethodChange")]
    [InlineData("""{"pathset":"/admin"}""", "pathset")]
    public void Compile_TransformRewritesTargetOnRequestBoundRoute_Refused(string transform, string key)
    {
        // SPEC §7.4: the upstream receives exactly what was hashed and approved; a rewrite after the hash breaks that.
        AssertProblems(
            c => Route(c, "deploy")["Transforms"] = new JsonArray(JsonNode.Parse("""{"RequestHeadersCopy":"true"}"""), JsonNode.Parse(transform)),
            $"ReverseProxy:Routes:deploy:Transforms[1]: '{key}' changes the method, path or query, but policy '{Deploy}' binds request: the upstream must receive the request that was approved");
    }

    [Theory]
    [InlineData("""{"RequestHeader":"content-type","Set":"text/plain"}""", "RequestHeader", "changes")]
    [InlineData("""{"RequestHeader":"Content-Type","Append":"charset=latin1"}""", "RequestHeader", "changes")]
    [InlineData("""{"RequestHeaderRouteValue":"CONTENT-TYPE","Set":"rest"}""", "RequestHeaderRouteValue", "changes")]
    [InlineData("""{"RequestHeaderRemove":"Content-Type"}""", "RequestHeaderRemove", "drops")]
    [InlineData("""{"RequestHeadersAllowed":"accept;x-tenant"}""", "RequestHeadersAllowed", "drops")]
    [InlineData("""{"RequestHeadersCopy":"false"}""", "RequestHeadersCopy", "drops")]
    [InlineData("""{"ClientCert":"content-type"}""", "ClientCert", "changes")]
    public void Compile_TransformChangesBoundHeaderOnRequestBoundRoute_Refused(string transform, string key, string effect)
    {
        AssertProblems(
            c => Route(c, "deploy")["Transforms"] = new JsonArray(JsonNode.Parse(transform)),
            $"ReverseProxy:Routes:deploy:Transforms[0]: '{key}' {effect} the bound header 'content-type', but policy '{Deploy}' binds request: the upstream must receive the request that was approved");
    }

    [Fact]
    public void Compile_XForwardedWithAPrefixThatNamesABoundHeader_Refused()
    {
        // With HeaderPrefix "X-Release-" the proxy writes X-Release-For itself, over the value the grant approved.
        AssertProblems(
            c =>
            {
                Policy(c, Deploy)["BoundHeaders"] = new JsonArray("content-type", "x-release-for");
                Route(c, "deploy")["Transforms"] = new JsonArray(JsonNode.Parse("""{"X-Forwarded":"Set","HeaderPrefix":"X-Release-"}"""));
            },
            $"ReverseProxy:Routes:deploy:Transforms[0]: 'X-Forwarded' writes the bound header 'x-release-for', but policy '{Deploy}' binds request: the upstream must receive the request that was approved");
    }

    // A bound host reaches the upstream as X-Forwarded-Host only while the proxy sets it: appended to (or left alone), the
    // client's own X-Forwarded-Host, which no hash covers, comes first and names another tenant.
    [Theory]
    [InlineData("""{"X-Forwarded":"Append"}""", "Append")]
    [InlineData("""{"X-Forwarded":"Off"}""", "Off")]
    [InlineData("""{"X-Forwarded":"Set","Host":"Append"}""", "Append")]
    public void Compile_HostBoundButXForwardedHostNotSet_Refused(string transform, string action)
    {
        AssertProblems(
            c =>
            {
                Policy(c, Deploy)["BoundHeaders"] = new JsonArray("content-type", "host");
                Route(c, "deploy")["Transforms"] = new JsonArray(JsonNode.Parse(transform));
            },
            $"ReverseProxy:Routes:deploy:Transforms[0]: 'X-Forwarded' with '{action}' lets the client's own X-Forwarded-Host reach the upstream, which the bound host does not cover (use Set), but policy '{Deploy}' binds request: the upstream must receive the request that was approved");
    }

    [Fact]
    public void Compile_UnknownTransformOnRequestBoundRoute_Refused()
    {
        // A transform the gateway cannot judge (a custom one, or a misspelt key) may rewrite anything: refused.
        AssertProblems(
            c => Route(c, "deploy")["Transforms"] = new JsonArray(new JsonObject { ["RewriteEverything"] = "yes" }),
            $"ReverseProxy:Routes:deploy:Transforms[0]: 'RewriteEverything' is not a transform the gateway knows to leave the request unchanged, but policy '{Deploy}' binds request: the upstream must receive the request that was approved");
    }

    [Fact]
    public void Compile_TransformOnRouteGettingRequestBoundDefaultPolicy_Refused()
    {
        AssertProblems(
            c =>
            {
                Assurance(c)["DefaultPolicy"] = Deploy;
                Route(c, "status").Remove("Metadata");
                Route(c, "status")["Transforms"] = new JsonArray(new JsonObject { ["PathSet"] = "/admin" });
            },
            $"ReverseProxy:Routes:status:Transforms[0]: 'PathSet' changes the method, path or query, but policy '{Deploy}' binds request: the upstream must receive the request that was approved");
    }

    [Fact]
    public void Compile_TransformsKeepingApprovedRequestOnRequestBoundRoute_Accepted()
    {
        string[] transforms =
        [
            """{"X-Forwarded":"Set","For":"Append","Prefix":"Off"}""",
            """{"Forwarded":"by,for,host,proto","ByFormat":"Random","Action":"Append"}""",
            """{"ClientCert":"X-Client-Cert"}""",
            """{"RequestHeaderOriginalHost":"true"}""",
            """{"RequestHeadersCopy":"true"}""",
            """{"RequestHeader":"X-Tenant","Set":"blue"}""",
            """{"RequestHeaderRemove":"x-debug"}""",
            """{"RequestHeadersAllowed":"Content-Type;accept;authorization"}""",
            """{"ResponseHeadersCopy":"false"}""",
            """{"ResponseHeader":"Cache-Control","Set":"no-store","When":"Always"}""",
            """{"ResponseHeaderRemove":"Server"}""",
            """{"ResponseHeadersAllowed":"content-type"}""",
            """{"ResponseTrailersCopy":"true"}""",
            """{"ResponseTrailer":"grpc-status","Append":"0"}""",
            """{"ResponseTrailerRemove":"x-trace"}""",
            """{"ResponseTrailersAllowed":"grpc-status"}""",
        ];

        var (settings, errors) = Compile(c => Route(c, "deploy")["Transforms"] = new JsonArray([.. transforms.Select(t => JsonNode.Parse(t))]));

        Assert.Empty(errors);
        Assert.Equal(transforms.Length, settings!.Routes.Single(r => r.RouteId == "deploy").Transforms!.Count);
    }

    [Fact]
    public void Compile_RewritingTransformsOnRouteNotBindingRequest_Accepted()
    {
        // token-only binds nothing: no hash, nothing approved per request, so a rewrite cannot betray an approval.
        var (settings, errors) = Compile(c => Route(c, "status")["Transforms"] = new JsonArray(
            new JsonObject { ["PathSet"] = "/healthz" },
            new JsonObject { ["HttpMethodChange"] = "GET", ["Set"] = "HEAD" },
            new JsonObject { ["RequestHeadersCopy"] = "false" }));

        Assert.Empty(errors);
        Assert.Equal(3, settings!.Routes.Single(r => r.RouteId == "status").Transforms!.Count);
    }

    [Fact]
    public void Compile_RequireReplicaAcksWithEmbeddedStore_Refused()
    {
        // SPEC §7.6: the embedded store has no replica, so the acknowledgement it asks for could never be given.
        AssertProblems(
            c => Assurance(c)["Store"]!["RequireReplicaAcks"] = 1,
            "Assurance:Store:RequireReplicaAcks: needs Redis replicas, but Assurance:Store:Redis is empty (the embedded store has none)");
    }

    [Fact]
    public void Compile_RequireReplicaAcksWithRedis_Accepted()
    {
        var (settings, errors) = Compile(c =>
        {
            Assurance(c)["Store"]!["Redis"] = "127.0.0.1:6379";
            Assurance(c)["Store"]!["RequireReplicaAcks"] = 1;
        });

        Assert.Empty(errors);
        Assert.Equal(1, settings!.Store.RequireReplicaAcks);
    }

    [Theory]
    [InlineData("http://127.0.0.1:9100", "http://127.0.0.1:9100", "http://127.0.0.1:9100")]
    [InlineData("http://127.0.0.1:9101;http://127.0.0.1:9100", "http://127.0.0.1:9100/", "http://127.0.0.1:9100")]
    [InlineData("http://127.0.0.1:9101 ; http://localhost:9100", "http://127.0.0.1:9100", "http://localhost:9100")]
    [InlineData("http://*:9100", "http://127.0.0.1:9100", "http://*:9100")]
    [InlineData("http://0.0.0.0:9100", "http://10.1.2.3:9100", "http://0.0.0.0:9100")]
    [InlineData("http://[::1]:9100", "http://LOCALHOST:9100", "http://[::1]:9100")]
    [InlineData("http://127.0.0.1:80", "http://127.0.0.1", "http://127.0.0.1:80")]
    public void Compile_ProxyUrlsOverlapApiUrl_Refused(string urls, string api, string proxy)
    {
        // Both listeners cannot bind the same host and port; Kestrel would fail at start with a stack trace.
        AssertProblems(
            c =>
            {
                c["Urls"] = urls;
                Assurance(c)["Api"]!["Url"] = api;
            },
            $"Assurance:Api:Url: '{api}' takes the host and port of the proxy listener '{proxy}' in Urls: the assurance API needs its own listener");
    }

    [Theory]
    [InlineData("http://127.0.0.1:9100", "http://127.0.0.1:9101")]
    [InlineData("http://10.0.0.1:9100", "http://127.0.0.1:9100")]
    [InlineData("http://127.0.0.1:0", "http://127.0.0.1:0")]
    public void Compile_ProxyUrlsApartFromApiUrl_Accepted(string urls, string api)
    {
        var (_, errors) = Compile(c =>
        {
            c["Urls"] = urls;
            Assurance(c)["Api"]!["Url"] = api;
        });

        Assert.Empty(errors);
    }

    [Fact]
    public void Compile_ProxyUrlsNotAUrl_Refused()
    {
        AssertProblems(
            c => c["Urls"] = "http://127.0.0.1:9100;127.0.0.1:9101",
            "Urls: '127.0.0.1:9101' is not a listener URL (scheme://host:port)");
    }

    [Fact]
    public void Compile_KestrelEndpointOverlapsApiUrl_Refused()
    {
        // Kestrel listens on Kestrel:Endpoints when that section names any, and ignores Urls: the check follows it.
        AssertProblems(
            c =>
            {
                c["Urls"] = "http://127.0.0.1:9101";
                c["Kestrel"] = new JsonObject
                {
                    ["Endpoints"] = new JsonObject
                    {
                        ["proxy"] = new JsonObject { ["Url"] = "http://0.0.0.0:9100" },
                        ["bare"] = new JsonObject { ["Protocols"] = "Http1" },
                        ["odd"] = new JsonObject { ["Url"] = "9102" },
                    },
                };
                Assurance(c)["Api"]!["Url"] = "http://127.0.0.1:9100";
            },
            "Kestrel:Endpoints:bare:Url: is missing: each Kestrel endpoint needs a listener URL (scheme://host:port)",
            "Kestrel:Endpoints:odd:Url: '9102' is not a listener URL (scheme://host:port)",
            "Assurance:Api:Url: 'http://127.0.0.1:9100' takes the host and port of the proxy listener 'http://0.0.0.0:9100' in Kestrel:Endpoints:proxy:Url: the assurance API needs its own listener");
    }

    [Fact]
    public void Compile_KestrelEndpointsApartFromApiUrl_AcceptedWhateverUrlsSays()
    {
        // Urls is not where the proxy listens once Kestrel:Endpoints names an endpoint, so it overlaps nothing.
        var (_, errors) = Compile(c =>
        {
            c["Urls"] = "http://127.0.0.1:9100";
            c["Kestrel"] = new JsonObject { ["Endpoints"] = new JsonObject { ["proxy"] = new JsonObject { ["Url"] = "http://127.0.0.1:9101" } } };
            Assurance(c)["Api"]!["Url"] = "http://127.0.0.1:9100";
        });

        Assert.Empty(errors);
    }

    [Theory]
    [InlineData("Assurance:Tokens:Issuers:0:JwksFile")]
    [InlineData("Assurance:Workload:Issuers:0:JwksFile")]
    [InlineData("Assurance:Workload:ClientCaFile")]
    [InlineData("Assurance:Evidence:SigningKeyFile")]
    public void Compile_KeyFilePathWithNulCharacter_ProblemNamingTheKey(string key)
    {
        // Path.GetFullPath throws on a NUL: that must be one problem line, not an exception that escapes the compiler.
        var (settings, errors) = Compile(c =>
        {
            var parts = key.Split(':');
            JsonNode node = c;
            foreach (var part in parts[..^1])
            {
                node = int.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out var index) ? node[index]! : (node[part] ??= new JsonObject());
            }

            node[parts[^1]] = "keys/idp\u0000.json";
        });

        Assert.Null(settings);
        var line = Assert.Single(errors);
        Assert.StartsWith($"{key}: 'keys/idp\\u0000.json' is not a valid file path", line, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("Tokens", "JwksUri", "http://idp.example/jwks.json")]
    [InlineData("Tokens", "Authority", "http://idp.example")]
    [InlineData("Tokens", "JwksUri", "http://10.0.0.7:8080/jwks.json")]
    [InlineData("Workload", "JwksUri", "http://spire.example/jwks.json")]
    public void Compile_PlainHttpKeySourceNotLoopback_Refused(string section, string key, string value)
    {
        // IssuerKeySource refuses to fetch key material over plain http except on loopback: such an issuer could never
        // verify a token, so it is a configuration problem, not a 401 for every caller.
        AssertProblems(
            c =>
            {
                var issuer = (JsonObject)Assurance(c)[section]!["Issuers"]![0]!;
                issuer.Remove("JwksFile");
                issuer[key] = value;
            },
            $"Assurance:{section}:Issuers:0:{key}: '{value}' uses plain http: keys are fetched only over https (http only for a loopback address)");
    }

    [Theory]
    [InlineData("JwksUri", "http://127.0.0.1:8443/jwks.json")]
    [InlineData("JwksUri", "http://localhost:8443/jwks.json")]
    [InlineData("Authority", "http://[::1]:8443")]
    [InlineData("Authority", "https://idp.example")]
    public void Compile_KeySourceHttpsOrLoopback_Accepted(string key, string value)
    {
        var (_, errors) = Compile(c =>
        {
            Issuer(c).Remove("JwksFile");
            Issuer(c)[key] = value;
        });

        Assert.Empty(errors);
    }

    [Theory]
    [InlineData("MaxUses", "1")]
    [InlineData("MaxTtl", "00:01:00")]
    [InlineData("Approvals", "2")]
    [InlineData("MinimumApprovalAal", "2")]
    [InlineData("RevokeOn", "token_mismatch")]
    [InlineData("BoundHeaders", "content-type")]
    [InlineData("MaxBodyBytes", "10")]
    [InlineData("PendingTtl", "00:10:00")]
    [InlineData("MaxPendingPerSubject", "3")]
    [InlineData("OnMissing", "deny")]
    public void Compile_NoGrantPolicyWithGrantSetting_Refused(string key, string value)
    {
        AssertProblems(
            c => Policy(c, "token-only")[key] = value,
            $"Assurance:Policies:token-only:{key}: never applies: RequiresGrant is false, so no grant is ever checked");
    }

    [Fact]
    public void Compile_NoGrantPolicyWithChallenge_Refused()
    {
        AssertProblems(
            c => Policy(c, "token-only")["OnMissing"] = "challenge",
            "Assurance:Policies:token-only:OnMissing: 'challenge' needs a grant, but RequiresGrant is false");
    }

    // A challenge asks approval for exactly the challenged request (SPEC §2 step 5): without the request binding the
    // approved grant let its subject send any other request on the route.
    [Fact]
    public void Compile_ChallengeWithoutTheRequestBinding_Refused()
    {
        AssertProblems(
            c =>
            {
                Policy(c, Deploy)["OnMissing"] = "challenge";
                Policy(c, Deploy)["Bind"] = new JsonArray("token", "workload");
                Policy(c, Deploy).Remove("BoundHeaders");
                Policy(c, Deploy).Remove("MaxBodyBytes");
            },
            $"{DeployPath}:OnMissing: 'challenge' asks approval for exactly the challenged request, so Bind must include request");
    }

    [Fact]
    public void Compile_NoGrantPolicyWithEveryGrantSetting_OneLineEach()
    {
        var errors = CompileErrors(c =>
        {
            var p = Policy(c, "token-only");
            p["MaxUses"] = 1;
            p["MaxTtl"] = "00:01:00";
            p["Approvals"] = 3;
            p["MinimumApprovalAal"] = 3;
            p["RevokeOn"] = new JsonArray("token_mismatch");
            p["BoundHeaders"] = new JsonArray("content-type");
            p["MaxBodyBytes"] = 10;
        });

        Assert.Equal(7, errors.Count);
        Assert.All(errors, e => Assert.StartsWith("Assurance:Policies:token-only:", e, StringComparison.Ordinal));
    }

    [Fact]
    public void Compile_RequestSettingsOnPolicyNotBindingRequest_Refused()
    {
        // The body is read and limited, and headers hashed, only for the 'request' binding: here both would be ignored.
        AssertProblems(
            c => Policy(c, Deploy)["Bind"] = new JsonArray("token", "workload"),
            $"{DeployPath}:BoundHeaders: never applies: only the 'request' binding hashes headers, and this policy does not bind request",
            $"{DeployPath}:MaxBodyBytes: never applies: only the 'request' binding reads the body, and this policy does not bind request");
    }

    [Fact]
    public void Compile_EvidenceKeyHalvesDisagree_Refused()
    {
        // The evidence key is first used after a grant use was consumed: a key that cannot sign must stop the start.
        using var a = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        using var b = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var path = WriteEvidenceKey(a.ExportParameters(false), b.ExportParameters(true));

        var line = Assert.Single(CompileErrors(c => Assurance(c)["Evidence"] = new JsonObject { ["SigningKeyFile"] = path }));

        Assert.StartsWith($"Assurance:Evidence:SigningKeyFile: '{path}' does not hold a usable EC P-256 key pair", line, StringComparison.Ordinal);
    }

    [Fact]
    public void Compile_EvidenceKeyPublicPointNotOnCurve_Refused()
    {
        using var a = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var p = a.ExportParameters(true);
        p.Q.Y![^1] ^= 1;
        var path = WriteEvidenceKey(p, p);

        var line = Assert.Single(CompileErrors(c => Assurance(c)["Evidence"] = new JsonObject { ["SigningKeyFile"] = path }));

        Assert.StartsWith($"Assurance:Evidence:SigningKeyFile: '{path}' does not hold a usable EC P-256 key pair", line, StringComparison.Ordinal);
    }

    [Fact]
    public void Compile_EvidenceKeyPair_Accepted()
    {
        using var a = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var path = WriteEvidenceKey(a.ExportParameters(true), a.ExportParameters(true));

        var (settings, errors) = Compile(c => Assurance(c)["Evidence"] = new JsonObject { ["SigningKeyFile"] = path });

        Assert.Empty(errors);
        Assert.True(settings!.Evidence.SigningKey!.HasPrivateKey);
    }

    [Fact]
    public void Compile_PublishedKeyFiles_ReadInOrderPublicPartsOnly()
    {
        // Only the public part is ever kept: a private file (the next signing key, mounted ahead) must not leave d in
        // the settings, from which the JWKS is served.
        using var signing = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        using var next = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        using var old = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var signingPath = WriteEvidenceKey(signing.ExportParameters(true), signing.ExportParameters(true));
        var nextPath = WriteEvidenceKey(next.ExportParameters(true), next.ExportParameters(true), "ev-2");
        var oldPath = WriteEvidenceKey(old.ExportParameters(false), null, "ev-0");

        var (settings, errors) = Compile(c => Assurance(c)["Evidence"] = new JsonObject
        {
            ["SigningKeyFile"] = signingPath, ["PublishedKeyFiles"] = new JsonArray(nextPath, oldPath, signingPath),
        });

        Assert.Empty(errors);
        Assert.Equal([nextPath, oldPath, signingPath], settings!.Evidence.PublishedKeyFiles);
        Assert.Equal(["ev-2", "ev-0", "ev-1"], settings.Evidence.PublishedKeys.Select(k => k.Kid));
        Assert.All(settings.Evidence.PublishedKeys, k => Assert.False(k.HasPrivateKey));
        Assert.All(settings.Evidence.PublishedKeys, k => Assert.Null(k.D));
    }

    [Fact]
    public void Compile_PublishedKeyFilesWithoutSigningKey_Accepted()
    {
        // A gateway that no longer signs (or not yet) may still publish: evidence its peers signed keeps verifying.
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var path = WriteEvidenceKey(key.ExportParameters(false), null, "ev-2");

        var (settings, errors) = Compile(c => Assurance(c)["Evidence"] = new JsonObject { ["PublishedKeyFiles"] = new JsonArray(path) });

        Assert.Empty(errors);
        Assert.Null(settings!.Evidence.SigningKey);
        Assert.Equal("ev-2", Assert.Single(settings.Evidence.PublishedKeys).Kid);
    }

    [Fact]
    public void Compile_PublishedKeyFilesEachBroken_RefusedNamingEveryOne()
    {
        using var a = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        using var b = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        using var c1 = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        using var c2 = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var halves = WriteEvidenceKey(a.ExportParameters(false), b.ExportParameters(true), "ev-5");
        var offCurve = a.ExportParameters(false);
        offCurve.Q.Y![^1] ^= 1;
        var notOnCurve = WriteEvidenceKey(offCurve, null, "ev-6");
        var first = WriteEvidenceKey(c1.ExportParameters(false), null, "ev-7");
        var second = WriteEvidenceKey(c2.ExportParameters(false), null, "ev-7");
        var directory = _directory;

        var errors = CompileErrors(c => Assurance(c)["Evidence"] = new JsonObject
        {
            ["PublishedKeyFiles"] = new JsonArray(halves, notOnCurve, first, second, directory, new JsonObject()),
        });

        const string Key = "Assurance:Evidence:PublishedKeyFiles";
        Assert.Collection(
            errors,
            e => Assert.StartsWith($"{Key}:0: '{halves}' does not hold a usable EC P-256 key pair", e, StringComparison.Ordinal),
            e => Assert.StartsWith($"{Key}:1: '{notOnCurve}' does not hold a usable EC P-256 public key: ", e, StringComparison.Ordinal),
            e => Assert.Equal($"{Key}:3: '{second}' holds another key under kid 'ev-7' than {Key}:2 '{first}': a kid names one key", e),
            e => Assert.StartsWith($"{Key}:4: cannot read a JWK from '{directory}'", e, StringComparison.Ordinal),
            e => Assert.Equal($"{Key}:5: must be a string", e));
    }

    [Fact]
    public void Compile_PublishedKeyFilesWithSigningKeyWithoutKid_Refused()
    {
        // Once more than one key is published an upstream picks by kid: evidence without one matches no key for sure.
        using var signing = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        using var next = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var signingPath = WriteEvidenceKey(signing.ExportParameters(true), signing.ExportParameters(true), string.Empty);
        var nextPath = WriteEvidenceKey(next.ExportParameters(false), null, "ev-2");

        AssertProblems(
            c => Assurance(c)["Evidence"] = new JsonObject { ["SigningKeyFile"] = signingPath, ["PublishedKeyFiles"] = new JsonArray(nextPath) },
            $"Assurance:Evidence:SigningKeyFile: '{signingPath}' holds a key without a kid, and PublishedKeyFiles publishes others beside it: "
                + "upstreams pick the verification key by kid");
    }

    [Theory]
    [InlineData("""{"RequestHeadersCopy":"false"}""", "'RequestHeadersCopy' drops Assurance-Evidence")]
    [InlineData("""{"RequestHeadersAllowed":"accept;x-tenant"}""", "'RequestHeadersAllowed' drops Assurance-Evidence")]
    [InlineData("""{"RequestHeaderRemove":"assurance-evidence"}""", "'RequestHeaderRemove' drops Assurance-Evidence")]
    [InlineData("""{"RequestHeader":"Assurance-Evidence","Set":"eyJhbGciOiJub25lIn0.e30."}""", "'RequestHeader' changes Assurance-Evidence")]
    public void Compile_TransformLosingEvidenceOnTokenRoute_Refused(string transform, string problem)
    {
        // The grant would be consumed and the request forwarded without the evidence that vouches for it (or with a value
        // the configuration wrote): an upstream requiring evidence refuses an approved request whose one use is spent.
        // "status" uses token-only, which binds no request: the check is about evidence, not the request hash.
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var path = WriteEvidenceKey(key.ExportParameters(true), key.ExportParameters(true));

        AssertProblems(
            c =>
            {
                Assurance(c)["Evidence"] = new JsonObject { ["SigningKeyFile"] = path };
                Route(c, "status")["Transforms"] = new JsonArray(JsonNode.Parse(transform));
            },
            $"ReverseProxy:Routes:status:Transforms[0]: {problem}, which the gateway sets for the upstream on every request policy 'token-only' allows (Assurance:Evidence:SigningKeyFile is set)");
    }

    [Fact]
    public void Compile_TransformsKeepingEvidence_Accepted()
    {
        // An allow-list naming the evidence header keeps it; a passthrough route gets no evidence, so it keeps any transform;
        // without an evidence key nothing is set for the upstream.
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var path = WriteEvidenceKey(key.ExportParameters(true), key.ExportParameters(true));

        var (withKey, errors) = Compile(c =>
        {
            Assurance(c)["Evidence"] = new JsonObject { ["SigningKeyFile"] = path };
            Route(c, "status")["Transforms"] = new JsonArray(new JsonObject { ["RequestHeadersAllowed"] = "accept; assurance-evidence" });
            Route(c, "public")["Transforms"] = new JsonArray(new JsonObject { ["RequestHeadersCopy"] = "false" });
        });
        Assert.Empty(errors);
        Assert.NotNull(withKey);

        var (withoutKey, noKeyErrors) = Compile(c => Route(c, "status")["Transforms"] = new JsonArray(new JsonObject { ["RequestHeadersCopy"] = "false" }));
        Assert.Empty(noKeyErrors);
        Assert.NotNull(withoutKey);
    }

    /// <summary>An EC P-256 JWK file; without <paramref name="privateHalf"/>, a public one.</summary>
    private string WriteEvidenceKey(ECParameters publicHalf, ECParameters? privateHalf, string kid = "ev-1")
    {
        var path = Path.Combine(_directory, $"evidence-{Guid.NewGuid():N}.jwk.json");
        var jwk = new JsonObject
        {
            ["kty"] = "EC", ["crv"] = "P-256", ["kid"] = kid,
            ["x"] = Microsoft.IdentityModel.Tokens.Base64UrlEncoder.Encode(publicHalf.Q.X),
            ["y"] = Microsoft.IdentityModel.Tokens.Base64UrlEncoder.Encode(publicHalf.Q.Y),
        };
        if (privateHalf is { } half)
        {
            jwk["d"] = Microsoft.IdentityModel.Tokens.Base64UrlEncoder.Encode(half.D);
        }

        File.WriteAllText(path, jwk.ToJsonString());
        return path;
    }

    // The console logger is asked about each value: what it takes must never be refused (a false refusal would stop a
    // rollout), whichever formatter the values are meant for.
    [Fact]
    public void Compile_ConsoleLoggerOptionsItTakes_Valid()
    {
        var (settings, errors) = Compile(c => c["Logging"] = new JsonObject
        {
            ["LogLevel"] = new JsonObject { ["Default"] = "Information" },
            ["Console"] = new JsonObject
            {
                ["FormatterName"] = "json",
                ["LogToStandardErrorThreshold"] = "warning",
                ["MaxQueueLength"] = 4096,
                ["QueueFullMode"] = "DropWrite",
                ["LogLevel"] = new JsonObject { ["Yarp"] = "Warning" },
                ["FormatterOptions"] = new JsonObject
                {
                    ["SingleLine"] = true,
                    ["IncludeScopes"] = "False",
                    ["TimestampFormat"] = "HH:mm:ss ",
                    ["UseUtcTimestamp"] = true,
                    ["ColorBehavior"] = "Disabled",
                    ["JsonWriterOptions"] = new JsonObject { ["Indented"] = true },
                },
            },
        });

        Assert.Empty(errors);
        Assert.Equal("json", settings!.Logging["Logging:Console:FormatterName"]);
    }

    [Fact]
    public void Compile_ConsoleLoggerOptionsItCannotTake_EachNamed()
    {
        var errors = CompileErrors(c => c["Logging"] = new JsonObject
        {
            ["Console"] = new JsonObject
            {
                ["MaxQueueLength"] = 0,
                ["FormatterOptions"] = new JsonObject { ["SingleLine"] = "yes", ["ColorBehavior"] = "Auto" },
            },
        });

        Assert.Equal(3, errors.Count);
        Assert.Contains(errors, e => e.StartsWith("Logging:Console:FormatterOptions:ColorBehavior: 'Auto' is not taken by the console logger: ", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("Logging:Console:FormatterOptions:SingleLine: 'yes' is not taken by the console logger: ", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.StartsWith("Logging:Console:MaxQueueLength: '0' is not taken by the console logger: ", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("api-key=abc")]
    [InlineData("api-key=abc,x-tenant=7,")]
    [InlineData("Authorization=Bearer%20abc")]
    [InlineData("a=b=c")]
    public void Compile_OtlpHeadersWellFormed_Valid(string headers)
    {
        var (_, errors) = Compile(c => c["OTEL_EXPORTER_OTLP_HEADERS"] = headers);

        Assert.Empty(errors);
    }

    [Theory]
    [InlineData("abc", 1)]
    [InlineData("api-key=abc,abc", 2)]
    [InlineData("=abc", 1)]
    [InlineData("api key=abc", 1)]
    [InlineData("x=1,a%0Ab=c", 2)]
    [InlineData("x=a%0D%0AInjected: yes", 1)]
    [InlineData("x=1,,y=2", 2)]
    [InlineData("x=1, ,y=2", 2)]
    [InlineData(",x=1", 1)]
    [InlineData("x=1,,", 2)]
    [InlineData("  ", 1)]
    public void Compile_OtlpHeadersMalformed_RefusedByPositionWithoutValues(string headers, int entry)
    {
        AssertProblems(
            c => c["OTEL_EXPORTER_OTLP_METRICS_HEADERS"] = headers,
            $"OTEL_EXPORTER_OTLP_METRICS_HEADERS: entry {entry} is not name=value with a header name (comma-separated, e.g. api-key=…); values not shown");
    }

    private void AssertProblems(Action<JsonObject> edit, params string[] expected)
    {
        var (settings, errors) = Compile(edit);

        Assert.Equal(expected, errors);
        Assert.Null(settings);
    }

    private IReadOnlyList<string> CompileErrors(Action<JsonObject> edit)
    {
        var (settings, errors) = Compile(edit);
        Assert.Null(settings);
        return errors;
    }

    [Fact]
    public void Compile_RouteKeyMisspelt_RefusedRatherThanGivenTheDefaultPolicy()
    {
        // YARP's binder skips keys it does not know: with a passthrough default, a misspelt "Metdata" would forward the
        // protected route with no token and no grant.
        AssertProblems(
            c =>
            {
                Assurance(c)["DefaultPolicy"] = "passthrough";
                var deploy = Route(c, "deploy");
                deploy["Metdata"] = deploy["Metadata"]!.DeepClone();
                deploy.Remove("Metadata");
                ((JsonObject)deploy["Match"]!)["Pth"] = "/x";
            },
            "ReverseProxy:Routes:deploy:Metdata: unknown setting (known: " + string.Join(", ", RouteKeys()) + ")",
            "ReverseProxy:Routes:deploy:Match:Pth: unknown setting (known: " + string.Join(", ", typeof(Yarp.ReverseProxy.Configuration.RouteMatch).GetProperties().Where(p => p.CanWrite).Select(p => p.Name)) + ")");
    }

    [Theory]
    [InlineData("""["single-use-approval"]""")]
    [InlineData("\"\"")]
    [InlineData("\"  \"")]
    public void Compile_RouteAssurancePolicyNotOneName_Refused(string value)
    {
        // Not "no policy" (which a DefaultPolicy would fill): the operator named something, and it is not a policy name.
        AssertProblems(
            c =>
            {
                Assurance(c)["DefaultPolicy"] = "token-only";
                Route(c, "deploy")["Metadata"]!["AssurancePolicy"] = JsonNode.Parse(value);
            },
            "ReverseProxy:Routes:deploy:Metadata:AssurancePolicy: must name one policy (a non-empty string)");
    }

    [Theory]
    [InlineData("MinimumAal")]
    [InlineData("MinimumApprovalAal")]
    [InlineData("Approvals")]
    [InlineData("MaxTtl")]
    [InlineData("Mode")]
    public void Compile_TypedSettingPresentButEmpty_Refused(string key)
    {
        // An empty environment variable (Assurance__Policies__p__MinimumAal=) is a key with an empty value: its default
        // (MinimumAal 0) would silently replace the file's 2.
        var json = TestConfig.Create("http://127.0.0.1:5001", _idp, _workload);
        var configuration = new ConfigurationBuilder()
            .AddJsonStream(new MemoryStream(Encoding.UTF8.GetBytes(json.ToJsonString())))
            .AddInMemoryCollection(new Dictionary<string, string?> { [$"{DeployPath}:{key}"] = "" })
            .Build();

        var settings = GatewayConfigCompiler.Compile(configuration, _directory, out var errors);

        Assert.Null(settings);
        Assert.Equal([$"{DeployPath}:{key}: is empty: give a value, or leave the key out for its default"], errors);
    }

    [Fact]
    public void Compile_TypedSettingAsEmptyObject_Refused()
    {
        AssertProblems(c => Policy(c, Deploy)["MinimumAal"] = new JsonObject(), $"{DeployPath}:MinimumAal: is empty: give a value, or leave the key out for its default");
    }

    [Theory]
    [InlineData("Assurance:Store", "\"127.0.0.1:6379\"", "must be a section (a JSON object), not the single value '127.0.0.1:6379'")]
    [InlineData("Assurance:Evidence", "\"config/keys/evidence.jwk.json\"", "must be a section (a JSON object), not the single value 'config/keys/evidence.jwk.json'")]
    [InlineData("Assurance:Policies:single-use-approval", "\"strict\"", "must be a section (a JSON object), not the single value 'strict'")]
    [InlineData("Assurance:Policies:single-use-approval", "null", "is empty: give the policy its settings (\"Bind\": [] for one that binds the route alone)")]
    [InlineData("Assurance:Policies:single-use-approval", "{}", "is empty: give the policy its settings (\"Bind\": [] for one that binds the route alone)")]
    [InlineData("Assurance:Policies:single-use-approval:RequireClaims", "\"admin\"", "must be a section (a JSON object), not the single value 'admin'")]
    public void Compile_SectionGivenAsSingleValueOrEmpty_Refused(string key, string value, string problem)
    {
        // Read as an empty section, every setting in it would be its default: the embedded store, no signed evidence, a
        // policy with nothing bound, no required claim.
        var errors = CompileErrors(c =>
        {
            var parts = key.Split(':');
            var parent = (JsonObject)c[parts[0]]!;
            foreach (var part in parts[1..^1])
            {
                parent = (JsonObject)parent[part]!;
            }

            parent[parts[^1]] = JsonNode.Parse(value);
        });

        Assert.Contains($"{key}: {problem}", errors);
    }

    [Fact]
    public void Compile_WorkloadIssuerConfiguredTwice_Refused()
    {
        // It once compiled, and building the runtime then threw (a frozen dictionary with a duplicate key).
        AssertProblems(
            c =>
            {
                var issuers = (JsonArray)Workload(c)["Issuers"]!;
                issuers.Add(issuers[0]!.DeepClone());
            },
            "Assurance:Workload:Issuers:1:Issuer: issuer 'spiffe://prod.test' is configured twice");
    }

    [Theory]
    [InlineData("not a url", "'not a url' is not an absolute http(s) URL")]
    [InlineData("127.0.0.1:5001", "'127.0.0.1:5001' is not an absolute http(s) URL")]
    [InlineData("ftp://127.0.0.1:5001", "'ftp://127.0.0.1:5001' is not an absolute http(s) URL")]
    public void Compile_DestinationAddressNotAnHttpUrl_Refused(string address, string problem)
    {
        // YARP starts with it and answers every request of the cluster 502.
        var errors = CompileErrors(c => ((JsonObject)((JsonObject)c["ReverseProxy"]!["Clusters"]!).First().Value!["Destinations"]!["d1"]!)["Address"] = address);

        Assert.Contains(errors, e => e.EndsWith($":Destinations:d1:Address: {problem}", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("http://127.0.0.1:9100/proxy", null, "Urls: 'http://127.0.0.1:9100/proxy' has a path ('/proxy'): a listener is scheme://host:port only")]
    [InlineData("https://127.0.0.1:9100", null, "Urls: 'https://127.0.0.1:9100' is https, but no server certificate is configured (Kestrel:Certificates:Default, or the endpoint's Certificate)")]
    [InlineData("http://127.0.0.1:9100", "https://127.0.0.1:9101", "Assurance:Api:Url: 'https://127.0.0.1:9101': the assurance API listens on plain http (terminate TLS in front of it)")]
    [InlineData("http://127.0.0.1:9100", "http://127.0.0.1:9101/api", "Assurance:Api:Url: 'http://127.0.0.1:9101/api' has a path ('/api'): a listener is scheme://host:port only")]
    public void Compile_ListenerKestrelCannotBind_Refused(string urls, string? api, string problem)
    {
        AssertProblems(
            c =>
            {
                c["Urls"] = urls;
                if (api is not null)
                {
                    Assurance(c)["Api"]!["Url"] = api;
                }
            },
            problem);
    }

    [Fact]
    public void Compile_HttpsListenerWithACertificate_Accepted()
    {
        // The default certificate, an endpoint's own (by file or from a store), or its SNI ones: what Kestrel needs for https.
        var (_, withDefault) = Compile(c =>
        {
            c["Urls"] = "https://127.0.0.1:9100";
            c["Kestrel"] = new JsonObject { ["Certificates"] = new JsonObject { ["Default"] = new JsonObject { ["Path"] = "gw.pfx", ["Password"] = "pw" } } };
        });
        var (_, withEndpoint) = Compile(c => c["Kestrel"] = new JsonObject
        {
            ["Endpoints"] = new JsonObject
            {
                ["proxy"] = new JsonObject { ["Url"] = "https://127.0.0.1:9100", ["Certificate"] = new JsonObject { ["Subject"] = "gw", ["Store"] = "My" } },
            },
        });

        var (_, withSni) = Compile(c => c["Kestrel"] = JsonNode.Parse("""
            { "Endpoints": { "proxy": { "Url": "https://127.0.0.1:9443",
                "Sni": { "gateway.example.com": { "Certificate": { "Path": "/etc/tls/gw.pem", "KeyPath": "/etc/tls/gw.key" } } } } } }
            """));

        Assert.Empty(withDefault);
        Assert.Empty(withEndpoint);
        Assert.Empty(withSni);
    }

    [Fact]
    public void Compile_HttpsEndpointWithAnSniHostWithoutCertificateAndNoFallback_Refused()
    {
        // A host whose Certificate names no file (Path) or store (Subject) falls back to the endpoint's certificate or the
        // default: with neither, Kestrel throws at start.
        AssertProblems(
            c => c["Kestrel"] = JsonNode.Parse("""
                { "Endpoints": { "proxy": { "Url": "https://127.0.0.1:9443",
                    "Sni": { "a.example": { "Certificate": { "Path": "/etc/tls/a.pem", "KeyPath": "/etc/tls/a.key" } },
                             "b.example": { "Certificate": { "KeyPath": "/etc/tls/b.key" } } } } } }
                """),
            "Kestrel:Endpoints:proxy:Url: 'https://127.0.0.1:9443' is https, but no server certificate is configured (Kestrel:Certificates:Default, or the endpoint's Certificate)");
    }

    [Theory]
    [InlineData("P-999")]
    [InlineData("P-256")] // a point that is not on the curve
    public void Compile_JwksWhoseOnlyKeyIsUnusable_RefusedAtStart(string curve)
    {
        // Accepted, it would have failed every token of the issuer at run time with 401.
        var garbage = Microsoft.IdentityModel.Tokens.Base64UrlEncoder.Encode(Enumerable.Repeat((byte)7, 32).ToArray());
        var jwks = Path.Combine(_directory, $"bad-{curve}.jwks.json");
        File.WriteAllText(jwks, new JsonObject
        {
            ["keys"] = new JsonArray(new JsonObject { ["kty"] = "EC", ["crv"] = curve, ["kid"] = "k1", ["x"] = garbage, ["y"] = garbage, ["use"] = "sig" }),
        }.ToJsonString());

        AssertProblems(c => Issuer(c)["JwksFile"] = jwks, $"{IssuerPath}:JwksFile: '{jwks}' holds no signing key: every token of this issuer is refused");
    }

    private static string[] RouteKeys() =>
        [.. typeof(Yarp.ReverseProxy.Configuration.RouteConfig).GetProperties().Where(p => p.CanWrite).Select(p => p.Name)];

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

    private static JsonObject Policies(JsonObject c) => (JsonObject)Assurance(c)["Policies"]!;

    private static JsonObject Policy(JsonObject c, string name) => (JsonObject)Policies(c)[name]!;

    private static JsonObject Tokens(JsonObject c) => (JsonObject)Assurance(c)["Tokens"]!;

    private static JsonObject Issuer(JsonObject c) => (JsonObject)Tokens(c)["Issuers"]![0]!;

    private static JsonObject Workload(JsonObject c) => (JsonObject)Assurance(c)["Workload"]!;

    private static JsonObject Route(JsonObject c, string id) => (JsonObject)c["ReverseProxy"]!["Routes"]![id]!;
}
