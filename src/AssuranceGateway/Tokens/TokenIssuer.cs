using System.Collections.Frozen;

namespace AssuranceGateway.Tokens;

/// <summary>A trusted token issuer: its name, accepted audiences, pinned algorithms and keys.</summary>
public sealed class TokenIssuer
{
    public required string Issuer { get; init; }
    public required IReadOnlyList<string> Audiences { get; init; }
    public required FrozenSet<string> Algorithms { get; init; }
    public required IIssuerKeySource Keys { get; init; }

    /// <summary>Where the keys come from, for logs and for deciding whether a reload changed anything.</summary>
    public required string KeyLocation { get; init; }
}
