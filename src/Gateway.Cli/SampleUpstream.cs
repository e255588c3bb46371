using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace AssuranceGateway.Cli;

/// <summary>An upstream for first runs and demos: answers every request with what it received (body as a hash).</summary>
internal static class SampleUpstream
{
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    public static async Task<int> RunAsync(string urls, CancellationToken cancellationToken)
    {
        // Kestrel takes only URLs with their scheme ("127.0.0.1:5001" was a FormatException with a stack trace); each
        // of a ';'-separated list is checked here, so that the mistake is one usage line naming it.
        var addresses = urls.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var bad = addresses.Length == 0 ? urls : addresses.FirstOrDefault(a => !a.StartsWith("http://", StringComparison.OrdinalIgnoreCase)
            && !a.StartsWith("https://", StringComparison.OrdinalIgnoreCase));
        if (bad is not null)
        {
            throw new UsageException($"--urls '{bad}': expected a URL with its scheme, e.g. http://127.0.0.1:5001");
        }

        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls(urls);
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        // A failed start is reported below in one line; the host would log it again with the whole stack trace.
        builder.Logging.AddFilter("Microsoft.Extensions.Hosting.Internal.Host", LogLevel.Critical);
        await using var app = builder.Build();
        app.Run(async context =>
        {
            using var body = new MemoryStream();
            await context.Request.Body.CopyToAsync(body, context.RequestAborted);
            var echo = new Dictionary<string, object?>
            {
                ["upstream"] = "sample",
                ["method"] = context.Request.Method,
                ["path"] = context.Request.Path.Value,
                ["query"] = context.Request.QueryString.Value,
                ["bodyBytes"] = body.Length,
                ["bodySha256"] = Requests.Hashes.Sha256Hex(body.ToArray()),
                ["assuranceEvidence"] = context.Request.Headers["Assurance-Evidence"].Count > 0 ? "present" : "absent",
                ["headers"] = context.Request.Headers
                    .Where(h => !h.Key.Equals("Authorization", StringComparison.OrdinalIgnoreCase))
                    .ToDictionary(h => h.Key, h => h.Value.ToString()),
            };
            context.Response.ContentType = "application/json";
            await context.Response.WriteAsync(JsonSerializer.Serialize(echo, Indented) + "\n", Encoding.UTF8);
        });
        try
        {
            await app.StartAsync(cancellationToken);
        }
        catch (FormatException e)
        {
            // A URL with its scheme that Kestrel still cannot parse (a port that is not a number).
            throw new UsageException($"--urls '{urls}': {e.Message}");
        }
        catch (IOException e)
        {
            // Kestrel's bind failure (the port is taken): said once, and never preceded by a claim to listen.
            await Console.Error.WriteLineAsync($"sample upstream cannot listen on {urls}: {e.Message}");
            return 1;
        }

        // Only now, once Kestrel has bound the address.
        Console.WriteLine($"sample upstream listening on {urls}");
        await app.WaitForShutdownAsync(cancellationToken);
        return 0;
    }
}
