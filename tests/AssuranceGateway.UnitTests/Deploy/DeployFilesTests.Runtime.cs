using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace AssuranceGateway.UnitTests.Deploy;

/// <summary>
/// The manifests read as Kubernetes reads them (YAML parsed, not matched as text), checked against what the gateway does
/// at run time: how long it takes to stop, how long /readyz may take, what it connects to, what Redis needs.
/// </summary>
public sealed partial class DeployFilesTests
{
    [Fact]
    public void Deployment_ReadinessProbe_WaitsLongerThanReadyzItselfAndToleratesOneSlowAnswer()
    {
        // /readyz bounds its own store check at 4 × Store:Timeout (HealthEndpoints) and then answers 503 with the reason.
        // A kubelet timeout at or below that bound turns a slow Redis into "context deadline exceeded" instead of the
        // gateway's reason, and one failure must not take a pod out of the Service.
        var gateway = Container(PodSpec("k8s/deployment.yaml", "Deployment"), "gateway");
        using var config = JsonDocument.Parse(Read("k8s/gateway.json"));
        var storeTimeout = TimeSpan.Parse(config.RootElement.GetProperty("Assurance").GetProperty("Store").GetProperty("Timeout").GetString()!, CultureInfo.InvariantCulture);

        var readiness = gateway.GetProperty("readinessProbe");
        Assert.Equal("/readyz", readiness.GetProperty("httpGet").GetProperty("path").GetString());
        Assert.True(Seconds(readiness, "timeoutSeconds", 1) > (storeTimeout * 4).TotalSeconds, $"readinessProbe.timeoutSeconds {Seconds(readiness, "timeoutSeconds", 1)} s <= 4 × Store:Timeout {storeTimeout}");
        Assert.True(Seconds(readiness, "failureThreshold", 3) >= 2, "one slow /readyz takes the pod out of the Service");

        // /healthz does not ask Redis: the liveness probe must not restart a gateway whose store is down, nor one that
        // answered slowly once.
        var liveness = gateway.GetProperty("livenessProbe");
        Assert.Equal("/healthz", liveness.GetProperty("httpGet").GetProperty("path").GetString());
        Assert.True(Seconds(liveness, "failureThreshold", 3) * Seconds(liveness, "periodSeconds", 10) >= 30, "liveness restarts a gateway after less than 30 s without an answer");
    }

    [Fact]
    public void Redis_PodHasGuaranteedMemoryAboveItsMaxmemory()
    {
        // maxmemory with noeviction makes a full Redis refuse writes (the gateway answers 503): fail closed and visible.
        // That holds only if the container may use maxmemory plus Redis's overhead and the copy-on-write of the AOF
        // rewrite's fork; otherwise the kernel kills Redis first. Without a memory request the pod is BestEffort: the
        // first one the kubelet evicts under node pressure, and scheduled on a node that may not have the memory at all.
        var maxmemory = Regex.Match(Read("redis/redis.conf"), @"(?m)^maxmemory (\d+)(gb|mb)$");
        Assert.True(maxmemory.Success, "redis.conf sets no maxmemory");
        var limitBytes = long.Parse(maxmemory.Groups[1].Value, CultureInfo.InvariantCulture) * (maxmemory.Groups[2].Value == "gb" ? 1L << 30 : 1L << 20);
        var redis = Container(PodSpec("k8s/redis.yaml", "StatefulSet"), "redis");

        Assert.True(redis.TryGetProperty("resources", out var resources), "the Redis container has no resources: BestEffort, evicted first");
        var request = Quantity(resources.GetProperty("requests").GetProperty("memory").GetString()!);
        var limit = Quantity(resources.GetProperty("limits").GetProperty("memory").GetString()!);
        Assert.Equal(limit, request);
        Assert.True(limit >= limitBytes * 3 / 2, $"memory limit {limit} bytes leaves no room above maxmemory {limitBytes} for overhead and the AOF rewrite");
    }

    [Theory]
    [InlineData("k8s/deployment.yaml", "Deployment")]
    [InlineData("k8s/redis.yaml", "StatefulSet")]
    public void PodTemplates_NoServiceAccountTokenNonRootReadOnlyNoCapabilities(string file, string kind)
    {
        // Neither the gateway nor Redis talks to the Kubernetes API: a mounted token is only something to steal.
        var pod = PodSpec(file, kind);

        Assert.True(pod.TryGetProperty("automountServiceAccountToken", out var automount) && automount.ValueKind == JsonValueKind.False, $"{file}: automountServiceAccountToken is not false");
        var security = pod.GetProperty("securityContext");
        Assert.True(security.GetProperty("runAsNonRoot").GetBoolean());
        Assert.Equal("RuntimeDefault", security.GetProperty("seccompProfile").GetProperty("type").GetString());
        foreach (var container in pod.GetProperty("containers").EnumerateArray())
        {
            var context = container.GetProperty("securityContext");
            Assert.False(context.GetProperty("allowPrivilegeEscalation").GetBoolean());
            Assert.True(context.GetProperty("readOnlyRootFilesystem").GetBoolean());
            Assert.Equal(["ALL"], context.GetProperty("capabilities").GetProperty("drop").EnumerateArray().Select(e => e.GetString()));
        }
    }

    [Fact]
    public void NetworkPolicy_GatewayEgress_OnlyWhatItsConfigurationNeeds()
    {
        // The gateway reaches Redis, its upstreams, the OTLP collector, the IdP's keys and DNS; nothing else. Without an
        // egress policy a compromised gateway pod reaches every service of the cluster and the cloud metadata endpoint.
        var policy = Documents("k8s/networkpolicy.yaml").Single(d => Name(d) == "assurance-gateway").GetProperty("spec");
        Assert.Contains("Egress", policy.GetProperty("policyTypes").EnumerateArray().Select(e => e.GetString()));
        var rules = policy.TryGetProperty("egress", out var e) ? e.EnumerateArray().ToList() : [];
        Assert.All(rules, rule => Assert.True(rule.TryGetProperty("to", out var to) && to.GetArrayLength() > 0 && rule.TryGetProperty("ports", out _), $"an egress rule open to everything: {rule}"));

        using var config = JsonDocument.Parse(Read("k8s/gateway.json"));
        var assurance = config.RootElement.GetProperty("Assurance");
        var needed = new List<(string What, int Port, string? Namespace)> { ("DNS", 53, "kube-system") };
        needed.Add(("Redis", new Uri("redis://" + assurance.GetProperty("Store").GetProperty("Redis").GetString()!.Split(',')[0]).Port, null));
        foreach (var cluster in config.RootElement.GetProperty("ReverseProxy").GetProperty("Clusters").EnumerateObject())
        {
            foreach (var destination in cluster.Value.GetProperty("Destinations").EnumerateObject())
            {
                var address = new Uri(destination.Value.GetProperty("Address").GetString()!);
                needed.Add(($"upstream {address}", address.Port, ServiceNamespace(address.Host)));
            }
        }

        var otlp = Container(PodSpec("k8s/deployment.yaml", "Deployment"), "gateway").GetProperty("env").EnumerateArray()
            .Single(v => v.GetProperty("name").GetString() == "OTEL_EXPORTER_OTLP_ENDPOINT").GetProperty("value").GetString()!;
        needed.Add(($"OTLP {otlp}", new Uri(otlp).Port, ServiceNamespace(new Uri(otlp).Host)));
        foreach (var issuer in assurance.GetProperty("Tokens").GetProperty("Issuers").EnumerateArray())
        {
            foreach (var key in new[] { "Authority", "JwksUri" })
            {
                if (issuer.TryGetProperty(key, out var url))
                {
                    needed.Add(($"IdP {url.GetString()}", new Uri(url.GetString()!).Port, null));
                }
            }
        }

        // An address block reaches outside the cluster: only HTTPS (the IdP), and never the link-local range where the
        // cloud metadata endpoint (169.254.169.254) hands out the node's credentials. Without these, a rule widened to
        // every port, or the exclusion dropped, still passed this test (each needed destination stays reachable).
        foreach (var rule in rules.Where(r => r.GetProperty("to").EnumerateArray().Any(to => to.TryGetProperty("ipBlock", out _))))
        {
            Assert.All(rule.GetProperty("ports").EnumerateArray(), p => Assert.Equal(443, p.GetProperty("port").GetInt32()));
            foreach (var block in rule.GetProperty("to").EnumerateArray().Where(to => to.TryGetProperty("ipBlock", out _)).Select(to => to.GetProperty("ipBlock")))
            {
                var cidr = block.GetProperty("cidr").GetString()!;
                var excepts = block.TryGetProperty("except", out var x) ? x.EnumerateArray().Select(c => c.GetString()!).ToList() : [];
                Assert.True(
                    !System.Net.IPNetwork.Parse(cidr).Contains(Metadata) || excepts.Any(c => System.Net.IPNetwork.Parse(c).Contains(Metadata)),
                    $"egress to {cidr} lets the gateway reach the cloud metadata endpoint {Metadata}");
            }
        }

        foreach (var (what, port, ns) in needed)
        {
            Assert.True(
                rules.Any(rule => rule.GetProperty("ports").EnumerateArray().Any(p => p.GetProperty("port").GetInt32() == port)
                    && (ns is null || rule.GetProperty("to").EnumerateArray().Any(to => NamespaceOf(to) == ns))),
                $"no egress rule lets the gateway reach {what} (port {port}{(ns is null ? string.Empty : ", namespace " + ns)})");
        }
    }

    private static readonly System.Net.IPAddress Metadata = System.Net.IPAddress.Parse("169.254.169.254");

    [Fact]
    public void NetworkPolicy_Redis_SendsNothing()
    {
        // A single Redis answers; it opens no connection of its own (replicas would need a rule for each other).
        var policy = Documents("k8s/networkpolicy.yaml").Single(d => Name(d) == "assurance-redis").GetProperty("spec");

        Assert.Contains("Egress", policy.GetProperty("policyTypes").EnumerateArray().Select(e => e.GetString()));
        Assert.False(policy.TryGetProperty("egress", out var egress) && egress.GetArrayLength() > 0, "Redis may open connections");
    }

    [Fact]
    public void SystemdUnit_FiltersSystemCallsAsTheKubernetesSeccompProfileDoes()
    {
        // The Deployment runs under the runtime's default seccomp profile; the VM unit had no filter at all. The groups
        // required here are blocked by that default profile too, under which the .NET runtime is known to run.
        var unit = Read("systemd/assurance-gateway.service");

        var denied = Regex.Matches(unit, @"(?m)^SystemCallFilter=~(.+)$").SelectMany(m => m.Groups[1].Value.Split(' ', StringSplitOptions.RemoveEmptyEntries)).ToHashSet();
        foreach (var group in new[] { "@clock", "@cpu-emulation", "@module", "@mount", "@obsolete", "@raw-io", "@reboot", "@swap" })
        {
            Assert.Contains(group, denied);
        }

        Assert.Matches(@"(?m)^ProtectProc=invisible$", unit);
        Assert.Matches(@"(?m)^UMask=0077$", unit);
        // PrivateUsers would map the supplementary group that may read /etc/assurance-gateway to nobody.
        Assert.DoesNotMatch(@"(?m)^PrivateUsers=(yes|true)", unit);
    }

    [Fact]
    public async Task DemoScript_ToolsMissing_NamesThemBeforeBuildingOrStartingAnything()
    {
        // A fresh Debian has no curl: the demo built, started Redis, the upstream and the gateway, printed "curl: command
        // not found" for 20 s and stopped at its first request. PATH names an empty folder: nothing can be started.
        var empty = Directory.CreateTempSubdirectory("agw-demo-path-");
        try
        {
            var start = new System.Diagnostics.ProcessStartInfo("/bin/bash") { RedirectStandardOutput = true, RedirectStandardError = true };
            start.ArgumentList.Add(Path.Combine(Deploy, "local", "demo.sh"));
            start.Environment["PATH"] = empty.FullName;
            using var process = System.Diagnostics.Process.Start(start)!;
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            await process.WaitForExitAsync(timeout.Token);
            var output = await stdout + await stderr;

            Assert.True(process.ExitCode == 1, $"exit {process.ExitCode}:\n{output}");
            Assert.Contains("demo.sh needs: dotnet curl", output, StringComparison.Ordinal);
            Assert.DoesNotContain("command not found", output, StringComparison.Ordinal);
        }
        finally
        {
            empty.Delete(recursive: true);
        }
    }

    private static List<JsonElement> Documents(string file)
    {
        // PyYAML comes with yamllint, which tests/run.sh installs: the YAML is read as Kubernetes reads it.
        var (code, output) = Run(
            "python3", "-c", "import sys, json, yaml; json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], sys.stdout)", Path.Combine(Deploy, file));
        Assert.True(code == 0, output);
        using var json = JsonDocument.Parse(output);
        return json.RootElement.EnumerateArray().Select(d => d.Clone()).ToList();
    }

    private static JsonElement PodSpec(string file, string kind) =>
        Documents(file).Single(d => d.GetProperty("kind").GetString() == kind).GetProperty("spec").GetProperty("template").GetProperty("spec");

    private static JsonElement Container(JsonElement pod, string name) =>
        pod.GetProperty("containers").EnumerateArray().Single(c => c.GetProperty("name").GetString() == name);

    private static string? Name(JsonElement document) => document.GetProperty("metadata").GetProperty("name").GetString();

    private static int Seconds(JsonElement probe, string key, int fallback) => probe.TryGetProperty(key, out var v) ? v.GetInt32() : fallback;

    /// <summary>"name.namespace.svc.cluster.local" → namespace; null for a host outside the cluster.</summary>
    private static string? ServiceNamespace(string host)
    {
        var parts = host.Split('.');
        return parts.Length >= 3 && parts[2] == "svc" ? parts[1] : null;
    }

    private static string? NamespaceOf(JsonElement peer) =>
        peer.TryGetProperty("namespaceSelector", out var selector) && selector.TryGetProperty("matchLabels", out var labels)
            && labels.TryGetProperty("kubernetes.io/metadata.name", out var name) ? name.GetString() : null;

    private static long Quantity(string value)
    {
        var match = Regex.Match(value, @"^(\d+)(Ki|Mi|Gi)?$");
        Assert.True(match.Success, $"memory quantity '{value}' not understood here");
        var unit = match.Groups[2].Value switch { "Ki" => 1L << 10, "Mi" => 1L << 20, "Gi" => 1L << 30, _ => 1L };
        return long.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture) * unit;
    }
}
