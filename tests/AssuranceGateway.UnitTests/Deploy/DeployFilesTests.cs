using System.Diagnostics;
using AssuranceGateway.UnitTests.Configuration;

namespace AssuranceGateway.UnitTests.Deploy;

/// <summary>The deployment files are linted and keep the settings the gateway's guarantees depend on.</summary>
public sealed class DeployFilesTests
{
    private static readonly string Deploy = Path.Combine(ConfigSchemaTests.RepositoryRoot(), "deploy");

    private static string Read(string path) => File.ReadAllText(Path.Combine(Deploy, path));

    [Fact]
    public void Yaml_PassesYamllint()
    {
        // tests/run.sh installs yamllint; a missing linter is a failure, not a skip.
        var (code, output) = Run("yamllint", "-c", Path.Combine(Deploy, ".yamllint"), "--strict", Path.Combine(Deploy, "k8s"), Path.Combine(Deploy, "otel"));

        Assert.True(code == 0, output);
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

        Assert.Matches(@"readinessProbe:\s+httpGet:\s+path: /readyz\s+port: api", deployment);
        Assert.Matches(@"livenessProbe:\s+httpGet:\s+path: /healthz\s+port: api", deployment);
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
        if (File.Exists("/usr/bin/systemd-analyze"))
        {
            var (code, output) = Run("systemd-analyze", "verify", Path.Combine(Deploy, "systemd", "assurance-gateway.service"));
            Assert.DoesNotContain("Unknown key", output, StringComparison.OrdinalIgnoreCase);
            Assert.DoesNotContain("Invalid", output, StringComparison.OrdinalIgnoreCase);
            _ = code; // a missing dotnet binary on the test machine is reported, but is not a fault of the unit
        }
    }

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
