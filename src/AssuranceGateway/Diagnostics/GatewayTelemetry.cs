using System.Diagnostics;
using OpenTelemetry;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace AssuranceGateway.Diagnostics;

/// <summary>
/// Evidence is never sampled away (SPEC §6): the enforce span is recorded whatever the parent decided; every other
/// span follows the parent (always on at the root).
/// </summary>
public sealed class EvidenceSampler : Sampler
{
    private readonly Sampler _others = new ParentBasedSampler(new AlwaysOnSampler());

    public override SamplingResult ShouldSample(in SamplingParameters samplingParameters) =>
        samplingParameters.Name == AssuranceSemanticConventions.EnforceSpan
            ? new SamplingResult(SamplingDecision.RecordAndSample)
            : _others.ShouldSample(samplingParameters);
}

/// <summary>
/// Owns the OpenTelemetry providers (OpenTelemetry.Extensions.Hosting is not available here, so the host owns their
/// lifetime: disposing flushes pending spans on graceful shutdown). Export over OTLP is configured only by the
/// standard OTEL_* environment variables; extra processors (e.g. a test exporter) come from DI.
/// </summary>
public sealed class GatewayTelemetry : IDisposable
{
    public const string DefaultServiceName = "assurance-gateway";

    private readonly TracerProvider _tracer;
    private readonly MeterProvider? _meter;

    public GatewayTelemetry(IEnumerable<BaseProcessor<Activity>> processors, IEnumerable<MetricReader> metricReaders)
    {
        var export = HasOtlpEndpoint("TRACES");
        var tracer = Sdk.CreateTracerProviderBuilder()
            .SetSampler(new EvidenceSampler())
            .SetResourceBuilder(Resource())
            // System.Net.Http: the client span of the forwarded request. HttpClient creates it anyway to carry
            // traceparent upstream; unrecorded, it was a parent the upstream's spans pointed at and no backend ever saw.
            .AddSource(AssuranceSemanticConventions.SourceName, "Microsoft.AspNetCore", "Yarp.ReverseProxy", "System.Net.Http");
        foreach (var processor in processors)
        {
            tracer.AddProcessor(processor);
        }

        if (export)
        {
            // The batch processor exports off the request path: an unreachable collector never slows a request.
            tracer.AddOtlpExporter();
        }

        _tracer = tracer.Build()!;

        var readers = metricReaders.ToList();
        if (HasOtlpEndpoint("METRICS") || readers.Count > 0)
        {
            var meter = Sdk.CreateMeterProviderBuilder()
                .SetResourceBuilder(Resource())
                .AddMeter(AssuranceSemanticConventions.SourceName);
            foreach (var reader in readers)
            {
                meter.AddReader(reader);
            }

            if (HasOtlpEndpoint("METRICS"))
            {
                meter.AddOtlpExporter();
            }

            _meter = meter.Build();
        }
    }

    private static ResourceBuilder Resource()
    {
        // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are read by the default resource detectors and win over this.
        return ResourceBuilder.CreateDefault().AddService(DefaultServiceName).AddEnvironmentVariableDetector();
    }

    private static bool HasOtlpEndpoint(string signal) =>
        !string.IsNullOrEmpty(Environment.GetEnvironmentVariable("OTEL_EXPORTER_OTLP_ENDPOINT"))
        || !string.IsNullOrEmpty(Environment.GetEnvironmentVariable($"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"));

    public void ForceFlush() => _tracer.ForceFlush(5000);

    public void Dispose()
    {
        _tracer.Dispose();
        _meter?.Dispose();
    }
}
