namespace AssuranceGateway.Cli;

/// <summary>
/// A mistake in what the user gave agw (a missing file, a malformed option value): Program prints the message as one
/// line and exits 2, as for other usage errors, instead of a stack trace.
/// </summary>
internal sealed class UsageException(string message) : Exception(message);
