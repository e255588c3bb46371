using System.Globalization;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.FileProviders;
using Microsoft.Extensions.FileProviders.Physical;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Primitives;
using Yarp.ReverseProxy.Configuration;

namespace AssuranceGateway.Configuration;

/// <summary>Thrown at start when the configuration is invalid; the message holds one line per problem.</summary>
public sealed class GatewayConfigurationException(IReadOnlyList<string> problems)
    : Exception("Invalid gateway configuration:" + Environment.NewLine + string.Join(Environment.NewLine, problems))
{
    public IReadOnlyList<string> Problems { get; } = problems;
}

/// <summary>
/// The configuration in force. A changed file is compiled and validated as a whole (our policies and YARP's routes
/// and clusters); it replaces the current settings only when valid, otherwise it is refused and logged and the last
/// good configuration stays.
/// </summary>
/// <remarks>
/// Policies and routes can never be swapped at the same instant: YARP takes new routes when it gets to them, and a
/// request it matched with an old route may reach the middleware after the policies changed. Looked up by route id in
/// the newest policies, such a request could get another route's policy (a reload that swaps two routes' paths, or
/// inserts one into a route array whose ids are indexes, would send requests for a protected path through a
/// passthrough policy). So every route handed to YARP carries the generation it belongs to in its metadata, and the
/// middleware takes the policies of that generation (<see cref="RuntimeFor"/>); the last few generations are kept.
/// </remarks>
public sealed partial class GatewayConfigState : IDisposable
{
    private readonly IConfiguration _configuration;
    private readonly GatewayConfigFile? _file;
    private readonly string _baseDirectory;
    private readonly IConfigValidator _yarpValidator;
    private readonly InMemoryConfigProvider _proxyConfig;
    private readonly ILogger _logger;
    private readonly IDisposable? _reloadRegistration;
    private readonly SemaphoreSlim _reloadLock = new(1, 1);
    private readonly TimeProvider _time;
    private readonly bool _watch;
    private volatile GatewayRuntime _current;
    private KeyFileWatch? _keyFiles;
    private readonly AppliedSection? _logging;
    private readonly SourceFileCheck? _fileCheck;

    // Every evidence kid this process has had in force, with the public point it named: a kid stays bound to one key.
    private readonly Dictionary<string, string> _evidenceKeys = new(StringComparer.Ordinal);

    // Newest first: the generations that requests already routed by YARP may still belong to.
    private volatile GatewayRuntime[] _recent = [];
    private const int RecentGenerations = 4;
    private static readonly TimeSpan KeyFileReloadDelay = TimeSpan.FromMilliseconds(200);

    /// <summary>The route metadata key that names the generation a route belongs to (set here, never by config).</summary>
    public const string GenerationMetadataKey = "AssuranceGateway.Generation";

    public GatewayConfigState(
        IConfiguration configuration,
        GatewayConfigFile? file,
        string baseDirectory,
        IConfigValidator yarpValidator,
        InMemoryConfigProvider proxyConfig,
        TimeProvider time,
        ILogger<GatewayConfigState> logger,
        bool watch = true,
        GatewaySettings? initial = null,
        AppliedSection? logging = null,
        SourceFileCheckInterval? fileCheck = null)
    {
        _logging = logging;
        _time = time;
        _configuration = configuration;
        _file = file;
        _baseDirectory = baseDirectory;
        _yarpValidator = yarpValidator;
        _proxyConfig = proxyConfig;
        _logger = logger;

        // The host validates once before anything starts and hands the result over (initial), so key files are not
        // read twice at start.
        var settings = initial;
        if (settings is null)
        {
            (settings, var problems) = CompileAsync(warnings: null).AsTask().GetAwaiter().GetResult();
            if (settings is null)
            {
                throw new GatewayConfigurationException(problems);
            }
        }

        _watch = watch;
        _current = null!;
        Listeners = new AppliedSection(settings, static s => s.Kestrel);
        Apply(settings, 0);
        if (watch)
        {
            if (file is not null)
            {
                file.ListenerFailed += ListenerFailed;
            }

            _reloadRegistration = ChangeToken.OnChange(configuration.GetReloadToken, () => _ = ReloadAsync());
            var interval = (fileCheck ?? SourceFileCheckInterval.Default).Value;
            _fileCheck = new SourceFileCheck(time, interval, SourceFiles, changed => ChangedUnseen(changed, interval),
                e =>
                {
                    // A listener of the reload the check set off (said without the value it quotes, as event 104), or the
                    // check itself.
                    if (e is AggregateException)
                    {
                        ListenerFailed(e);
                    }
                    else
                    {
                        Log.FileCheckFailed(_logger, e);
                    }
                });
            _fileCheck.Remember(SourceFiles(), ReadConfigFile());
        }
    }

    /// <summary>The <c>Kestrel</c> section of the configuration in force: what Kestrel binds and reloads from.</summary>
    public AppliedSection Listeners { get; }

    /// <summary>The file the configuration is read from (environment and command-line keys override single keys).</summary>
    public string? FilePath => _file?.FullPath;

    /// <summary>
    /// What is in force, in one line for the start-up log: each route with its policy and mode, and whether evidence is
    /// signed. An SRE greps it to check that a pod runs the intended file and policies.
    /// </summary>
    public string Summary()
    {
        var settings = Current.Settings;
        var routes = settings.Routes.Select(r => settings.PolicyForRoute(r.RouteId) is { } p
            ? $"{r.RouteId} → {p.Name}{(p.Mode == PolicyMode.Shadow ? " (shadow)" : string.Empty)}"
            : $"{r.RouteId} → (no policy)");
        return $"{settings.Routes.Count} route(s): {string.Join(", ", routes)}; signed evidence {(settings.Evidence.SigningKey is null ? "off" : "on")}";
    }

    /// <summary>The configuration in force now. Read it once per request and use that value throughout.</summary>
    public GatewayRuntime Current => _current;

    /// <summary>Counts applied reloads; lets tests and operators see that a change took effect.</summary>
    public int Generation { get; private set; }

    /// <summary>
    /// The configuration that the route YARP matched belongs to; null when that generation is no longer kept (the
    /// request must then be refused, not decided by another generation's policies).
    /// </summary>
    public GatewayRuntime? RuntimeFor(RouteConfig route)
    {
        if (route.Metadata is null || !route.Metadata.TryGetValue(GenerationMetadataKey, out var stamp))
        {
            return null;
        }

        foreach (var runtime in _recent)
        {
            if (string.Equals(runtime.Stamp, stamp, StringComparison.Ordinal))
            {
                return runtime;
            }
        }

        return null;
    }

    public async Task<IReadOnlyList<string>> ReloadAsync()
    {
        await _reloadLock.WaitAsync().ConfigureAwait(false);
        try
        {
            // What is read now is no news to the periodic check (the configuration file was read just before this).
            _fileCheck?.Remember(SourceFiles(), ReadConfigFile());
            GatewaySettings? settings;
            IReadOnlyList<string> problems;
            var warnings = new List<string>();
            try
            {
                (settings, problems) = await CompileAsync(warnings).ConfigureAwait(false);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                // Reloads run unobserved (fire and forget from the change token): a failure nobody logs would leave
                // an operator believing the change is in force.
                (settings, problems) = (null, [$"the configuration could not be compiled: {e.GetType().Name}: {e.Message}"]);
            }

            if (settings is null)
            {
                Log.ReloadRefused(_logger, problems.Count, string.Join("; ", problems));
                return problems;
            }

            // Said before the new generation is published, so that whoever sees it in force also finds the warning.
            WarnAboutRestartOnlyChanges(_current.Settings, settings);
            try
            {
                Apply(settings, Generation + 1);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                // Building the runtime failed on something the compiler did not foresee: refused like any invalid change
                // (nothing was switched: Apply publishes the new generation only once it is built), and said so.
                IReadOnlyList<string> failed = [$"the configuration could not be applied: {e.GetType().Name}: {e.Message}"];
                Log.ReloadRefused(_logger, failed.Count, failed[0]);
                return failed;
            }

            Log.ReloadApplied(_logger, settings.Routes.Count, settings.Policies.Count);
            foreach (var warning in warnings)
            {
                Log.ReloadWarning(_logger, warning);
            }

            return [];
        }
        finally
        {
            _reloadLock.Release();
        }
    }

    private void Apply(GatewaySettings settings, int generation)
    {
        var stamp = generation.ToString(CultureInfo.InvariantCulture);
        var runtime = new GatewayRuntime(settings, _time) { Stamp = stamp };

        // Known before YARP can route by the new routes; the older ones stay for requests already routed.
        _recent = [runtime, .. _recent.Take(RecentGenerations - 1)];
        _current = runtime;
        var routes = new List<RouteConfig>(settings.Routes.Count);
        foreach (var route in settings.Routes)
        {
            var metadata = new Dictionary<string, string>(route.Metadata ?? new Dictionary<string, string>(), StringComparer.OrdinalIgnoreCase)
            {
                [GenerationMetadataKey] = stamp,
            };
            routes.Add(route with { Metadata = metadata });
        }

        _proxyConfig.Update(routes, settings.Clusters);
        Listeners.Publish(settings);
        try
        {
            _logging?.Publish(settings);
        }
        catch (AggregateException e)
        {
            // The host's logging listens to this copy and binds it on this thread. The compiler asked the console logger
            // about every value, so nothing should throw here; should something still, the routes above are already in
            // force: it is said (as a file watcher's listener would be), and the logging keeps what it had.
            ListenerFailed(e);
        }
        foreach (var (kid, key, _, _) in EvidenceKids(settings.Evidence))
        {
            _evidenceKeys[kid] = Evidence.EvidenceKeyHistory.PublicPoint(key);
        }

        Generation = generation;
        if (_watch)
        {
            WatchKeyFiles(settings);
        }
    }

    /// <summary>
    /// Key files (issuers' JWKS, the client CA bundle, the evidence key) are configuration too: an operator who removes
    /// a compromised key from a JWKS file expects it to stop being trusted, as an edit of the config file would. A
    /// change to any of them reloads the whole configuration (validated as usual; refused, the last good one stays).
    /// </summary>
    private void WatchKeyFiles(GatewaySettings settings)
    {
        var files = KeyFiles(settings);
        if (_keyFiles is { } watching && watching.Files.SetEquals(files))
        {
            return;
        }

        // The new watch first: this runs after the new generation is in force, so a watch that cannot be set up (the
        // inotify instance limit) must neither fail the change nor leave a disposed watch that a later change with the
        // same files would take for a live one. The old one stays meanwhile; the periodic check covers the files.
        KeyFileWatch fresh;
        try
        {
            fresh = new KeyFileWatch(files, () => _ = ReloadAfterKeyFileChangeAsync(), ListenerFailed);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or PlatformNotSupportedException)
        {
            Log.KeyFileWatchFailed(_logger, e);
            return;
        }

        _keyFiles?.Dispose();
        _keyFiles = fresh;
    }

    /// <summary>The key files a configuration names, by full path.</summary>
    private SortedSet<string> KeyFiles(GatewaySettings settings)
    {
        var files = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var issuer in settings.Tokens.Issuers.Concat(settings.Workload.Issuers))
        {
            if (Path.IsPathFullyQualified(issuer.KeyLocation))
            {
                files.Add(issuer.KeyLocation);
            }
        }

        if (settings.Workload.ClientCaFile is { } ca)
        {
            files.Add(Path.GetFullPath(ca, _baseDirectory));
        }

        if (settings.Evidence.SigningKeyFile is { } evidence)
        {
            files.Add(Path.GetFullPath(evidence, _baseDirectory));
        }

        foreach (var published in settings.Evidence.PublishedKeyFiles)
        {
            files.Add(Path.GetFullPath(published, _baseDirectory));
        }

        return files;
    }

    /// <summary>The files the configuration in force comes from: the configuration file and the key files it names.</summary>
    private SortedSet<string> SourceFiles()
    {
        var files = KeyFiles(_current.Settings);
        if (_file is not null)
        {
            files.Add(_file.FullPath);
        }

        return files;
    }

    /// <summary>The configuration file as its provider last read it (what the configuration holds), for the periodic check.</summary>
    private (string File, byte[]? Fingerprint)? ReadConfigFile() => _file is null ? null : (_file.FullPath, _file.LoadedFingerprint);

    /// <summary>
    /// The periodic check found a change no watcher reported (<see cref="SourceFileCheck"/>): said, and applied as the
    /// watcher would have (the configuration file through the configuration's own reload, a key file by a reload here).
    /// </summary>
    private void ChangedUnseen(IReadOnlyList<string> changed, TimeSpan interval)
    {
        Log.ChangeFoundByCheck(_logger, string.Join(", ", changed), interval);
        // The file alone: its provider raises one change, and the reload it sets off rereads the key files too.
        if (_file is null || !changed.Contains(_file.FullPath, StringComparer.Ordinal) || !_file.Reload())
        {
            _ = ReloadAsync();
        }
    }

    /// <summary>
    /// A moment after the first change event, as the config file's own source does (its ReloadDelay): a file is often
    /// written in more than one step (truncate, then write), and reading it at the first event would compile half a key.
    /// </summary>
    private async Task ReloadAfterKeyFileChangeAsync()
    {
        await Task.Delay(KeyFileReloadDelay).ConfigureAwait(false); // wall time: a file write, not the gateway's clock
        await ReloadAsync().ConfigureAwait(false);
    }

    /// <param name="warnings">Given for a reload (see <see cref="GatewayConfigCompiler.Compile(IConfiguration, string, out IReadOnlyList{string}, out IReadOnlyList{RouteConfig}, out IReadOnlyList{ClusterConfig}, List{string})"/>).</param>
    private async ValueTask<(GatewaySettings? Settings, IReadOnlyList<string> Problems)> CompileAsync(List<string>? warnings)
    {
        if (_file?.LoadError is { } loadError)
        {
            return (null, [$"{_file.FullPath}: {loadError}"]);
        }

        // YARP judges the routes and clusters even when our part failed: an operator fixes everything in one pass.
        var settings = GatewayConfigCompiler.Compile(_configuration, _baseDirectory, out var problems, out var routes, out var clusters, warnings);
        var all = new List<string>(problems);
        foreach (var route in routes)
        {
            foreach (var error in await _yarpValidator.ValidateRouteAsync(route).ConfigureAwait(false))
            {
                all.Add($"{GatewayConfigCompiler.ReverseProxySection}:Routes:{route.RouteId}: {error.Message}");
            }
        }

        foreach (var cluster in clusters)
        {
            foreach (var error in await _yarpValidator.ValidateClusterAsync(cluster).ConfigureAwait(false))
            {
                all.Add($"{GatewayConfigCompiler.ReverseProxySection}:Clusters:{cluster.ClusterId}: {error.Message}");
            }
        }

        // Published keys too: a key published once (the next one, pre-published on every replica) may already sit in an
        // upstream's cache under its kid, whether or not it ever signed, and whether or not it is still listed.
        foreach (var (kid, key, where, file) in EvidenceKids(settings?.Evidence))
        {
            if (_evidenceKeys.TryGetValue(kid, out var published)
                && !string.Equals(published, Evidence.EvidenceKeyHistory.PublicPoint(key), StringComparison.Ordinal))
            {
                all.Add($"{where}: '{file}' holds another key under kid '{kid}', which this gateway has already published for a different key: "
                    + "upstreams pick the verification key by kid (and may cache it), so a new key needs a new kid");
            }
        }

        return all.Count > 0 ? (null, all) : (settings, all);
    }

    /// <summary>
    /// Every kid the evidence settings publish, with its key and the setting and file it came from: the signing key's,
    /// then each published key's.
    /// </summary>
    private static IEnumerable<(string Kid, Microsoft.IdentityModel.Tokens.JsonWebKey Key, string Where, string? File)> EvidenceKids(
        EvidenceSettings? evidence)
    {
        if (evidence is null)
        {
            yield break;
        }

        if (evidence.SigningKey is { Kid: { Length: > 0 } kid } signing)
        {
            yield return (kid, signing, "Assurance:Evidence:SigningKeyFile", evidence.SigningKeyFile);
        }

        // The compiler keeps one key per listed file, in order, only when every file was valid (else no settings).
        for (var i = 0; i < evidence.PublishedKeys.Count; i++)
        {
            var file = i < evidence.PublishedKeyFiles.Count ? evidence.PublishedKeyFiles[i] : null;
            yield return (evidence.PublishedKeys[i].Kid, evidence.PublishedKeys[i], $"Assurance:Evidence:PublishedKeyFiles:{i}", file);
        }
    }

    private void WarnAboutRestartOnlyChanges(GatewaySettings before, GatewaySettings after)
    {
        List<string> changed = [];
        if (!string.Equals(before.Urls, after.Urls, StringComparison.Ordinal))
        {
            changed.Add("Urls");
        }

        if (before.Store != after.Store)
        {
            changed.Add("Assurance:Store");
        }

        if (before.Api != after.Api)
        {
            changed.Add("Assurance:Api");
        }

        if (changed.Count > 0)
        {
            Log.RestartRequired(_logger, string.Join(", ", changed));
        }
    }

    public void Dispose()
    {
        if (_file is not null)
        {
            _file.ListenerFailed -= ListenerFailed;
        }

        _reloadRegistration?.Dispose();
        _fileCheck?.Dispose();
        _keyFiles?.Dispose();
        (Listeners.Root as IDisposable)?.Dispose();
        _reloadLock.Dispose();
    }

    /// <summary>Watches a set of files (one provider per directory) and calls back on any change, re-arming itself.</summary>
    private sealed class KeyFileWatch : IDisposable
    {
        private readonly List<DirectoryFiles> _providers = [];
        private readonly IDisposable _registration;

        public KeyFileWatch(SortedSet<string> files, Action changed, Action<Exception> listenerFailed)
        {
            Files = files;
            var watched = new List<(DirectoryFiles Provider, string Name)>();
            try
            {
                foreach (var directory in files.GroupBy(Path.GetDirectoryName))
                {
                    if (directory.Key is null || !Directory.Exists(directory.Key))
                    {
                        continue;
                    }

                    var provider = new DirectoryFiles(directory.Key, listenerFailed);
                    _providers.Add(provider);
                    watched.AddRange(directory.Select(file => (provider, Path.GetFileName(file))));
                }
            }
            catch
            {
                // One directory could not be watched: the ones set up already are not left watching for no one.
                foreach (var provider in _providers)
                {
                    provider.Dispose();
                }

                throw;
            }

            _registration = ChangeToken.OnChange(
                () => new CompositeChangeToken([.. watched.Select(w => w.Provider.Watch(w.Name))]),
                changed);
        }

        public SortedSet<string> Files { get; }

        public void Dispose()
        {
            _registration.Dispose();
            foreach (var provider in _providers)
            {
                provider.Dispose();
            }
        }
    }

    /// <summary>A part of the host that reads the configuration on its own (the logging filter) refused a change.</summary>
    private void ListenerFailed(Exception failure)
    {
        var causes = new List<string>();
        Collect(failure);
        Log.ListenerFailed(_logger, string.Join("; ", causes.Distinct(StringComparer.Ordinal)));

        void Collect(Exception e)
        {
            if (e is AggregateException aggregate)
            {
                foreach (var inner in aggregate.InnerExceptions)
                {
                    Collect(inner);
                }
            }
            else
            {
                // Without the value: the binder quotes it ("Failed to convert configuration value '…' at 'Key'"), and a
                // key may hold a secret. The key it names stays, and the gateway's own refusal (event 100) names the value.
                causes.Add($"{e.GetType().Name}: {QuotedValue().Replace(e.Message, "value (not shown)")}");
            }
        }
    }

    [GeneratedRegex("value '[^']*'", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant)]
    private static partial Regex QuotedValue();

    private static partial class Log
    {
        [LoggerMessage(EventId = 105, Level = LogLevel.Warning,
            Message = "A change of {Files} was found by the periodic check (every {Interval}), not by a file watcher: the directory may have "
                + "been replaced under the same path (a release symlink switched) or its filesystem sends no events; applying it as usual")]
        public static partial void ChangeFoundByCheck(ILogger logger, string files, TimeSpan interval);

        [LoggerMessage(EventId = 107, Level = LogLevel.Warning,
            Message = "The key files of this configuration cannot be watched; the periodic check finds their changes meanwhile, and the next change tries again")]
        public static partial void KeyFileWatchFailed(ILogger logger, Exception exception);

        [LoggerMessage(EventId = 106, Level = LogLevel.Warning, Message = "The periodic check of the configuration's files failed; it runs again")]
        public static partial void FileCheckFailed(ILogger logger, Exception exception);

        [LoggerMessage(EventId = 104, Level = LogLevel.Warning,
            Message = "A part of the host failed to take the configuration change and keeps what it had: {Failure}")]
        public static partial void ListenerFailed(ILogger logger, string failure);

        [LoggerMessage(EventId = 100, Level = LogLevel.Error,
            Message = "Configuration change refused ({Count} problems); the last good configuration stays in force: {Problems}")]
        public static partial void ReloadRefused(ILogger logger, int count, string problems);

        [LoggerMessage(EventId = 101, Level = LogLevel.Information,
            Message = "Configuration change applied: {Routes} routes, {Policies} policies")]
        public static partial void ReloadApplied(ILogger logger, int routes, int policies);

        [LoggerMessage(EventId = 103, Level = LogLevel.Warning, Message = "Configuration change applied, with a warning: {Warning}")]
        public static partial void ReloadWarning(ILogger logger, string warning);

        [LoggerMessage(EventId = 102, Level = LogLevel.Warning,
            Message = "Changed {Settings}: Urls, Assurance:Store and Assurance:Api take a change only at a restart; the rest is applied")]
        public static partial void RestartRequired(ILogger logger, string settings);
    }
}
