using System.Diagnostics;
using AssuranceGateway.Configuration;
using AssuranceGateway.Enforcement;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Conventions = AssuranceGateway.Diagnostics.AssuranceSemanticConventions;

namespace AssuranceGateway.Diagnostics;

/// <summary>Turns a finished decision into the evidence span's attributes, its status, and the decision metrics.</summary>
internal static class EvidenceRecorder
{
    /// <summary>
    /// Starts the evidence span as a child of the ASP.NET Core server span (SPEC §6), not of whatever is current: YARP
    /// starts its own server-kind span before the middleware runs. The caller restores <see cref="Activity.Current"/>
    /// once the span stops (its parent is a context, so stopping it cannot).
    /// </summary>
    public static Activity? Start(HttpContext context)
    {
        // The sampler installed by the host records this span whatever the parent decided (EvidenceSampler).
        return context.Features.Get<IHttpActivityFeature>()?.Activity is { } server
            ? AssuranceDiagnostics.ActivitySource.StartActivity(Conventions.EnforceSpan, ActivityKind.Internal, server.Context)
            : AssuranceDiagnostics.ActivitySource.StartActivity(Conventions.EnforceSpan, ActivityKind.Internal);
    }

    public static void Complete(Activity? activity, AssuranceDecision decision, long startTimestamp)
    {
        var decisionValue = decision.Allowed ? Conventions.DecisionAllow : Conventions.DecisionDeny;
        if (activity is { IsAllDataRequested: true })
        {
            activity.SetTag(Conventions.Decision, decisionValue);
            activity.SetTag(Conventions.Reason, decision.Reason);
            activity.SetTag(Conventions.Route, decision.Route);
            activity.SetTag(Conventions.Policy, decision.Policy.Name);
            activity.SetTag(Conventions.Mode, decision.Shadow ? "shadow" : "enforce");
            SetIfPresent(activity, Conventions.GrantId, decision.EvidenceGrantId);
            SetIfPresent(activity, Conventions.GrantStatus, decision.GrantStatus is { } status ? Grants.GrantStatusNames.Of(status) : null);
            if (decision.Approvers.Count > 0)
            {
                activity.SetTag(Conventions.GrantApprover, string.Join(',', decision.Approvers));
            }

            if (decision.ApprovalAal is { } approvalAal)
            {
                activity.SetTag(Conventions.GrantAal, approvalAal);
            }

            if (decision.UsesRemaining is { } uses)
            {
                activity.SetTag(Conventions.GrantUsesRemaining, uses);
            }

            SetIfPresent(activity, Conventions.RequestHash, decision.RequestHash);
            SetIfPresent(activity, Conventions.TokenHash, decision.TokenHash);
            SetIfPresent(activity, Conventions.Subject, decision.Subject);
            SetIfPresent(activity, Conventions.Session, decision.Session);
            if (decision.Aal is { } aal)
            {
                activity.SetTag(Conventions.Aal, aal);
            }

            SetIfPresent(activity, Conventions.WorkloadId, decision.WorkloadId);
            SetIfPresent(activity, Conventions.WorkloadSource, decision.WorkloadSource);
            SetIfPresent(activity, Conventions.Origin, decision.Origin);
            if (decision.Mismatch.Count > 0)
            {
                activity.SetTag(Conventions.Mismatch, string.Join(',', decision.Mismatch));
            }

            if (decision.ReplayedFirstUse is { } first)
            {
                SetIfPresent(activity, Conventions.FirstUseTraceId, first.TraceId);
                activity.SetTag(Conventions.FirstUseAt, first.At.ToString("O", System.Globalization.CultureInfo.InvariantCulture));
                SetIfPresent(activity, Conventions.FirstUseWorkload, first.Workload);
                if (TryContext(first.TraceId, first.SpanId, out var context))
                {
                    activity.AddLink(new ActivityLink(context));
                }
            }

            if (decision.Revoked)
            {
                activity.AddEvent(new ActivityEvent(Conventions.GrantRevokedEvent, tags: new ActivityTagsCollection
                {
                    [Conventions.Reason] = decision.Reason,
                    [Conventions.GrantId] = decision.GrantId,
                }));
            }

            // SPEC §6: Error on deny, with the reason, in shadow mode too: the span is the record of the decision, and
            // a rollout looks for exactly these (assurance.mode says the request was forwarded all the same).
            if (!decision.Allowed)
            {
                activity.SetStatus(ActivityStatusCode.Error, decision.Reason);
            }
        }

        var elapsed = Stopwatch.GetElapsedTime(startTimestamp).TotalSeconds;
        var tags = new TagList
        {
            { Conventions.Decision, decisionValue },
            { Conventions.Reason, decision.Reason },
            { Conventions.Route, decision.Route },
            { Conventions.Policy, decision.Policy.Name },
        };
        if (decision.Shadow)
        {
            tags.Add(Conventions.Mode, "shadow");
        }

        if (AssuranceDiagnostics.Decisions.Enabled)
        {
            AssuranceDiagnostics.Decisions.Add(1, tags);
        }

        if (AssuranceDiagnostics.EnforceDuration.Enabled)
        {
            AssuranceDiagnostics.EnforceDuration.Record(elapsed, tags);
        }
    }

    public static void RecordStore(long startTimestamp, string operation)
    {
        if (AssuranceDiagnostics.StoreDuration.Enabled)
        {
            AssuranceDiagnostics.StoreDuration.Record(Stopwatch.GetElapsedTime(startTimestamp).TotalSeconds, new KeyValuePair<string, object?>("operation", operation));
        }
    }

    private static void SetIfPresent(Activity activity, string name, string? value)
    {
        if (value is not null)
        {
            activity.SetTag(name, value);
        }
    }

    private static bool TryContext(string? traceId, string? spanId, out ActivityContext context)
    {
        context = default;
        if (traceId is not { Length: 32 } || spanId is not { Length: 16 })
        {
            return false;
        }

        try
        {
            context = new ActivityContext(ActivityTraceId.CreateFromString(traceId), ActivitySpanId.CreateFromString(spanId), ActivityTraceFlags.Recorded);
            return true;
        }
        catch (ArgumentOutOfRangeException)
        {
            return false;
        }
    }

    public static string ModeName(PolicyMode mode) => mode == PolicyMode.Shadow ? "shadow" : "enforce";
}
