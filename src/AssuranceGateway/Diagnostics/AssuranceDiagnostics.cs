using System.Diagnostics;
using System.Diagnostics.Metrics;
using Conventions = AssuranceGateway.Diagnostics.AssuranceSemanticConventions;

namespace AssuranceGateway.Diagnostics;

/// <summary>The gateway's ActivitySource and Meter, both named <c>AssuranceGateway</c>.</summary>
public static class AssuranceDiagnostics
{
    public static readonly ActivitySource ActivitySource = new(Conventions.SourceName);
    public static readonly Meter Meter = new(Conventions.SourceName);

    public static readonly Counter<long> Decisions = Meter.CreateCounter<long>(
        Conventions.DecisionsCounter, unit: "{decision}", description: "Assurance decisions by outcome and reason.");

    public static readonly Histogram<double> EnforceDuration = Meter.CreateHistogram<double>(
        Conventions.EnforceDuration, unit: "s", description: "Time spent deciding one request, store included.");

    public static readonly Histogram<double> StoreDuration = Meter.CreateHistogram<double>(
        Conventions.StoreDuration, unit: "s", description: "Time of one grant store operation.");
}
