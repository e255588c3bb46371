using System.Reflection;
using AssuranceGateway.Enforcement;
using Microsoft.Extensions.Logging;

namespace AssuranceGateway.UnitTests.Diagnostics;

/// <summary>
/// An event id is what an operator alerts and filters on: two messages sharing one (a warning that the store does not
/// answer and an informational line) make such a filter fire on the wrong thing, or miss the right one.
/// </summary>
public sealed class LoggerMessageTests
{
    private const BindingFlags AllMethods =
        BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static | BindingFlags.Instance | BindingFlags.DeclaredOnly;

    private static List<(int EventId, string Method)> LoggerMessages() =>
        [.. typeof(AssuranceMiddleware).Assembly.GetTypes()
            .SelectMany(type => type.GetMethods(AllMethods))
            .Select(method => (method, attribute: method.GetCustomAttribute<LoggerMessageAttribute>()))
            .Where(m => m.attribute is not null)
            .Select(m => (m.attribute!.EventId, $"{m.method.DeclaringType!.FullName}.{m.method.Name}"))];

    [Fact]
    public void LoggerMessages_WholeAssembly_EventIdsAreUnique()
    {
        var messages = LoggerMessages();

        // Reflection found the gateway's messages at all (a test that finds none proves nothing).
        Assert.Contains(messages, m => m.Method.EndsWith("RedisGrantStore+Log.Unreachable", StringComparison.Ordinal));
        var duplicates = messages.GroupBy(m => m.EventId).Where(g => g.Count() > 1)
            .Select(g => $"{g.Key}: {string.Join(", ", g.Select(m => m.Method))}").ToList();
        Assert.True(duplicates.Count == 0, "event ids used more than once: " + string.Join("; ", duplicates));
    }

    [Fact]
    public void LoggerMessages_WholeAssembly_EachHasAnExplicitEventId()
    {
        // The generator's default, -1, would make every such message share one id.
        Assert.DoesNotContain(LoggerMessages(), m => m.EventId < 0);
    }
}
