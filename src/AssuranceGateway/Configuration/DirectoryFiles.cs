using System.Collections.Concurrent;
using Microsoft.Extensions.FileProviders;
using Microsoft.Extensions.FileProviders.Physical;
using Microsoft.Extensions.Primitives;

namespace AssuranceGateway.Configuration;

/// <summary>
/// The files directly in one directory, watched without descending into it. <see cref="PhysicalFileProvider"/> watches
/// its root recursively (on Linux one inotify watch per directory below it): a configuration file at <c>/</c> cost
/// 42,684 watches and 25 s of start-up, and a key file in <c>/etc</c> would watch all of <c>/etc</c>. Only names in the
/// directory itself are watched here. A name starting with <c>..</c> counts as a change of every file: that is how the
/// kubelet updates a mounted ConfigMap or Secret (it swaps the <c>..data</c> symlink the files point through).
/// With <c>DOTNET_USE_POLLING_FILE_WATCHER</c> set, changes are found by polling, as PhysicalFileProvider does.
/// </summary>
internal sealed class DirectoryFiles : IFileProvider, IDisposable
{
    private readonly PhysicalFileProvider _files;
    private readonly FileSystemWatcher? _watcher;
    private readonly ConcurrentDictionary<string, CancellationTokenSource> _waiting = new(StringComparer.Ordinal);
    private readonly Action<Exception>? _listenerFailed;

    /// <param name="directory">The directory whose files are watched.</param>
    /// <param name="listenerFailed">Told when something that listens for a change throws (see <see cref="Fire"/>).</param>
    /// <param name="polling">Poll instead of watching (by default as <c>DOTNET_USE_POLLING_FILE_WATCHER</c> says).</param>
    public DirectoryFiles(string directory, Action<Exception>? listenerFailed = null, bool? polling = null)
    {
        _listenerFailed = listenerFailed;
        // No exclusion filter: a watched file may well be a dot file.
        _files = new PhysicalFileProvider(directory, ExclusionFilters.None);
        if (polling is { } poll)
        {
            _files.UsePollingFileWatcher = poll;
            _files.UseActivePolling = poll;
        }
        if (_files.UsePollingFileWatcher)
        {
            return;
        }

        _watcher = new FileSystemWatcher(directory)
        {
            IncludeSubdirectories = false,
            NotifyFilter = NotifyFilters.FileName | NotifyFilters.DirectoryName | NotifyFilters.LastWrite | NotifyFilters.Size
                | NotifyFilters.CreationTime | NotifyFilters.Attributes,
        };
        _watcher.Created += (_, e) => Changed(e.Name);
        _watcher.Changed += (_, e) => Changed(e.Name);
        _watcher.Deleted += (_, e) => Changed(e.Name);
        _watcher.Renamed += (_, e) =>
        {
            Changed(e.OldName);
            Changed(e.Name);
        };

        // Events were lost (the buffer overflowed) or the directory went away: every file may have changed.
        _watcher.Error += (_, _) => ChangedAll();
        _watcher.EnableRaisingEvents = true;
    }

    public IFileInfo GetFileInfo(string subpath) => _files.GetFileInfo(subpath);

    public IDirectoryContents GetDirectoryContents(string subpath) => _files.GetDirectoryContents(subpath);

    /// <summary>A token that fires once <paramref name="filter"/> (a file name in the directory) changes.</summary>
    public IChangeToken Watch(string filter)
    {
        if (_watcher is null)
        {
            // Polling: the provider's timer fires its token and swallows what a listener throws. Relayed through Fire,
            // a failure is reported (event 104) as with the watcher, not lost without a word.
            var polled = _files.Watch(filter);
            if (!polled.ActiveChangeCallbacks)
            {
                return polled;
            }

            var relay = new CancellationTokenSource();
            polled.RegisterChangeCallback(static state =>
            {
                var (files, relayed) = ((DirectoryFiles, CancellationTokenSource))state!;
                files.Fire(relayed);
            }, (this, relay));
            return new CancellationChangeToken(relay.Token);
        }

        var waiting = _waiting.GetOrAdd(filter, static _ => new CancellationTokenSource());
        return new CancellationChangeToken(waiting.Token);
    }

    private void Changed(string? name)
    {
        if (name is null)
        {
            return;
        }

        if (name.StartsWith("..", StringComparison.Ordinal))
        {
            ChangedAll();
        }
        else if (_waiting.TryRemove(name, out var waiting))
        {
            Fire(waiting);
        }
    }

    private void ChangedAll()
    {
        foreach (var name in _waiting.Keys)
        {
            if (_waiting.TryRemove(name, out var waiting))
            {
                Fire(waiting);
            }
        }
    }

    /// <summary>
    /// Runs everything that listens for the change, on the watcher's thread: the configuration's reload and, behind it,
    /// every options monitor of the host. One of those throwing must not end the process. The logging filter throws on a
    /// level that is no level ("Verbose"), which the gateway refuses as a change but the host's logging reads on its own:
    /// the watcher handed the exception to its Error event, whose handler fired every token again, threw again, and the
    /// unhandled exception ended the gateway, every replica at once when a ConfigMap changed. The other listeners have
    /// run (a token runs all its callbacks before it throws), and the one that threw keeps what it had.
    /// Not disposed after: a consumer may still ask the token it holds whether it has changed.
    /// </summary>
    private void Fire(CancellationTokenSource waiting)
    {
        try
        {
            waiting.Cancel();
        }
        catch (AggregateException e)
        {
            _listenerFailed?.Invoke(e);
        }
    }

    public void Dispose()
    {
        _watcher?.Dispose();
        _files.Dispose();
    }
}
