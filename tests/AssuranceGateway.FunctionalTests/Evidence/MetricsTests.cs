using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using AssuranceGateway.Testing;
using static AssuranceGateway.Testing.GrantHelpers;

namespace AssuranceGateway.FunctionalTests.Evidence;

/// <summary>SPEC §6 metrics, read with a MeterListener while the real pipeline decides.</summary>
public sealed class MetricsTests
{
    [Fact]
    public async Task Decisions_CountedByOutcomeReasonRouteAndPolicy_WithDurationsInSeconds()
    {
        var measurements = new ConcurrentQueue<(string Instrument, double Value, Dictionary<string, object?> Tags)>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == "AssuranceGateway")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((i, v, tags, _) => measurements.Enqueue((i.Name, v, ToDictionary(tags))));
        listener.SetMeasurementEventCallback<double>((i, v, tags, _) => measurements.Enqueue((i.Name, v, ToDictionary(tags))));
        listener.Start();
        // A route of this test's own: the listener hears every gateway in this process, and tests of other classes,
        // run in parallel, decide on "deploy" too, some slowly on purpose (a stalled store, a slow key server).
        var route = "deploy" + Guid.NewGuid().ToString("N")[..12];
        await using var gateway = await GatewayHarness.StartAsync(c =>
        {
            var routes = c["ReverseProxy"]!["Routes"]!.AsObject();
            var deploy = routes["deploy"]!;
            routes.Remove("deploy");
            routes[route] = deploy;
        });
        var token = gateway.Idp.Token();
        var grant = DeployGrant(token);
        grant["route"] = route;
        var id = await gateway.CreateGrantAsync(grant);

        (await gateway.Proxy.SendAsync(DeployRequest(token, gateway.WorkloadIssuer.Svid(), id, out _))).Dispose();
        (await gateway.Proxy.SendAsync(DeployRequest(token, gateway.WorkloadIssuer.Svid(), id, out _))).Dispose();

        var decisions = measurements.Where(m => m.Instrument == "assurance.decisions" && (string?)m.Tags["assurance.route"] == route).ToList();
        Assert.Contains(decisions, m => (string?)m.Tags["assurance.decision"] == "allow" && (string?)m.Tags["assurance.reason"] == "ok"
            && (string?)m.Tags["assurance.policy"] == "single-use-approval");
        Assert.Contains(decisions, m => (string?)m.Tags["assurance.decision"] == "deny" && (string?)m.Tags["assurance.reason"] == "replayed");
        var enforce = measurements.Where(m => m.Instrument == "assurance.enforce.duration" && (string?)m.Tags["assurance.route"] == route).ToList();
        Assert.Equal(2, enforce.Count);
        Assert.All(enforce, m => Assert.InRange(m.Value, 0, 5)); // seconds, not milliseconds
        Assert.Contains(measurements, m => m.Instrument == "assurance.store.duration" && (string?)m.Tags["operation"] == "consume");
    }

    private static Dictionary<string, object?> ToDictionary(ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        var result = new Dictionary<string, object?>();
        foreach (var tag in tags)
        {
            result[tag.Key] = tag.Value;
        }

        return result;
    }
}
