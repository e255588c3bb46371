namespace AssuranceGateway.Grants;

/// <summary>
/// The grant store did not answer within <c>Assurance:Store:Timeout</c>, or could not be reached: the caller fails
/// closed (<c>store_unavailable</c>, SPEC §2).
/// </summary>
public sealed class StoreUnavailableException : Exception
{
    public StoreUnavailableException()
        : this("The grant store is unavailable.")
    {
    }

    public StoreUnavailableException(string message)
        : base(message)
    {
    }

    public StoreUnavailableException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }

    public StoreUnavailableException(string message, bool outcomeUnknown, Exception? innerException = null)
        : base(message, innerException)
    {
        OutcomeUnknown = outcomeUnknown;
    }

    /// <summary>
    /// True when the command may have reached the store (it timed out or the connection broke after it was sent):
    /// the store may still have applied it. False when it provably was never sent.
    /// </summary>
    public bool OutcomeUnknown { get; }

    /// <summary>What went wrong, in a few words for an operator ("not connected (AuthenticationFailure)", "out of memory").</summary>
    public string? Cause { get; init; }
}
