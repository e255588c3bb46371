namespace AssuranceGateway.Testing;

/// <summary>The system clock moved by an offset, with real timers: a gateway whose clock is off, as a host's can be.</summary>
public sealed class SkewedTime(TimeSpan offset) : TimeProvider
{
    /// <summary>How far this clock is from the system's; settable, as NTP corrects a clock while it runs.</summary>
    public TimeSpan Offset { get; set; } = offset;

    public override DateTimeOffset GetUtcNow() => System.GetUtcNow() + Offset;
}
