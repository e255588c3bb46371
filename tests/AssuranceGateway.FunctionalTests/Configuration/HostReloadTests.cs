using System.Net;
using System.Text.Json.Nodes;
using AssuranceGateway.Testing;

namespace AssuranceGateway.FunctionalTests.Configuration;

/// <summary>
/// Configuration changes to the real host (<c>dotnet Gateway.dll</c>) that only a process shows: what the host's own
/// parts (its logging) make of a change, beside the gateway's verdict on it.
/// </summary>
public sealed class HostReloadTests
{
    // The console logger binds Logging:Console itself. A value it cannot bind was applied by the gateway (event 101) and
    // left the console options unreadable: every logger created after it threw, so the API's first JSON answer was a
    // 500 (and a logger first created on a background thread would have thrown there), and the next start exited 134.
    [Fact]
    public async Task Reload_ConsoleLoggerOptionItCannotTake_RefusedNamingTheKeyAndTheHostServesOn()
    {
        await using var harness = await GatewayHarness.CreateAsync();
        var (gateway, proxy, api) = await GatewayProcess.StartAsync(harness, new Dictionary<string, string>());
        await using var host = gateway;
        using var proxyClient = proxy;
        using var apiClient = api;

        var config = JsonNode.Parse(await File.ReadAllTextAsync(harness.ConfigPath))!.AsObject();
        config["Logging"] = new JsonObject { ["Console"] = new JsonObject { ["LogToStandardErrorThreshold"] = "Verbose" } };
        var temporary = harness.ConfigPath + ".tmp";
        await File.WriteAllTextAsync(temporary, config.ToJsonString());
        File.Move(temporary, harness.ConfigPath, overwrite: true);

        await WaitForOutputAsync(gateway, "[100]");
        var output = gateway.Output;
        Assert.True(output.Contains("Logging:Console:LogToStandardErrorThreshold: 'Verbose'", StringComparison.Ordinal), output);
        Assert.False(output.Contains("[101]", StringComparison.Ordinal), output);

        // First asked now: the JSON result's logger is created by this request.
        using var jwks = await api.GetAsync(new Uri("/.well-known/jwks.json", UriKind.Relative));
        Assert.True(jwks.StatusCode == HttpStatusCode.OK, $"{jwks.StatusCode}:\n{gateway.Output}");
        using var status = await proxy.GetAsync(new Uri("/status", UriKind.Relative));
        Assert.True(status.StatusCode == HttpStatusCode.Unauthorized, $"{status.StatusCode}:\n{gateway.Output}");
        Assert.Null(gateway.ExitCode);
        Assert.Empty(harness.Upstream.Received);
    }

    private static async Task WaitForOutputAsync(GatewayProcess gateway, string text)
    {
        var deadline = DateTime.UtcNow.AddSeconds(15);
        while (!gateway.Output.Contains(text, StringComparison.Ordinal))
        {
            Assert.True(DateTime.UtcNow < deadline, $"nothing logged with {text}:\n{gateway.Output}");
            Assert.True(gateway.ExitCode is null, $"the gateway exited with {gateway.ExitCode}:\n{gateway.Output}");
            await Task.Delay(50);
        }
    }
}
