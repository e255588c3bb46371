using System.Diagnostics;
using System.Net;
using System.Text.Json.Nodes;
using AssuranceGateway.Configuration;
using AssuranceGateway.Testing;

namespace AssuranceGateway.FunctionalTests.Configuration;

/// <summary>Configurations a lenient reader would start (or crash) with, against the built host and a real gateway.</summary>
public sealed class ConfigStrictnessHostTests : IDisposable
{
    private const string Header = "Invalid gateway configuration:";
    private static readonly TimeSpan ExitTimeout = TimeSpan.FromSeconds(30);

    private readonly string _directory = Path.Combine(Path.GetTempPath(), "agw-host", Guid.NewGuid().ToString("N"));
    private readonly TestIssuer _idp;
    private readonly TestIssuer _workload;

    public ConfigStrictnessHostTests()
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
    /// SPEC §3: invalid configuration → exit non-zero, one line per problem naming the key. A workload issuer listed twice
    /// once passed the compiler and then crashed the host (SIGABRT, exit 134) with an unhandled ArgumentException.
    /// </summary>
    [Fact]
    public async Task Host_WorkloadIssuerConfiguredTwice_Exit2NamingTheKey()
    {
        var config = ValidConfig();
        var issuers = (JsonArray)config["Assurance"]!["Workload"]!["Issuers"]!;
        issuers.Add(issuers[0]!.DeepClone());

        var run = await RunHostAsync(["--config", WriteConfig(config)]);

        Assert.DoesNotContain("Unhandled exception", run.Stderr, StringComparison.Ordinal);
        Assert.Equal(2, run.ExitCode);
        Assert.Equal(Header, run.StderrLines[0]);
        Assert.Contains(run.StderrLines, l => l.StartsWith("Assurance:Workload:Issuers:1:Issuer:", StringComparison.Ordinal));
    }

    /// <summary>
    /// Listener URLs the compiler accepts but Kestrel refuses at start: a path (Kestrel wants UsePathBase), https with no
    /// certificate, and any https Assurance:Api:Url (the API host never enables HTTPS). Each ends in an unhandled
    /// exception and a stack trace (exit 134), not a line naming the key.
    /// </summary>
    [Theory]
    [InlineData("Urls", "http://127.0.0.1:{0}/proxy")]
    [InlineData("Urls", "https://127.0.0.1:{0}")]
    [InlineData("Assurance:Api:Url", "http://127.0.0.1:{0}/api")]
    [InlineData("Assurance:Api:Url", "https://127.0.0.1:{0}")]
    public async Task Host_ListenerUrlKestrelCannotBind_Exit2NamingTheKey(string key, string format)
    {
        var config = ValidConfig();
        config["Urls"] = $"http://127.0.0.1:{GatewayProcess.FreePort()}";
        config["Assurance"]!["Api"]!["Url"] = $"http://127.0.0.1:{GatewayProcess.FreePort()}";
        var value = string.Format(System.Globalization.CultureInfo.InvariantCulture, format, GatewayProcess.FreePort());
        if (key == "Urls")
        {
            config["Urls"] = value;
        }
        else
        {
            config["Assurance"]!["Api"]!["Url"] = value;
        }

        var run = await RunHostAsync(["--config", WriteConfig(config)]);

        Assert.DoesNotContain("   at ", run.Stderr, StringComparison.Ordinal); // a problem line, not a stack trace
        Assert.Equal(2, run.ExitCode);
        Assert.Contains(run.StderrLines, l => l.StartsWith(key + ":", StringComparison.Ordinal));
    }

    /// <summary>
    /// SPEC §3: an invalid change is refused and logged. A reload adding a duplicate workload issuer throws out of
    /// GatewayConfigState.Apply (outside ReloadAsync's try/catch) in a fire-and-forget task: nothing is logged, the
    /// operator sees neither "applied" (101) nor "refused" (100).
    /// </summary>
    [Fact]
    public async Task Reload_WorkloadIssuerConfiguredTwice_RefusedAndLogged()
    {
        await using var gateway = await GatewayHarness.StartAsync();
        var config = gateway.DefaultConfig();
        var issuers = (JsonArray)config["Assurance"]!["Workload"]!["Issuers"]!;
        issuers.Add(issuers[0]!.DeepClone());

        bool applied;
        try
        {
            applied = await gateway.ReloadAsync(config);
        }
        catch (TimeoutException)
        {
            Assert.Fail("the change was neither applied nor refused: no log line says why the new file is not in force");
            return;
        }

        Assert.False(applied);
        Assert.Contains(gateway.RefusedReloads(), l => l.Contains("Assurance:Workload:Issuers:1", StringComparison.Ordinal));
    }

    /// <summary>
    /// A reload that changes Urls is logged as "Configuration change applied", but Kestrel keeps the old listener and no
    /// "restart required" warning (event 102, as for Store and Api) is written.
    /// </summary>
    [Fact]
    public async Task Reload_UrlsChanged_WarnsThatARestartIsNeeded()
    {
        await using var gateway = await GatewayHarness.StartAsync();
        var config = gateway.DefaultConfig();
        var newUrl = $"http://127.0.0.1:{GatewayProcess.FreePort()}";
        config["Urls"] = newUrl;
        config["Assurance"]!["Store"]!["KeyPrefix"] = gateway.Config.Current.Settings.Store.KeyPrefix; // only Urls changes

        var applied = await gateway.ReloadAsync(config);

        using var client = new HttpClient { BaseAddress = new Uri(newUrl) };
        var listening = await Record.ExceptionAsync(() => client.GetAsync("/public/x")) is null;
        Assert.True(listening || !applied || gateway.Logs.Lines.Any(l => l.Contains("[102]", StringComparison.Ordinal) && l.Contains("Urls", StringComparison.Ordinal)),
            $"applied={applied}, new Urls '{newUrl}' not listening, and no restart warning; log: {string.Join(" | ", gateway.Logs.Lines.Where(l => l.Contains("GatewayConfigState", StringComparison.Ordinal)))}");
    }

    /// <summary>
    /// With Assurance:DefaultPolicy "passthrough", a misspelt "Metadata" on the protected deploy route is not reported and
    /// the route is served without any enforcement: a request with no token reaches the upstream.
    /// </summary>
    [Fact]
    public async Task Start_RouteMetadataMisspeltWithPassthroughDefault_TokenlessRequestReachesUpstream()
    {
        await using var gateway = await GatewayHarness.CreateAsync();
        var config = gateway.DefaultConfig();
        config["Assurance"]!["DefaultPolicy"] = "passthrough";
        var deploy = config["ReverseProxy"]!["Routes"]!["deploy"]!.AsObject();
        deploy["Metdata"] = deploy["Metadata"]!.DeepClone();
        deploy.Remove("Metadata");
        try
        {
            await gateway.StartWithAsync(config);
        }
        catch (GatewayConfigurationException)
        {
            return; // refused at start: the correct behaviour
        }

        using var response = await gateway.Proxy.PostAsync("/deploy/v1/releases", new StringContent("{}", System.Text.Encoding.UTF8, "application/json"));

        Assert.Equal(0, gateway.Upstream.Count);
        Assert.NotEqual(HttpStatusCode.OK, response.StatusCode);
    }

    /// <summary>
    /// A cluster destination Address that is not an absolute http(s) URL passes both the compiler and YARP's validator:
    /// the gateway starts, and every request routed to that cluster ends in 502 (UriFormatException / NotSupportedException
    /// logged per request) instead of the start being refused with a line naming the key.
    /// </summary>
    [Theory]
    [InlineData("not a url")]
    [InlineData("127.0.0.1:5001")]
    [InlineData("ftp://127.0.0.1:5001")]
    public async Task Host_ClusterDestinationAddressNotAUrl_Exit2NamingTheKey(string address)
    {
        var config = ValidConfig();
        config["Urls"] = $"http://127.0.0.1:{GatewayProcess.FreePort()}";
        config["Assurance"]!["Api"]!["Url"] = $"http://127.0.0.1:{GatewayProcess.FreePort()}";
        config["ReverseProxy"]!["Clusters"]!["upstream"]!["Destinations"]!["d1"]!["Address"] = address;

        HostRun run;
        try
        {
            run = await RunHostAsync(["--config", WriteConfig(config)], TimeSpan.FromSeconds(8));
        }
        catch (TimeoutException)
        {
            Assert.Fail($"the host started listening with destination Address '{address}'");
            return;
        }

        Assert.Equal(2, run.ExitCode);
        Assert.Contains(run.StderrLines, l => l.StartsWith("ReverseProxy:Clusters:upstream:Destinations:d1:Address:", StringComparison.Ordinal));
    }

    /// <summary>
    /// The compiler accepts a JWKS whose only ES key is unusable (a curve that does not exist, a point not on P-256):
    /// "holds no signing key" is checked, usability is not (the evidence key is proved, issuer keys are not).
    /// </summary>
    [Theory]
    [InlineData("P-999")]
    [InlineData("P-256")]
    public async Task Start_JwksWithUnusableEcKey_Refused(string curve)
    {
        await using var gateway = await GatewayHarness.CreateAsync();
        var config = gateway.DefaultConfig();
        var garbage = Microsoft.IdentityModel.Tokens.Base64UrlEncoder.Encode(Enumerable.Repeat((byte)7, 32).ToArray());
        var jwks = Path.Combine(gateway.Directory, "bad.jwks.json");
        File.WriteAllText(jwks, new JsonObject
        {
            ["keys"] = new JsonArray(new JsonObject { ["kty"] = "EC", ["crv"] = curve, ["kid"] = "k1", ["x"] = garbage, ["y"] = garbage, ["use"] = "sig" }),
        }.ToJsonString());
        config["Assurance"]!["Tokens"]!["Issuers"]![0]!["JwksFile"] = jwks;
        try
        {
            await gateway.StartWithAsync(config);
        }
        catch (GatewayConfigurationException)
        {
            return; // refused at start: the correct behaviour
        }

        using var request = new HttpRequestMessage(HttpMethod.Get, "/status");
        request.Headers.Authorization = new("Bearer", gateway.Idp.Token());
        using var response = await gateway.Proxy.SendAsync(request);

        Assert.Fail($"started with an unusable issuer key; a token of that issuer gets {(int)response.StatusCode}");
    }

    private JsonObject ValidConfig() => TestConfig.Create("http://127.0.0.1:5001", _idp, _workload);

    private string WriteConfig(JsonObject config)
    {
        var path = Path.Combine(_directory, $"{Guid.NewGuid():N}.json");
        File.WriteAllText(path, config.ToJsonString());
        return path;
    }

    private async Task<HostRun> RunHostAsync(string[] args, TimeSpan? startedAfter = null)
    {
        var psi = new ProcessStartInfo(GatewayProcess.DotnetHost())
        {
            WorkingDirectory = _directory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(GatewayProcess.HostDll());
        foreach (var arg in args)
        {
            psi.ArgumentList.Add(arg);
        }

        psi.Environment.Remove("GATEWAY_CONFIG");
        foreach (var key in psi.Environment.Keys.Where(k => k.StartsWith("Assurance__", StringComparison.OrdinalIgnoreCase) || k.StartsWith("ReverseProxy__", StringComparison.OrdinalIgnoreCase)).ToList())
        {
            psi.Environment.Remove(key);
        }

        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(startedAfter ?? ExitTimeout);
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync();
            if (startedAfter is not null)
            {
                throw new TimeoutException("still running");
            }

            Assert.Fail($"the host did not exit within {ExitTimeout.TotalSeconds} s (it should refuse to start)");
        }

        return new HostRun(process.ExitCode, await stdout, await stderr);
    }

    private sealed record HostRun(int ExitCode, string Stdout, string Stderr)
    {
        public List<string> StderrLines { get; } = [.. Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)];
    }
}
