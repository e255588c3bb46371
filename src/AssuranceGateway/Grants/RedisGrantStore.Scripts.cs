using AssuranceGateway.Enforcement;

namespace AssuranceGateway.Grants;

// The Lua side of the Redis grant store. Conventions shared by every script:
// - Times are integer microseconds since the Unix epoch (Redis TIME resolution). They stay below 2^53, so Lua's
//   doubles hold them exactly, but Lua prints large numbers as "1.7e+15": every number that is written back goes
//   through fmt() ('%.0f').
// - "Now" is always the store's clock (TIME), never the caller's: SPEC §2 step 6 judges expiry by the store.
// - A hash field that is absent is nil (a null in C#); an empty string is a value. Bindings compare ordinally.
// - Events are JSON objects (cjson) in the grant's event list, oldest first. Every value is a string, including
//   "at", so that cjson never rounds a number. A denied event is written while the list holds fewer than MaxEvents
//   entries (MaxEarlyDenials for a denial decided before the store), any other event while it holds fewer than
//   MaxEventsAnyKind; beyond, it only counts in the hash field "dropped" (the same caps as the in-memory store,
//   GrantRules.CapFor).
// - Every script reads and checks first and writes last: a script that fails halfway (OOM under noeviction) has
//   then written nothing, because Redis does not roll back the writes a failing script already made.
// Reason codes, statuses and event types come from the C# constants (const interpolation), so the two stores
// cannot drift apart in spelling.
internal sealed partial class RedisGrantStore
{
    internal const string StatusPending = GrantStatusNames.Pending;
    internal const string StatusActive = GrantStatusNames.Active;
    internal const string StatusConsumed = GrantStatusNames.Consumed;
    internal const string StatusRevoked = GrantStatusNames.Revoked;

    /// <summary>Flags of <c>ConsumeRequest</c> values that are present (not null), passed as one number.</summary>
    [Flags]
    internal enum Presented
    {
        None = 0,
        Subject = 1,
        Session = 2,
        Token = 4,
        Workload = 8,
        Origin = 16,
        RequestHash = 32,
        Digests = 64,
        TraceId = 128,
        SpanId = 256,

        /// <summary>Digests not sent, but the caller has them: a request mismatch is answered with <see cref="DigestsNeeded"/>.</summary>
        DigestsOnRequest = 512,
    }

    /// <summary>
    /// The consume's answer to a request mismatch when the call carried no digests but the caller has them: nothing was
    /// written, and the caller asks again with them (never a reason code of SPEC §4.3).
    /// </summary>
    internal const string DigestsNeeded = "digests_needed";

    internal static class Scripts
    {
        /// <summary>The largest count a record may hold (the C# reader's int), as text for the scripts.</summary>
        private const string IntLimit = "2147483647";

        /// <summary>The largest time a record may hold, in microseconds: 2^53, the last integer Lua's doubles hold exactly.</summary>
        private const string TimeLimit = "9007199254740992";

        private const string Common = $$"""
            local function fmt(n)
              return string.format('%.0f', n)
            end

            local function now_us()
              local t = redis.call('TIME')
              return tonumber(t[1]) * 1000000 + tonumber(t[2])
            end

            -- Counts an event the full list cannot keep. A counter that is not an integer HINCRBY takes (a hand edit; the
            -- C# reader calls that record unreadable) loses the count: its error came after the script's other writes (the
            -- consume's spent use), a 503 with an unknown outcome. Any other error (out of memory) still fails the script.
            local function count_dropped(hash)
              local r = redis.pcall('HINCRBY', hash, 'dropped', 1)
              if type(r) == 'table' and r.err and not string.find(r.err, 'not an integer', 1, true)
                  and not string.find(r.err, 'would overflow', 1, true) then
                error(r)
              end
            end

            -- Appends one event, or counts it as dropped once the list is full.
            local function append(hash, list, json, max)
              if redis.call('LLEN', list) >= max then
                count_dropped(hash)
              else
                redis.call('RPUSH', list, json)
              end
            end

            -- "No such grant", decided by a read alone, could come from a demoted server that lost the grant in a
            -- failover (replication is asynchronous). A write, even one that changes nothing, is refused there with
            -- READONLY, which the store reports as unavailable. Deleting an absent key is neither replicated nor
            -- persisted, and noeviction allows it when memory is full.
            local function not_found(reply)
              redis.call('DEL', KEYS[1])
              return {reply}
            end

            -- A number of a record as the C# reader takes one (int.Parse, long.Parse: white space, a sign, decimal digits)
            -- and Lua holds exactly, else nil. tonumber alone also takes '0x10', '1e3', '2.5', 'inf' and 'nan', and every
            -- comparison with NaN is false whichever way it is written: an expiry of 'nan' never came, 'nan' uses were
            -- never spent, and the C# reader called the record unreadable all the same.
            local function integer(text, limit)
              if not text or not string.find(text, '^%s*[-+]?%d+%s*$') then return nil end
              local n = tonumber(text)
              if n > limit or n < -limit then return nil end
              return n
            end

            -- No status: no grant, unless the key is there (a hand edit removed the field): that record is unreadable, and
            -- not_found's DEL would delete it. Only on this path, never on a found grant's.
            local function missing(reply, unreadable)
              if redis.call('EXISTS', KEYS[1]) == 1 then return {unreadable} end
              return not_found(reply)
            end

            -- cjson also takes what the C# reader (System.Text.Json) refuses: control characters as they are, and numbers
            -- such as 0x10, +1, 010, 1., nan or inf. A list or first use holding one was used, and the reader then failed on
            -- the reply after the use was spent. Both sides refuse control characters anywhere (no writer puts one there).
            local function has_control(text)
              return string.find(text, '[%z\1-\31]') ~= nil
            end

            -- A list of names (approvers) as the C# reader takes one: a JSON array of strings, without control characters
            -- (cjson takes them as they are, System.Text.Json does not), else nil. Never a script error.
            local function names(text)
              if has_control(text) then return nil end
              local ok, list = pcall(cjson.decode, text)
              if not ok or type(list) ~= 'table' then return nil end
              local count = 0
              for _, name in pairs(list) do
                if type(name) ~= 'string' then return nil end
                count = count + 1
              end
              if count ~= #list then return nil end
              return list
            end

            -- Every literal outside the strings is true, false, null or a number as JSON writes one.
            local function plain_literals(text)
              local bare = string.gsub((string.gsub(text, '\\.', '')), '"[^"]*"', '""')
              for token in string.gmatch(bare, '[^%s{}%[%]:,"]+') do
                if token ~= 'true' and token ~= 'false' and token ~= 'null' then
                  local int, rest = string.match(token, '^%-?(%d+)(.*)$')
                  if not int or (#int > 1 and string.sub(int, 1, 1) == '0') then return false end
                  rest = string.gsub(rest, '^%.%d+', '')
                  rest = string.gsub(rest, '^[eE][-+]?%d+', '')
                  if rest ~= '' then return false end
                end
              end
              -- A first use is one flat object (ReadFirstUse refuses one that nests: past a depth of 64 it cannot read it).
              return not string.find(bare, '[%[%]]') and select(2, string.gsub(bare, '[{}]', '')) == 2
            end

            -- A first use as the C# reader takes one (ReadFirstUse): a flat JSON object whose "at", when there, is a time.
            local function first_use_readable(text)
              if has_control(text) or not plain_literals(text) then return false end
              local ok, u = pcall(cjson.decode, text)
              -- cjson decodes [] and {} alike: the text says which.
              if not ok or type(u) ~= 'table' or not string.find(text, '^%s*{') then return false end
              local at = u.at
              if at == nil then return true end
              if type(at) == 'string' then return integer(at, {{TimeLimit}}) ~= nil end
              return type(at) == 'number' and at == math.floor(at) and at <= {{TimeLimit}} and at >= -{{TimeLimit}}
            end

            -- An event prepared by the caller, stamped with the store's time (and an actor when given).
            local function stamp(json, now, actor)
              local e = cjson.decode(json)
              e.at = fmt(now)
              if actor then e.actor = actor end
              return cjson.encode(e)
            end

            """;

        /// <summary>
        /// Creates a grant with its <c>created</c> event (and the creator's <c>approved</c> event).
        /// KEYS[1] grant hash, KEYS[2] event list.
        /// ARGV[1] expiresAt, used when ARGV[2] is "", ARGV[2] ttl (microseconds) or "": with a ttl, expiresAt is the later
        /// of the store's now and ARGV[3] (notBefore, or ""), plus the ttl, so that no gateway's clock sets a window,
        /// ARGV[4] evidence retention (ms: the keys expire that long after the grant), ARGV[5] created event JSON (no "at"),
        /// ARGV[6] approved event JSON (no "at") or "" when the grant has no approver, ARGV[7..] field, value, ...
        /// Returns {"conflict"} or {"done", createdAt, expiresAt}.
        /// </summary>
        private const string CreateText = Common + """
            if redis.call('EXISTS', KEYS[1]) == 1 then
              return {'conflict'}
            end
            local now = now_us()
            local expires = tonumber(ARGV[1])
            if ARGV[2] ~= '' then
              local opens = now
              if ARGV[3] ~= '' and tonumber(ARGV[3]) > now then opens = tonumber(ARGV[3]) end
              expires = opens + tonumber(ARGV[2])
            end
            redis.call('HSET', KEYS[1], 'createdAt', fmt(now), 'expiresAt', fmt(expires), unpack(ARGV, 7))
            redis.call('DEL', KEYS[2])
            redis.call('RPUSH', KEYS[2], stamp(ARGV[5], now))
            if ARGV[6] ~= '' then
              redis.call('RPUSH', KEYS[2], stamp(ARGV[6], now))
            end
            -- Evidence outlives the grant by the retention period, then both keys go together. Rounded up to the millisecond
            -- (PEXPIREAT's unit), so that with no retention the keys never go before the grant does.
            local keyExpiry = fmt(math.floor((expires + 999) / 1000) + tonumber(ARGV[4]))
            redis.call('PEXPIREAT', KEYS[1], keyExpiry)
            redis.call('PEXPIREAT', KEYS[2], keyExpiry)
            return {'done', fmt(now), fmt(expires)}
            """;

        /// <summary>
        /// SPEC §2 step 6 in one script: every check of <c>GrantRules.Check</c> in the same order, then the use consumed,
        /// or the denial recorded (and the grant revoked when the reason is in RevokeOn). Dry run: decide, write nothing.
        /// KEYS[1] grant hash, KEYS[2] event list.
        /// ARGV[1] route, upper-cased (routes compare ignoring case), ARGV[2] bindings the policy requires (flags),
        /// ARGV[3] which of the following values are present (<see cref="Presented"/> flags; with
        /// <see cref="Presented.DigestsOnRequest"/>, a request mismatch is answered {DigestsNeeded, tag}, nothing written),
        /// ARGV[4] subject, ARGV[5] session, ARGV[6] token hash, ARGV[7] workload,
        /// ARGV[8] origin address as lower-case hex of its bytes (IPv4-mapped IPv6 already made IPv4),
        /// ARGV[9] origin as text (for the record), ARGV[10] request hash,
        /// ARGV[11..15] request digests: method, path, query, headers, body,
        /// ARGV[16] reasons that revoke, space-separated, ARGV[17] trace id, ARGV[18] span id,
        /// ARGV[19] "1" for a dry run, ARGV[20] the list length up to which a denied event is kept (GrantRules.MaxEvents),
        /// ARGV[21] the call's tag, echoed as the reply's last element (the caller checks that the reply is its own),
        /// ARGV[22] the approvers the policy in force asks for, ARGV[23] the approval AAL it asks for.
        /// Returns {reason, tag} when the grant does not exist (or cannot be read), else {reason, status, usesRemaining,
        /// mismatch (space-separated), revoked (0|1), firstUse JSON|nil, approvers JSON|nil, approvalAal, subject|nil,
        /// workload|nil, requestHash|nil, tag}.
        /// </summary>
        private const string ConsumeText = Common + $$"""
            -- Only the fields a decision reads (the request digests only on a request mismatch), named in place: a
            -- list of names and a loop over it cost more than the HMGET itself. An absent field is false, not nil;
            -- every use below is a truth test or a comparison with a string, for which the two are alike.
            local v = redis.call('HMGET', KEYS[1], 'status', 'expiresAt', 'notBefore', 'routeKey', 'bound', 'subject',
              'session', 'token', 'workload', 'originNets', 'request', 'digests', 'uses', 'firstUse', 'approvers', 'approvalAal')
            if not v[1] then
              return {missing('{{ReasonCodes.GrantNotFound}}', '{{ReasonCodes.GrantUnreadable}}')[1], ARGV[21]}
            end
            local g = {
              status = v[1], expiresAt = v[2], notBefore = v[3], routeKey = v[4], bound = v[5], subject = v[6],
              session = v[7], token = v[8], workload = v[9], originNets = v[10], request = v[11], digests = v[12],
              uses = v[13], firstUse = v[14], approvers = v[15], approvalAal = v[16],
            }

            local given = tonumber(ARGV[3])
            local function presented(index, flag)
              if bit.band(given, flag) ~= 0 then return ARGV[index] end
              return nil
            end

            -- Whole nibbles first, then the leading bits of the next one. Addresses of another family have another
            -- length and never match, as IPNetwork.Contains.
            local function in_network(address, network)
              -- An entry that is not "hex/prefix" (a hand edit) matches nothing, as GrantRules.OriginAllowed skips an origin
              -- that does not parse: a Lua error here was a 503 with an unknown outcome.
              local base, prefix = string.match(network, '^(%x+)/(%d+)$')
              if not base or #base ~= #address then return false end
              local bits = tonumber(prefix)
              if bits > #base * 4 then return false end
              local nibbles = math.floor(bits / 4)
              if string.sub(base, 1, nibbles) ~= string.sub(address, 1, nibbles) then return false end
              local rest = bits % 4
              if rest == 0 then return true end
              local unit = 2 ^ (4 - rest)
              local a = tonumber(string.sub(address, nibbles + 1, nibbles + 1), 16)
              local b = tonumber(string.sub(base, nibbles + 1, nibbles + 1), 16)
              return math.floor(a / unit) == math.floor(b / unit)
            end

            local function origin_allowed(networks, address)
              if not networks or not address then return false end
              for network in string.gmatch(networks, '%S+') do
                if in_network(address, network) then return true end
              end
              return false
            end

            -- The approvers, decoded once (before anything is written, see below). A list that is not a JSON array of strings (a hand edit)
            -- makes the record unreadable (decided after the checks, before anything is written), never a script error
            -- (a 503 with an unknown outcome) nor a count of something else (a string's length).
            local unreadable = false
            local approver_list
            local function approvers_of()
              if approver_list == nil then
                approver_list = names(g.approvers)
                if approver_list == nil then
                  approver_list = {}
                  unreadable = true
                end
              end
              return approver_list
            end

            local function approved_by(approvers, subject)
              -- A subject of letters, digits and . _ @ : - is written verbatim by both encoders that write this list
              -- (System.Text.Json, cjson): not found as a quoted string, it is no approver, and the list is not decoded.
              if not string.find(subject, '[^%w%._@:%-]') and not string.find(approvers, '"' .. subject .. '"', 1, true) then
                return false
              end
              for _, approver in ipairs(approvers_of()) do
                if approver == subject then return true end
              end
              return false
            end

            -- A record this version cannot read (an unknown status, a count or time that is not a number, a binding it
            -- has no name for, which a newer version may have added during a rolling upgrade) is never used, and nothing
            -- is written to it: checking the bindings it knows and ignoring the rest would let the grant through where the
            -- version that wrote it would refuse.
            if (g.status ~= '{{StatusActive}}' and g.status ~= '{{StatusConsumed}}' and g.status ~= '{{StatusPending}}'
                and g.status ~= '{{StatusRevoked}}') or not integer(g.expiresAt, {{TimeLimit}}) or not integer(g.uses, {{IntLimit}})
                or (g.notBefore and not integer(g.notBefore, {{TimeLimit}})) or (g.approvalAal and not integer(g.approvalAal, {{IntLimit}}))
                or (g.bound and (not integer(g.bound, {{IntLimit}}) or bit.band(tonumber(g.bound), bit.bnot({{BindingNames.KnownText}})) ~= 0)) then
              return {'{{ReasonCodes.GrantUnreadable}}', ARGV[21]}
            end

            local now = now_us()
            -- A binding is checked when the policy demands it or when the issuer put it on the grant anyway.
            local check = bit.bor(tonumber(ARGV[2]), tonumber(g.bound or '0'))
            local function differs(flag, bound, value)
              return bit.band(check, flag) ~= 0 and (bound == nil or bound ~= value)
            end

            local reason
            local mismatch = {}
            if g.status == '{{StatusPending}}' then
              reason = '{{ReasonCodes.GrantPending}}'
            elseif g.status == '{{StatusRevoked}}' then
              reason = '{{ReasonCodes.GrantRevoked}}'
            elseif now >= tonumber(g.expiresAt) then
              reason = '{{ReasonCodes.GrantExpired}}'
            elseif g.notBefore and now < tonumber(g.notBefore) then
              reason = '{{ReasonCodes.GrantNotYetValid}}'
            elseif g.routeKey ~= ARGV[1] then
              reason = '{{ReasonCodes.RouteMismatch}}'
            elseif differs(1, g.subject, presented(4, 1)) then
              reason = '{{ReasonCodes.SubjectMismatch}}'
            elseif differs(2, g.session, presented(5, 2)) then
              reason = '{{ReasonCodes.SessionMismatch}}'
            elseif differs(4, g.token, presented(6, 4)) then
              reason = '{{ReasonCodes.TokenMismatch}}'
            elseif differs(8, g.workload, presented(7, 8)) then
              reason = '{{ReasonCodes.WorkloadMismatch}}'
            elseif bit.band(check, 16) ~= 0 and not origin_allowed(g.originNets, presented(8, 16)) then
              reason = '{{ReasonCodes.OriginMismatch}}'
            elseif differs(32, g.request, presented(10, 32)) then
              reason = '{{ReasonCodes.RequestMismatch}}'
              if g.digests and bit.band(given, 64) == 0 and bit.band(given, 512) ~= 0 then
                -- The caller computes its digests only when a mismatch needs them: it asks again with them, and this
                -- call has written nothing.
                return {'{{DigestsNeeded}}', ARGV[21]}
              end
              if g.digests and bit.band(given, 64) ~= 0 then
                local parts = {'method', 'path', 'query', 'headers', 'body'}
                local stored = redis.call('HMGET', KEYS[1], 'd.method', 'd.path', 'd.query', 'd.headers', 'd.body')
                for i = 1, 5 do
                  if stored[i] ~= ARGV[10 + i] then
                    mismatch[#mismatch + 1] = parts[i]
                  end
                end
              end
            elseif not g.subject and g.approvers and bit.band(given, 1) ~= 0 and approved_by(g.approvers, ARGV[4]) then
              -- After every binding (GrantRules.SelfApproved): no subject on the grant, so the API could not keep its
              -- approvers from using it.
              reason = '{{ReasonCodes.SelfApproval}}'
            elseif tonumber(g.uses) <= 0 then
              -- Before the approval rule (GrantRules.Check): a spent grant is a replay, whatever quorum a reload set since.
              reason = '{{ReasonCodes.Replayed}}'
            elseif tonumber(g.approvalAal or '0') < tonumber(ARGV[23])
                or (tonumber(ARGV[22]) > 1 and (not g.approvers or #approvers_of() < tonumber(ARGV[22]))) then
              -- GrantRules.ShortOfApprovals: the quorum and the approvers' AAL of the policy in force. The count matters only
              -- for a quorum above one (an active grant always has an approver).
              reason = '{{ReasonCodes.GrantPending}}'
            else
              reason = '{{ReasonCodes.Ok}}'
            end

            -- The list is read back by the caller too (the evidence names the approvers), so it is decoded here whatever
            -- the quorum: read only for a quorum above one, a damaged list on a grant of a one-approver policy was used,
            -- and the gateway then failed on its own reply (a 500, the use spent) or took a JSON scalar for no approvers.
            if g.approvers then approvers_of() end
            -- The first use is echoed to the caller, who reads it for a replay's evidence only: a damaged one was a 500
            -- after the denial was written. Judged for a replay alone, since reading it costs 2-9 µs (measured with EVAL
            -- here), more than half of what the rest of an allowed use of a multi-use grant costs the script.
            if reason == '{{ReasonCodes.Replayed}}' and g.firstUse and not first_use_readable(g.firstUse) then
              unreadable = true
            end
            if unreadable then
              return {'{{ReasonCodes.GrantUnreadable}}', ARGV[21]}
            end

            local revoke = false
            if reason ~= '{{ReasonCodes.Ok}}' and g.status ~= '{{StatusRevoked}}' then
              for r in string.gmatch(ARGV[16], '%S+') do
                if r == reason then revoke = true end
              end
            end

            local status = g.status
            local uses = tonumber(g.uses)
            local first = g.firstUse
            if ARGV[19] == '1' then
              -- Shadow mode: report what enforcement would have done, change nothing.
              if revoke then status = '{{StatusRevoked}}' end
              if reason == '{{ReasonCodes.Ok}}' then uses = uses - 1 end
            else
              local max = tonumber(ARGV[20])
              local e = {
                at = fmt(now), traceId = presented(17, 128), spanId = presented(18, 256),
                workload = presented(7, 8), origin = presented(9, 16),
              }
              if reason == '{{ReasonCodes.Ok}}' then
                uses = uses - 1
                if uses == 0 then status = '{{StatusConsumed}}' end
                -- Write only what changed: the count always, the status when it changes, the first use once.
                local changes = {'uses', fmt(uses)}
                if status ~= g.status then
                  changes[#changes + 1] = 'status'
                  changes[#changes + 1] = status
                end
                if not first then
                  first = cjson.encode(e)
                  changes[#changes + 1] = 'firstUse'
                  changes[#changes + 1] = first
                end
                redis.call('HSET', KEYS[1], unpack(changes))
                e.type = '{{GrantEvent.Used}}'
                -- A full event list only counts the event: spare the encoding then. Denials cannot fill it for a use.
                if redis.call('LLEN', KEYS[2]) >= {{GrantRules.MaxEventsAnyKindText}} then
                  count_dropped(KEYS[1])
                else
                  redis.call('RPUSH', KEYS[2], cjson.encode(e))
                end
              else
                e.type = '{{GrantEvent.Denied}}'
                e.reason = reason
                if #mismatch > 0 then e.mismatch = mismatch end
                append(KEYS[1], KEYS[2], cjson.encode(e), max)
                if revoke then
                  e.type = '{{GrantEvent.Revoked}}'
                  e.mismatch = nil
                  append(KEYS[1], KEYS[2], cjson.encode(e), {{GrantRules.MaxEventsAnyKindText}})
                  status = '{{StatusRevoked}}'
                  redis.call('HSET', KEYS[1], 'status', status)
                end
              end
            end

            return {
              reason, status, fmt(uses), table.concat(mismatch, ' '), revoke and 1 or 0, first or false,
              g.approvers or false, g.approvalAal or '0', g.subject or false, g.workload or false, g.request or false,
              ARGV[21],
            }
            """;

        /// <summary>
        /// The grant and its events, read together. KEYS[1] grant hash, KEYS[2] event list.
        /// Returns {hash as field, value, ..., events}; an empty hash when the grant does not exist.
        /// </summary>
        private const string GetText = """
            return {redis.call('HGETALL', KEYS[1]), redis.call('LRANGE', KEYS[2], 0, -1)}
            """;

        /// <summary>
        /// Revokes a grant (idempotent: a revoked grant keeps its first revocation).
        /// KEYS[1] grant hash, KEYS[2] event list. ARGV[1] revoked event JSON (no "at"), ARGV[2] maximum events,
        /// ARGV[3] "1" to revoke only a pending grant (a denial).
        /// Returns {"not_found"}, {"unreadable"} (a record without a status), {"conflict", status} or {"done", status before, subject|nil}.
        /// </summary>
        private const string RevokeText = Common + $$"""
            local found = redis.call('HMGET', KEYS[1], 'status', 'subject')
            if not found[1] then
              return missing('not_found', 'unreadable')
            end
            if ARGV[3] == '1' and found[1] ~= '{{StatusPending}}' then
              return {'conflict', found[1]}
            end
            if found[1] ~= '{{StatusRevoked}}' then
              append(KEYS[1], KEYS[2], stamp(ARGV[1], now_us()), tonumber(ARGV[2]))
              redis.call('HSET', KEYS[1], 'status', '{{StatusRevoked}}')
            end
            return {'done', found[1], found[2]}
            """;

        /// <summary>
        /// Adds one distinct approver to a pending grant; activates it at quorum. The grant's approval AAL is the lowest
        /// AAL among its approvers.
        /// KEYS[1] grant hash, KEYS[2] event list. ARGV[1] approver, ARGV[2] approver AAL, ARGV[3] approved event JSON
        /// (no "at", no actor), ARGV[4] maximum events, ARGV[5] how long an activated grant stays usable, in microseconds from now or
        /// its notBefore, whichever is later (-1: its expiry stays), ARGV[6] the quorum of the policy in force (raises the
        /// grant's own, never lowers it).
        /// Returns {"not_found"}, {"unreadable"} (the approvers list, a number it reads, no status), {"conflict", status} or {"done", status, approvals remaining,
        /// activated (0|1), subject|nil}.
        /// </summary>
        private const string ApproveText = Common + $$"""
            local g = redis.call('HMGET', KEYS[1], 'status', 'expiresAt', 'approvers', 'approvalAal', 'approvalsRequired', 'subject', 'notBefore')
            local status = g[1]
            if not status then
              return missing('not_found', 'unreadable')
            end
            -- The numbers this script reads, as the consume and the C# reader take them, before anything is written: a
            -- damaged one was a Lua error (a 503) or, for 'nan', a quorum never reached after the approver was recorded.
            if not integer(g[2], {{TimeLimit}}) or not integer(g[5], {{IntLimit}}) or (g[4] and not integer(g[4], {{IntLimit}}))
                or (g[7] and not integer(g[7], {{TimeLimit}})) then
              if status ~= '{{StatusPending}}' then return {'conflict', status} end
              return {'unreadable'}
            end
            local now = now_us()
            if status ~= '{{StatusPending}}' or now >= tonumber(g[2]) then
              return {'conflict', status}
            end
            local approvers = {}
            if g[3] then
              -- A list that is not a JSON array of strings (a hand edit after the API read the grant) is refused before
              -- anything is written (the raised quorum below included), as the consume refuses it: a Lua error here was a
              -- 503 with an unknown outcome.
              approvers = names(g[3])
              if approvers == nil then return {'unreadable'} end
            end
            if tonumber(ARGV[6]) > tonumber(g[5]) then
              g[5] = ARGV[6]
              redis.call('HSET', KEYS[1], 'approvalsRequired', g[5])
            end
            local known = false
            for _, a in ipairs(approvers) do
              if a == ARGV[1] then known = true end
            end
            local activated = 0
            if not known then
              local aal = tonumber(ARGV[2])
              if #approvers > 0 then aal = math.min(tonumber(g[4] or '0'), aal) end
              approvers[#approvers + 1] = ARGV[1]
              append(KEYS[1], KEYS[2], stamp(ARGV[3], now, ARGV[1]), tonumber(ARGV[4]))
              redis.call('HSET', KEYS[1], 'approvers', cjson.encode(approvers), 'approvalAal', fmt(aal))
              if #approvers >= tonumber(g[5]) then
                status = '{{StatusActive}}'
                activated = 1
                redis.call('HSET', KEYS[1], 'status', status)
                local window = tonumber(ARGV[5])
                if window >= 0 then
                  local opens = now
                  if g[7] and tonumber(g[7]) > now then opens = tonumber(g[7]) end
                  if opens + window < tonumber(g[2]) then
                    redis.call('HSET', KEYS[1], 'expiresAt', fmt(opens + window))
                  end
                end
              end
            end
            return {'done', status, fmt(math.max(0, tonumber(g[5]) - #approvers)), activated, g[6]}
            """;

        /// <summary>
        /// Appends an event as given (stamped with the store's clock when it has no "at"), without changing state.
        /// KEYS[1] grant hash, KEYS[2] event list. ARGV[1] event JSON, ARGV[2] maximum events, ARGV[3] "1" = only when
        /// neither the very same event nor one of its type for its trace id is there yet (a retried record must not
        /// appear twice).
        /// Returns 1 when appended (or counted as dropped), 0 otherwise.
        /// </summary>
        private const string AppendEventText = Common + """
            if redis.call('EXISTS', KEYS[1]) == 0 then
              return 0
            end
            -- The whole list only when it is read (a retry's check, a late event's place): a denial recorded before any
            -- consume costs EXISTS, LLEN and RPUSH, however long the list.
            local given = cjson.decode(ARGV[1])
            local at = tonumber(given.at or '')
            if ARGV[3] ~= '1' and not at then
              if redis.call('LLEN', KEYS[2]) >= tonumber(ARGV[2]) then
                count_dropped(KEYS[1])
              else
                redis.call('RPUSH', KEYS[2], stamp(ARGV[1], now_us()))
              end
              return 1
            end
            local events = redis.call('LRANGE', KEYS[2], 0, -1)
            if ARGV[3] == '1' then
              -- A retried record whose first attempt ran after all: the same event, or one of the same type for the same
              -- request (the first attempt may have been stamped by this store, with another "at").
              for _, e in ipairs(events) do
                if e == ARGV[1] then return 0 end
                if given.traceId then
                  local other = cjson.decode(e)
                  if other.type == given.type and other.traceId == given.traceId then return 0 end
                end
              end
            end
            if #events >= tonumber(ARGV[2]) then
              count_dropped(KEYS[1])
              return 1
            end
            if not at then
              -- No time given: the store's, so it follows every event the store stamped before.
              redis.call('RPUSH', KEYS[2], stamp(ARGV[1], now_us()))
              return 1
            end
            -- Events stay oldest first (SPEC §5.2): one recorded late (an unknown outcome, written once Redis answers
            -- again, after the use that the timed-out consume made when Redis woke up) goes before the events that are
            -- later than it, not at the end.
            local later = nil
            for i = #events, 1, -1 do
              local other = tonumber(cjson.decode(events[i]).at or '')
              if other == nil or other <= at then break end
              later = events[i]
            end
            if later then
              redis.call('LINSERT', KEYS[2], 'BEFORE', later, ARGV[1])
            else
              redis.call('RPUSH', KEYS[2], ARGV[1])
            end
            return 1
            """;

        /// <summary>
        /// Deletes a grant that was created a moment ago and must not stay (its subject had too many pending grants).
        /// KEYS[1] grant hash, KEYS[2] event list.
        /// </summary>
        private const string DeleteText = $$"""
            if redis.call('HGET', KEYS[1], 'status') == '{{StatusPending}}' then
              return redis.call('DEL', KEYS[1], KEYS[2])
            end
            return 0
            """;

        /// <summary>
        /// Takes one of a subject's pending slots. KEYS[1] the subject's pending set (score: expiry, µs).
        /// ARGV[1] grant id, ARGV[2] its expiry (µs), ARGV[3] the limit, ARGV[4..] members known to be stale (their
        /// grant is gone or no longer pending), removed first.
        /// Returns {"done", now} or {"too_many", now, {members}}.
        /// </summary>
        private const string ReservePendingText = Common + """
            local now = now_us()
            for i = 4, #ARGV do
              redis.call('ZREM', KEYS[1], ARGV[i])
            end
            redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', fmt(now))
            if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
              return {'too_many', fmt(now), redis.call('ZRANGE', KEYS[1], 0, -1)}
            end
            redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
            -- The set lives as long as its longest-lived member.
            local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
            redis.call('PEXPIREAT', KEYS[1], fmt(math.floor(tonumber(last[2]) / 1000) + 1))
            return {'done', fmt(now)}
            """;

        private const string PrunePendingIndex = """
            -- Drops pending ids whose expiry passed, from both sets of the index.
            local function prune(created, expires, now)
              local gone = redis.call('ZRANGEBYSCORE', expires, '-inf', fmt(now))
              for _, id in ipairs(gone) do
                redis.call('ZREM', created, id)
                redis.call('ZREM', expires, id)
              end
            end

            """;

        /// <summary>
        /// Adds a pending grant to the index that <c>ListPendingAsync</c> reads.
        /// KEYS[1] ids by creation time, KEYS[2] ids by expiry (both µs). ARGV[1] id, ARGV[2] createdAt, ARGV[3] expiresAt.
        /// </summary>
        private const string IndexPendingText = Common + PrunePendingIndex + """
            local now = now_us()
            prune(KEYS[1], KEYS[2], now)
            redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
            redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
            local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
            local until_ms = fmt(math.floor(tonumber(last[2]) / 1000) + 1)
            redis.call('PEXPIREAT', KEYS[1], until_ms)
            redis.call('PEXPIREAT', KEYS[2], until_ms)
            return 1
            """;

        /// <summary>
        /// One page of pending ids, oldest first, after a position given by value, not by rank: grants leave the index
        /// (approved, denied, revoked, expired) while someone pages through it, and a rank would then skip the ids that
        /// moved up past it. KEYS[1] ids by creation time, KEYS[2] ids by expiry. ARGV[1] creation time (µs) of the last id
        /// of the previous page, "" for the first page, ARGV[2] that id, ARGV[3] page size.
        /// Returns {now, {id, creation time, id, creation time, ...}}.
        /// </summary>
        private const string PendingPageText = Common + PrunePendingIndex + """
            local now = now_us()
            prune(KEYS[1], KEYS[2], now)
            local size = tonumber(ARGV[3])
            if ARGV[1] == '' then
              return {fmt(now), redis.call('ZRANGE', KEYS[1], 0, size - 1, 'WITHSCORES')}
            end
            -- Ids created in the same microsecond as the last one come in id order (byte order, as the sorted set keeps
            -- them; Lua's '>' would follow the server's locale): those after it first, then later times.
            local function after(a, b)
              local n = math.min(#a, #b)
              for i = 1, n do
                local x, y = string.byte(a, i), string.byte(b, i)
                if x ~= y then return x > y end
              end
              return #a > #b
            end
            local page = {}
            local tied = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[1], 'WITHSCORES')
            for i = 1, #tied, 2 do
              if after(tied[i], ARGV[2]) and #page < size * 2 then
                page[#page + 1] = tied[i]
                page[#page + 1] = tied[i + 1]
              end
            end
            if #page < size * 2 then
              local rest = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0, size - #page / 2)
              for i = 1, #rest do page[#page + 1] = rest[i] end
            end
            return {fmt(now), page}
            """;

        /// <summary>Removes ids (ARGV) from every sorted set in KEYS (all of one slot).</summary>
        private const string UnindexText = """
            for _, key in ipairs(KEYS) do
              for _, id in ipairs(ARGV) do
                redis.call('ZREM', key, id)
              end
            end
            return 1
            """;

        public static readonly StoreScript Create = new(CreateText);
        public static readonly StoreScript Consume = new(ConsumeText);
        public static readonly StoreScript Get = new(GetText);
        public static readonly StoreScript Revoke = new(RevokeText);
        public static readonly StoreScript Approve = new(ApproveText);
        public static readonly StoreScript AppendEvent = new(AppendEventText);
        public static readonly StoreScript Delete = new(DeleteText);
        public static readonly StoreScript ReservePending = new(ReservePendingText);
        public static readonly StoreScript IndexPending = new(IndexPendingText);
        public static readonly StoreScript PendingPage = new(PendingPageText);
        public static readonly StoreScript Unindex = new(UnindexText);

        public static readonly StoreScript[] All =
            [Create, Consume, Get, Revoke, Approve, AppendEvent, Delete, ReservePending, IndexPending, PendingPage, Unindex];
    }
}

/// <summary>
/// A script and its SHA-1, by which Redis knows it. Calls send EVALSHA with the digest: handing 1.2.6 the text instead
/// makes it look the script up in its cache by the whole text on every call (measured: the largest single managed
/// cost of a consume, ~2.5% of the gateway's CPU under load).
/// </summary>
internal sealed class StoreScript
{
    public StoreScript(string text)
    {
        Text = text;
#pragma warning disable CA5350 // Not a security use: SHA-1 is how Redis names scripts (EVALSHA).
        Sha1 = System.Security.Cryptography.SHA1.HashData(System.Text.Encoding.UTF8.GetBytes(text));
#pragma warning restore CA5350
        Sha1Hex = System.Text.Encoding.ASCII.GetBytes(Convert.ToHexStringLower(Sha1));
    }

    public string Text { get; }

    public byte[] Sha1 { get; }

    /// <summary>The digest as EVALSHA spells it: 40 lower-case hex digits, ASCII.</summary>
    public byte[] Sha1Hex { get; }
}
