namespace AssuranceGateway.Testing;

/// <summary>Configuration changes that <see cref="GatewayHarness.ReloadAsync"/> cannot express: broken text, a deleted file.</summary>
public static class GatewayHarnessReloads
{
    private const string RefusedEvent = "[100]";

    /// <summary>Writes <paramref name="text"/> as the config file, as is; true if applied, false if refused.</summary>
    public static Task<bool> ReloadRawAsync(this GatewayHarness harness, string text) =>
        harness.ChangeAsync(async () =>
        {
            // Renamed into place, as GatewayHarness.ReloadAsync does, so that the gateway reads exactly this text.
            var temporary = harness.ConfigPath + ".tmp";
            await File.WriteAllTextAsync(temporary, text);
            File.Move(temporary, harness.ConfigPath, overwrite: true);
        });

    /// <summary>
    /// Replaces a key file the configuration names with <paramref name="text"/> (renamed into place), as an operator
    /// rotating a key does; the gateway watches key files. True if it applied the change, false if it refused it.
    /// </summary>
    public static Task<bool> ReplaceKeyFileAsync(this GatewayHarness harness, string path, string text) =>
        harness.ChangeAsync(async () =>
        {
            var temporary = path + ".tmp";
            await File.WriteAllTextAsync(temporary, text);
            File.Move(temporary, path, overwrite: true);
        });

    /// <summary>Deletes the config file; true if the gateway applied that (it must not), false if refused.</summary>
    public static Task<bool> DeleteConfigAsync(this GatewayHarness harness) =>
        harness.ChangeAsync(() =>
        {
            File.Delete(harness.ConfigPath);
            return Task.CompletedTask;
        });

    /// <summary>The log lines of refused configuration changes (event id 100).</summary>
    public static IReadOnlyList<string> RefusedReloads(this GatewayHarness harness) =>
        [.. harness.Logs.Lines.Where(l => l.Contains(RefusedEvent, StringComparison.Ordinal))];

    private static async Task<bool> ChangeAsync(this GatewayHarness harness, Func<Task> change)
    {
        var generation = harness.Config.Generation;
        var refusals = harness.RefusedReloads().Count;
        await change();
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (DateTime.UtcNow < deadline)
        {
            if (harness.Config.Generation != generation)
            {
                return true;
            }

            if (harness.RefusedReloads().Count > refusals)
            {
                return false;
            }

            await Task.Delay(50);
        }

        throw new TimeoutException("the gateway neither applied nor refused the configuration change");
    }
}
