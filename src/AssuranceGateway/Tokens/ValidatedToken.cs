using Microsoft.IdentityModel.JsonWebTokens;

namespace AssuranceGateway.Tokens;

/// <summary>An access token that passed every check. Holds the hash of the raw token, never the token itself.</summary>
public sealed class ValidatedToken
{
    internal ValidatedToken(JsonWebToken jwt, string tokenHash, int aal, string? acr, string? session)
    {
        Jwt = jwt;
        TokenHash = tokenHash;
        Aal = aal;
        Acr = acr;
        Session = session;
        Subject = jwt.Subject;
        Issuer = jwt.Issuer;
        ExpiresAt = jwt.ValidTo;
    }

    internal JsonWebToken Jwt { get; }
    public string TokenHash { get; }
    public string Subject { get; }
    public string Issuer { get; }
    public string? Session { get; }
    public int Aal { get; }
    public string? Acr { get; }
    public DateTime ExpiresAt { get; }

    /// <summary>The claim's values as strings: a string claim gives one, an array gives each string element.</summary>
    public IReadOnlyList<string> ClaimValues(string name) => ClaimReader.Values(Jwt, name);
}

internal static class ClaimReader
{
    public static IReadOnlyList<string> Values(JsonWebToken jwt, string name)
    {
        if (jwt.TryGetPayloadValue<string>(name, out var single))
        {
            return [single];
        }

        // Arrays (and numbers or booleans) come back as one claim per element, with string values.
        var values = new List<string>();
        foreach (var claim in jwt.Claims)
        {
            if (string.Equals(claim.Type, name, StringComparison.Ordinal))
            {
                values.Add(claim.Value);
            }
        }

        return values;
    }

    public static string? StringValue(JsonWebToken jwt, string name) =>
        jwt.TryGetPayloadValue<string>(name, out var value) ? value : null;
}
