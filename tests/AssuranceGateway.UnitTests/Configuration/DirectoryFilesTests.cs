using System.Globalization;
using AssuranceGateway.Configuration;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Primitives;

namespace AssuranceGateway.UnitTests.Configuration;

public sealed class DirectoryFilesTests : IDisposable
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(10);

    private readonly string _directory = Directory.CreateTempSubdirectory("agw-watch-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public async Task Watch_FileRewritten_TokenFires()
    {
        File.WriteAllText(Path.Combine(_directory, "gateway.json"), "{}");
        using var files = new DirectoryFiles(_directory);
        var token = files.Watch("gateway.json");

        File.WriteAllText(Path.Combine(_directory, "gateway.json"), "{\"a\":1}");

        Assert.True(await FiredAsync(token));
    }

    // A listener that throws (the host's logging filter on a level that is no level) is reported, and nothing escapes
    // to the thread that found the change: with inotify that ended the process, and the polling timer swallowed it
    // without a word (the shipped Deployment polls).
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Watch_ListenerThrows_ReportedAndTheNextChangeStillFires(bool polling)
    {
        File.WriteAllText(Path.Combine(_directory, "gateway.json"), "{}");
        var failures = new System.Collections.Concurrent.ConcurrentQueue<Exception>();
        using var files = new DirectoryFiles(_directory, failures.Enqueue, polling);
        var first = files.Watch("gateway.json");
        using var throwing = first.RegisterChangeCallback(static _ => throw new InvalidOperationException("Configuration value 'Verbose' is not supported."), null);

        File.WriteAllText(Path.Combine(_directory, "gateway.json"), "{\"a\":1}");

        Assert.True(await FiredAsync(first));
        var deadline = DateTime.UtcNow + Patience;
        while (failures.IsEmpty && DateTime.UtcNow < deadline)
        {
            await Task.Delay(20);
        }

        var failure = Assert.IsType<AggregateException>(Assert.Single(failures));
        Assert.Equal("Configuration value 'Verbose' is not supported.", Assert.Single(failure.Flatten().InnerExceptions).Message);
        var second = files.Watch("gateway.json");
        await Task.Delay(polling ? 1100 : 0); // the polling watcher compares write times, which have a second's resolution on some filesystems
        File.WriteAllText(Path.Combine(_directory, "gateway.json"), "{\"a\":2}");
        Assert.True(await FiredAsync(second));
    }

    [Fact]
    public async Task Watch_FileReplacedByRename_TokenFires()
    {
        // How editors and config-management tools save: write a temporary file, rename it over the old one.
        File.WriteAllText(Path.Combine(_directory, "gateway.json"), "{}");
        using var files = new DirectoryFiles(_directory);
        var token = files.Watch("gateway.json");

        File.WriteAllText(Path.Combine(_directory, "gateway.json.tmp"), "{\"a\":1}");
        File.Move(Path.Combine(_directory, "gateway.json.tmp"), Path.Combine(_directory, "gateway.json"), overwrite: true);

        Assert.True(await FiredAsync(token));
    }

    [Fact]
    public async Task Watch_KubeletSwapsTheDataLink_EveryWatchedFileFires()
    {
        // A mounted ConfigMap: gateway.json -> ..data/gateway.json, ..data -> ..2026_12_02_01; an update writes a new
        // timestamped directory and renames a new ..data link over the old one. gateway.json itself is never touched.
        Directory.CreateDirectory(Path.Combine(_directory, "..v1"));
        File.WriteAllText(Path.Combine(_directory, "..v1", "gateway.json"), "{}");
        File.CreateSymbolicLink(Path.Combine(_directory, "..data"), "..v1");
        File.CreateSymbolicLink(Path.Combine(_directory, "gateway.json"), Path.Combine("..data", "gateway.json"));
        using var files = new DirectoryFiles(_directory);
        var config = files.Watch("gateway.json");
        var other = files.Watch("other.json");

        Directory.CreateDirectory(Path.Combine(_directory, "..v2"));
        File.WriteAllText(Path.Combine(_directory, "..v2", "gateway.json"), "{\"a\":1}");
        File.CreateSymbolicLink(Path.Combine(_directory, "..data_tmp"), "..v2");
        // rename(2) over the old link, as the kubelet does (File.Move follows a link to a directory and refuses).
        using (var mv = System.Diagnostics.Process.Start("mv", ["-T", Path.Combine(_directory, "..data_tmp"), Path.Combine(_directory, "..data")]))
        {
            mv.WaitForExit();
            Assert.Equal(0, mv.ExitCode);
        }

        Assert.True(await FiredAsync(config));
        Assert.True(await FiredAsync(other));
        Assert.Equal("{\"a\":1}", File.ReadAllText(Path.Combine(_directory, "gateway.json")));
    }

    [Fact]
    public async Task Watch_OtherFileChanged_TokenDoesNotFire()
    {
        File.WriteAllText(Path.Combine(_directory, "gateway.json"), "{}");
        using var files = new DirectoryFiles(_directory);
        var token = files.Watch("gateway.json");
        var sentinel = files.Watch("sentinel");

        File.WriteAllText(Path.Combine(_directory, "notes.txt"), "x");
        File.WriteAllText(Path.Combine(_directory, "sentinel"), "x");

        // Events arrive in order: once the later change has been seen, the earlier one would have been too.
        Assert.True(await FiredAsync(sentinel));
        Assert.False(token.HasChanged);
    }

    [Fact]
    public void Watch_DirectoryWithSubdirectories_NoneOfThemWatched()
    {
        // PhysicalFileProvider watched its root recursively: a configuration file at "/" added 42,684 inotify watches
        // and 25 s of start-up. Only the directory itself may be watched.
        var subdirectories = new List<string>();
        for (var i = 0; i < 20; i++)
        {
            var sub = Directory.CreateDirectory(Path.Combine(_directory, $"sub{i}", "deeper"));
            subdirectories.AddRange([sub.Parent!.FullName, sub.FullName]);
        }

        var inodes = Inodes(subdirectories);

        File.WriteAllText(Path.Combine(_directory, "gateway.json"), "{}");
        using var files = new DirectoryFiles(_directory);
        _ = files.Watch("gateway.json");

        var watched = WatchedInodes();
        Assert.Contains(Inodes([_directory]).Single(), watched);
        Assert.Empty(inodes.Intersect(watched));
    }

    [Fact]
    public void ConfigFile_ConfigurationDisposed_DirectoryNoLongerWatched()
    {
        // Each watcher is an inotify instance, of which a user has 128 by default: one left open per configuration that
        // was built (every test gateway, every host) exhausted them within one test run.
        var path = Path.Combine(_directory, "gateway.json");
        File.WriteAllText(path, "{}");
        var builder = new ConfigurationBuilder();
        var arguments = new ConfigurationBuilder().AddInMemoryCollection([new("config", path)]).Build();
        GatewayConfigFile.Add(builder, arguments, _directory);
        var configuration = (ConfigurationRoot)builder.Build();
        var inode = Inodes([_directory]).Single();
        Assert.Contains(inode, WatchedInodes());

        configuration.Dispose();

        Assert.DoesNotContain(inode, WatchedInodes());
    }

    private static async Task<bool> FiredAsync(IChangeToken token)
    {
        var fired = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var registration = token.RegisterChangeCallback(_ => fired.TrySetResult(), null);
        return await Task.WhenAny(fired.Task, Task.Delay(Patience)) == fired.Task;
    }

    private static HashSet<ulong> Inodes(IEnumerable<string> paths)
    {
        var stat = new System.Diagnostics.ProcessStartInfo("stat") { RedirectStandardOutput = true };
        stat.ArgumentList.Add("-c");
        stat.ArgumentList.Add("%i");
        foreach (var path in paths)
        {
            stat.ArgumentList.Add(path);
        }

        using var process = System.Diagnostics.Process.Start(stat)!;
        var output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return [.. output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(i => ulong.Parse(i, CultureInfo.InvariantCulture))];
    }

    /// <summary>The inodes this process holds inotify watches on, from /proc/self/fdinfo ("inotify wd:1 ino:1a2b ...").</summary>
    private static HashSet<ulong> WatchedInodes()
    {
        var watched = new HashSet<ulong>();
        foreach (var info in Directory.EnumerateFiles("/proc/self/fdinfo"))
        {
            string[] lines;
            try
            {
                lines = File.ReadAllLines(info);
            }
            catch (IOException)
            {
                continue; // the descriptor closed meanwhile
            }

            foreach (var line in lines)
            {
                if (line.StartsWith("inotify ", StringComparison.Ordinal)
                    && line.Split(' ').FirstOrDefault(p => p.StartsWith("ino:", StringComparison.Ordinal)) is { } ino)
                {
                    watched.Add(ulong.Parse(ino.AsSpan(4), NumberStyles.HexNumber, CultureInfo.InvariantCulture));
                }
            }
        }

        return watched;
    }
}
