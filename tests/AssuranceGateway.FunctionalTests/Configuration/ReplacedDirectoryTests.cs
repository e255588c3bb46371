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

    /// <summary>
    /// The check applied a change it found by reloading the whole configuration: every source (environment, command line,
    /// the file) raised a change of its own, and the gateway compiled and applied each as a new generation (four here,
    /// each said as "applied"). It keeps the last four, so a request YARP had routed just before the change found its
    /// generation gone and was refused. The file alone is reread now: one change, one generation.
    /// </summary>
    [Fact]
    public async Task ConfigDirectoryReplaced_ChangeFoundByTheCheck_IsAppliedOnce()
    {
        await using var gateway = await GatewayHarness.StartAsync(services: s => s.AddSingleton(new SourceFileCheckInterval(TimeSpan.FromSeconds(1))));
        var moved = gateway.Directory + ".old";
        try
        {
            Directory.Move(gateway.Directory, moved);
            Copy(moved, gateway.Directory);
            await Task.Delay(2500); // the copy is the same content: nothing to apply
            var before = gateway.Config.Generation;
            gateway.Logs.Clear();

            var config = gateway.DefaultConfig();
            config["ReverseProxy"]!["Routes"]!.AsObject().Remove("public");
            var aside = gateway.ConfigPath + ".next";
            await File.WriteAllTextAsync(aside, config.ToJsonString());
            File.Move(aside, gateway.ConfigPath, overwrite: true);
            await gateway.Logs.WaitForAsync(l => l.Contains("[105]", StringComparison.Ordinal), "event 105");
            await Task.Delay(2500); // every reload it set off, and one more check

            Assert.Equal(before + 1, gateway.Config.Generation);
            Assert.Single(gateway.Logs.Lines, l => l.Contains("GatewayConfigState[101]", StringComparison.Ordinal));
            using var after = await gateway.Proxy.GetAsync("/public/feed");
            Assert.Equal(HttpStatusCode.NotFound, after.StatusCode);
        }
        finally
        {
            if (Directory.Exists(moved))
            {
                Directory.Delete(moved, recursive: true);
            }
        }
    }

    /// <summary>
    /// The check remembered the file as it was when the reload had already read it, not as the reload read it: a file
    /// written in two steps (a half-made first write, then the whole) whose second step landed between the read and the
    /// remembering was taken as applied. With no watcher to report it (the directory replaced), the whole file was never
    /// read: the half-made one was refused, and the route it removes stayed served for good.
    /// </summary>
    [Fact]
    public async Task ConfigDirectoryReplaced_FileCompletedWhileTheCheckReloads_TheCompleteFileIsApplied()
    {
        await using var gateway = await GatewayHarness.StartAsync(services: s => s.AddSingleton(new SourceFileCheckInterval(TimeSpan.FromSeconds(1))));
        var moved = gateway.Directory + ".old";
        try
        {
            Directory.Move(gateway.Directory, moved);
            Copy(moved, gateway.Directory);
            var config = gateway.DefaultConfig();
            config["ReverseProxy"]!["Routes"]!.AsObject().Remove("public");
            var whole = config.ToJsonString();
            var half = whole[..(whole.Length / 2)];

            // Let a reload the copy caused pass first. Then, registered after the gateway's own listener on the token now
            // current, so that it runs first (a token runs its callbacks newest first): the second step of the write lands
            // after the configuration read the first, before the gateway goes on.
            await Task.Delay(2500);
            var configuration = (Microsoft.Extensions.Configuration.IConfiguration)gateway.Services.GetRequiredService(typeof(Microsoft.Extensions.Configuration.IConfiguration));
            var completed = 0;
            using var second = configuration.GetReloadToken().RegisterChangeCallback(_ =>
            {
                if (Interlocked.Exchange(ref completed, 1) == 0)
                {
                    File.WriteAllText(gateway.ConfigPath, whole);
                }
            }, null);

            // The first step, the half-made file, whole at once (written aside and renamed over).
            var aside = gateway.ConfigPath + ".next";
            await File.WriteAllTextAsync(aside, half);
            File.Move(aside, gateway.ConfigPath, overwrite: true);
            var forwarded = gateway.Upstream.Count;
            var deadline = DateTime.UtcNow.AddSeconds(10);
            HttpStatusCode status;
            do
            {
                await Task.Delay(100);
                using var after = await gateway.Proxy.GetAsync("/public/feed");
                status = after.StatusCode;
                forwarded = status == HttpStatusCode.OK ? forwarded + 1 : forwarded;
            }
            while (status != HttpStatusCode.NotFound && DateTime.UtcNow < deadline);

            Assert.Equal(1, Volatile.Read(ref completed));
            Assert.Equal(HttpStatusCode.NotFound, status);
            Assert.Equal(forwarded, gateway.Upstream.Count);
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
