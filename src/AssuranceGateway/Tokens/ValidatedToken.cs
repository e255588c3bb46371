using System.Globalization;
using System.Text.Json;
using Microsoft.IdentityModel.JsonWebTokens;

namespace AssuranceGateway.Tokens;

/// <summary>
/// An access token that passed every check. Holds the hash of the raw token, never the token itself. Subject and session
/// are named in the issuer's namespace (its subject prefix, empty for a lone issuer).
/// </summary>
public sealed class ValidatedToken
{
    internal ValidatedToken(JsonWebToken jwt, string tokenHash, int aal, string? acr, string? session, string subjectPrefix = "")
    {
        Jwt = jwt;
        TokenHash = tokenHash;
        Aal = aal;
        Acr = acr;
        SubjectPrefix = subjectPrefix;
        Session = session is null ? null : subjectPrefix + session;
        Subject = subjectPrefix + jwt.Subject;
        Issuer = jwt.Issuer;
        ExpiresAt = jwt.ValidTo;
    }

    internal JsonWebToken Jwt { get; }
    public string TokenHash { get; }
    public string Subject { get; }
    public string Issuer { get; }

    /// <summary>The issuer's <see cref="TokenIssuer.SubjectPrefix"/>, already part of <see cref="Subject"/> and <see cref="Session"/>.</summary>
    public string SubjectPrefix { get; }
    public string? Session { get; }
    public int Aal { get; }
    public string? Acr { get; }
    public DateTime ExpiresAt { get; }

    /// <summary>
    /// The claim's values as strings: a string claim gives one, an array each of its string elements, a boolean "true" or
    /// "false", a number its JSON text; null and objects none.
    /// </summary>
    public IReadOnlyList<string> ClaimValues(string name) => ClaimReader.Values(Jwt, name);

    /// <summary>The claim when it is one JSON string; null when it is absent or anything else (an array, a number).</summary>
    public string? StringClaim(string name) => ClaimReader.StringValue(Jwt, name);

    /// <summary>Whether the token carries the claim at all, whatever its value.</summary>
    public bool HasClaim(string name) => Jwt.TryGetPayloadValue<object>(name, out _);
}

/// <summary>
/// Claims by their JSON type. IdentityModel's <c>TryGetPayloadValue&lt;string&gt;</c> succeeds for every type: an array
/// comes back as its JSON text (<c>["dev","prod"]</c>), a boolean as .NET spells it (<c>True</c>), so an array claim
/// never held a required value and a claim naming two workloads was one workload.
/// </summary>
internal static class ClaimReader
{
    public static IReadOnlyList<string> Values(JsonWebToken jwt, string name)
    {
        if (!jwt.TryGetPayloadValue<object>(name, out var value))
        {
            return [];
        }

        switch (value)
        {
            case string text:
                return [text];
            case bool flag:
                return [flag ? "true" : "false"];
            case JsonElement { ValueKind: JsonValueKind.Array } array:
                var values = new List<string>(array.GetArrayLength());
                foreach (var element in array.EnumerateArray())
                {
                    if (element.ValueKind == JsonValueKind.String)
                    {
                        values.Add(element.GetString()!);
                    }
                }

                return values;
            case JsonElement:
            case null:
                return [];
            case IFormattable number:
                return [number.ToString(null, CultureInfo.InvariantCulture)];
            default:
                return [];
        }
    }

    public static string? StringValue(JsonWebToken jwt, string name) =>
        jwt.TryGetPayloadValue<object>(name, out var value) && value is string text ? text : null;
}
