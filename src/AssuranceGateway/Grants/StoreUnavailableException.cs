namespace AssuranceGateway.Grants;

/// <summary>
/// The grant store did not answer in time or could not be reached. The gateway fails closed on it (503).
/// <see cref="OutcomeUnknown"/> is true when the operation may have been applied (sent, then timed out).
/// </summary>
public sealed class StoreUnavailableException : Exception
{
    public StoreUnavailableException()
    {
    }

    public StoreUnavailableException(string message)
        : base(message)
    {
    }

    public StoreUnavailableException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    public StoreUnavailableException(string message, bool outcomeUnknown, Exception? innerException = null)
        : base(message, innerException)
    {
        OutcomeUnknown = outcomeUnknown;
    }

    public bool OutcomeUnknown { get; }
}
