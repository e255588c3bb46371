using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace AssuranceGateway.Testing;

/// <summary>
/// The independent reference of SPEC §4.2 in tests/Conformance (Python, standard library only, written from the SPEC
/// text and not from the gateway's code), run as a process: one process per batch, so a few hundred cases cost one
/// interpreter start.
/// </summary>
public static class ReferenceHash
{
    /// <summary>One generated input (its wire headers in order, duplicates kept) and the reference's answer.</summary>
    public sealed record Input(
        int Index, string Method, string Path, string Query, IReadOnlyList<KeyValuePair<string, string>> Headers,
        IReadOnlyList<string> BoundHeaders, byte[]? Body, string Hash, string Canonical, string Json)
    {
        /// <summary>What a failure shows: the input as the generator wrote it and the canonical string the reference built.</summary>
        public override string ToString() => $"case {Index}: {Json}\nreference canonical string: {JsonSerializer.Serialize(Canonical)}";
    }

    public static string Directory { get; } = Path.Combine(RepositoryRoot(), "tests", "Conformance");

    /// <summary>
    /// <c>gen_cases.py</c>: seeded, so a failure names a case that can be run again. <paramref name="bound"/> fixes the
    /// bound header names (a route's policy) instead of drawing them per case; <paramref name="pathPrefix"/> puts every
    /// path under a route.
    /// </summary>
    public static async Task<IReadOnlyList<Input>> GenerateAsync(int seed, int count, string profile, IReadOnlyList<string>? bound = null, string pathPrefix = "")
    {
        string[] args = ["--seed", seed.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "--count", count.ToString(System.Globalization.CultureInfo.InvariantCulture), "--profile", profile, "--path-prefix", pathPrefix];
        var output = await RunAsync("gen_cases.py", null, bound is null ? args : [.. args, "--bound", .. bound]);
        using var document = JsonDocument.Parse(output);
        var cases = new List<Input>();
        foreach (var item in document.RootElement.EnumerateArray())
        {
            var headers = item.GetProperty("headers").EnumerateArray()
                .Select(h => KeyValuePair.Create(h[0].GetString()!, h[1].GetString()!)).ToList();
            var body = item.GetProperty("body") is { ValueKind: JsonValueKind.String } b ? Convert.FromBase64String(b.GetString()!) : null;
            cases.Add(new Input(
                cases.Count, item.GetProperty("method").GetString()!, item.GetProperty("path").GetString()!, item.GetProperty("query").GetString()!,
                headers, item.GetProperty("boundHeaders").EnumerateArray().Select(n => n.GetString()!).ToList(), body,
                item.GetProperty("hash").GetString()!, item.GetProperty("canonical").GetString()!, Shorten(item.GetRawText())));
        }

        return cases;
    }

    /// <summary><c>canonical_hash.py</c> over <paramref name="inputs"/> (its JSON input format), one hash per input.</summary>
    public static async Task<IReadOnlyList<string>> HashAsync(JsonArray inputs)
    {
        var output = await RunAsync("canonical_hash.py", inputs.ToJsonString());
        return output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
    }

    private static async Task<string> RunAsync(string script, string? stdin, params string[] args)
    {
        var start = new ProcessStartInfo("python3")
        {
            RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true,
            StandardOutputEncoding = Encoding.UTF8, StandardInputEncoding = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false),
        };
        start.ArgumentList.Add(Path.Combine(Directory, script));
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }

        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        if (stdin is not null)
        {
            await process.StandardInput.WriteAsync(stdin);
        }

        process.StandardInput.Close();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await process.WaitForExitAsync(timeout.Token);
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"python3 {script} exited {process.ExitCode}: {await error}");
        }

        return await output;
    }

    private static string Shorten(string json) => json.Length <= 600 ? json : json[..600] + "…";

    private static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Gateway.sln")))
            {
                return dir.FullName;
            }
        }

        throw new DirectoryNotFoundException("Gateway.sln not found above " + AppContext.BaseDirectory);
    }
}
