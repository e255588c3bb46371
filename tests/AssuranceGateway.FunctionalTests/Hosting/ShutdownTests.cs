using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json;
using AssuranceGateway.Grants;
using AssuranceGateway.Testing;
using Microsoft.Extensions.DependencyInjection;
using NSubstitute;
using OpenTelemetry;
using static AssuranceGateway.Testing.GrantHelpers;

namespace AssuranceGateway.FunctionalTests.Hosting;

/// <summary>
/// The real host stopped as a platform runs it (Kubernetes, systemd: SIGTERM, then SIGKILL after a grace period): it
/// says it is not ready at once, lets the requests it accepted finish (a protected one is decided and forwarded, its
/// use consumed once), and exits 0.
/// </summary>
public sealed class ShutdownTests
{
    [Fact]
    public async Task Sigterm_ReadyzNotReadyAtOnce_InFlightProtectedRequestStillDecidedAndForwarded_Exit0()
    {
        await using var harness = await GatewayHarness.CreateAsync();
        var (gateway, proxy, api) = await GatewayProcess.StartAsync(harness, new Dictionary<string, string>());
        await using var host = gateway;
        using var proxyClient = proxy;
        using var apiClient = api;

        var token = harness.Idp.Token();
        using var create = new HttpRequestMessage(HttpMethod.Post, "/assurance/v1/grants")
        {
            Content = new StringContent(DeployGrant(token).ToJsonString(), Encoding.UTF8, "application/json"),
        };
        create.Headers.Authorization = new("Bearer", harness.Idp.ApiToken());
        using var created = await api.SendAsync(create);
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var id = JsonDocument.Parse(await created.Content.ReadAsStringAsync()).RootElement.GetProperty("id").GetString();
        using (var ready = await api.GetAsync("/readyz"))
        {
            Assert.Equal(HttpStatusCode.OK, ready.StatusCode);
        }

        // The request has passed token, AAL and workload and waits for its body when SIGTERM arrives.
        using var client = GatedBody.Client(proxy.BaseAddress!.ToString());
        var body = new GatedBody(Encoding.UTF8.GetBytes(ReleaseBody));
        HttpStatusCode? readyWhileDraining = null;
        string? reasonWhileDraining = null;
        using var response = await body.SendHeldAsync(client, DeployRequest(token, harness.WorkloadIssuer.Svid(), id, out _), async () =>
        {
            await gateway.TerminateAsync();
            // A readiness probe right after the signal (the kubelet's and a load balancer's): not ready, and why.
            var clock = Stopwatch.StartNew();
            while (clock.Elapsed < TimeSpan.FromSeconds(3))
            {
                try
                {
                    using var ready = await api.GetAsync("/readyz");
                    readyWhileDraining = ready.StatusCode;
                    if (ready.StatusCode != HttpStatusCode.OK)
                    {
                        reasonWhileDraining = (await ready.ProblemAsync()).GetProperty("reason").GetString();
                        break;
                    }
                }
                catch (HttpRequestException)
                {
                    readyWhileDraining = null; // refused: says nothing about why
                }

                await Task.Delay(50);
            }
        });

        Assert.Equal((HttpStatusCode?)HttpStatusCode.ServiceUnavailable, readyWhileDraining);
        Assert.Equal("shutting_down", reasonWhileDraining);

        // The accepted request was not cut off: decided against the store, forwarded once.
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(1, harness.Upstream.Count);
        Assert.Equal(0, await gateway.WaitForExitAsync(TimeSpan.FromSeconds(30)));
    }

    [Fact]
    public async Task Sigterm_RedisUnreachable_ExitsPromptlyWith0()
    {
        // A pod stopped during a Redis outage (its connection attempts, its readiness probes) must not hold the kubelet
        // until SIGKILL, and must not look like a crash to systemd's Restart=on-failure.
        await using var harness = await GatewayHarness.CreateAsync();
        var (gateway, proxy, api) = await GatewayProcess.StartAsync(harness, new Dictionary<string, string>
        {
            ["Assurance__Store__Redis"] = $"127.0.0.1:{GatewayProcess.FreePort()}", // nothing listens there
        });
        await using var host = gateway;
        using var proxyClient = proxy;
        using var apiClient = api;
        using (var ready = await api.GetAsync("/readyz"))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, ready.StatusCode);
        }

        var clock = Stopwatch.StartNew();
        var exit = await gateway.StopGracefullyAsync(TimeSpan.FromSeconds(30));

        Assert.True(exit == 0, $"exit code {exit}:\n{gateway.Output}");
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(8), $"stopping took {clock.Elapsed}:\n{gateway.Output}");
    }

    [Fact]
    public async Task Sigterm_WhileAConsumesOutcomeIsUnknown_TheLogNamesItsGrantAndTrace_Exit0()
    {
        // Redis stalls, a use's consume times out after it was sent (denied, outcome unknown), and the pod is stopped
        // before Redis answers again: the record cannot reach the grant, and the log is the only place left for it.
        await using var redis = await RedisServer.StartAsync();
        await using var harness = await GatewayHarness.CreateAsync();
        var (gateway, proxy, api) = await GatewayProcess.StartAsync(harness, new Dictionary<string, string>
        {
            ["Assurance__Store__Redis"] = redis.ConnectionString,
        });
        await using var host = gateway;
        using var proxyClient = proxy;
        using var apiClient = api;

        var token = harness.Idp.Token();
        // The store waits for its first eviction judgement before it takes a new grant, as a readiness probe would.
        string? id = null;
        for (var clock = Stopwatch.StartNew(); id is null; await Task.Delay(100))
        {
            using var create = new HttpRequestMessage(HttpMethod.Post, "/assurance/v1/grants")
            {
                Content = new StringContent(DeployGrant(token).ToJsonString(), Encoding.UTF8, "application/json"),
            };
            create.Headers.Authorization = new("Bearer", harness.Idp.ApiToken());
            using var created = await api.SendAsync(create);
            if (created.StatusCode == HttpStatusCode.Created)
            {
                id = JsonDocument.Parse(await created.Content.ReadAsStringAsync()).RootElement.GetProperty("id").GetString()!;
            }
            else
            {
                Assert.True(created.StatusCode == HttpStatusCode.ServiceUnavailable && clock.Elapsed < TimeSpan.FromSeconds(10), $"grant: {created.StatusCode}");
            }
        }

        int exit;
        string trace;
        await redis.PauseAsync();
        try
        {
            using var denied = await proxy.SendAsync(DeployRequest(token, harness.WorkloadIssuer.Svid(), id, out trace));
            Assert.Equal(HttpStatusCode.ServiceUnavailable, denied.StatusCode);
            exit = await gateway.StopGracefullyAsync(TimeSpan.FromSeconds(30));
        }
        finally
        {
            await redis.ResumeAsync();
        }

        Assert.True(exit == 0, $"exit code {exit}:\n{gateway.Output}");
        var line = gateway.Output.Split('\n').SkipWhile(l => !l.Contains("[3124]", StringComparison.Ordinal)).Take(2).ToArray();
        Assert.True(line.Length > 0, $"no event 3124 in the log:\n{gateway.Output}");
        var said = string.Join(' ', line);
        Assert.Contains(id, said, StringComparison.Ordinal);
        Assert.Contains(trace, said, StringComparison.Ordinal);
        Assert.Equal(0, harness.Upstream.Count);
    }

    [Fact]
    public async Task GracefulStop_EvidenceFlushedBeforeTheStoreCloses()
    {
        // Closing a Redis store can wait on a Redis that does not answer (its loops, the last write of unknown outcomes);
        // a platform's SIGKILL during that wait must not take the evidence of the last requests with it.
        var order = new ConcurrentQueue<string>();
        var store = Substitute.For<IGrantStore, IDisposable>();
        store.Description.Returns("recording");
        ((IDisposable)store).When(s => s.Dispose()).Do(_ => order.Enqueue("store closed"));
        var gateway = await GatewayHarness.StartAsync(services: s =>
        {
            s.AddSingleton<IGrantStore>(_ => store); // created by the container, so disposed by it as the real one is
            s.AddSingleton<BaseProcessor<Activity>>(new ShutdownRecorder(order));
        });

        await gateway.DisposeAsync();

        Assert.Equal(["evidence flushed", "store closed"], order);
    }

    private sealed class ShutdownRecorder(ConcurrentQueue<string> order) : BaseProcessor<Activity>
    {
        protected override bool OnShutdown(int timeoutMilliseconds)
        {
            order.Enqueue("evidence flushed");
            return true;
        }
    }
}
