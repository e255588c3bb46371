using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text.Json.Nodes;
using AssuranceGateway.Api;
using AssuranceGateway.Configuration;
using AssuranceGateway.Grants;
using AssuranceGateway.Hosting;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using OpenTelemetry;

namespace AssuranceGateway.Testing;

/// <summary>
/// A real gateway for functional tests: the host's own AddGateway/MapGateway on loopback Kestrel listeners (port 0),
/// a recording upstream, test issuers, and captured spans and logs. Each test gets its own instance.
/// </summary>
public sealed class GatewayHarness : IAsyncDisposable
{
    private WebApplication? _app;

    private GatewayHarness(string directory, RecordingUpstream upstream, TestIssuer idp, TestIssuer workloadIssuer)
    {
        Directory = directory;
        Upstream = upstream;
        Idp = idp;
        WorkloadIssuer = workloadIssuer;
        ConfigPath = Path.Combine(directory, "gateway.json");
    }

    public string Directory { get; }
    public string ConfigPath { get; }
    public RecordingUpstream Upstream { get; }
    public TestIssuer Idp { get; }
    public TestIssuer WorkloadIssuer { get; }
    public SpanCollector Spans { get; } = new();
    public LogCollector Logs { get; } = new();
    public HttpClient Proxy { get; private set; } = null!;
    public HttpClient Api { get; private set; } = null!;
    public string ProxyAddress { get; private set; } = string.Empty;
    public string ApiAddress { get; private set; } = string.Empty;
    public IServiceProvider Services => _app!.Services;
    public GatewayConfigState Config => Services.GetRequiredService<GatewayConfigState>();

    /// <summary>Creates issuers and an upstream, lets the test edit the config, then starts the gateway.</summary>
    public static async Task<GatewayHarness> StartAsync(
        Action<JsonObject>? configure = null, Action<IServiceCollection>? services = null, string? redis = null)
    {
        var harness = await CreateAsync();
        var config = TestConfig.Create(harness.Upstream.Address, harness.Idp, harness.WorkloadIssuer, redis);
        configure?.Invoke(config);
        await harness.StartWithAsync(config, services);
        return harness;
    }

    /// <summary>Issuers and upstream only: for tests that start (or fail to start) the gateway themselves.</summary>
    public static async Task<GatewayHarness> CreateAsync()
    {
        var directory = Path.Combine(Path.GetTempPath(), "agw-tests", Guid.NewGuid().ToString("N"));
        System.IO.Directory.CreateDirectory(directory);
        var upstream = await RecordingUpstream.StartAsync();
        return new GatewayHarness(directory, upstream, new TestIssuer("https://idp.test", directory), new TestIssuer("spiffe://prod.test", directory, "w1"));
    }

    public JsonObject DefaultConfig(string? redis = null) => TestConfig.Create(Upstream.Address, Idp, WorkloadIssuer, redis);

    public async Task StartWithAsync(JsonObject config, Action<IServiceCollection>? services = null)
    {
        await File.WriteAllTextAsync(ConfigPath, config.ToJsonString());
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions
        {
            Args = ["--config", ConfigPath],
            ContentRootPath = Directory,
            EnvironmentName = "Production",
        });
        builder.Logging.ClearProviders();
        builder.Logging.AddProvider(Logs);
        builder.Logging.SetMinimumLevel(LogLevel.Debug);
        builder.Services.AddSingleton<BaseProcessor<Activity>>(Spans);
        services?.Invoke(builder.Services);
        builder.AddGateway();
        _app = builder.Build();
        _app.MapGateway();
        await _app.StartAsync();

        ProxyAddress = _app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        ApiAddress = _app.Services.GetRequiredService<AssuranceApiHost>().Addresses[0];
        Proxy = new HttpClient { BaseAddress = new Uri(ProxyAddress) };
        Api = new HttpClient { BaseAddress = new Uri(ApiAddress) };
        await AwaitStoreAsync();
    }

    /// <summary>
    /// As a deployment's readiness probe does before traffic arrives: a Redis store fails uses and new grants closed
    /// until its first INFO has said whether Redis evicts, and on a loaded CI machine that can take longer than the
    /// tests' 250 ms Store:Timeout (a grant created at once got 503 in a fresh-clone run). Waits (up to 10 s) until the
    /// store has judged, or says it cannot be reached at all (the tests of a Redis that is down go on at once).
    /// </summary>
    private async Task AwaitStoreAsync()
    {
        if (Services.GetRequiredService<IGrantStore>() is not RedisGrantStore store)
        {
            return;
        }

        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < TimeSpan.FromSeconds(10) && !store.EvictionJudged.IsCompleted)
        {
            if (await store.NotReadyAsync(default) is { } why && why.StartsWith("does not answer", StringComparison.Ordinal))
            {
                return;
            }

            await Task.Delay(20);
        }
    }

    /// <summary>Writes a new config file and waits until the gateway has applied it or refused it.</summary>
    public async Task<bool> ReloadAsync(JsonObject config, TimeSpan? timeout = null)
    {
        var generation = Config.Generation;
        var refusals = Logs.Lines.Count(l => l.Contains("[100]", StringComparison.Ordinal));
        // Written aside and renamed over the config: an in-place write can be observed half done (truncated, then
        // written) under load, and the gateway rightly refuses the half-written file, failing the test at random.
        var temporary = ConfigPath + ".tmp";
        await File.WriteAllTextAsync(temporary, config.ToJsonString());
        File.Move(temporary, ConfigPath, overwrite: true);
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(10));
        while (DateTime.UtcNow < deadline)
        {
            if (Config.Generation != generation)
            {
                return true;
            }

            if (Logs.Lines.Count(l => l.Contains("[100]", StringComparison.Ordinal)) > refusals)
            {
                return false;
            }

            await Task.Delay(50);
        }

        throw new TimeoutException("the gateway neither applied nor refused the configuration change");
    }

    /// <summary>A request with a fresh W3C trace id, so its evidence span can be found among all captured spans.</summary>
    public static HttpRequestMessage Request(HttpMethod method, string path, string? token, out string traceId)
    {
        traceId = ActivityTraceId.CreateRandom().ToHexString();
        var request = new HttpRequestMessage(method, path);
        request.Headers.TryAddWithoutValidation("traceparent", $"00-{traceId}-{ActivitySpanId.CreateRandom().ToHexString()}-01");
        if (token is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        return request;
    }

    public async ValueTask DisposeAsync()
    {
        Proxy?.Dispose();
        Api?.Dispose();
        if (_app is not null)
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }

        await Upstream.DisposeAsync();
        Idp.Dispose();
        WorkloadIssuer.Dispose();
        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
