using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace AssuranceGateway.Testing;

/// <summary>
/// The real host, src/Gateway, as a child process: for what only a process shows (exit codes, stderr, environment
/// variables such as OTEL_*, graceful shutdown). Ports are chosen free beforehand.
/// </summary>
public sealed class GatewayProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();

    private GatewayProcess(Process process) => _process = process;

    public string Output
    {
        get
        {
            lock (_output)
            {
                return _output.ToString();
            }
        }
    }

    public int? ExitCode => _process.HasExited ? _process.ExitCode : null;

    /// <summary>
    /// src/Gateway/bin/&lt;configuration&gt;/&lt;tfm&gt;/Gateway.dll, built with the functional tests (they reference the host
    /// project without its assembly), found from this assembly's own bin/&lt;configuration&gt;/&lt;tfm&gt; folder.
    /// </summary>
    public static string HostDll() => BuiltDll("Gateway", "Gateway.dll");

    /// <summary>The agw command-line tool, built like the host.</summary>
    public static string CliDll() => BuiltDll("Gateway.Cli", "agw.dll");

    private static string BuiltDll(string project, string file)
    {
        var bin = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar));
        var root = FindRepositoryRoot(bin.FullName);
        var dll = Path.Combine(root, "src", project, "bin", bin.Parent!.Name, bin.Name, file);
        return File.Exists(dll) ? dll : throw new FileNotFoundException($"{dll} not found: build the solution (or the functional tests) first");
    }

    /// <summary>The dotnet executable running the tests (DOTNET_HOST_PATH under dotnet test), else "dotnet" on PATH.</summary>
    public static string DotnetHost() => Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host ? host : "dotnet";

    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>
    /// The real host with <paramref name="harness"/>'s configuration on free ports, ready, and clients for both listeners
    /// (the caller disposes the clients).
    /// </summary>
    public static async Task<(GatewayProcess Gateway, HttpClient Proxy, HttpClient Api)> StartAsync(GatewayHarness harness, IReadOnlyDictionary<string, string> environment)
    {
        ArgumentNullException.ThrowIfNull(harness);
        var proxyPort = FreePort();
        var apiPort = FreePort();
        var config = harness.DefaultConfig();
        config["Urls"] = $"http://127.0.0.1:{proxyPort}";
        config["Assurance"]!["Api"]!["Url"] = $"http://127.0.0.1:{apiPort}";
        var configPath = Path.Combine(harness.Directory, "gateway.json");
        await File.WriteAllTextAsync(configPath, config.ToJsonString());
        var gateway = Start(["--config", configPath], environment);
        await gateway.WaitReadyAsync($"http://127.0.0.1:{apiPort}/healthz", TimeSpan.FromSeconds(30));
        return (gateway, new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{proxyPort}") }, new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{apiPort}") });
    }

    public static GatewayProcess Start(IEnumerable<string> arguments, IReadOnlyDictionary<string, string>? environment = null, string? workingDirectory = null)
    {
        var start = new ProcessStartInfo(DotnetHost())
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? Path.GetTempPath(),
        };
        start.ArgumentList.Add(HostDll());
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        // Only what the test sets: nothing inherited may name a config file or override a key.
        start.Environment.Remove("GATEWAY_CONFIG");
        foreach (var key in start.Environment.Keys.Where(k => k.StartsWith("Assurance__", StringComparison.OrdinalIgnoreCase) || k.StartsWith("OTEL_", StringComparison.OrdinalIgnoreCase)).ToList())
        {
            start.Environment.Remove(key);
        }

        foreach (var (name, value) in environment ?? new Dictionary<string, string>())
        {
            start.Environment[name] = value;
        }

        var process = new Process { StartInfo = start };
        var gateway = new GatewayProcess(process);
        process.OutputDataReceived += (_, e) => gateway.Append(e.Data);
        process.ErrorDataReceived += (_, e) => gateway.Append(e.Data);
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return gateway;
    }

    /// <summary>Waits until <paramref name="url"/> answers (any status), or the process exits.</summary>
    public async Task WaitReadyAsync(string url, TimeSpan timeout)
    {
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            if (_process.HasExited)
            {
                throw new InvalidOperationException($"gateway exited with {_process.ExitCode}:\n{Output}");
            }

            try
            {
                using var _ = await client.GetAsync(url);
                return;
            }
            catch (HttpRequestException)
            {
                await Task.Delay(100);
            }
        }

        throw new TimeoutException($"gateway not ready at {url}:\n{Output}");
    }

    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        await _process.WaitForExitAsync(cts.Token);
        _process.WaitForExit(); // drains the redirected streams
        return _process.ExitCode;
    }

    /// <summary>SIGTERM, as an orchestrator stops a pod: the host shuts down gracefully.</summary>
    public async Task<int> StopGracefullyAsync(TimeSpan timeout)
    {
        await TerminateAsync();
        return await WaitForExitAsync(timeout);
    }

    /// <summary>Sends SIGTERM and returns at once: for what a test watches while the host drains.</summary>
    public async Task TerminateAsync()
    {
        using var kill = Process.Start("kill", ["-TERM", _process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        await kill!.WaitForExitAsync();
    }

    private void Append(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_output)
        {
            _output.AppendLine(line);
        }
    }

    private static string FindRepositoryRoot(string start)
    {
        for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Gateway.sln")))
            {
                return dir.FullName;
            }
        }

        throw new DirectoryNotFoundException("Gateway.sln not found above " + start);
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }

        _process.Dispose();
    }
}
