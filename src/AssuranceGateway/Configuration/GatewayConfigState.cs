using Microsoft.Extensions.Configuration;
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
/// good configuration stays. Policies and routes are swapped together so they never disagree.
/// </summary>
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
    private volatile GatewayRuntime _current;

    public GatewayConfigState(
        IConfiguration configuration,
        GatewayConfigFile? file,
        string baseDirectory,
        IConfigValidator yarpValidator,
        InMemoryConfigProvider proxyConfig,
        TimeProvider time,
        ILogger<GatewayConfigState> logger,
        bool watch = true,
        GatewaySettings? initial = null)
    {
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
            (settings, var problems) = CompileAsync().AsTask().GetAwaiter().GetResult();
            if (settings is null)
            {
                throw new GatewayConfigurationException(problems);
            }
        }

        _current = new GatewayRuntime(settings, time);
        _proxyConfig.Update(settings.Routes, settings.Clusters);
        if (watch)
        {
            _reloadRegistration = ChangeToken.OnChange(configuration.GetReloadToken, () => _ = ReloadAsync());
        }
    }

    /// <summary>The configuration in force now. Read it once per request and use that value throughout.</summary>
    public GatewayRuntime Current => _current;

    /// <summary>Counts applied reloads; lets tests and operators see that a change took effect.</summary>
    public int Generation { get; private set; }

    public async Task<IReadOnlyList<string>> ReloadAsync()
    {
        await _reloadLock.WaitAsync().ConfigureAwait(false);
        try
        {
            var (settings, problems) = await CompileAsync().ConfigureAwait(false);
            if (settings is null)
            {
                Log.ReloadRefused(_logger, problems.Count, string.Join("; ", problems));
                return problems;
            }

            WarnAboutRestartOnlyChanges(_current.Settings, settings);
            _current = new GatewayRuntime(settings, _time);
            _proxyConfig.Update(settings.Routes, settings.Clusters);
            Generation++;
            Log.ReloadApplied(_logger, settings.Routes.Count, settings.Policies.Count);
            return [];
        }
        finally
        {
            _reloadLock.Release();
        }
    }

    private async ValueTask<(GatewaySettings? Settings, IReadOnlyList<string> Problems)> CompileAsync()
    {
        if (_file?.LoadError is { } loadError)
        {
            return (null, [$"{_file.FullPath}: {loadError}"]);
        }

        // YARP judges the routes and clusters even when our part failed: an operator fixes everything in one pass.
        var settings = GatewayConfigCompiler.Compile(_configuration, _baseDirectory, out var problems, out var routes, out var clusters);
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

        return all.Count > 0 ? (null, all) : (settings, all);
    }

    private void WarnAboutRestartOnlyChanges(GatewaySettings before, GatewaySettings after)
    {
        if (before.Store != after.Store || before.Api != after.Api)
        {
            Log.RestartRequired(_logger);
        }
    }

    public void Dispose()
    {
        _reloadRegistration?.Dispose();
        _reloadLock.Dispose();
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 100, Level = LogLevel.Error,
            Message = "Configuration change refused ({Count} problems); the last good configuration stays in force: {Problems}")]
        public static partial void ReloadRefused(ILogger logger, int count, string problems);

        [LoggerMessage(EventId = 101, Level = LogLevel.Information,
            Message = "Configuration change applied: {Routes} routes, {Policies} policies")]
        public static partial void ReloadApplied(ILogger logger, int routes, int policies);

        [LoggerMessage(EventId = 102, Level = LogLevel.Warning,
            Message = "Assurance:Store and Assurance:Api changes take effect only after a restart")]
        public static partial void RestartRequired(ILogger logger);
    }
}
