using System.Net;
using System.Text.Json.Nodes;
using AssuranceGateway.Configuration;
using AssuranceGateway.Testing;
using Microsoft.Extensions.DependencyInjection;

namespace AssuranceGateway.FunctionalTests.Configuration;

/// <summary>
/// A file watch follows the directory it was set on. A configuration directory replaced under the same path (moved
/// away and copied back, as deploy tools that switch a release directory do) was never watched again: a route removed
/// from the new file stayed in force, and so would a key removed from a JWKS file there, without a word. The periodic
/// check (every second here, 30 s by default) finds the change by content and applies it, saying so (event 105).
/// </summary>
public sealed class ReplacedDirectoryTests
{
    [Fact]
    public async Task ConfigDirectoryReplaced_ARouteRemovedFromTheNewFile_IsNoLongerServed()
    {
        await using var gateway = await GatewayHarness.StartAsync(services: s => s.AddSingleton(new SourceFileCheckInterval(TimeSpan.FromSeconds(1))));
        using (var before = await gateway.Proxy.GetAsync("/public/feed"))
        {
            Assert.Equal(HttpStatusCode.OK, before.StatusCode);
        }

        var moved = gateway.Directory + ".old";
        try
        {
            Directory.Move(gateway.Directory, moved);
            Copy(moved, gateway.Directory);
            var config = gateway.DefaultConfig();
            config["ReverseProxy"]!["Routes"]!.AsObject().Remove("public");

            Assert.True(await gateway.ReloadAsync(config, TimeSpan.FromSeconds(15)), string.Join('\n', gateway.RefusedReloads()));

            var forwarded = gateway.Upstream.Count;
            using var after = await gateway.Proxy.GetAsync("/public/feed");
            Assert.Equal(HttpStatusCode.NotFound, after.StatusCode);
            Assert.Equal(forwarded, gateway.Upstream.Count);
            var said = await gateway.Logs.WaitForAsync(l => l.Contains("[105]", StringComparison.Ordinal), "event 105");
            Assert.Contains(gateway.ConfigPath, said, StringComparison.Ordinal);
        }
        finally
        {
            if (Directory.Exists(moved))
            {
                Directory.Delete(moved, recursive: true);
            }
        }
    }

    private static void Copy(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var file in Directory.GetFiles(from))
        {
            File.Copy(file, Path.Combine(to, Path.GetFileName(file)));
        }

        foreach (var directory in Directory.GetDirectories(from))
        {
            Copy(directory, Path.Combine(to, Path.GetFileName(directory)));
        }
    }
}
