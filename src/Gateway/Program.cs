using AssuranceGateway.Configuration;
using AssuranceGateway.Hosting;

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

var app = builder.Build();
app.MapGateway();
await app.RunAsync();
return 0;
