namespace AssuranceGateway.Cli;

/// <summary>
/// A mistake in what the user gave agw (a missing file, a malformed option value): Program prints the message as one
/// line and exits 2, as for other usage errors, instead of a stack trace.
/// </summary>
internal sealed class UsageException(string message) : Exception(message)
{
    /// <summary>
    /// The message as one printable line: a value the user gave is quoted in it (<see cref="TerminalText"/>).
    /// </summary>
    public string Printable => TerminalText.Line(Message);

    /// <summary>A value the user gave, for quoting in a message: escaped, and cut after <paramref name="max"/> characters.</summary>
    public static string Shown(string value, int max = 80) =>
        value.Length <= max ? value : string.Concat(value.AsSpan(0, max), $"… ({value.Length} characters)");
}
