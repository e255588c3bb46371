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

            // Written aside and renamed over, as the harness does; waited for by its effect (the check may also have
            // reloaded the copied, unchanged file meanwhile, so a new generation alone proves nothing).
            var aside = gateway.ConfigPath + ".next";
            await File.WriteAllTextAsync(aside, config.ToJsonString());
            File.Move(aside, gateway.ConfigPath, overwrite: true);
            var forwarded = gateway.Upstream.Count;
            var deadline = DateTime.UtcNow.AddSeconds(15);
            HttpStatusCode status;
            do
            {
                await Task.Delay(100);
                using var after = await gateway.Proxy.GetAsync("/public/feed");
                status = after.StatusCode;
                forwarded = status == HttpStatusCode.OK ? forwarded + 1 : forwarded;
            }
            while (status != HttpStatusCode.NotFound && DateTime.UtcNow < deadline);

            Assert.Equal(HttpStatusCode.NotFound, status);
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
