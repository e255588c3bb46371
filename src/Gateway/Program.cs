using AssuranceGateway.Configuration;
using AssuranceGateway.Hosting;
using Microsoft.AspNetCore.Connections;

// The host's default appsettings.json sources are dropped by AddGateway (the gateway reads one file), but their reload
// would already have put a recursive watch on the working directory: on Linux one inotify watch per directory below it,
// 2 x 39,500 watches and 20 s of start-up for a gateway started in "/". The host reads this switch before it adds them.
Environment.SetEnvironmentVariable("DOTNET_hostBuilder__reloadConfigOnChange", "false");
var builder = WebApplication.CreateBuilder(args);
try
{
    builder.AddGateway();
}
catch (GatewayConfigurationException e)
{
    // One line per problem, each naming its key; nothing listens.
    Console.Error.WriteLine(e.Message);
    return 2;
}

// A listener that cannot bind is reported below in one line. The host would also log it as "Hosting failed to start"
// with Kestrel's stack trace; any other start-up failure still ends the process as an unhandled exception.
builder.Logging.AddFilter("Microsoft.Extensions.Hosting.Internal.Host", LogLevel.Critical);

await using var app = builder.Build();
app.MapGateway();
try
{
    await app.StartAsync();
}
catch (IOException e) when (AddressInUse(e))
{
    // Kestrel's message names the address ("Failed to bind to address http://127.0.0.1:8080: address already in use.").
    // Not a configuration problem (exit 1, not 2): the same file works once the port is free.
    Console.Error.WriteLine($"{e.Message} Stop what holds it, or change Urls or Assurance:Api:Url.");
    return 1;
}

await app.WaitForShutdownAsync();
return 0;

static bool AddressInUse(Exception e)
{
    for (var inner = e.InnerException; inner is not null; inner = inner.InnerException)
    {
        if (inner is AddressInUseException)
        {
            return true;
        }
    }

    return false;
}
