using System.Security.Cryptography;

namespace AssuranceGateway.Configuration;

/// <summary>How often <see cref="SourceFileCheck"/> looks (a service, so that a test can ask for less than the default).</summary>
public sealed record SourceFileCheckInterval(TimeSpan Value)
{
    public static readonly SourceFileCheckInterval Default = new(TimeSpan.FromSeconds(30));
}

/// <summary>
/// Every <see cref="SourceFileCheckInterval"/>, compares the files the configuration comes from (the configuration file
/// and the key files it names) with what they held when they were last read, and calls back with those that changed.
/// The file watchers are quicker but can go deaf without a word: a watch follows the directory it was set on, so a
/// directory replaced under the same path (a release symlink switched, a config directory copied back) was never watched
/// again, and removing a compromised key from a JWKS file there was never applied; so do filesystems that send no
/// events (some network mounts). Files are compared by content (SHA-256), so a copy that keeps the modification time is
/// seen too.
/// </summary>
internal sealed class SourceFileCheck : IDisposable
{
    private readonly object _gate = new();
    private readonly Dictionary<string, byte[]?> _seen = new(StringComparer.Ordinal);
    private readonly Func<IReadOnlyCollection<string>> _files;
    private readonly Action<IReadOnlyList<string>> _changed;
    private readonly Action<Exception> _failed;
    private readonly ITimer _timer;
    private volatile bool _disposed;

    /// <param name="time">Whose timer runs the check.</param>
    /// <param name="interval">How often.</param>
    /// <param name="files">The files to compare, as of now (the set follows the configuration in force).</param>
    /// <param name="changed">Called, on the timer's thread, with the files whose content differs from when last read.</param>
    /// <param name="failed">Told of anything the check itself throws (it runs on with the next tick).</param>
    public SourceFileCheck(TimeProvider time, TimeSpan interval, Func<IReadOnlyCollection<string>> files, Action<IReadOnlyList<string>> changed, Action<Exception> failed)
    {
        _files = files;
        _changed = changed;
        _failed = failed;
        _timer = time.CreateTimer(static s => ((SourceFileCheck)s!).Check(), this, interval, interval);
    }

    /// <summary>
    /// Notes what the files hold: called before a compile reads them, so a change read then is not news. A file already
    /// read (<paramref name="read"/>, the configuration file, read by its provider before the reload starts) is noted as
    /// it was read, not as it is now: a write that landed after the read is news, or, with no watcher to say so, it would
    /// never be read (the first step of a write read, the second taken as applied).
    /// </summary>
    public void Remember(IEnumerable<string> files, (string File, byte[]? Fingerprint)? read = null)
    {
        lock (_gate)
        {
            foreach (var file in files)
            {
                _seen[file] = read is { } known && string.Equals(known.File, file, StringComparison.Ordinal) ? known.Fingerprint : Fingerprint(file);
            }
        }
    }

    private void Check()
    {
        if (_disposed)
        {
            return; // a tick already under way when the configuration state was disposed
        }

        try
        {
            var changed = new List<string>();
            lock (_gate)
            {
                foreach (var file in _files())
                {
                    var now = Fingerprint(file);
                    if (!_seen.TryGetValue(file, out var before))
                    {
                        _seen[file] = now; // newly named: read by the compile that named it
                    }
                    else if (!(before is null ? now is null : now is not null && before.AsSpan().SequenceEqual(now)))
                    {
                        _seen[file] = now;
                        changed.Add(file);
                    }
                }
            }

            if (changed.Count > 0)
            {
                _changed(changed);
            }
        }
#pragma warning disable CA1031 // A timer callback that throws ends the process: the check reports and runs again.
        catch (Exception e)
#pragma warning restore CA1031
        {
            _failed(e);
        }
    }

    /// <summary>The content's SHA-256; null when the file is missing or cannot be read (which is a state too).</summary>
    private static byte[]? Fingerprint(string file)
    {
        try
        {
            using var stream = File.OpenRead(file);
            return SHA256.HashData(stream);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    public void Dispose()
    {
        _disposed = true;
        _timer.Dispose();
    }
}
