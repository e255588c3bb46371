using System.Net;
using System.Text;
using AssuranceGateway.Enforcement;
using AssuranceGateway.Grants;
using AssuranceGateway.Testing;

namespace AssuranceGateway.FunctionalTests.Grants;

/// <summary>
/// The C# reader and the scripts against the same damaged record: one field of a sound grant's hash (or one entry of its
/// event list) overwritten with a hostile value, for every field and every value. GetAsync either reads the record or
/// calls it unreadable; the consume, approval and revocation answer without a script error, and where the reader calls
/// the record unreadable the consume answers grant_unreadable with nothing written; a refusal never follows a write.
/// The values are fixed, and the generated ones (a long text, random bytes) come from a fixed seed.
/// </summary>
public sealed class RedisGrantRecordDamageTests(RedisServer redis) : IClassFixture<RedisServer>, IAsyncLifetime
{
    private const string Absent = "<absent>";
    private const string Route = "deploy";

    /// <summary>Every field of the record the store writes (the fixture grant has all of them), and two event list entries.</summary>
    private static readonly string[] Fields =
    [
        "id", "route", "routeKey", "policy", "status", "subject", "session", "token", "workload", "origins", "originNets",
        "request", "digests", "d.method", "d.path", "d.query", "d.headers", "d.body", "method", "path", "query", "maxUses",
        "uses", "notBefore", "reason", "createdBy", "approvalsRequired", "approvers", "approvalAal", "bound", "firstUse",
        "dropped", "createdAt", "expiresAt", "events[0]", "events[-1]",
    ];

    /// <summary>
    /// Fields the consume never reads, where the reader's "unreadable" is not the consume's business: it decides on its
    /// own fields (SPEC §2 step 6) in one HMGET, and reading these as well would cost every allowed consume (the event
    /// list is a second key, a second command; origins a JSON decoding) for evidence and display fields that change no
    /// decision: the consume checks originNets, not origins; the digests only on a request mismatch (an absent one is a
    /// mismatched component there); id and route only name the grant (the key and routeKey decide). The reader still
    /// calls such a record unreadable (the API shows the damage), the approval and the revocation still never fail on it.
    /// </summary>
    private static readonly HashSet<string> NotReadByConsume = new(StringComparer.Ordinal)
    {
        "id", "route", "origins", "d.method", "d.path", "d.query", "d.headers", "d.body", "maxUses", "approvalsRequired",
        "createdAt", "dropped", "events[0]", "events[-1]",

        // Read by the consume, and by its caller, for a replay only (the replay's evidence names the first use): the
        // allowed use of a multi-use grant does not pay its decoding. See UsedUpGrant_DamagedFirstUse_….
        "firstUse",
    };

    private static string[] HostileValues()
    {
        var random = new Random(20261202);
        var huge = new StringBuilder(70_000);
        for (var i = 0; i < 70_000; i++)
        {
            huge.Append((char)('a' + random.Next(26)));
        }

        var bytes = new byte[16];
        random.NextBytes(bytes);
        bytes[0] = 0xff; // never valid UTF-8, whatever the seed gives after it
        return
        [
            "", " ", "\t\n", "nan", "-nan", "inf", "1e3", "0x10", "2.5", "-1", "-2147483648", "99999999999999999999", "7\0",
            huge.ToString(), "\"x\"", "{}", "[]", "[1]", "null", "[\"\\ud800\"]", "{\"at\":2.5}", "{\"at\":1e3}", "{\"at\":1.0}", "{\"at\":true}", "{\"at\":\"99999999999999999\"}",
            // What cjson takes and System.Text.Json does not: control characters as they are, and numbers JSON has not.
            "{\"at\":0x10}", "{\"at\":010}", "{\"x\":nan}", "{\"at\":1.}", "{\"traceId\":\"a\u0001b\"}", "[\"bob\u0009\"]",
            "{\"x\":" + new string('[', 70) + new string(']', 70) + "}",
            Hex + Convert.ToHexString(bytes), Absent,
        ];
    }

    /// <summary>A value given as hex bytes (to write bytes that are not UTF-8).</summary>
    private const string Hex = "<hex>";

    private RedisGrantStore? _store;
    private readonly string _prefix = RedisStores.NewPrefix();

    private RedisGrantStore Store => _store ?? throw new InvalidOperationException("Not initialized.");

    public async Task InitializeAsync() => _store = await RedisStores.StartAsync(RedisStores.Settings(redis, _prefix));

    public Task DisposeAsync()
    {
        _store?.Dispose();
        return Task.CompletedTask;
    }

    public static TheoryData<string> DamagedFields() => [.. Fields];

    [Theory]
    [MemberData(nameof(DamagedFields))]
    public async Task OneDamagedField_ReaderAndScriptsAgree_NothingWrittenBeforeARefusal(string field)
    {
        var failures = new List<string>();
        foreach (var value in HostileValues())
        {
            var shown = value.Length > 40 ? $"<{value.Length} chars>" : value.Replace("\0", "\\0", StringComparison.Ordinal);
            try
            {
                await CheckConsumeAndRevokeAsync(field, value, failures, shown);
                await CheckApproveAsync(field, value, failures, shown);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                failures.Add($"{field}={shown}: {e.GetType().Name}: {e.Message}");
            }
        }

        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    /// <summary>
    /// A used-up grant whose first use is damaged: the replay's evidence reads the first use, so the consume judges it
    /// then, and a first use the reader cannot read is grant_unreadable before anything is written (it was a 500 after
    /// the denial was written).
    /// </summary>
    [Fact]
    public async Task UsedUpGrant_DamagedFirstUse_ReplayOrUnreadableNeverAFailure_NothingWrittenBeforeARefusal()
    {
        var failures = new List<string>();
        foreach (var value in HostileValues())
        {
            var shown = value.Length > 40 ? $"<{value.Length} chars>" : value.Replace("\0", "\\0", StringComparison.Ordinal);
            var grant = NewGrant() with { Status = GrantStatus.Consumed, UsesRemaining = 0 };
            Assert.Equal(GrantChange.Done, (await Store.CreateAsync(grant, Created(), 1000, default)).Outcome);
            await DamageAsync(grant.Id, "firstUse", value);
            var readable = await ReadableAsync(grant.Id, failures, $"firstUse={shown}: get");
            var before = await SnapshotAsync(grant.Id);
            try
            {
                var result = await Store.ConsumeAsync(Matching(grant), default);
                if (result.Reason == ReasonCodes.Replayed)
                {
                    _ = result.FirstUse;
                }

                var expected = readable || value == Absent ? ReasonCodes.Replayed : ReasonCodes.GrantUnreadable;
                if (result.Reason != expected)
                {
                    failures.Add($"firstUse={shown}: the consume answered {result.Reason}, expected {expected}");
                }
                else if (expected == ReasonCodes.GrantUnreadable && before != await SnapshotAsync(grant.Id))
                {
                    failures.Add($"firstUse={shown}: grant_unreadable after a write");
                }
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                failures.Add($"firstUse={shown}: consume threw {e.GetType().Name}: {e.Message} (reader: {(readable ? "readable" : "unreadable")})");
            }
        }

        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    /// <summary>
    /// A damaged counter of dropped events meets a full event list, where every script counts the event it cannot keep
    /// (HINCRBY, which refuses a value that is not a 64-bit integer in its strict form). The consume had written the use
    /// by then: the error was a 503 with an unknown outcome after the use was spent. The reader calls the record
    /// unreadable; the consume does not read the counter (see <see cref="NotReadByConsume"/>), and the count is lost.
    /// </summary>
    [Theory]
    [InlineData("nan")]
    [InlineData("")]
    [InlineData(" 5")]
    [InlineData("9223372036854775807")]
    public async Task FullEventList_DamagedDroppedCounter_ConsumeDenyRevokeApproveNeverFail(string dropped)
    {
        var keys = new GrantKeys(_prefix);
        async Task<GrantRecord> CreateFullAsync(GrantRecord grant)
        {
            Assert.Equal(GrantChange.Done, (await Store.CreateAsync(grant, Created(), 1000, default)).Outcome);
            var events = (string)keys.Events(grant.Id)!;
            var filler = Enumerable.Repeat("{\"type\":\"denied\",\"at\":\"1\",\"reason\":\"subject_mismatch\"}", GrantRules.MaxEventsAnyKind - 2);
            await redis.ExecuteAsync(["RPUSH", events, .. filler]);
            await redis.ExecuteAsync("HSET", (string)keys.Grant(grant.Id)!, "dropped", dropped);
            return grant;
        }

        var used = await CreateFullAsync(NewGrant());
        var denied = await CreateFullAsync(NewGrant());
        var pending = await CreateFullAsync(NewGrant() with { Status = GrantStatus.Pending, ApprovalsRequired = 1 });

        Assert.Equal(ReasonCodes.Ok, (await Store.ConsumeAsync(Matching(used), default)).Reason);
        Assert.Equal(ReasonCodes.SubjectMismatch, (await Store.ConsumeAsync(Matching(denied) with { Subject = "mallory" }, default)).Reason);
        Assert.Equal(GrantChange.Done, await Store.RevokeAsync(denied.Id, Revoked(), default));
        Assert.Equal(GrantChange.Done, (await Store.ApproveAsync(pending.Id, "carol", 2, new GrantEvent { Type = GrantEvent.Approved }, null, 1, default)).Outcome);
        Assert.Equal("1", await redis.ExecuteAsync("HGET", (string)keys.Grant(used.Id)!, "uses"));
        Assert.Equal(GrantStatusNames.Revoked, await redis.ExecuteAsync("HGET", (string)keys.Grant(denied.Id)!, "status"));
        Assert.Equal(GrantStatusNames.Active, await redis.ExecuteAsync("HGET", (string)keys.Grant(pending.Id)!, "status"));
    }

    private async Task CheckConsumeAndRevokeAsync(string field, string value, List<string> failures, string shown)
    {
        var grant = NewGrant();
        Assert.Equal(GrantChange.Done, (await Store.CreateAsync(grant, Created(), 1000, default)).Outcome);
        Assert.Equal(ReasonCodes.Ok, (await Store.ConsumeAsync(Matching(grant) with { DryRun = true }, default)).Reason);
        await DamageAsync(grant.Id, field, value);

        var readable = await ReadableAsync(grant.Id, failures, $"{field}={shown}: get");
        var before = await SnapshotAsync(grant.Id);
        string? reason = null;
        try
        {
            var result = await Store.ConsumeAsync(Matching(grant), default);
            reason = result.Reason;
            if (reason == ReasonCodes.Replayed)
            {
                _ = result.FirstUse; // what a replay's evidence reads (the gateway reads it for nothing else)
            }

            _ = result.Approvers;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            failures.Add($"{field}={shown}: consume threw {e.GetType().Name}: {e.Message} (after reason {reason ?? "none"}, reader: {(readable ? "readable" : "unreadable")})");
        }

        var after = await SnapshotAsync(grant.Id);
        if (reason is not null && !readable && !NotReadByConsume.Contains(field))
        {
            if (reason != ReasonCodes.GrantUnreadable)
            {
                failures.Add($"{field}={shown}: the reader calls it unreadable, the consume answered {reason}");
            }
            else if (before != after)
            {
                failures.Add($"{field}={shown}: grant_unreadable after a write:\n{before}\n{after}");
            }
        }
        else if (reason == ReasonCodes.GrantUnreadable && (readable || before != after))
        {
            failures.Add($"{field}={shown}: the consume answered grant_unreadable, the reader {(readable ? "read it" : "agrees")}{(before != after ? ", and something was written" : string.Empty)}");
        }

        before = after;
        try
        {
            var change = await Store.RevokeAsync(grant.Id, Revoked(), default);
            if (change != GrantChange.Done && before != await SnapshotAsync(grant.Id))
            {
                failures.Add($"{field}={shown}: revoke answered {change} after a write");
            }
        }
        catch (GrantUnreadableException)
        {
            if (before != await SnapshotAsync(grant.Id))
            {
                failures.Add($"{field}={shown}: revoke called it unreadable after a write");
            }
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            failures.Add($"{field}={shown}: revoke threw {e.GetType().Name}: {e.Message}");
        }
    }

    private async Task CheckApproveAsync(string field, string value, List<string> failures, string shown)
    {
        var grant = NewGrant() with { Status = GrantStatus.Pending, ApprovalsRequired = 2, UsesRemaining = 3 };
        Assert.Equal(GrantChange.Done, (await Store.CreateAsync(grant, Created(), 1000, default)).Outcome);
        await DamageAsync(grant.Id, field, value);
        var readable = await ReadableAsync(grant.Id, failures, $"{field}={shown}: get (pending)");
        var before = await SnapshotAsync(grant.Id);
        try
        {
            var result = await Store.ApproveAsync(grant.Id, "carol", 2, new GrantEvent { Type = GrantEvent.Approved }, TimeSpan.FromMinutes(2), 2, default);
            if (result.Outcome != GrantChange.Done && before != await SnapshotAsync(grant.Id))
            {
                failures.Add($"{field}={shown}: approve answered {result.Outcome} after a write");
            }
        }
        catch (GrantUnreadableException)
        {
            if (readable)
            {
                failures.Add($"{field}={shown}: approve called it unreadable, the reader read it");
            }

            if (before != await SnapshotAsync(grant.Id))
            {
                failures.Add($"{field}={shown}: approve called it unreadable after a write");
            }
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            failures.Add($"{field}={shown}: approve threw {e.GetType().Name}: {e.Message}");
        }
    }

    private async Task<bool> ReadableAsync(string id, List<string> failures, string what)
    {
        try
        {
            return await Store.GetAsync(id, default) is not null ? true : throw new InvalidOperationException("the grant is gone");
        }
        catch (GrantUnreadableException)
        {
            return false;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            failures.Add($"{what} threw {e.GetType().Name}: {e.Message}");
            return false;
        }
    }

    /// <summary>Overwrites (or removes) one field, or one entry of the event list; values go as hex so that any bytes can.</summary>
    private async Task DamageAsync(string id, string field, string value)
    {
        var keys = new GrantKeys(_prefix);
        var hex = value.StartsWith(Hex, StringComparison.Ordinal) ? value[Hex.Length..] : Convert.ToHexString(Encoding.UTF8.GetBytes(value));
        const string Script = """
            local v = string.gsub(ARGV[2], '..', function(h) return string.char(tonumber(h, 16)) end)
            if ARGV[1] == 'events[0]' or ARGV[1] == 'events[-1]' then
              local index = ARGV[1] == 'events[0]' and 0 or -1
              if ARGV[3] == '1' then return redis.call('LSET', KEYS[2], index, '__gone__') end
              return redis.call('LSET', KEYS[2], index, v)
            end
            if ARGV[3] == '1' then return redis.call('HDEL', KEYS[1], ARGV[1]) end
            return redis.call('HSET', KEYS[1], ARGV[1], v)
            """;
        await redis.ExecuteAsync("EVAL", Script, "2", (string)keys.Grant(id)!, (string)keys.Events(id)!, field, hex, value == Absent ? "1" : "0");
    }

    /// <summary>The hash and the event list, byte for byte (a digest, then the text for a failure message).</summary>
    private async Task<string> SnapshotAsync(string id)
    {
        var keys = new GrantKeys(_prefix);
        const string Script = """
            local h = redis.call('HGETALL', KEYS[1])
            local l = redis.call('LRANGE', KEYS[2], 0, -1)
            local parts = {}
            -- Field order is the hash's own, which may change as Redis rehashes: sorted, the same content is the same text.
            for i = 1, #h, 2 do parts[#parts + 1] = #h[i] .. ':' .. h[i] .. #h[i + 1] .. ':' .. h[i + 1] end
            table.sort(parts)
            parts[#parts + 1] = '|'
            for i = 1, #l do parts[#parts + 1] = #l[i] .. ':' .. l[i] end
            local text = table.concat(parts)
            return redis.sha1hex(text) .. ' ' .. text
            """;
        return (string)(await redis.ExecuteAsync("EVAL", Script, "2", (string)keys.Grant(id)!, (string)keys.Events(id)!))!;
    }

    private static DateTimeOffset Now => DateTimeOffset.FromUnixTimeMilliseconds(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());

    /// <summary>A sound active grant with every field the store writes: two uses left of three (so a first use is recorded), events dropped.</summary>
    private static GrantRecord NewGrant() => new()
    {
        Id = Guid.NewGuid().ToString("N"),
        Route = Route,
        Policy = "single-use-approval",
        Status = GrantStatus.Active,
        Subject = "alice",
        Session = "sess-1",
        TokenHash = "sha256:token",
        Workload = "spiffe://prod.example/ns/ci/sa/deployer",
        Origins = ["10.1.0.0/16", "2001:db8::/32"],
        RequestHash = "sha256:request",
        Digests = new RequestDigests("sha256:m", "sha256:p", "sha256:q", "sha256:h", "sha256:b"),
        Method = "POST",
        Path = "/deploy/v1/releases",
        Query = "env=prod",
        MaxUses = 3,
        UsesRemaining = 2,
        NotBefore = Now.AddMinutes(-1),
        ExpiresAt = Now.AddMinutes(5),
        Reason = "CHG-1234",
        CreatedBy = "bob",
        ApprovalsRequired = 1,
        Approvers = ["bob"],
        ApprovalAal = 2,
        Bound = Bindings.Origin | Bindings.Session,
        FirstUse = new FirstUse("trace-first", "span-first", Now.AddSeconds(-30), "spiffe://prod.example/ns/ci/sa/deployer", "10.1.2.3"),
        DroppedEvents = 1,
    };

    private static ConsumeRequest Matching(GrantRecord grant) => new()
    {
        GrantId = grant.Id,
        Route = grant.Route,
        Required = Bindings.Subject | Bindings.Session | Bindings.Token | Bindings.Workload | Bindings.Origin | Bindings.Request,
        Subject = grant.Subject,
        Session = grant.Session,
        TokenHash = grant.TokenHash,
        Workload = grant.Workload,
        Origin = IPAddress.Parse("10.1.2.3"),
        RequestHash = grant.RequestHash,
        Digests = grant.Digests,
        TraceId = "trace-" + Guid.NewGuid().ToString("N"),
        SpanId = "span-1",
    };

    private static GrantEvent Created() => new() { Type = GrantEvent.Created, TraceId = "trace-create", Actor = "bob" };

    private static GrantEvent Revoked() => new() { Type = GrantEvent.Revoked, TraceId = "trace-revoke", Actor = "carol" };
}
