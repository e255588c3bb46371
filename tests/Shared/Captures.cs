using System.Collections.Concurrent;
using System.Diagnostics;
using Microsoft.Extensions.Logging;
using OpenTelemetry;

namespace AssuranceGateway.Testing;

/// <summary>An in-process span exporter: every span that ends is kept for assertions.</summary>
public sealed class SpanCollector : BaseProcessor<Activity>
{
    private readonly ConcurrentQueue<Activity> _spans = new();

    public IReadOnlyList<Activity> All => [.. _spans];

    public override void OnEnd(Activity data) => _spans.Enqueue(data);

    /// <summary>The enforce spans of one trace (the harness sends its own traceparent on each request).</summary>
    public IReadOnlyList<Activity> Enforce(string traceId) =>
        [.. _spans.Where(s => s.OperationName == "assurance.enforce" && s.TraceId.ToHexString() == traceId)];

    /// <summary>The one enforce span of a trace, once it has ended (a request the client abandoned ends after it left).</summary>
    public async Task<Activity> WaitForEnforceAsync(string traceId)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (true)
        {
            if (Enforce(traceId) is [var span])
            {
                return span;
            }

            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"no single enforce span for trace {traceId}");
            }

            await Task.Delay(20);
        }
    }

    /// <summary>
    /// The one span <paramref name="match"/> finds, once it has ended. Only the evidence span ends before the response
    /// is written: the ASP.NET Core server span (and YARP's) end after the client has read the response, so a test that
    /// looked for them at once failed now and then on a busy machine. Waits up to 10 s; more than one match fails.
    /// </summary>
    public async Task<Activity> WaitForSingleAsync(Func<Activity, bool> match, string what)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (true)
        {
            var found = _spans.Where(match).ToList();
            if (found.Count > 0 || DateTime.UtcNow > deadline)
            {
                return found.Count == 1 ? found[0] : throw new Xunit.Sdk.XunitException($"{found.Count} spans are {what} (one expected)");
            }

            await Task.Delay(20);
        }
    }

    public void Clear() => _spans.Clear();
}

/// <summary>Keeps every formatted log line, so tests can check what is (and is never) logged.</summary>
public sealed class LogCollector : ILoggerProvider
{
    private readonly ConcurrentQueue<string> _lines = new();

    public IReadOnlyList<string> Lines => [.. _lines];

    public void Clear() => _lines.Clear();

    /// <summary>The first line that matches, once one is logged (up to 10 s: background work logs when it gets to it).</summary>
    public async Task<string> WaitForAsync(Func<string, bool> match, string what)
    {
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (true)
        {
            if (_lines.FirstOrDefault(match) is { } line)
            {
                return line;
            }

            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"nothing logged: {what}");
            }

            await Task.Delay(20);
        }
    }

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void Dispose()
    {
    }

    private sealed class Logger(LogCollector owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Debug;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            var line = $"{logLevel} {category}[{eventId.Id}] {formatter(state, exception)}";
            if (state is IReadOnlyList<KeyValuePair<string, object?>> fields)
            {
                line += " " + string.Join(' ', fields.Select(f => $"{f.Key}={f.Value}"));
            }

            owner._lines.Enqueue(line + (exception is null ? string.Empty : " " + exception));
        }
    }
}
