using System.Net;
using System.Text.Json.Nodes;
using AssuranceGateway.Configuration;
using AssuranceGateway.Testing;
using Microsoft.Extensions.Configuration;
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
        await using var replaced = await Replaced.StartAsync(async gateway =>
        {
            using var before = await gateway.Proxy.GetAsync("/public/feed");
            Assert.Equal(HttpStatusCode.OK, before.StatusCode);
        });
        var gateway = replaced.Gateway;

        // Waited for by its effect: the check may also have reloaded the copied, unchanged file meanwhile, so a new
        // generation alone proves nothing.
        await WriteAsync(gateway, WithoutPublic(gateway).ToJsonString());
        await AssertPublicGoneAsync(gateway, TimeSpan.FromSeconds(15));

        var said = await gateway.Logs.WaitForAsync(l => l.Contains("[105]", StringComparison.Ordinal), "event 105");
        Assert.Contains(gateway.ConfigPath, said, StringComparison.Ordinal);
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
        await using var replaced = await Replaced.StartAsync();
        var gateway = replaced.Gateway;
        await Task.Delay(2500); // the copy is the same content: nothing to apply
        var before = gateway.Config.Generation;
        gateway.Logs.Clear();

        await WriteAsync(gateway, WithoutPublic(gateway).ToJsonString());
        await gateway.Logs.WaitForAsync(l => l.Contains("[105]", StringComparison.Ordinal), "event 105");
        await Task.Delay(2500); // every reload it set off, and one more check

        Assert.Equal(before + 1, gateway.Config.Generation);
        Assert.Single(gateway.Logs.Lines, l => l.Contains("GatewayConfigState[101]", StringComparison.Ordinal));
        using var after = await gateway.Proxy.GetAsync("/public/feed");
        Assert.Equal(HttpStatusCode.NotFound, after.StatusCode);
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
        await using var replaced = await Replaced.StartAsync();
        var gateway = replaced.Gateway;
        var whole = WithoutPublic(gateway).ToJsonString();
        var half = whole[..(whole.Length / 2)];

        // Let a reload the copy caused pass first. Then, registered after the gateway's own listener on the token now
        // current, so that it runs first (a token runs its callbacks newest first): the second step of the write lands
        // after the configuration read the first, before the gateway goes on.
        await Task.Delay(2500);
        var configuration = gateway.Services.GetRequiredService<IConfiguration>();
        var completed = 0;
        using var second = configuration.GetReloadToken().RegisterChangeCallback(_ =>
        {
            if (Interlocked.Exchange(ref completed, 1) == 0)
            {
                File.WriteAllText(gateway.ConfigPath, whole);
            }
        }, null);

        await WriteAsync(gateway, half); // the first step, the half-made file
        await AssertPublicGoneAsync(gateway, TimeSpan.FromSeconds(10));

        Assert.Equal(1, Volatile.Read(ref completed));
    }

    private static JsonObject WithoutPublic(GatewayHarness gateway)
    {
        var config = gateway.DefaultConfig();
        config["ReverseProxy"]!["Routes"]!.AsObject().Remove("public");
        return config;
    }

    /// <summary>Written aside and renamed over, whole at once, as the harness does.</summary>
    private static async Task WriteAsync(GatewayHarness gateway, string content)
    {
        var aside = gateway.ConfigPath + ".next";
        await File.WriteAllTextAsync(aside, content);
        File.Move(aside, gateway.ConfigPath, overwrite: true);
    }

    /// <summary>Asks for /public until it is 404 (the route gone), and checks that no request made meanwhile but those answered 200 reached the upstream.</summary>
    private static async Task AssertPublicGoneAsync(GatewayHarness gateway, TimeSpan limit)
    {
        var forwarded = gateway.Upstream.Count;
        var deadline = DateTime.UtcNow + limit;
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
    }

    /// <summary>A gateway whose files are checked every second, its directory then moved away and copied back.</summary>
    private sealed class Replaced(GatewayHarness gateway, string moved) : IAsyncDisposable
    {
        public GatewayHarness Gateway => gateway;

        public static async Task<Replaced> StartAsync(Func<GatewayHarness, Task>? before = null)
        {
            var gateway = await GatewayHarness.StartAsync(services: s => s.AddSingleton(new SourceFileCheckInterval(TimeSpan.FromSeconds(1))));
            var moved = gateway.Directory + ".old";
            try
            {
                if (before is not null)
                {
                    await before(gateway);
                }

                Directory.Move(gateway.Directory, moved);
                Copy(moved, gateway.Directory);
                return new Replaced(gateway, moved);
            }
            catch
            {
                await new Replaced(gateway, moved).DisposeAsync();
                throw;
            }
        }

        public async ValueTask DisposeAsync()
        {
            await gateway.DisposeAsync();
            if (Directory.Exists(moved))
            {
                Directory.Delete(moved, recursive: true);
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
}
