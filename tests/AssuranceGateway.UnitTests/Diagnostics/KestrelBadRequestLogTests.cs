using AssuranceGateway.Diagnostics;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace AssuranceGateway.UnitTests.Diagnostics;

/// <summary>
/// Kestrel's BadRequests category writes raw request lines (credentials included) at Debug: whatever the logging
/// configuration says, the real LoggerFactory must not enable Debug for it, and the hold must change nothing else.
/// </summary>
public sealed class KestrelBadRequestLogTests
{
    private const string Category = KestrelBadRequestLog.Category;

    private static (ServiceProvider Services, ILoggerFactory Factory, IConfigurationRoot Config) Build(Dictionary<string, string?> settings)
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(settings).Build();
        var services = new ServiceCollection();
        KestrelBadRequestLog.Hold(services);
        services.AddLogging(logging =>
        {
            logging.AddConfiguration(config.GetSection("Logging"));
            logging.AddProvider(new NullProvider());
        });
        var provider = services.BuildServiceProvider();
        return (provider, provider.GetRequiredService<ILoggerFactory>(), config);
    }

    [Theory]
    // A wildcard whose prefix and suffix overlap in the name is longer than the name itself, so it beat the hold's rule.
    [InlineData("Logging:LogLevel:Microsoft.AspNetCore.Server.Kestrel.*.BadRequests")]
    [InlineData("Logging:LogLevel:Microsoft.AspNetCore.Server.Kestrel.BadRequest*s")]
    [InlineData("Logging:Null:LogLevel:Microsoft.AspNetCore.Server.Kestrel.Bad*Requests")]
    [InlineData("Logging:LogLevel:Microsoft.AspNetCore.Server.Kestrel.BadRequests*Microsoft.AspNetCore.Server.Kestrel.BadRequests")]
    // Plain spellings, held before too.
    [InlineData("Logging:LogLevel:Microsoft.AspNetCore.Server.Kestrel.BadRequests")]
    [InlineData("Logging:Null:LogLevel:Microsoft.AspNetCore.Server.*")]
    [InlineData("Logging:LogLevel:Microsoft.AspNetCore.Server.Kestrel.BadRequests*")]
    public void AnyRuleAskingForTrace_BadRequestsNeverLogsBelowInformation(string key)
    {
        var (services, factory, _) = Build(new() { ["Logging:LogLevel:Default"] = "Information", [key] = "Trace" });
        using (services)
        {
            var logger = factory.CreateLogger(Category);

            Assert.False(logger.IsEnabled(LogLevel.Debug), key);
            Assert.True(logger.IsEnabled(LogLevel.Information));
            Assert.True(services.GetRequiredService<KestrelBadRequestLog>().Overridden);
        }
    }

    [Fact]
    public void ReloadedConfigurationWithAnOverlappingWildcard_StillHeld()
    {
        var (services, factory, config) = Build(new() { ["Logging:LogLevel:Default"] = "Information" });
        using (services)
        {
            var logger = factory.CreateLogger(Category);
            Assert.False(logger.IsEnabled(LogLevel.Debug));

            config["Logging:LogLevel:Microsoft.AspNetCore.Server.Kestrel.*.BadRequests"] = "Trace";
            config.Reload();

            Assert.False(logger.IsEnabled(LogLevel.Debug));
            Assert.True(factory.CreateLogger("Microsoft.AspNetCore.Server.Kestrel.Other.BadRequests").IsEnabled(LogLevel.Trace));
        }
    }

    [Fact]
    public void CategorySetToNoneOrWarning_NotRaisedToInformation()
    {
        var (services, factory, _) = Build(new()
        {
            ["Logging:LogLevel:Default"] = "Warning",
            ["Logging:LogLevel:Microsoft.AspNetCore.Server.Kestrel"] = "None",
        });
        using (services)
        {
            var logger = factory.CreateLogger(Category);

            Assert.False(logger.IsEnabled(LogLevel.Critical));
            Assert.False(services.GetRequiredService<KestrelBadRequestLog>().Overridden);
            Assert.True(factory.CreateLogger("Other").IsEnabled(LogLevel.Warning));
            Assert.False(factory.CreateLogger("Other").IsEnabled(LogLevel.Information));
        }
    }

    [Fact]
    public void OtherCategoriesUnderTheSameName_KeepTheLevelAsked()
    {
        // Not the BadRequests category: a rule for it is none of the hold's business.
        const string Other = "Microsoft.AspNetCore.Server.Kestrel.BadRequestsAudit";
        var (services, factory, _) = Build(new()
        {
            ["Logging:LogLevel:Default"] = "Information",
            ["Logging:LogLevel:" + Other] = "Debug",
        });
        using (services)
        {
            Assert.True(factory.CreateLogger(Other).IsEnabled(LogLevel.Debug));
            Assert.False(factory.CreateLogger(Category).IsEnabled(LogLevel.Debug));
            Assert.False(services.GetRequiredService<KestrelBadRequestLog>().Overridden);
        }
    }

    [Fact]
    public void OtherCategories_KeepTheirLevels()
    {
        var (services, factory, _) = Build(new()
        {
            ["Logging:LogLevel:Default"] = "Trace",
            ["Logging:Null:LogLevel:Microsoft"] = "Debug",
        });
        using (services)
        {
            Assert.True(factory.CreateLogger("Microsoft.AspNetCore.Server.Kestrel").IsEnabled(LogLevel.Debug));
            Assert.True(factory.CreateLogger("AssuranceGateway.X").IsEnabled(LogLevel.Trace));
            Assert.False(factory.CreateLogger(Category).IsEnabled(LogLevel.Debug));
        }
    }

    [ProviderAlias("Null")]
    private sealed class NullProvider : ILoggerProvider
    {
        public ILogger CreateLogger(string categoryName) => new NullLogger();

        public void Dispose()
        {
        }
    }

    private sealed class NullLogger : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
        }
    }
}
