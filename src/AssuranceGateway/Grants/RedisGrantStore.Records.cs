using System.Buffers;
using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using StackExchange.Redis;

namespace AssuranceGateway.Grants;

// How grants, events and results travel between C# and the Lua scripts. Field names here are the ones the scripts
// read (g.status, g.expiresAt, ...): keep both sides in step; the store conformance tests hold them together.
internal sealed partial class RedisGrantStore
{
    private static RedisValue[] CreateArguments(GrantRecord grant, GrantEvent created, long retentionMs)
    {
        var approved = grant.Approvers.Count > 0
            ? EventJson(new GrantEvent { Type = GrantEvent.Approved, TraceId = created.TraceId, SpanId = created.SpanId, Origin = created.Origin, Actor = grant.Approvers[0] }, includeAt: false)
            : string.Empty;
        var args = new List<RedisValue>(64)
        {
            ToMicros(grant.ExpiresAt),
            grant.Ttl is { } ttl ? (RedisValue)(ttl.Ticks / TimeSpan.TicksPerMicrosecond) : RedisValue.EmptyString,
            grant.NotBefore is { } opens ? (RedisValue)ToMicros(opens) : RedisValue.EmptyString,
            retentionMs,
            EventJson(created, includeAt: false),
            approved,
        };

        void Add(string field, RedisValue value)
        {
            args.Add(field);
            args.Add(value);
        }

        void AddOptional(string field, string? value)
        {
            if (value is not null)
            {
                Add(field, value);
            }
        }

        Add("id", grant.Id);
        Add("route", grant.Route);

        // Routes compare ordinal-ignore-case (GrantRules.Check); upper-casing both sides with the invariant culture is
        // the same comparison, and Lua can then compare bytes.
        Add("routeKey", grant.Route.ToUpperInvariant());
        AddOptional("policy", grant.Policy);
        Add("status", GrantStatusNames.Of(grant.Status));
        AddOptional("subject", grant.Subject);
        AddOptional("session", grant.Session);
        AddOptional("token", grant.TokenHash);
        AddOptional("workload", grant.Workload);
        if (grant.Origins.Count > 0)
        {
            Add("origins", JsonArray(grant.Origins));
            var networks = NetworksForLua(grant.Origins);
            if (networks.Length > 0)
            {
                Add("originNets", networks);
            }
        }

        AddOptional("request", grant.RequestHash);
        if (grant.Digests is { } digests)
        {
            Add("digests", "1");
            for (var i = 0; i < RequestDigests.ComponentNames.Length; i++)
            {
                Add("d." + RequestDigests.ComponentNames[i], digests[i]);
            }
        }

        AddOptional("method", grant.Method);
        AddOptional("path", grant.Path);
        AddOptional("query", grant.Query);
        Add("maxUses", grant.MaxUses);
        Add("uses", grant.UsesRemaining);
        if (grant.NotBefore is { } notBefore)
        {
            Add("notBefore", ToMicros(notBefore));
        }

        AddOptional("reason", grant.Reason);
        AddOptional("createdBy", grant.CreatedBy);
        Add("approvalsRequired", grant.ApprovalsRequired);
        if (grant.Approvers.Count > 0)
        {
            Add("approvers", JsonArray(grant.Approvers));
        }

        Add("approvalAal", grant.ApprovalAal);
        Add("bound", (int)grant.Bound);
        if (grant.FirstUse is { } firstUse)
        {
            Add("firstUse", FirstUseJson(firstUse));
        }

        if (grant.DroppedEvents > 0)
        {
            Add("dropped", grant.DroppedEvents);
        }

        return [.. args];
    }

    /// <summary>
    /// Each parseable origin CIDR as "hex of the network bytes/prefix length" (what the consume script compares).
    /// Entries that do not parse are left out, exactly as <see cref="GrantRules.OriginAllowed"/> skips them.
    /// </summary>
    internal static string NetworksForLua(IReadOnlyList<string> origins)
    {
        var networks = new StringBuilder();
        foreach (var origin in origins)
        {
            if (IPNetwork.TryParse(origin, out var network))
            {
                if (networks.Length > 0)
                {
                    networks.Append(' ');
                }

                networks.Append(Convert.ToHexStringLower(network.BaseAddress.GetAddressBytes()))
                    .Append('/')
                    .Append(network.PrefixLength.ToString(CultureInfo.InvariantCulture));
            }
        }

        return networks.ToString();
    }

    /// <summary>
    /// The consume script's ARGV as text: the dedicated connection encodes it straight into the command, the multiplexer
    /// takes it as <see cref="RedisValue"/>s (<see cref="AsValues"/>).
    /// </summary>
    /// <param name="request">The request.</param>
    /// <param name="tag">The call's tag.</param>
    /// <param name="withDigests">
    /// Send the component digests (computed now). Without them, a request that can supply them says so, and the script
    /// answers a request mismatch with <see cref="DigestsNeeded"/> before it writes anything.
    /// </param>
    private static string[] ConsumeArguments(ConsumeRequest request, string tag, bool withDigests)
    {
        var presented = Presented.None;
        if (request.Subject is not null)
        {
            presented |= Presented.Subject;
        }

        if (request.Session is not null)
        {
            presented |= Presented.Session;
        }

        if (request.TokenHash is not null)
        {
            presented |= Presented.Token;
        }

        if (request.Workload is not null)
        {
            presented |= Presented.Workload;
        }

        var originHex = string.Empty;
        var originText = string.Empty;
        if (request.Origin is { } origin)
        {
            var address = GrantRules.Normalize(origin);
            originHex = Convert.ToHexStringLower(address.GetAddressBytes());
            originText = address.ToString();
            presented |= Presented.Origin;
        }

        if (request.RequestHash is not null)
        {
            presented |= Presented.RequestHash;
        }

        var digests = withDigests ? request.Digests : null;
        if (digests is not null)
        {
            presented |= Presented.Digests;
        }
        else if (request.HasDigests)
        {
            presented |= Presented.DigestsOnRequest;
        }

        if (request.TraceId is not null)
        {
            presented |= Presented.TraceId;
        }

        if (request.SpanId is not null)
        {
            presented |= Presented.SpanId;
        }

        return
        [
            request.Route.ToUpperInvariant(),
            ((int)request.Required).ToString(CultureInfo.InvariantCulture),
            ((int)presented).ToString(CultureInfo.InvariantCulture),
            request.Subject ?? string.Empty,
            request.Session ?? string.Empty,
            request.TokenHash ?? string.Empty,
            request.Workload ?? string.Empty,
            originHex,
            originText,
            request.RequestHash ?? string.Empty,
            digests?.Method ?? string.Empty,
            digests?.Path ?? string.Empty,
            digests?.Query ?? string.Empty,
            digests?.Headers ?? string.Empty,
            digests?.Body ?? string.Empty,
            string.Join(' ', request.RevokeOn),
            request.TraceId ?? string.Empty,
            request.SpanId ?? string.Empty,
            request.DryRun ? "1" : "0",
            MaxEventsText,
            tag,
            request.MinimumApprovals.ToString(CultureInfo.InvariantCulture),
            request.MinimumApprovalAal.ToString(CultureInfo.InvariantCulture),
        ];
    }

    private static readonly string MaxEventsText = GrantRules.MaxEvents.ToString(CultureInfo.InvariantCulture);

    private static RedisValue[] AsValues(string[] args) => Array.ConvertAll(args, static a => (RedisValue)a);

    /// <summary>
    /// The consume script's reply without its last element, the call's tag, after checking that the tag is
    /// <paramref name="tag"/>: a reply matched to the wrong command (a connection out of step) is another request's
    /// decision, and must decide nothing. Null when the tag is not this call's.
    /// </summary>
    private static string?[]? OwnReply(string?[] reply, string tag) =>
        reply.Length >= 2 && string.Equals(reply[^1], tag, StringComparison.Ordinal) ? reply[..^1] : null;

    /// <summary>The consume script's reply as text, whichever connection carried it (nil is null).</summary>
    private static string?[] ConsumeReply(RedisResult result) => Array.ConvertAll((RedisResult[])result, static r => (string?)r);

    private static ConsumeResult ReadConsumeResult(string?[] r)
    {
        var reason = r[0] ?? throw new FormatException("consume reply without a reason");
        if (r.Length == 1)
        {
            return new ConsumeResult { Reason = reason };
        }

        var mismatch = r[3];
        return new ConsumeResult
        {
            Reason = reason,
            Status = ParseStatus(r[1]!),
            UsesRemaining = int.Parse(r[2]!, CultureInfo.InvariantCulture),
            Mismatch = string.IsNullOrEmpty(mismatch) ? [] : mismatch.Split(' '),
            Revoked = r[4] == "1",
            FirstUseJson = r[5],
            Approvers = r[6] is null ? [] : ReadStringArray(r[6]!),
            ApprovalAal = int.Parse(r[7]!, CultureInfo.InvariantCulture),
            Subject = r[8],
            Workload = r[9],
            RequestHash = r[10],
        };
    }

    private static GrantRecord? ReadGrant(RedisResult result)
    {
        var parts = (RedisResult[])result;
        var hash = (RedisResult[])parts[0];
        if (hash.Length == 0)
        {
            return null;
        }

        var f = new Dictionary<string, string>(hash.Length / 2, StringComparer.Ordinal);
        for (var i = 0; i + 1 < hash.Length; i += 2)
        {
            f[(string)hash[i]] = (string)hash[i + 1];
        }

        var rawEvents = (RedisResult[])parts[1];
        var events = new GrantEvent[rawEvents.Length];
        for (var i = 0; i < rawEvents.Length; i++)
        {
            events[i] = ReadEvent((string)rawEvents[i]);
        }

        string? Optional(string field) => f.GetValueOrDefault(field);
        int Int(string field) => f.TryGetValue(field, out var v) ? ReadCount(v) : 0;

        RequestDigests? digests = null;
        if (f.ContainsKey("digests"))
        {
            digests = new RequestDigests(f["d.method"], f["d.path"], f["d.query"], f["d.headers"], f["d.body"]);
        }

        return new GrantRecord
        {
            Id = f["id"],
            Route = f["route"],
            Policy = Optional("policy"),
            Status = ParseStatus(f["status"]),
            Subject = Optional("subject"),
            Session = Optional("session"),
            TokenHash = Optional("token"),
            Workload = Optional("workload"),
            Origins = f.TryGetValue("origins", out var origins) ? ReadStringArray(origins) : [],
            RequestHash = Optional("request"),
            Digests = digests,
            Method = Optional("method"),
            Path = Optional("path"),
            Query = Optional("query"),
            MaxUses = Int("maxUses"),
            UsesRemaining = ReadCount(f["uses"]),
            CreatedAt = ReadRecordTime(f["createdAt"]),
            ExpiresAt = ReadRecordTime(f["expiresAt"]),
            NotBefore = f.TryGetValue("notBefore", out var notBefore) ? ReadRecordTime(notBefore) : null,
            Reason = Optional("reason"),
            CreatedBy = Optional("createdBy"),
            ApprovalsRequired = ReadCount(f["approvalsRequired"]),
            Approvers = f.TryGetValue("approvers", out var approvers) ? ReadStringArray(approvers) : [],
            ApprovalAal = Int("approvalAal"),
            Bound = Int("bound") is var bound && (bound & ~(int)Enforcement.BindingNames.Known) == 0
                ? (Enforcement.Bindings)bound
                : throw new FormatException($"it names bindings this version does not know ({bound})"),
            FirstUse = f.TryGetValue("firstUse", out var firstUse) ? ReadFirstUse(firstUse) : null,
            Events = events,
            DroppedEvents = f.TryGetValue("dropped", out var dropped) ? ReadCounter(dropped) : 0,
        };
    }

    /// <summary>
    /// A time of a grant's record (microseconds), as the consume script takes one: an integer Lua's doubles hold exactly
    /// (2^53 µs is the year 2255). Beyond, the script calls the record unreadable, and a long the ticks of a
    /// <see cref="DateTimeOffset"/> cannot hold was a 500 on the API's GET.
    /// </summary>
    private static DateTimeOffset ReadRecordTime(string text)
    {
        var micros = ReadInteger(text);
        return micros is >= -MaxRecordMicros and <= MaxRecordMicros ? FromMicros(micros) : throw new FormatException("a time is out of range");
    }

    /// <summary>A count of a record, in the range the scripts take (Scripts.IntLimit either way: int.MinValue is not one).</summary>
    private static int ReadCount(string text) =>
        ReadInteger(text) is var n && n is >= -int.MaxValue and <= int.MaxValue ? (int)n : throw new FormatException("a count is out of range");

    /// <summary>
    /// The dropped events' counter, in the one form HINCRBY takes (no white space, no '+', no leading zero): the scripts
    /// cannot count in any other, and lose the count (see count_dropped).
    /// </summary>
    private static long ReadCounter(string text) =>
        long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var n) && string.Equals(n.ToString(CultureInfo.InvariantCulture), text, StringComparison.Ordinal)
            ? n
            : throw new FormatException("the dropped events' counter is not an integer Redis counts with");

    /// <summary>
    /// An integer as the scripts' integer() takes one: white space, a sign, decimal digits. long.Parse alone also skips
    /// trailing NUL characters, which the scripts do not.
    /// </summary>
    private static long ReadInteger(string text) =>
        text.Contains('\0', StringComparison.Ordinal) ? throw new FormatException("a number holds a NUL") : long.Parse(text, NumberStyles.Integer, CultureInfo.InvariantCulture);

    private const long MaxRecordMicros = 1L << 53;

    internal static GrantStatus ParseStatus(string? status) => status switch
    {
        StatusPending => GrantStatus.Pending,
        StatusActive => GrantStatus.Active,
        StatusConsumed => GrantStatus.Consumed,
        StatusRevoked => GrantStatus.Revoked,
        _ => throw new InvalidDataException($"Unknown grant status '{status}' in the store."),
    };

    /// <summary>Microseconds since the Unix epoch: Redis TIME resolution, and exact in Lua's doubles.</summary>
    internal static long ToMicros(DateTimeOffset time) => (time.UtcTicks - DateTimeOffset.UnixEpoch.UtcTicks) / TimeSpan.TicksPerMicrosecond;

    internal static DateTimeOffset FromMicros(long micros) => DateTimeOffset.UnixEpoch.AddTicks(micros * TimeSpan.TicksPerMicrosecond);

    // Events are written by hand rather than by a serializer: the Lua side reads and writes the same small shape, and
    // every value (the time included) is a string so that cjson never rounds it.
    internal static string EventJson(GrantEvent grantEvent, bool includeAt)
    {
        return WriteJson(grantEvent, includeAt, static (w, e, at) =>
        {
            w.WriteString("type", e.Type);
            if (at)
            {
                w.WriteString("at", ToMicros(e.At).ToString(CultureInfo.InvariantCulture));
            }

            WriteOptional(w, "traceId", e.TraceId);
            WriteOptional(w, "spanId", e.SpanId);
            WriteOptional(w, "reason", e.Reason);
            WriteOptional(w, "workload", e.Workload);
            WriteOptional(w, "origin", e.Origin);
            WriteOptional(w, "actor", e.Actor);
            if (e.Mismatch is { } mismatch)
            {
                w.WriteStartArray("mismatch");
                foreach (var component in mismatch)
                {
                    w.WriteStringValue(component);
                }

                w.WriteEndArray();
            }
        });
    }

    private static string FirstUseJson(FirstUse firstUse)
    {
        return WriteJson(firstUse, false, static (w, u, _) =>
        {
            w.WriteString("at", ToMicros(u.At).ToString(CultureInfo.InvariantCulture));
            WriteOptional(w, "traceId", u.TraceId);
            WriteOptional(w, "spanId", u.SpanId);
            WriteOptional(w, "workload", u.Workload);
            WriteOptional(w, "origin", u.Origin);
        });
    }

    private static string JsonArray(IReadOnlyList<string> values)
    {
        var buffer = new ArrayBufferWriter<byte>(64);
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartArray();
            foreach (var value in values)
            {
                writer.WriteStringValue(value);
            }

            writer.WriteEndArray();
        }

        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    private static string WriteJson<T>(T value, bool flag, Action<Utf8JsonWriter, T, bool> write)
    {
        var buffer = new ArrayBufferWriter<byte>(256);
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            write(writer, value, flag);
            writer.WriteEndObject();
        }

        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    private static void WriteOptional(Utf8JsonWriter writer, string name, string? value)
    {
        if (value is not null)
        {
            writer.WriteString(name, value);
        }
    }

    internal static GrantEvent ReadEvent(string json)
    {
        using var document = JsonDocument.Parse(json);
        var e = ObjectRoot(document);
        return new GrantEvent
        {
            Type = ReadString(e, "type") ?? string.Empty,
            At = ReadTime(e),
            TraceId = ReadString(e, "traceId"),
            SpanId = ReadString(e, "spanId"),
            Reason = ReadString(e, "reason"),
            Workload = ReadString(e, "workload"),
            Origin = ReadString(e, "origin"),
            Actor = ReadString(e, "actor"),
            Mismatch = e.TryGetProperty("mismatch", out var mismatch) ? ReadStrings(mismatch) : null,
        };
    }

    internal static FirstUse ReadFirstUse(string json)
    {
        using var document = JsonDocument.Parse(NoControl(json));
        var u = ObjectRoot(document);
        foreach (var property in u.EnumerateObject())
        {
            // Flat, as the consume script takes one (first_use_readable): it cannot tell how deep a nesting this parser reads.
            if (property.Value.ValueKind is JsonValueKind.Object or JsonValueKind.Array)
            {
                throw new FormatException("a first use nests");
            }
        }

        return new FirstUse(ReadString(u, "traceId"), ReadString(u, "spanId"), ReadTime(u), ReadString(u, "workload"), ReadString(u, "origin"));
    }

    /// <summary>
    /// A JSON array of strings (cjson writes an empty one as <c>{}</c>: read as empty), without a document. Anything else
    /// (a scalar, an object with members, a list holding something else, text after the list) is a
    /// <see cref="FormatException"/>, as the consume script's own reading of the approvers is: read as "no approvers",
    /// a hand-edited list let a grant through where the script refuses it, and GET showed it as a sound record.
    /// </summary>
    private static string[] ReadStringArray(string json)
    {
        NoControl(json);
        var max = Encoding.UTF8.GetMaxByteCount(json.Length);
        byte[]? rented = null;
        var utf8 = max <= 512 ? stackalloc byte[512] : (rented = ArrayPool<byte>.Shared.Rent(max));
        try
        {
            var reader = new Utf8JsonReader(utf8[..Encoding.UTF8.GetBytes(json, utf8)]);
            string[] values;
            if (reader.Read() && reader.TokenType == JsonTokenType.StartObject && reader.Read() && reader.TokenType == JsonTokenType.EndObject)
            {
                values = [];
            }
            else if (reader.TokenType == JsonTokenType.StartArray)
            {
                var list = new List<string>(2);
                while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
                {
                    list.Add(reader.TokenType == JsonTokenType.String ? reader.GetString()! : throw new FormatException("a list of strings holds something else"));
                }

                values = [.. list];
            }
            else
            {
                throw new FormatException("a list of strings is something else");
            }

            // The reader throws on an unfinished list and on anything after a complete one.
            return reader.Read() ? throw new FormatException("a list of strings is followed by more") : values;
        }
        finally
        {
            if (rented is not null)
            {
                ArrayPool<byte>.Shared.Return(rented);
            }
        }
    }

    // cjson encodes an empty Lua table as {}: read it as an empty list.
    private static string[] ReadStrings(JsonElement element) =>
        element.ValueKind == JsonValueKind.Array ? [.. element.EnumerateArray().Select(static v => v.GetString() ?? string.Empty)] : [];

    private static string? ReadString(JsonElement element, string name) =>
        element.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String ? value.GetString() : null;

    /// <summary>
    /// JSON of the record holds no control character as it is (no writer puts one there; between the tokens this parser
    /// takes them, cjson everywhere): the scripts refuse one (has_control), so the reader does too.
    /// </summary>
    private static string NoControl(string json) =>
        json.AsSpan().IndexOfAnyInRange('\0', '\u001f') >= 0 ? throw new FormatException("a JSON text holds a control character") : json;

    /// <summary>An event's or a first use's JSON, which is an object: anything else (a hand edit) does not parse.</summary>
    private static JsonElement ObjectRoot(JsonDocument document) =>
        document.RootElement.ValueKind == JsonValueKind.Object ? document.RootElement : throw new FormatException("an object is something else");

    /// <summary>
    /// "at": a time of the record (a string, or a number as older events may hold), in the range the scripts take. A number
    /// is read as cjson reads it (a double, so 1e3 and 1.0 are whole), which is how the consume checks a first use.
    /// </summary>
    private static DateTimeOffset ReadTime(JsonElement element)
    {
        if (!element.TryGetProperty("at", out var at))
        {
            return default;
        }

        return at.ValueKind switch
        {
            JsonValueKind.String => ReadRecordTime(at.GetString()!),
            JsonValueKind.Number when at.TryGetDouble(out var micros) && micros == Math.Floor(micros) && Math.Abs(micros) <= MaxRecordMicros => FromMicros((long)micros),
            _ => throw new FormatException("a time is something else"),
        };
    }
}
