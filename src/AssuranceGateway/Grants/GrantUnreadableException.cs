namespace AssuranceGateway.Grants;

/// <summary>
/// A grant's record in the store that this gateway cannot read: a status it does not know (written by hand during an
/// incident, or by a newer version during a rolling upgrade) or a field that does not parse. Such a grant is never
/// used, and the API says what is wrong with it instead of failing with a bare 500.
/// </summary>
public sealed class GrantUnreadableException : Exception
{
    public GrantUnreadableException()
        : this("The grant's record cannot be read.")
    {
    }

    public GrantUnreadableException(string message)
        : base(message)
    {
    }

    public GrantUnreadableException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }
}
