using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Xunit.Abstractions;

namespace AssuranceGateway.FunctionalTests.Grants;

/// <summary>Writes log lines (with milliseconds since the test began) to the test's output, to read a failed run.</summary>
internal sealed class TestOutputLogger<T>(ITestOutputHelper output) : ILogger<T>
{
    private readonly Stopwatch _clock = Stopwatch.StartNew();

    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        try
        {
            output.WriteLine($"{_clock.ElapsedMilliseconds,6} ms {logLevel,-11} {formatter(state, exception)}");
        }
        catch (InvalidOperationException)
        {
            // The test has finished; a background loop still talking is of no interest any more.
        }
    }
}
