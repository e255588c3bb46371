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
        await using var gateway = await GatewayHarness.StartAsync();
        var token = gateway.Idp.Token();
        var id = await gateway.CreateGrantAsync(DeployGrant(token));

        (await gateway.Proxy.SendAsync(DeployRequest(token, gateway.WorkloadIssuer.Svid(), id, out _))).Dispose();
        (await gateway.Proxy.SendAsync(DeployRequest(token, gateway.WorkloadIssuer.Svid(), id, out _))).Dispose();

        // Other tests run gateways in this process too: look for this test's deploy decisions.
        var decisions = measurements.Where(m => m.Instrument == "assurance.decisions" && (string?)m.Tags["assurance.route"] == "deploy").ToList();
        Assert.Contains(decisions, m => (string?)m.Tags["assurance.decision"] == "allow" && (string?)m.Tags["assurance.reason"] == "ok"
            && (string?)m.Tags["assurance.policy"] == "single-use-approval");
        Assert.Contains(decisions, m => (string?)m.Tags["assurance.decision"] == "deny" && (string?)m.Tags["assurance.reason"] == "replayed");
        var enforce = measurements.Where(m => m.Instrument == "assurance.enforce.duration").ToList();
        Assert.NotEmpty(enforce);
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
