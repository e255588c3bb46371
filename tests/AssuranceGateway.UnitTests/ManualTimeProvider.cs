namespace AssuranceGateway.UnitTests;

/// <summary>A clock the test sets by hand; far from the real date so that any use of the real clock shows.</summary>
internal sealed class ManualTimeProvider(DateTimeOffset now) : TimeProvider
{
    public static readonly DateTimeOffset FarFuture = new(2031, 3, 14, 9, 26, 53, TimeSpan.Zero);

    public DateTimeOffset Now { get; set; } = now;

    public override DateTimeOffset GetUtcNow() => Now;
}
