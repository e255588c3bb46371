using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Configuration.Json;

namespace AssuranceGateway.Configuration;

/// <summary>
/// The gateway's JSON file as a configuration source. A reload that cannot be parsed must not look like an empty
/// configuration (which would validate and drop every route), so parse failures are recorded here and refused.
/// </summary>
public sealed class GatewayConfigFile
{
    public const string DefaultPath = "config/gateway.json";
    public const string EnvironmentVariable = "GATEWAY_CONFIG";

    private volatile string? _loadError;
    private volatile TrackingProvider? _provider;
    private volatile byte[]? _loaded;

    private GatewayConfigFile(string path) => FullPath = path;

    public string FullPath { get; }

    /// <summary>Raised when something in the host that listens for a change of the file throws (<see cref="DirectoryFiles"/>).</summary>
    public event Action<Exception>? ListenerFailed;

    /// <summary>Why the last (re)load of the file failed, or null when it parsed.</summary>
    public string? LoadError => File.Exists(FullPath) ? _loadError
        : Directory.Exists(FullPath) ? $"'{FullPath}' is a directory: name the configuration file in it"
        : $"'{FullPath}' does not exist";

    /// <summary>
    /// The SHA-256 of the file as its last (re)load read it (parsed or not), or null when it was missing: what the
    /// configuration holds, which the file on disk may no longer be (a write that landed after the read).
    /// </summary>
    internal byte[]? LoadedFingerprint => File.Exists(FullPath) ? _loaded : null;

    /// <summary>
    /// Rereads the file alone, as its watcher would: one change of the configuration. Reloading the whole configuration
    /// instead raised one change per source (environment, command line, the file), each compiled and applied as a
    /// generation of its own. False when no provider reads the file (its directory did not exist at start).
    /// </summary>
    internal bool Reload()
    {
        if (_provider is not { } provider)
        {
            return false;
        }

        provider.Load();
        return true;
    }

    /// <summary>
    /// Adds the file so that it sits below environment variables and command-line arguments (which override single
    /// keys, as in any ASP.NET Core app) and above the defaults.
    /// </summary>
    public static GatewayConfigFile Add(IConfigurationBuilder builder, IConfiguration current, string contentRoot)
    {
        var path = current["config"] ?? current[EnvironmentVariable] ?? DefaultPath;
        var file = new GatewayConfigFile(Path.GetFullPath(path, contentRoot));
        var sources = builder.Sources;

        // The gateway reads one file. The host's default appsettings.json and appsettings.{Environment}.json in the
        // working directory would be a second source of routes and policies that neither the start-up line nor an SRE
        // reading the gateway's file sees. (Their watchers, which cover the working directory recursively, are not
        // created at all by the gateway's host: see Program.cs.)
        for (var i = sources.Count - 1; i >= 0; i--)
        {
            if (sources[i] is JsonConfigurationSource { Path: { } json } && json.StartsWith("appsettings", StringComparison.OrdinalIgnoreCase))
            {
                sources.RemoveAt(i);
            }
        }

        var directory = Path.GetDirectoryName(file.FullPath)!;
        if (!Directory.Exists(directory))
        {
            return file; // LoadError reports the missing file; there is nothing to watch.
        }

        var index = sources.Count;
        for (var i = 0; i < sources.Count; i++)
        {
            if (sources[i] is Microsoft.Extensions.Configuration.EnvironmentVariables.EnvironmentVariablesConfigurationSource)
            {
                index = i;
            }
        }

        // Insert before the last environment-variable source, so env vars and then the command line still win.
        sources.Insert(index, new TrackingSource(file, directory));
        return file;
    }

    /// <summary>
    /// "Could not parse the JSON file." alone does not say where: add the parser's own message (line and position),
    /// which sits at the bottom of the exception chain.
    /// </summary>
    private static string Describe(Exception exception)
    {
        var outer = exception.InnerException ?? exception;
        var innermost = outer;
        while (innermost.InnerException is not null)
        {
            innermost = innermost.InnerException;
        }

        return ReferenceEquals(innermost, outer) ? outer.Message : $"{outer.Message.TrimEnd('.')}: {innermost.Message}";
    }

    /// <summary>
    /// The file as a JSON source that clears the recorded error after each successful parse, so a fixed file is accepted
    /// again. Each provider built (the configuration rebuilds them when its sources change) watches the directory with a
    /// watcher of its own and closes it when the configuration is disposed: an inotify instance is a per-user resource
    /// (128 by default), and a watcher left open outlives everything that used it.
    /// </summary>
    private sealed class TrackingSource(GatewayConfigFile file, string directory) : IConfigurationSource
    {
        public IConfigurationProvider Build(IConfigurationBuilder builder) => file._provider = new TrackingProvider(new JsonConfigurationSource
        {
            Path = Path.GetFileName(file.FullPath),
            Optional = true,
            ReloadOnChange = true,
            ReloadDelay = 200,
            OnLoadException = context =>
            {
                file._loadError = Describe(context.Exception);
                context.Ignore = true;
            },
            FileProvider = new DirectoryFiles(directory, e => file.ListenerFailed?.Invoke(e)),
        }, file);
    }

    private sealed class TrackingProvider(JsonConfigurationSource source, GatewayConfigFile file) : JsonConfigurationProvider(source)
    {
        // Load(Stream), not Load(): a change to the file reloads through FileConfigurationProvider's private
        // Load(reload: true), which never calls the public Load(). Clearing there only, one broken edit would have
        // made every later (fixed) edit look broken too, until a restart.
        // Cleared only once the parse succeeded: after a failed reload the provider holds no data at all, and a
        // compile racing with this parse must still see the error, not an empty (and valid) configuration.
        public override void Load(Stream stream)
        {
            // Hashed as read, before the parse: the periodic check compares the file with this (a broken file is no news
            // either, until it changes again).
            using var read = new MemoryStream();
            stream.CopyTo(read);
            file._loaded = System.Security.Cryptography.SHA256.HashData(read.GetBuffer().AsSpan(0, (int)read.Length));
            read.Position = 0;
            base.Load(read);
            file._loadError = null;
        }

        protected override void Dispose(bool disposing)
        {
            base.Dispose(disposing);
            if (disposing)
            {
                (Source.FileProvider as IDisposable)?.Dispose();
            }
        }
    }
}
