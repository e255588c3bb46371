using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using AssuranceGateway.Testing;

namespace AssuranceGateway.FunctionalTests.Configuration;

/// <summary>
/// SPEC §3, run as an operator would: the built host (<c>dotnet Gateway.dll</c>) with an invalid configuration exits
/// with code 2 and names every problem on stderr, one line each, and never starts listening. The file is named by
/// <c>--config</c> or <c>GATEWAY_CONFIG</c>; environment variables and <c>--Key=value</c> arguments override single keys.
/// </summary>
public sealed class HostStartupTests : IDisposable
{
    private const string Header = "Invalid gateway configuration:";
    private static readonly TimeSpan ExitTimeout = TimeSpan.FromSeconds(30);

    private readonly string _directory = Path.Combine(Path.GetTempPath(), "agw-host", Guid.NewGuid().ToString("N"));
    private readonly TestIssuer _idp;
    private readonly TestIssuer _workload;

    public HostStartupTests()
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
    public async Task Host_ConfigWithManyProblems_Exit2AndEveryProblemOnStderr()
    {
        var config = ValidConfig();
        config["ReverseProxy"]!["Routes"]!["status"]!["Metadata"]!["AssurancePolicy"] = "tokn-only";
        config["Assurance"]!["Policies"]!["single-use-approval"]!["Bind"] = new JsonArray("token", "workloads");
        config["Assurance"]!["Policies"]!["single-use-approval"]!["MaxTtl"] = "soon";
        config["Assurance"]!["Tokens"]!["Issuers"]![0]!["JwksFile"] = Path.Combine(_directory, "missing.jwks.json");
        config["ReverseProxy"]!["Routes"]!["public"]!["ClusterId"] = "nowhere";
        // Invalid for YARP only (a route must match on something): reported in the same run as ours.
        ((JsonObject)config["ReverseProxy"]!["Routes"]!["agent"]!).Remove("Match");

        var run = await RunHostAsync(["--config", WriteConfig(config)]);

        Assert.Equal(2, run.ExitCode);
        var lines = run.StderrLines;
        Assert.Equal(Header, lines[0]);
        Assert.Contains("Assurance:Policies:single-use-approval:Bind: unknown binding 'workloads' (known: subject, session, token, workload, origin, request)", lines);
        Assert.Contains("Assurance:Policies:single-use-approval:MaxTtl: 'soon' is not a duration (expected [d.]hh:mm:ss[.fff], e.g. 00:05:00)", lines);
        Assert.Contains(lines, l => l.StartsWith($"Assurance:Tokens:Issuers:0:JwksFile: cannot read '{Path.Combine(_directory, "missing.jwks.json")}'", StringComparison.Ordinal));
        Assert.Contains("ReverseProxy:Routes:status:Metadata:AssurancePolicy: unknown policy 'tokn-only'", lines);
        Assert.Contains("ReverseProxy:Routes:public:ClusterId: unknown cluster 'nowhere'", lines);
        Assert.Contains(lines, l => l.StartsWith("ReverseProxy:Routes:agent: ", StringComparison.Ordinal));
        Assert.Equal(7, lines.Count);
        Assert.DoesNotContain("Now listening", run.Stdout, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", run.Stderr, StringComparison.Ordinal); // problems, not a stack trace
    }

    [Fact]
    public async Task Host_GatewayConfigEnvironmentVariable_NamesTheFile()
    {
        var config = ValidConfig();
        config["Assurance"]!["DefaultPolicy"] = "from-env-file";

        var run = await RunHostAsync([], new() { ["GATEWAY_CONFIG"] = WriteConfig(config) });

        Assert.Equal(2, run.ExitCode);
        Assert.Equal([Header, "Assurance:DefaultPolicy: unknown policy 'from-env-file'"], run.StderrLines);
    }

    [Fact]
    public async Task Host_ConfigArgument_WinsOverEnvironmentVariable()
    {
        var fromArgument = ValidConfig();
        fromArgument["Assurance"]!["DefaultPolicy"] = "from-argument";
        var fromEnvironment = ValidConfig();
        fromEnvironment["Assurance"]!["DefaultPolicy"] = "from-env-file";

        var run = await RunHostAsync(
            ["--config", WriteConfig(fromArgument)], new() { ["GATEWAY_CONFIG"] = WriteConfig(fromEnvironment) });

        Assert.Equal([Header, "Assurance:DefaultPolicy: unknown policy 'from-argument'"], run.StderrLines);
    }

    [Fact]
    public async Task Host_CommandLineKeyOverride_OverridesFileAndIsReported()
    {
        var run = await RunHostAsync(["--config", WriteConfig(ValidConfig()), "--Assurance:Store:Timeout=bad"]);

        Assert.Equal(2, run.ExitCode);
        Assert.Equal([Header, "Assurance:Store:Timeout: 'bad' is not a duration (expected [d.]hh:mm:ss[.fff], e.g. 00:05:00)"], run.StderrLines);
    }

    [Fact]
    public async Task Host_EnvironmentKeyOverride_OverridesFileAndIsReported()
    {
        var run = await RunHostAsync(["--config", WriteConfig(ValidConfig())], new() { ["Assurance__Policies__token-only__MinimumAal"] = "7" });

        Assert.Equal(2, run.ExitCode);
        Assert.Equal([Header, "Assurance:Policies:token-only:MinimumAal: '7' is not a whole number from 0 to 3"], run.StderrLines);
    }

    [Fact]
    public async Task Host_ConfigFileMissing_Exit2NamingTheFile()
    {
        var path = Path.Combine(_directory, "absent.json");

        var run = await RunHostAsync(["--config", path]);

        Assert.Equal(2, run.ExitCode);
        Assert.Equal([Header, $"{path}: '{path}' does not exist"], run.StderrLines);
    }

    [Fact]
    public async Task Host_ConfigIsADirectory_Exit2SayingSo()
    {
        // A mount point named instead of the file in it: "does not exist" would send the operator looking for a mount.
        var run = await RunHostAsync(["--config", _directory]);

        Assert.Equal(2, run.ExitCode);
        Assert.Equal([Header, $"{_directory}: '{_directory}' is a directory: name the configuration file in it"], run.StderrLines);
    }

    /// <summary>
    /// "Verbose" is Serilog's word, not a level here: the host died at its first log line with an unhandled exception,
    /// a stack trace and exit 134 (a crash loop in Kubernetes), from the file or the environment alike.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Host_LogLevelThatIsNoLevel_Exit2NamingTheKey(bool inFile)
    {
        var config = ValidConfig();
        Dictionary<string, string> environment = [];
        if (inFile)
        {
            config["Logging"] = new JsonObject { ["LogLevel"] = new JsonObject { ["Default"] = "Information", ["Yarp"] = "Verbose" } };
        }
        else
        {
            environment["Logging__Console__LogLevel__Default"] = "Verbose";
        }

        var run = await RunHostAsync(["--config", WriteConfig(config)], environment);

        Assert.Equal(2, run.ExitCode);
        var key = inFile ? "Logging:LogLevel:Yarp" : "Logging:Console:LogLevel:Default";
        Assert.Equal([Header, $"{key}: 'Verbose' is not a log level (Trace, Debug, Information, Warning, Error, Critical, None)"], run.StderrLines);
    }

    /// <summary>
    /// The console logger binds Logging:Console itself (its options, its formatters' FormatterOptions): a value it cannot
    /// bind ended the host at its first log line with an unhandled exception and exit 134, from the file or the environment.
    /// </summary>
    [Fact]
    public async Task Host_ConsoleLoggerOptionsItCannotTake_Exit2NamingEveryKey()
    {
        var config = ValidConfig();
        config["Logging"] = new JsonObject
        {
            ["Console"] = new JsonObject { ["MaxQueueLength"] = -5, ["FormatterOptions"] = new JsonObject { ["ColorBehavior"] = "Sometimes" } },
        };

        var run = await RunHostAsync(["--config", WriteConfig(config)], new() { ["Logging__Console__LogToStandardErrorThreshold"] = "Verbose" });

        Assert.Equal(2, run.ExitCode);
        var lines = run.StderrLines;
        Assert.Equal(Header, lines[0]);
        Assert.Contains(lines, l => l.StartsWith("Logging:Console:LogToStandardErrorThreshold: 'Verbose' ", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.StartsWith("Logging:Console:MaxQueueLength: '-5' ", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.StartsWith("Logging:Console:FormatterOptions:ColorBehavior: 'Sometimes' ", StringComparison.Ordinal));
        Assert.Equal(4, lines.Count);
        Assert.DoesNotContain("   at ", run.Stderr, StringComparison.Ordinal);
    }

    /// <summary>An OTLP endpoint without a scheme made the exporter send nothing, without a word (SPEC §6: evidence).</summary>
    [Fact]
    public async Task Host_OtlpEndpointOrProtocolInvalid_Exit2NamingTheVariables()
    {
        var run = await RunHostAsync(["--config", WriteConfig(ValidConfig())], new()
        {
            ["OTEL_EXPORTER_OTLP_ENDPOINT"] = "collector:4318",
            ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] = "http/json",
        });

        Assert.Equal(2, run.ExitCode);
        Assert.Equal(
            [
                Header,
                "OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318' is not an absolute http(s) URL (e.g. http://collector:4318)",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json' is not an OTLP protocol this gateway exports with (grpc, http/protobuf)",
            ],
            run.StderrLines);
    }

    /// <summary>
    /// An OTLP header list with an entry that is not name=value ended the host at start (the exporter is built then) with
    /// an unhandled exception and exit 134; a header name with a space could never be sent. Named without the values:
    /// they carry the collector's credentials.
    /// </summary>
    [Fact]
    public async Task Host_OtlpHeadersMalformed_Exit2NamingTheVariablesWithoutTheirValues()
    {
        var run = await RunHostAsync(["--config", WriteConfig(ValidConfig())], new()
        {
            ["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:4318",
            ["OTEL_EXPORTER_OTLP_HEADERS"] = "x-tenant=7,s3cr3t-api-key",
            ["OTEL_EXPORTER_OTLP_TRACES_HEADERS"] = "api key=s3cr3t",
        });

        Assert.Equal(2, run.ExitCode);
        Assert.Equal(
            [
                Header,
                "OTEL_EXPORTER_OTLP_HEADERS: entry 2 is not name=value with a header name (comma-separated, e.g. api-key=…); values not shown",
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS: entry 1 is not name=value with a header name (comma-separated, e.g. api-key=…); values not shown",
            ],
            run.StderrLines);
        Assert.DoesNotContain("s3cr3t", run.Stdout + run.Stderr, StringComparison.Ordinal);
    }

    /// <summary>
    /// An empty entry between two commas, or one of blanks: the compiler skipped it, the exporter, which reads every entry
    /// up to the last comma, threw at start (exit 134, a stack trace). Refused and named by position like any other.
    /// </summary>
    [Theory]
    [InlineData("x-tenant=7,,api-key=s3cr3t", 2)]
    [InlineData("x-tenant=7, ,api-key=s3cr3t", 2)]
    [InlineData(",api-key=s3cr3t", 1)]
    public async Task Host_OtlpHeadersWithAnEmptyEntry_Exit2NamingItWithoutTheValues(string headers, int entry)
    {
        var run = await RunHostAsync(["--config", WriteConfig(ValidConfig())], new()
        {
            ["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:4318",
            ["OTEL_EXPORTER_OTLP_HEADERS"] = headers,
        });

        Assert.Equal(2, run.ExitCode);
        Assert.Equal(
            [Header, $"OTEL_EXPORTER_OTLP_HEADERS: entry {entry} is not name=value with a header name (comma-separated, e.g. api-key=…); values not shown"],
            run.StderrLines);
        Assert.DoesNotContain("s3cr3t", run.Stdout + run.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Host_ConfigFileNotJson_Exit2NamingTheFile()
    {
        var path = Path.Combine(_directory, "broken.json");
        await File.WriteAllTextAsync(path, """{ "Assurance": { "Policies": """);

        var run = await RunHostAsync(["--config", path]);

        Assert.Equal(2, run.ExitCode);
        Assert.Equal(Header, run.StderrLines[0]);
        var line = Assert.Single(run.StderrLines.Skip(1));
        Assert.StartsWith($"{path}: Could not parse the JSON file: ", line, StringComparison.Ordinal);
        Assert.Contains("LineNumber: 0", line, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Host_ValidConfigFromEnvironmentVariable_StartsListening()
    {
        // Positive control: the same host, the same way of naming the file, and a valid file: it serves.
        var path = WriteConfig(ValidConfig());

        var lines = await StartListeningAsync([], new() { ["GATEWAY_CONFIG"] = path });

        // The start-up log says which file is in force and what it protects: an SRE greps it to check a pod.
        var inForce = Assert.Single(lines, l => l.Contains($"Configuration {path}: ", StringComparison.Ordinal));
        Assert.Contains("deploy → single-use-approval", inForce, StringComparison.Ordinal);
        Assert.Contains("status → token-only", inForce, StringComparison.Ordinal);
        Assert.Contains("public → passthrough", inForce, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Host_AppsettingsJsonInTheWorkingDirectory_NotRead()
    {
        // The host's default appsettings.json would have been a second source of routes that neither the gateway's
        // file nor its start-up line shows. This one adds a route to a cluster that does not exist: read, it would stop
        // the gateway (exit 2); ignored, the gateway serves its own file.
        File.WriteAllText(Path.Combine(_directory, "appsettings.json"), """
            {"ReverseProxy":{"Routes":{"sneaky":{"ClusterId":"nowhere","Match":{"Path":"/sneaky"}}}}}
            """);
        var path = WriteConfig(ValidConfig());

        var lines = await StartListeningAsync(["--config", path], []);

        var inForce = Assert.Single(lines, l => l.Contains($"Configuration {path}: ", StringComparison.Ordinal));
        Assert.DoesNotContain("sneaky", inForce, StringComparison.Ordinal);
    }

    /// <summary>Starts the host, waits until it listens (failing if it exits first), stops it, and returns its stdout.</summary>
    private async Task<string[]> StartListeningAsync(string[] args, Dictionary<string, string> environment)
    {
        using var process = Start(args, environment);
        var listening = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var lines = new System.Collections.Concurrent.ConcurrentQueue<string>();
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is { } line)
            {
                lines.Enqueue(line);
            }

            if (e.Data?.Contains("Now listening on", StringComparison.Ordinal) == true)
            {
                listening.TrySetResult();
            }
        };
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is { } line)
            {
                lines.Enqueue(line);
            }
        };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        try
        {
            var exited = process.WaitForExitAsync();
            var first = await Task.WhenAny(listening.Task, exited, Task.Delay(ExitTimeout));
            Assert.True(first == listening.Task, exited.IsCompleted
                ? $"the host exited with {process.ExitCode}: {string.Join('\n', lines)}"
                : "the host did not start listening in time");
            return [.. lines];
        }
        finally
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync();
        }
    }

    [Fact]
    public async Task Host_KestrelEndpointFromEnvironment_ProxyListensThereAndTheApiOnlyOnItsUrl()
    {
        // Kestrel__Endpoints__* in the environment is how a container often names the proxy listener. The API is a
        // second web host: it once read the same variable, bound the proxy's address first and the proxy failed.
        var (proxy, api) = ($"http://127.0.0.1:{GatewayProcess.FreePort()}", $"http://127.0.0.1:{GatewayProcess.FreePort()}");
        var config = ValidConfig();
        config["Assurance"]!["Api"]!["Url"] = api;
        using var process = Start(["--config", WriteConfig(config)], new() { ["Kestrel__Endpoints__proxy__Url"] = proxy });
        var output = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var apiListening = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var proxyListening = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        DataReceivedEventHandler read = (_, e) =>
        {
            if (e.Data is not { } line)
            {
                return;
            }

            output.Enqueue(line);
            if (line.Contains($"Now listening on: {proxy}", StringComparison.Ordinal))
            {
                proxyListening.TrySetResult();
            }
            else if (line.Contains("Assurance API listening on", StringComparison.Ordinal))
            {
                apiListening.TrySetResult();
            }
        };
        process.OutputDataReceived += read;
        process.ErrorDataReceived += read;
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        try
        {
            var both = Task.WhenAll(apiListening.Task, proxyListening.Task);
            var exited = process.WaitForExitAsync();
            var first = await Task.WhenAny(both, exited, Task.Delay(ExitTimeout));
            Assert.True(first == both, $"the host did not serve both listeners: {string.Join(" | ", output)}");
            Assert.Contains(output, l => l.Contains($"Assurance API listening on {api}", StringComparison.Ordinal) && !l.Contains(proxy, StringComparison.Ordinal));

            using var client = new HttpClient();
            Assert.Equal("ok", await client.GetStringAsync($"{api}/healthz"));
            // The proxy's own listener does not serve the API (SPEC §5).
            using var onProxy = await client.GetAsync($"{proxy}/assurance/v1/grants?status=pending");
            Assert.NotEqual(HttpStatusCode.OK, onProxy.StatusCode);
            Assert.NotEqual(HttpStatusCode.Unauthorized, onProxy.StatusCode);
        }
        finally
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync();
        }
    }

    [Fact]
    public async Task Host_ProxyUrlsEqualApiUrl_Exit2NamingBothKeys()
    {
        var address = $"http://127.0.0.1:{GatewayProcess.FreePort()}";
        var config = ValidConfig();
        config["Urls"] = address;
        config["Assurance"]!["Api"]!["Url"] = address;

        var run = await RunHostAsync(["--config", WriteConfig(config)]);

        Assert.Equal(2, run.ExitCode);
        Assert.Equal(
            [Header, $"Assurance:Api:Url: '{address}' takes the host and port of the proxy listener '{address}' in Urls: the assurance API needs its own listener"],
            run.StderrLines);
        Assert.DoesNotContain("   at ", run.Stdout + run.Stderr, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("Urls")]
    [InlineData("Assurance:Api:Url")]
    public async Task Host_ListenerAddressInUse_ExitNonZeroWithOneLineNamingIt(string key)
    {
        // Another process holds the port: the operator needs the address, not a Kestrel stack trace (exit 134).
        using var taken = new TcpListener(IPAddress.Loopback, 0);
        taken.Start();
        var address = $"http://127.0.0.1:{((IPEndPoint)taken.LocalEndpoint).Port}";
        var config = ValidConfig();
        if (key == "Urls")
        {
            config["Urls"] = address;
        }
        else
        {
            config["Assurance"]!["Api"]!["Url"] = address;
        }

        var run = await RunHostAsync(["--config", WriteConfig(config)]);

        Assert.NotEqual(0, run.ExitCode);
        Assert.NotEqual(2, run.ExitCode); // not a configuration problem: the same file works once the port is free
        var line = Assert.Single(run.StderrLines);
        Assert.Contains(address, line, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", run.Stdout + run.Stderr, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("Urls", "http://127.0.0.1:{0}/proxy")]
    [InlineData("Assurance:Api:Url", "https://127.0.0.1:{0}")]
    public async Task Host_ListenerKestrelCannotBind_Exit2NamingTheKeyNotAStackTrace(string key, string format)
    {
        // Kestrel refuses both at start (a path base; https on the API host, which has no certificate): once an
        // unhandled exception (exit 134), now a problem line.
        var config = ValidConfig();
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

        Assert.Equal(2, run.ExitCode);
        Assert.Equal(Header, run.StderrLines[0]);
        Assert.StartsWith(key + ": ", Assert.Single(run.StderrLines.Skip(1)), StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", run.Stdout + run.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Host_KeyFilePathWithNulCharacter_Exit2NamingTheKey()
    {
        var config = ValidConfig();
        config["Assurance"]!["Tokens"]!["Issuers"]![0]!["JwksFile"] = "keys/idp\u0000.jwks.json";

        var run = await RunHostAsync(["--config", WriteConfig(config)]);

        Assert.Equal(2, run.ExitCode);
        Assert.Equal(Header, run.StderrLines[0]);
        Assert.StartsWith(
            "Assurance:Tokens:Issuers:0:JwksFile: 'keys/idp\\u0000.jwks.json' is not a valid file path", Assert.Single(run.StderrLines.Skip(1)), StringComparison.Ordinal);
    }

    private JsonObject ValidConfig() => TestConfig.Create("http://127.0.0.1:5001", _idp, _workload);

    private string WriteConfig(JsonObject config)
    {
        var path = Path.Combine(_directory, $"{Guid.NewGuid():N}.json");
        File.WriteAllText(path, config.ToJsonString());
        return path;
    }

    private async Task<HostRun> RunHostAsync(string[] args, Dictionary<string, string>? environment = null)
    {
        using var process = Start(args, environment);
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(ExitTimeout);
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"the host did not exit within {ExitTimeout.TotalSeconds} s (it should refuse to start)");
        }

        return new HostRun(process.ExitCode, await stdout, await stderr);
    }

    private Process Start(string[] args, Dictionary<string, string>? environment)
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

        // Only what the test sets: nothing inherited may name a config file or override a key.
        psi.Environment.Remove("GATEWAY_CONFIG");
        foreach (var key in psi.Environment.Keys.Where(k => k.StartsWith("Assurance__", StringComparison.OrdinalIgnoreCase) || k.StartsWith("ReverseProxy__", StringComparison.OrdinalIgnoreCase)
            || k.StartsWith("Logging__", StringComparison.OrdinalIgnoreCase) || k.StartsWith("OTEL_", StringComparison.OrdinalIgnoreCase)).ToList())
        {
            psi.Environment.Remove(key);
        }

        foreach (var (key, value) in environment ?? [])
        {
            psi.Environment[key] = value;
        }

        return Process.Start(psi)!;
    }

    private sealed record HostRun(int ExitCode, string Stdout, string Stderr)
    {
        public List<string> StderrLines { get; } = [.. Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)];
    }
}
