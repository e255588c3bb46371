using System.Diagnostics;
using System.Net;
using AssuranceGateway.Testing;

namespace AssuranceGateway.FunctionalTests.Configuration;

/// <summary>
/// deploy/k8s/gateway.json as the Deployment runs it: the real host with the shipped file (its key paths pointed at
/// keys made here instead of the Secret's mount), the Redis connection string from the environment as the Deployment
/// passes it, against a redis-server running deploy/redis/redis.conf's settings with a password. It must start and
/// become ready; and the same file against a Redis that evicts must not (so the check can fail).
/// </summary>
public sealed class ShippedDeployConfigTests : IDisposable
{
    private const string Password = "shipped-config-test-pw";
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "agw-shipped", Guid.NewGuid().ToString("N"));

    public ShippedDeployConfigTests() => Directory.CreateDirectory(_directory);

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Theory]
    [InlineData(null, HttpStatusCode.OK)]
    [InlineData("allkeys-lru", HttpStatusCode.ServiceUnavailable)]
    public async Task K8sGatewayJson_WithShippedRedisConf_StartsAndReadinessFollowsTheEvictionPolicy(string? policyOverride, HttpStatusCode expected)
    {
        var arguments = RedisConfArguments(policyOverride);
        await using var redis = await RedisServer.StartAsync([.. arguments]);
        await redis.ExecuteAsync("CONFIG", "SET", "requirepass", Password);
        await MakeKeysAsync(Path.Combine(_directory, "keys"));
        var root = Path.GetFullPath(Path.Combine(Path.GetDirectoryName(GatewayProcess.HostDll())!, "..", "..", "..", "..", ".."));
        var config = Path.Combine(_directory, "gateway.json");
        await File.WriteAllTextAsync(config, (await File.ReadAllTextAsync(Path.Combine(root, "deploy", "k8s", "gateway.json")))
            .Replace("/etc/assurance-gateway/keys/", Path.Combine(_directory, "keys") + "/", StringComparison.Ordinal));
        var (proxy, api) = (GatewayProcess.FreePort(), GatewayProcess.FreePort());

        // The listeners move to loopback as the Deployment's env moves them to all interfaces; the store address comes
        // from the environment, as the Deployment takes it from the Secret.
        await using var gateway = GatewayProcess.Start(
            ["--config", config, "--Urls", $"http://127.0.0.1:{proxy}", "--Assurance:Api:Url", $"http://127.0.0.1:{api}"],
            new Dictionary<string, string> { ["Assurance__Store__Redis"] = $"{redis.ConnectionString},password={Password}" });
        await gateway.WaitReadyAsync($"http://127.0.0.1:{api}/healthz", TimeSpan.FromSeconds(30));

        // Until the store has judged: ready, or not ready because Redis evicts. Any other 503 (Redis not reached, the
        // password refused, INFO not read yet) is not the answer this test is about, and a 503 for one of those must not
        // pass the evicting case; waiting for the judgement also ends that case as soon as it is made, not at a deadline.
        using var client = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{api}") };
        var status = HttpStatusCode.ServiceUnavailable;
        var detail = string.Empty;
        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < TimeSpan.FromSeconds(15))
        {
            using var response = await client.GetAsync("/readyz");
            status = response.StatusCode;
            detail = await response.Content.ReadAsStringAsync();
            if (status == HttpStatusCode.OK || detail.Contains("evicts keys", StringComparison.Ordinal))
            {
                break;
            }

            await Task.Delay(200);
        }

        Assert.True(status == expected, $"/readyz {status} {detail}:\n{gateway.Output}");
        if (policyOverride is not null)
        {
            Assert.Contains($"maxmemory-policy {policyOverride}", detail, StringComparison.Ordinal);
        }
        Assert.Contains("deploy → single-use-approval, status → token-only; signed evidence on", gateway.Output, StringComparison.Ordinal);
        // The liveness probe's endpoint answers whatever the store says.
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/healthz")).StatusCode);
        Assert.DoesNotContain(Password, gateway.Output, StringComparison.Ordinal);
    }

    /// <summary>
    /// redis.conf's directives as redis-server arguments (the test server sets its own port, bind address and folder);
    /// <paramref name="policyOverride"/> replaces maxmemory-policy.
    /// </summary>
    private static List<string> RedisConfArguments(string? policyOverride)
    {
        var root = Path.GetFullPath(Path.Combine(Path.GetDirectoryName(GatewayProcess.HostDll())!, "..", "..", "..", "..", ".."));
        var arguments = new List<string>();
        foreach (var line in File.ReadAllLines(Path.Combine(root, "deploy", "redis", "redis.conf")))
        {
            var text = line.Trim();
            if (text.Length == 0 || text.StartsWith('#'))
            {
                continue;
            }

            var space = text.IndexOf(' ', StringComparison.Ordinal);
            var (name, value) = (text[..space], text[(space + 1)..].Trim('"'));
            if (name is "bind" or "port" or "dir")
            {
                continue;
            }

            arguments.Add("--" + name);
            arguments.Add(name == "maxmemory-policy" && policyOverride is not null ? policyOverride : value);
        }

        Assert.Contains("--maxmemory", arguments);
        return arguments;
    }

    private static async Task MakeKeysAsync(string directory)
    {
        var start = new ProcessStartInfo(GatewayProcess.DotnetHost()) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var argument in new[] { GatewayProcess.CliDll(), "keys", "init", "--dir", directory })
        {
            start.ArgumentList.Add(argument);
        }

        using var process = Process.Start(start)!;
        var output = await process.StandardOutput.ReadToEndAsync() + await process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        Assert.True(process.ExitCode == 0, output);
    }
}
