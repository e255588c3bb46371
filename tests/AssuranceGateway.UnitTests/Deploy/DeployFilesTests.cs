using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.Json;
using System.Text.RegularExpressions;
using AssuranceGateway.UnitTests.Configuration;

namespace AssuranceGateway.UnitTests.Deploy;

/// <summary>The deployment files are linted and keep the settings the gateway's guarantees depend on.</summary>
public sealed partial class DeployFilesTests
{
    private static readonly string Deploy = Path.Combine(ConfigSchemaTests.RepositoryRoot(), "deploy");

    private static string Read(string path) => File.ReadAllText(Path.Combine(Deploy, path));

    [Fact]
    public void Yaml_PassesYamllint()
    {
        // tests/run.sh installs yamllint; a missing linter is a failure, not a skip.
        // The whole folder: yamllint finds every *.yaml below it, so a new manifest is linted without touching this test.
        var (code, output) = Run("yamllint", "-c", Path.Combine(Deploy, ".yamllint"), "--strict", Deploy);

        Assert.True(code == 0, output);
    }

    [Fact]
    public void Manifests_EveryDocumentHasApiVersionKindAndName()
    {
        var documents = 0;
        // Every YAML file under deploy/ is a Kubernetes or kustomize document, except the collector's configuration.
        var otel = Path.Combine(Deploy, "otel") + Path.DirectorySeparatorChar;
        foreach (var file in Directory.GetFiles(Deploy, "*.yaml", SearchOption.AllDirectories).Where(f => !f.StartsWith(otel, StringComparison.Ordinal)))
        {
            foreach (var document in DocumentSeparator().Split(File.ReadAllText(file)).Where(d => TopLevelKey().IsMatch(d)))
            {
                documents++;
                var where = Path.GetRelativePath(Deploy, file);
                Assert.Matches(@"(?m)^apiVersion: \S+", document);
                var kind = Assert.Single(Kind().Matches(document)).Groups[1].Value;
                if (kind != "Kustomization")
                {
                    Assert.True(MetadataName().IsMatch(document), $"{where}: a {kind} without metadata.name");
                }
            }
        }

        Assert.True(documents >= 10, $"only {documents} manifests found under {Deploy}");
    }

    [Fact]
    public void Kustomization_LoadsOnlyFilesBelowItsOwnFolderAndBuilds()
    {
        // kustomize refuses a generator file outside the kustomization's folder ("../redis/redis.conf"), and with it
        // the whole build; a folder holding another kustomization may be listed under resources instead.
        foreach (var file in Directory.GetFiles(Deploy, "kustomization.yaml", SearchOption.AllDirectories))
        {
            var entries = GeneratorFiles().Matches(File.ReadAllText(file))
                .SelectMany(block => block.Groups[2].Value.Split('\n', StringSplitOptions.RemoveEmptyEntries));
            foreach (var entry in entries)
            {
                var path = entry.Split('#')[0].Trim().TrimStart('-').Trim().Split('=')[^1];
                Assert.False(path.StartsWith('/') || path.Split('/').Contains(".."), $"{Path.GetRelativePath(Deploy, file)}: '{path}' is outside its folder");
                Assert.True(File.Exists(Path.Combine(Path.GetDirectoryName(file)!, path)), $"{Path.GetRelativePath(Deploy, file)}: '{path}' does not exist");
            }
        }

        // The real thing where kubectl is installed (it builds offline); not required on the test machine.
        if (OnPath("kubectl"))
        {
            var (code, output) = Run("kubectl", "kustomize", Path.Combine(Deploy, "k8s"));
            Assert.True(code == 0, output);
            foreach (var kind in new[] { "Deployment", "StatefulSet", "NetworkPolicy", "PodDisruptionBudget", "HorizontalPodAutoscaler" })
            {
                Assert.Contains($"kind: {kind}\n", output, StringComparison.Ordinal);
            }

            Assert.Equal(2, Regex.Count(output, @"(?m)^kind: ConfigMap$"));
        }
    }

    [Fact]
    public void Deployment_RunsHardenedWithProbesOnTheApiPort()
    {
        var deployment = Read("k8s/deployment.yaml");

        foreach (var setting in new[]
        {
            "runAsNonRoot: true", "readOnlyRootFilesystem: true", "allowPrivilegeEscalation: false", "drop: [\"ALL\"]",
            "type: RuntimeDefault", "automountServiceAccountToken: false", "DOTNET_USE_POLLING_FILE_WATCHER",
        })
        {
            Assert.Contains(setting, deployment, StringComparison.Ordinal);
        }

        Assert.Matches(@"(?m)^  replicas: [2-9]", deployment);
        Assert.Matches(@"mountPath: /tmp\n", deployment);
        Assert.Matches(@"tmp\n\s+emptyDir:", deployment);
        Assert.Matches(@"resources:\s+requests:\s+cpu: \S+\s+memory: \S+\s+limits:", deployment);
        Assert.Contains("OTEL_EXPORTER_OTLP_ENDPOINT", deployment, StringComparison.Ordinal);
        Assert.Matches(@"readinessProbe:\s+httpGet:\s+path: /readyz\s+port: api", deployment);
        Assert.Matches(@"livenessProbe:\s+httpGet:\s+path: /healthz\s+port: api", deployment);
    }

    // After the drain (DOTNET_SHUTDOWNTIMEOUTSECONDS) the host still flushes evidence (the OTLP trace and metric providers
    // wait up to 5 s each) and closes the store (its loops up to 2 s, the last write of queued unknown outcomes up to
    // 2 s plus Store:Timeout). A platform that kills before that loses the evidence of the last requests.
    private const int AfterDrainSeconds = 15;

    [Fact]
    public void Deployment_GracePeriodCoversPreStopDrainAndFlush()
    {
        var deployment = Read("k8s/deployment.yaml");

        // The endpoints controller and every kube-proxy learn of a terminating pod while it already has SIGTERM: without
        // a pause first, connections sent meanwhile are refused by a listener that has closed.
        var preStop = Regex.Match(deployment, @"lifecycle:(?:\s+#[^\n]*)*\s+preStop:\s+exec:\s+command: \[""sleep"", ""(\d+)""\]");
        Assert.True(preStop.Success, "no preStop pause before SIGTERM");
        var drain = Regex.Match(deployment, @"name: DOTNET_SHUTDOWNTIMEOUTSECONDS\s+value: ""(\d+)""");
        Assert.True(drain.Success, "the drain bound (DOTNET_SHUTDOWNTIMEOUTSECONDS) is not set where the grace period can be compared with it");
        var grace = int.Parse(Regex.Match(deployment, @"terminationGracePeriodSeconds: (\d+)").Groups[1].Value, CultureInfo.InvariantCulture);
        var needed = int.Parse(preStop.Groups[1].Value, CultureInfo.InvariantCulture) + int.Parse(drain.Groups[1].Value, CultureInfo.InvariantCulture) + AfterDrainSeconds;
        Assert.True(grace >= needed, $"terminationGracePeriodSeconds {grace} < preStop + drain + flush = {needed}");
    }

    [Fact]
    public void SystemdUnit_StopTimeoutCoversDrainAndFlush()
    {
        var unit = Read("systemd/assurance-gateway.service");

        var drain = Regex.Match(unit, @"(?m)^Environment=DOTNET_SHUTDOWNTIMEOUTSECONDS=(\d+)$");
        Assert.True(drain.Success, "the drain bound (DOTNET_SHUTDOWNTIMEOUTSECONDS) is not set where TimeoutStopSec can be compared with it");
        var stop = int.Parse(Regex.Match(unit, @"(?m)^TimeoutStopSec=(\d+)$").Groups[1].Value, CultureInfo.InvariantCulture);
        var needed = int.Parse(drain.Groups[1].Value, CultureInfo.InvariantCulture) + AfterDrainSeconds;
        Assert.True(stop >= needed, $"TimeoutStopSec {stop} < drain + flush = {needed}");
    }

    [Fact]
    public void ApiPort_KeptInternalByNetworkPolicy()
    {
        var policy = Read("k8s/networkpolicy.yaml");
        var services = Read("k8s/services.yaml");

        Assert.Contains("kind: NetworkPolicy", policy, StringComparison.Ordinal);
        Assert.Contains("assurance-gateway/api-client: \"true\"", policy, StringComparison.Ordinal);
        Assert.Contains("port: 8081", policy, StringComparison.Ordinal);
        Assert.Contains("kind: PodDisruptionBudget", Read("k8s/policy.yaml"), StringComparison.Ordinal);
        Assert.Contains("kind: HorizontalPodAutoscaler", Read("k8s/policy.yaml"), StringComparison.Ordinal);
        Assert.DoesNotContain("LoadBalancer", services, StringComparison.Ordinal);
    }

    [Fact]
    public void GrantStore_ReachableOnlyFromTheGatewaysPods()
    {
        // A pod that can write to Redis can mint approvals: its password must not be the only thing in the way.
        var policy = Read("k8s/networkpolicy.yaml");

        Assert.Matches(@"name: assurance-redis\s+spec:\s+podSelector:\s+matchLabels:\s+app.kubernetes.io/name: assurance-redis\s+policyTypes: \[""Ingress"", ""Egress""\]\s+ingress:\s+- from:\s+- podSelector:\s+matchLabels:\s+app.kubernetes.io/name: assurance-gateway\s+ports:\s+- port: 6379", policy);
    }

    [Fact]
    public void Systemd_InvalidConfiguration_NotRestartedInALoop()
    {
        // Exit code 2 is an invalid configuration: a restart every 2 s until the start limit cannot fix it.
        Assert.Matches(@"(?m)^RestartPreventExitStatus=2$", Read("systemd/assurance-gateway.service"));
    }

    [Fact]
    public void K8sGatewayConfig_NoProxyInFront_TrustsNoForwardedHeaders()
    {
        using var config = JsonDocument.Parse(Read("k8s/gateway.json"));

        var problems = ForwardedHeaderProblems(config.RootElement, Read("k8s/deployment.yaml"));

        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    // The rule above must be able to fail: the shapes that let any pod of the namespace pass as another workload or origin.
    [Theory]
    [InlineData("""["xfcc","header"]""", """["10.0.0.0/8"]""", false, "wider than one address")] // the shipped mistake
    [InlineData("""["header"]""", """["10.0.0.0/8"]""", false, "wider than one address")] // X-Forwarded-For from any pod
    [InlineData("""["header"]""", """["fd00::/8"]""", true, "wider than one address")]
    [InlineData("""["xfcc","header"]""", "[]", false, "no sidecar")]
    [InlineData("""["xfcc","header"]""", """["127.0.0.1/32"]""", false, "no sidecar")]
    [InlineData("""["xfcc","header"]""", """["10.1.2.3/32"]""", true, "not the sidecar on loopback")]
    [InlineData("""["xfcc","header"]""", "[]", true, "names no proxy")]
    public void ForwardedHeaderProblems_UnsafeWorkloadSettings_AreReported(string sources, string proxies, bool sidecar, string expected)
    {
        using var config = WorkloadConfig(sources, proxies);

        var problems = ForwardedHeaderProblems(config.RootElement, sidecar ? DeploymentWithSidecar : DeploymentAlone);

        Assert.Contains(problems, p => p.Contains(expected, StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("""["header"]""", "[]", false)]
    [InlineData("""["mtls","header"]""", "[]", false)]
    [InlineData("""["xfcc","header"]""", """["127.0.0.1/32"]""", true)] // the documented Envoy sidecar variant
    [InlineData("""["xfcc"]""", """["::1"]""", true)]
    public void ForwardedHeaderProblems_SafeWorkloadSettings_AreNotReported(string sources, string proxies, bool sidecar)
    {
        using var config = WorkloadConfig(sources, proxies);

        Assert.Empty(ForwardedHeaderProblems(config.RootElement, sidecar ? DeploymentWithSidecar : DeploymentAlone));
    }

    private static JsonDocument WorkloadConfig(string sources, string proxies) =>
        JsonDocument.Parse("""{"Assurance":{"Workload":{"Sources":""" + sources + ""","TrustedProxies":""" + proxies + "}}}");

    private const string DeploymentAlone = """
              containers:
                - name: gateway
                  image: registry.example/assurance-gateway:1.0.0
        """;

    private const string DeploymentWithSidecar = DeploymentAlone + """

                - name: envoy
                  image: envoyproxy/envoy:v1.31.0
        """;

    /// <summary>
    /// A trusted proxy may set X-Forwarded-For (the origin) and X-Forwarded-Client-Cert (the workload, with the xfcc
    /// source). In a pod network the only proxy whose address nobody else can have is a sidecar on loopback: a range
    /// of pod addresses trusts every pod in it, and xfcc with nothing in front trusts whoever claims a certificate.
    /// </summary>
    private static List<string> ForwardedHeaderProblems(JsonElement config, string deployment)
    {
        var problems = new List<string>();
        var workload = config.GetProperty("Assurance").GetProperty("Workload");
        var sources = workload.TryGetProperty("Sources", out var s) ? s.EnumerateArray().Select(v => v.GetString()).ToList() : [];
        var proxies = workload.TryGetProperty("TrustedProxies", out var t) ? t.EnumerateArray().Select(v => v.GetString()!).ToList() : [];
        // Every container of the pod has an image: more than one means a sidecar sits beside the gateway.
        var sidecar = Regex.Count(deployment, @"(?m)^\s+(?:- )?image: \S") > 1;

        foreach (var proxy in proxies)
        {
            var network = proxy.Contains('/', StringComparison.Ordinal) ? IPNetwork.Parse(proxy) : new IPNetwork(IPAddress.Parse(proxy), proxy.Contains(':', StringComparison.Ordinal) ? 128 : 32);
            var host = network.BaseAddress.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? 32 : 128;
            if (network.PrefixLength < host)
            {
                problems.Add($"TrustedProxies '{proxy}' is wider than one address: every pod in it may forge X-Forwarded-For and X-Forwarded-Client-Cert");
            }
            else if (!IPAddress.IsLoopback(network.BaseAddress))
            {
                problems.Add($"TrustedProxies '{proxy}' is not the sidecar on loopback: a pod address is not a stable identity");
            }
            else if (!sidecar)
            {
                problems.Add($"TrustedProxies '{proxy}' but no sidecar in the pod: nothing in front of the gateway to trust");
            }
        }

        if (sources.Contains("xfcc"))
        {
            if (!sidecar)
            {
                problems.Add("Sources has 'xfcc' but the pod has no sidecar proxy: no proxy in front vouches for the client certificate");
            }
            else if (proxies.Count == 0)
            {
                problems.Add("Sources has 'xfcc' but TrustedProxies names no proxy: the sidecar's address must be listed");
            }
        }

        // An environment override would bypass the file checked here.
        if (deployment.Contains("Assurance__Workload__", StringComparison.Ordinal))
        {
            problems.Add("the Deployment overrides Assurance:Workload through the environment: keep it in gateway.json");
        }

        return problems;
    }

    [Fact]
    public void Redis_NoEvictionAndAppendOnlyWithTheFsyncChoiceWrittenDown()
    {
        var conf = Read("redis/redis.conf");

        Assert.Matches(@"(?m)^maxmemory-policy noeviction$", conf);
        Assert.Matches(@"(?m)^appendonly yes$", conf);
        Assert.Matches(@"(?m)^appendfsync (everysec|always)$", conf);
        Assert.Contains("RequireReplicaAcks", conf, StringComparison.Ordinal);
    }

    [Fact]
    public void Dockerfile_MultiStageAndNonRoot()
    {
        var dockerfile = Read("docker/Dockerfile");

        Assert.Equal(2, dockerfile.Split('\n').Count(l => l.StartsWith("FROM ", StringComparison.Ordinal)));
        Assert.Matches(@"(?m)^USER 10001", dockerfile);
        Assert.DoesNotContain("config/keys", dockerfile.Replace("config/keys/", string.Empty, StringComparison.Ordinal), StringComparison.Ordinal);
    }

    [Fact]
    public void SystemdUnit_HardenedAndVerifiesWhereSystemdIsPresent()
    {
        var unit = Read("systemd/assurance-gateway.service");

        Assert.Contains("NoNewPrivileges=yes", unit, StringComparison.Ordinal);
        Assert.Contains("ProtectSystem=strict", unit, StringComparison.Ordinal);
        Assert.DoesNotMatch(@"(?m)^MemoryDenyWriteExecute", unit);
        if (OnPath("systemd-analyze"))
        {
            var (code, output) = Run("systemd-analyze", "verify", Path.Combine(Deploy, "systemd", "assurance-gateway.service"));
            Assert.DoesNotContain("Unknown key", output, StringComparison.OrdinalIgnoreCase);
            Assert.DoesNotContain("Invalid", output, StringComparison.OrdinalIgnoreCase);
            _ = code; // a missing dotnet binary on the test machine is reported, but is not a fault of the unit
        }
    }

    // `run.sh --help` went on as a full 14-minute run (after installing packages as root): only --quick was read.
    // PATH names an empty folder, so the script can start nothing, install nothing, and must answer from bash alone.
    [Theory]
    // Every argument is read, not only the first: `--quick --pinnd` must not start a run that is not pinned.
    [InlineData("--help", 0, "usage: deploy/bench/run.sh [--quick] [--pinned]")]
    [InlineData("-h", 0, "--pinned  the proxies")]
    [InlineData("--quik", 2, "unknown argument: --quik")]
    [InlineData("--quick --pinnd", 2, "unknown argument: --pinnd")]
    [InlineData("--pinned --help", 0, "--quick   1 round of 3 s")]
    // What --pinned needs is checked before packages are installed as root (here: an empty PATH has no taskset), as the
    // arguments are: it said "install wrk redis-server … first", or installed them and then refused.
    [InlineData("--pinned", 1, "--pinned needs taskset and nproc")]
    public async Task BenchScript_HelpOrUnknownArgument_AnswersBeforeStartingAnything(string arguments, int expectedCode, string expectedText)
    {
        var empty = Directory.CreateTempSubdirectory("agw-bench-path-");
        try
        {
            var start = new ProcessStartInfo("/bin/bash") { RedirectStandardOutput = true, RedirectStandardError = true };
            start.ArgumentList.Add(Path.Combine(Deploy, "bench", "run.sh"));
            foreach (var argument in arguments.Split(' '))
            {
                start.ArgumentList.Add(argument);
            }

            start.Environment["PATH"] = empty.FullName;

            using var process = Process.Start(start)!;
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            using (var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30)))
            {
                try
                {
                    await process.WaitForExitAsync(timeout.Token);
                }
                catch (OperationCanceledException)
                {
                    process.Kill(entireProcessTree: true);
                    await process.WaitForExitAsync();
                }
            }

            var output = await stdout + await stderr;
            Assert.True(process.ExitCode == expectedCode, $"exit {process.ExitCode}:\n{output}");
            Assert.Contains(expectedText, output, StringComparison.Ordinal);
        }
        finally
        {
            empty.Delete(recursive: true);
        }
    }

    private static bool OnPath(string program) =>
        (Environment.GetEnvironmentVariable("PATH") ?? string.Empty).Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Any(dir => File.Exists(Path.Combine(dir, program)));

    [GeneratedRegex(@"(?m)^---\s*$")]
    private static partial Regex DocumentSeparator();

    [GeneratedRegex(@"(?m)^[A-Za-z]")]
    private static partial Regex TopLevelKey();

    [GeneratedRegex(@"(?m)^kind: (\S+)")]
    private static partial Regex Kind();

    // metadata: followed by its indented block, in which "  name:" appears.
    [GeneratedRegex(@"(?m)^metadata:\n(?:  .*\n)*?  name: \S+")]
    private static partial Regex MetadataName();

    // The entries under "files:" of a configMapGenerator/secretGenerator: "- name" or "- key=path", maybe commented.
    // Entries are indented at least as deep as "files:"; the next generator's "- name:" is not.
    [GeneratedRegex(@"(?m)^([ \t]+)files:\n((?:\1[ \t]*- [^\n]+\n)+)")]
    private static partial Regex GeneratorFiles();

    private static (int Code, string Output) Run(string file, params string[] args)
    {
        var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }

        try
        {
            using var process = Process.Start(start)!;
            var output = process.StandardOutput.ReadToEnd() + process.StandardError.ReadToEnd();
            process.WaitForExit();
            return (process.ExitCode, output);
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            return (-1, $"{file} is not installed (tests/run.sh installs it): {e.Message}");
        }
    }
}
