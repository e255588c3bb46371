using System.Collections.Frozen;

namespace AssuranceGateway.Tokens;

/// <summary>A trusted token issuer: its name, accepted audiences, pinned algorithms and keys.</summary>
public sealed class TokenIssuer
{
    public required string Issuer { get; init; }
    public required IReadOnlyList<string> Audiences { get; init; }
    public required FrozenSet<string> Algorithms { get; init; }
    public required IIssuerKeySource Keys { get; init; }

    /// <summary>
    /// Put before the token's <c>sub</c> and <c>sid</c>, and before a workload taken from its claim (access-token issuers
    /// only): what the gateway calls the caller in grants, approvals and evidence. Empty for a lone issuer; with more than
    /// one, each names its own (see the compiler), so that two issuers that can both say <c>sub: alice</c> are two people.
    /// </summary>
    public string SubjectPrefix { get; init; } = string.Empty;

    /// <summary>Where the keys come from, for logs and for deciding whether a reload changed anything.</summary>
    public required string KeyLocation { get; init; }
}
