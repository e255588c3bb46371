using System.Text.Json;
using System.Text.Json.Serialization;

namespace AssuranceGateway.Api;

internal static class ApiJson
{
    public static readonly JsonSerializerOptions Options = Create();

    public static void Configure(JsonSerializerOptions options)
    {
        options.PropertyNamingPolicy = JsonNamingPolicy.CamelCase;
        options.Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping;
        options.DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull;
        options.Converters.Add(new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower));
        // Unknown members are refused: a misspelt binding must not silently produce an unbound grant.
        options.UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow;
        options.AllowDuplicateProperties = false;
        // The JSON is camelCase with numbers as numbers, and read as written: the Web defaults took "MaxUses": 20 or
        // "maxUses": "20" too, which another reader of the same request (a change ticket, a policy check on the body)
        // sees as no maxUses at all, one use, while the gateway issued twenty.
        options.PropertyNameCaseInsensitive = false;
        options.NumberHandling = JsonNumberHandling.Strict;
        options.Converters.Add(new InstantConverter());
    }

    public const string OffsetRequired = "a date and time with its offset (Z or +hh:mm), as ISO 8601";

    /// <summary>
    /// A time the caller sends must say which time it is: "2026-12-01T09:00:00" without an offset would be read in the
    /// server's time zone, and a grant's window would open hours away from what its issuer meant.
    /// </summary>
    private sealed class InstantConverter : JsonConverter<DateTimeOffset>
    {
        public override DateTimeOffset Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
        {
            if (reader.TokenType == JsonTokenType.String && reader.TryGetDateTime(out var time) && time.Kind != DateTimeKind.Unspecified
                && reader.TryGetDateTimeOffset(out var instant))
            {
                return instant;
            }

            throw new JsonException(OffsetRequired);
        }

        public override void Write(Utf8JsonWriter writer, DateTimeOffset value, JsonSerializerOptions options) =>
            writer.WriteStringValue(value);
    }

    private static JsonSerializerOptions Create()
    {
        var options = new JsonSerializerOptions(JsonSerializerDefaults.Web);
        Configure(options);
        return options;
    }
}
