using System.Text.Json;
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
        if (!jwt.TryGetPayloadValue<JsonElement>(name, out var element))
        {
            return [];
        }

        switch (element.ValueKind)
        {
            case JsonValueKind.String:
                return [element.GetString()!];
            case JsonValueKind.Array:
                var values = new List<string>(element.GetArrayLength());
                foreach (var item in element.EnumerateArray())
                {
                    if (item.ValueKind == JsonValueKind.String)
                    {
                        values.Add(item.GetString()!);
                    }
                    else if (item.ValueKind is JsonValueKind.Number or JsonValueKind.True or JsonValueKind.False)
                    {
                        values.Add(item.GetRawText());
                    }
                }

                return values;
            case JsonValueKind.Number or JsonValueKind.True or JsonValueKind.False:
                return [element.GetRawText()];
            default:
                return [];
        }
    }

    public static string? StringValue(JsonWebToken jwt, string name) =>
        jwt.TryGetPayloadValue<JsonElement>(name, out var e) && e.ValueKind == JsonValueKind.String ? e.GetString() : null;
}
