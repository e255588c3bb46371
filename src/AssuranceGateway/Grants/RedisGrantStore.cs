using System.Buffers;
using System.Globalization;
using System.Net;
using System.Threading.Channels;
using AssuranceGateway.Configuration;
using AssuranceGateway.Enforcement;
using Microsoft.Extensions.Logging;
using StackExchange.Redis;

namespace AssuranceGateway.Grants;

/// <summary>
/// The shared store: grants in Redis, one Lua script per atomic operation, with exactly the semantics of
/// <see cref="InMemoryGrantStore"/> (the store conformance tests run the same cases against both).
/// </summary>
/// <remarks>
/// <para><b>Consume</b> (SPEC §2 step 6) is one <c>EVALSHA</c>: every check of <see cref="GrantRules.Check"/> in order,
/// judged by Redis <c>TIME</c>, and the use (or the denial, or the revocation) written in the same script. One round
/// trip on the allow path (SPEC §7.5); Lua atomicity gives "at most N uses" across any number of gateways (§7.2).</para>
/// <para><b>StackExchange.Redis 1.2.6</b> has no timeout on async calls, can get stuck reconnecting, and deadlocks with
/// <c>PreserveAsyncOrder</c>. So: every call here is bounded by <see cref="StoreSettings.Timeout"/> and fails with
/// <see cref="StoreUnavailableException"/>; a consume is never retried, and one that timed out after it was sent (it may
/// still run when Redis wakes up) is queued and recorded on the grant as <c>unknown_outcome</c> once Redis answers; a
/// watchdog pings every 250 ms and rebuilds the multiplexer after ~1 s without an answer.</para>
/// <para><b>Pending grants per subject, in Redis Cluster.</b> The grant's keys are tagged by grant id, the subject's
/// pending set by subject: two slots, which one script may not touch together in a cluster. Putting the subject into the
/// grant's hash tag is not possible (ids are opaque, at most 64 characters, and chosen by their issuer), and tagging
/// every grant alike would put all grants, and every consume, on one node. So creation is three single-slot steps,
/// each atomic on its own: (1) create the grant (id conflict checked there); (2) take a slot
/// in the subject's set, atomically against other creators for the same subject (prune expired members, count,
/// add) — when the limit is reached, the grant made in step 1 is deleted again and the answer is <c>TooMany</c>;
/// (3) add the id to the list index for <see cref="ListPendingAsync"/> (one <c>{pending}</c> slot: written when a grant
/// enters or leaves pending, never by a consume). The index sets are hints, the grant hash is the
/// truth: an approval or revocation removes the id from them in a separate best-effort step, and a member whose grant
/// is no longer pending (or gone) is found and removed when a subject hits its limit or when pending grants are
/// listed. The grant always exists before its index entries, so a member without a grant is always stale. A create
/// that fails between the steps (store unavailable) answers store_unavailable; the pending grant it may leave behind
/// was never shown to anyone and lapses with its pending TTL.</para>
/// <para><b>Replica acknowledgement</b> (<see cref="StoreSettings.RequireReplicaAcks"/>, SPEC §7.6): consumes then go on
/// a connection of their own, as the script followed by WAIT in the same write (see
/// <see cref="ConsumeAcknowledgedAsync"/>). Not supported on Redis Cluster, where it fails closed.</para>
/// <para><b>Thread pool.</b> 1.2.6 parks thread-pool threads (measured here: the first multiplexer of a process
/// stalled every pool continuation for ~1 s on a 2-core machine while the pool grew). Every deadline of this store is a
/// pool continuation, so a host on a small machine should raise the pool minimum (ThreadPool.SetMinThreads or
/// <c>System.Threading.ThreadPool.MinThreads</c> in runtimeconfig); the tests do.</para>
/// </remarks>
internal sealed partial class RedisGrantStore : IGrantStore, IDisposable
{
    private static readonly TimeSpan WatchdogInterval = TimeSpan.FromMilliseconds(250);
    private static readonly TimeSpan RebuildAfter = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan UnknownOutcomeRetry = TimeSpan.FromMilliseconds(200);
    private const int UnknownOutcomeCapacity = 1024;

    /// <summary>How long the close may spend writing queued records (each append is bounded by Store:Timeout too).</summary>
    private static readonly TimeSpan FinalFlushLimit = TimeSpan.FromSeconds(2);
    private const int PendingPageSize = 100;
    private const string OperationPing = "ping";
    private static readonly TimeSpan RefusalLogInterval = TimeSpan.FromMinutes(1);
    private static readonly TimeSpan EvictionCheckInterval = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Why Redis may evict the gateway's keys (an evicting maxmemory-policy under a memory limit), null when it cannot;
    /// set by the watchdog (<see cref="CheckEvictionAsync"/>). While set, uses, new grants and approvals fail closed.
    /// </summary>
    private string? _evictionRisk;

    /// <summary>
    /// Completed at the first judgement of whether Redis may evict (<see cref="CheckEvictionAsync"/>). Until then nothing
    /// that eviction could take away is written: those calls wait for it (up to Store:Timeout), then fail closed.
    /// </summary>
    private readonly TaskCompletionSource _evictionJudged = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Completes at the first eviction judgement (for tests that start a gateway as a readiness probe would).</summary>
    internal Task EvictionJudged => _evictionJudged.Task;

    /// <summary>The connection the eviction check last ran on (null: check on the next healthy round), and when.</summary>
    private ConnectionMultiplexer? _evictionCheckedOn;
    private long _evictionCheckedAt;

    /// <summary>Whether the last clock comparison found Redis's clock off by more than <see cref="ClockOffsetWarning"/>.</summary>
    private bool _clockOffReported;

    /// <summary>The last consume tag handed out (<see cref="NextConsumeTag"/>).</summary>
    private long _consumeTags;
    private static readonly TimeSpan ClockOffsetWarning = TimeSpan.FromSeconds(2);
    private long _lastRefusalLogged;

    /// <summary>How the last connection attempt failed (AuthenticationFailure, SocketFailure…); null once connected.</summary>
    private string? _lastConnectionFailure;

    private readonly StoreSettings _settings;
    private readonly TimeProvider _time;
    private readonly ILogger<RedisGrantStore> _logger;
    private readonly ConfigurationOptions _options;
    private readonly GrantKeys _keys;
    private readonly UnknownOutcomeQueue _unknownOutcomes;
    private readonly CancellationTokenSource _stopping = new();
    private readonly Link _shared = new("shared");
    private readonly Link? _acked;
    private readonly Link[] _links;
    private readonly Task[] _watchdogs;
    private readonly Task _unknownOutcomeWriter;
    private int _unknownOutcomeInFlight;

    /// <summary>Dispose has begun (once only); requests are still served until <see cref="_disposed"/>.</summary>
    private int _closing;
    private int _disposed;

    /// <summary>The dedicated consume connection, when one is up (see <see cref="EnsurePipeAsync"/>).</summary>
    private RespPipe? _pipe;

    /// <summary>Opening the consume connection failed and was logged (only the watchdog touches this).</summary>
    private bool _pipeFailureReported;

    public RedisGrantStore(StoreSettings settings, TimeProvider time, ILogger<RedisGrantStore> logger)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(time);
        ArgumentNullException.ThrowIfNull(logger);
        if (string.IsNullOrWhiteSpace(settings.Redis))
        {
            throw new ArgumentException("Assurance:Store:Redis is empty: use the in-process store instead.", nameof(settings));
        }

        _settings = settings;
        _time = time;
        _logger = logger;
        _keys = new GrantKeys(settings.KeyPrefix);
        _options = ConfigurationOptions.Parse(settings.Redis);

        // Connect must not throw when Redis is down: the gateway starts, answers 503 and /readyz says why.
        _options.AbortOnConnectFail = false;
        _options.ConnectTimeout = (int)Math.Clamp(settings.Timeout.TotalMilliseconds * 2, 200, 1000);
        _options.SyncTimeout = (int)Math.Max(1, settings.Timeout.TotalMilliseconds);
        _options.ConnectRetry = 1;
        _options.ReconnectRetryPolicy = new LinearRetry(250);

        // No tie-breaker key and no configuration channel: one interactive connection, no pub/sub socket, no
        // GET of a key the gateway does not own.
        _options.TieBreaker = string.Empty;
        _options.ConfigurationChannel = string.Empty;
        _options.ClientName ??= "assurance-gateway";
        Description = "redis " + string.Join(",", _options.EndPoints.Select(FormatEndPoint));

        _unknownOutcomes = new UnknownOutcomeQueue(
            UnknownOutcomeCapacity, dropped => Log.UnknownOutcomeDropped(_logger, Description, dropped.GrantId, dropped.Event.TraceId));

        if (settings.RequireReplicaAcks > 0)
        {
            _acked = new Link("replica-acknowledged consumes");
            _links = [_shared, _acked];
        }
        else
        {
            _links = [_shared];
        }

        _watchdogs = [.. _links.Select(link => Task.Run(() => WatchdogAsync(link, _stopping.Token)))];
        _unknownOutcomeWriter = Task.Run(() => WriteUnknownOutcomesAsync(_stopping.Token));
    }

    public string Description { get; }

    /// <summary>True while consumes go over the dedicated connection (standalone Redis without TLS).</summary>
    internal bool ConsumesOnDedicatedConnection => Volatile.Read(ref _pipe) is { Broken: null };

    /// <summary>The server is a Redis Cluster node (known once connected).</summary>
    internal bool IsCluster => _shared.IsCluster;

    /// <summary>Consumes whose outcome is unknown and not yet recorded on their grant.</summary>
    internal int UnknownOutcomesPending => _unknownOutcomes.Count + Volatile.Read(ref _unknownOutcomeInFlight);

    public async Task<GrantCreated> CreateAsync(GrantRecord grant, GrantEvent created, int maxPendingPerSubject, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(grant);
        ArgumentNullException.ThrowIfNull(created);
        await RefuseWhileEvictingAsync("create", grant.Id, cancellationToken).ConfigureAwait(false);
        var keys = _keys.GrantAndEvents(grant.Id);
        var result = (RedisResult[])await EvaluateAsync(
            Scripts.Create, keys, CreateArguments(grant, created, (long)_settings.EvidenceRetention.TotalMilliseconds), "create", grant.Id, cancellationToken)
            .ConfigureAwait(false);
        if ((string)result[0] == "conflict")
        {
            return new GrantCreated(GrantChange.Conflict, default);
        }

        // The expiry the script set (by Redis's clock when the grant has a ttl): what the pending index and the API show.
        var expiresAt = (long)result[2];
        var done = new GrantCreated(GrantChange.Done, FromMicros(expiresAt));
        if (grant.Status != GrantStatus.Pending)
        {
            return done;
        }

        if (grant.Subject is not null && !await ReservePendingAsync(grant.Id, grant.Subject, expiresAt, maxPendingPerSubject, cancellationToken).ConfigureAwait(false))
        {
            // Nobody has seen this id yet: taking the grant back leaves the store as if it had never been created.
            await EvaluateAsync(Scripts.Delete, keys, [], "create", grant.Id, cancellationToken).ConfigureAwait(false);
            return new GrantCreated(GrantChange.TooMany, default);
        }

        await EvaluateAsync(
            Scripts.IndexPending, [_keys.PendingByCreation, _keys.PendingByExpiry], [grant.Id, (long)result[1], expiresAt], "create", grant.Id, cancellationToken)
            .ConfigureAwait(false);
        return done;
    }

    public async Task<ConsumeResult> ConsumeAsync(ConsumeRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (!request.DryRun)
        {
            // A dry run (shadow mode) writes nothing that eviction could take away.
            await RefuseWhileEvictingAsync("consume", request.GrantId, cancellationToken).ConfigureAwait(false);
        }

        try
        {
            // A request that differs from its grant's is decided by a second call, which carries the component digests
            // the first one did without: the first call wrote nothing, and only such a denial pays the round trip.
            var reply = await ConsumeOnceAsync(request, withDigests: false).ConfigureAwait(false);
            if (reply is [DigestsNeeded, ..])
            {
                reply = await ConsumeOnceAsync(request, withDigests: true).ConfigureAwait(false);
            }

            return ReadConsumeResult(reply);
        }
        catch (StoreUnavailableException e) when (e.OutcomeUnknown && !request.DryRun)
        {
            // Never retried: the script may have run (or may still run when Redis wakes up). Say so on the grant.
            RememberUnknownOutcome(request);
            throw;
        }
    }

    /// <summary>One consume call, its reply without the tag (checked to be this call's own).</summary>
    private async Task<string?[]> ConsumeOnceAsync(ConsumeRequest request, bool withDigests)
    {
        // Deliberately not cancellable: the call is bounded by Store:Timeout anyway, and walking away from a consume
        // that was sent would turn a known outcome into an unknown one.
        var started = _time.GetTimestamp();
        var grantKey = _keys.GrantText(request.GrantId);
        var tag = NextConsumeTag();
        var text = ConsumeArguments(request, tag, withDigests);
        if (_acked is null && Volatile.Read(ref _pipe) is { Broken: null } pipe
            && await ConsumeThroughPipeAsync(pipe, grantKey, text, tag, request.GrantId).ConfigureAwait(false) is { } fast)
        {
            return fast;
        }

        var keys = GrantKeys.KeysOf(grantKey);
        var args = AsValues(text);
        return OwnReply(
            ConsumeReply(_acked is null || request.DryRun
                ? await RunAsync(_shared, db => EvaluateAsync(db, Scripts.Consume, keys, args), "consume", request.GrantId, CancellationToken.None, started).ConfigureAwait(false)
                : await ConsumeAcknowledgedAsync(_acked, keys, args, request.GrantId).ConfigureAwait(false)),
            tag) ?? throw Unavailable("consume", request.GrantId, "reply to another command", outcomeUnknown: true, null);
    }

    /// <summary>
    /// The consume over the dedicated connection (<see cref="RespPipe"/>). Null when it provably did not run there
    /// (the command never left, or Redis did not know the script): the caller then takes the shared connection.
    /// </summary>
    private async Task<string?[]?> ConsumeThroughPipeAsync(RespPipe pipe, string grantKey, string[] args, string tag, string grantId)
    {
        object? reply;
        try
        {
            reply = await pipe.SendAsync(EncodeConsume(grantKey, args)).ConfigureAwait(false);
        }
        catch (StoreUnavailableException e) when (!e.OutcomeUnknown)
        {
            return null;
        }
        catch (StoreUnavailableException e)
        {
            throw Unavailable("consume", grantId, e.Message, outcomeUnknown: true, e);
        }

        if (reply is RespError { IsNoScript: true } or RespError { IsNotPrimary: true } or RespError { IsOutOfMemory: true } && !await InStepAsync(pipe, tag, reply).ConfigureAwait(false))
        {
            // An error carries no tag, and these three say that nothing ran (the consume is sent again, or the caller
            // told that nothing was written): one that was another command's, on a connection out of step, would run
            // a consume twice or hide one that ran.
            pipe.Abandon("out of step: an error reply was not this consume's");
            Log.PipeUnavailable(_logger, Description, "an error reply was not a consume's own");
            throw Unavailable("consume", grantId, "reply to another command", outcomeUnknown: true, null);
        }

        switch (reply)
        {
            case RespError { IsNoScript: true }:
                ForgetLoadedScripts();
                return null;
            case RespError { IsNotPrimary: true } error:
                // Nothing ran. The primary moved (or is loading): retire this connection (the commands behind this one
                // get their own answers, no new ones go out), the watchdog opens one to wherever the multiplexer finds
                // the primary, and the multiplexer takes this consume.
                pipe.Retire(error.Message);
                Log.PipeUnavailable(_logger, Description, error.Message);
                return null;
            case RespError { IsOutOfMemory: true } error:
                throw Unavailable("consume", grantId, error.Message, outcomeUnknown: false, null);
            case RespError error:
                // Another script error: it ran up to the failure, and nothing says how far.
                throw Unavailable("consume", grantId, error.Message, outcomeUnknown: true, null);
            case object?[] items:
                var text = new string?[items.Length];
                for (var i = 0; i < items.Length; i++)
                {
                    text[i] = items[i] switch
                    {
                        null => null,
                        string value => value,
                        long number => number.ToString(CultureInfo.InvariantCulture),
                        _ => throw UnexpectedReply(),
                    };
                }

                if (OwnReply(text, tag) is not { } own)
                {
                    // Another command's reply: the connection is out of step (a reply lost, one too many), so every
                    // reply still to come on it may be someone else's. Nothing on it is trusted any more, and what
                    // this consume did is unknown.
                    pipe.Abandon("out of step: a consume reply carried another command's tag");
                    Log.PipeUnavailable(_logger, Description, "a consume reply carried another command's tag");
                    throw Unavailable("consume", grantId, "reply to another command", outcomeUnknown: true, null);
                }

                return own;
            default:
                throw UnexpectedReply();
        }

        StoreUnavailableException UnexpectedReply() => Unavailable("consume", grantId, "unexpected reply", outcomeUnknown: true, null);
    }

    /// <summary>
    /// Whether the connection is in step after an untagged reply: an ECHO of the consume's tag sent behind it comes back
    /// as that tag only when the reply before it was the consume's own (replies come in order). Rare (a script cache
    /// flushed, a failover, a full Redis), so the extra round trip costs nothing on the usual path. An ECHO refused as
    /// never sent after a "not the primary" means another caller's check retired the connection, having found it in
    /// step: the answer stands.
    /// </summary>
    private static async Task<bool> InStepAsync(RespPipe pipe, string tag, object? reply)
    {
        try
        {
            return await pipe.SendAsync(RespPipe.Encode("ECHO", tag)).ConfigureAwait(false) is string echoed && string.Equals(echoed, tag, StringComparison.Ordinal);
        }
        catch (StoreUnavailableException e)
        {
            return !e.OutcomeUnknown && reply is RespError { IsNotPrimary: true } && pipe.RetiredCleanly;
        }
    }

    /// <summary>A tag no other consume of this store carries (the consume script echoes it in its reply).</summary>
    private string NextConsumeTag() => Interlocked.Increment(ref _consumeTags).ToString(CultureInfo.InvariantCulture);

    /// <summary>
    /// The consume's EVALSHA in RESP2 (keys: the grant's hash and its event list), encoded from the text in one pass
    /// into a per-thread buffer (valid until this thread encodes the next one; the pipe copies it into a pooled buffer).
    /// </summary>
    private static ReadOnlySpan<byte> EncodeConsume(string grantKey, string[] args)
    {
        var writer = t_commandBuffer ??= new ArrayBufferWriter<byte>(1024);
        writer.ResetWrittenCount();
        RespPipe.WriteArrayHeader(writer, 5 + args.Length);
        RespPipe.WriteBulk(writer, "EVALSHA"u8);
        RespPipe.WriteBulk(writer, Scripts.Consume.Sha1Hex);
        RespPipe.WriteBulk(writer, "2"u8);
        RespPipe.WriteBulk(writer, grantKey);
        RespPipe.WriteBulk(writer, grantKey, GrantKeys.EventsSuffix);
        foreach (var arg in args)
        {
            RespPipe.WriteBulk(writer, arg);
        }

        return writer.WrittenSpan;
    }

    [ThreadStatic]
    private static ArrayBufferWriter<byte>? t_commandBuffer;

    public async Task<GrantRecord?> GetAsync(string id, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(id);
        var result = await EvaluateAsync(Scripts.Get, _keys.GrantAndEvents(id), [], "get", id, cancellationToken).ConfigureAwait(false);
        try
        {
            return ReadGrant(result);
        }
        catch (Exception e) when (e is FormatException or OverflowException or InvalidDataException or KeyNotFoundException or InvalidCastException
            or System.Text.Json.JsonException or InvalidOperationException)
        {
            // InvalidOperationException: a JSON string of the record that is no text (a lone surrogate escape, "\ud800").
            throw new GrantUnreadableException($"the grant's record in the store cannot be read: {e.Message}", e);
        }
    }

    public Task<GrantChange> RevokeAsync(string id, GrantEvent revoked, CancellationToken cancellationToken) =>
        RevokeAsync(id, revoked, onlyPending: false, cancellationToken);

    public Task<GrantChange> DenyPendingAsync(string id, GrantEvent revoked, CancellationToken cancellationToken) =>
        RevokeAsync(id, revoked, onlyPending: true, cancellationToken);

    private async Task<GrantChange> RevokeAsync(string id, GrantEvent revoked, bool onlyPending, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(id);
        ArgumentNullException.ThrowIfNull(revoked);
        var result = (RedisResult[])await EvaluateAsync(
            Scripts.Revoke, _keys.GrantAndEvents(id), [EventJson(revoked, includeAt: false), GrantRules.MaxEventsAnyKind, onlyPending ? 1 : 0],
            onlyPending ? "deny" : "revoke", id, cancellationToken)
            .ConfigureAwait(false);
        switch ((string)result[0])
        {
            case "not_found":
                return GrantChange.NotFound;
            case "conflict":
                return GrantChange.Conflict;
            case "unreadable":
                throw new GrantUnreadableException("the grant's record in the store cannot be read: it has no status");
        }

        if ((string)result[1] == StatusPending)
        {
            await UnindexPendingAsync(id, (string)result[2], cancellationToken).ConfigureAwait(false);
        }

        return GrantChange.Done;
    }

    public async Task<ApproveResult> ApproveAsync(string id, string approver, int approverAal, GrantEvent approved, TimeSpan? activeFor, int minimumApprovals, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(id);
        ArgumentNullException.ThrowIfNull(approver);
        ArgumentNullException.ThrowIfNull(approved);
        await RefuseWhileEvictingAsync("approve", id, cancellationToken).ConfigureAwait(false);
        var result = (RedisResult[])await EvaluateAsync(
            Scripts.Approve, _keys.GrantAndEvents(id), [approver, approverAal, EventJson(approved, includeAt: false), GrantRules.MaxEventsAnyKind, activeFor is { } window ? (long)(window.Ticks / 10) : -1, minimumApprovals], "approve", id, cancellationToken)
            .ConfigureAwait(false);
        switch ((string)result[0])
        {
            case "not_found":
                return new ApproveResult(GrantChange.NotFound, null, 0);
            case "conflict" when (string?)result[1] is StatusPending or StatusActive or StatusConsumed or StatusRevoked:
                return new ApproveResult(GrantChange.Conflict, ParseStatus((string)result[1]), 0);
            case "conflict" or "unreadable":
                // A status this version does not know (a conflict all the same), damaged approvers or numbers.
                throw new GrantUnreadableException("the grant's record in the store cannot be read: its status, approvers or numbers do not parse");
        }

        if ((int)result[3] == 1)
        {
            await UnindexPendingAsync(id, (string)result[4], cancellationToken).ConfigureAwait(false);
        }

        return new ApproveResult(GrantChange.Done, ParseStatus((string)result[1]), (int)result[2]);
    }

    public async Task<IReadOnlyList<GrantRecord>> ListPendingAsync(int limit, string? route, CancellationToken cancellationToken)
    {
        var found = new List<GrantRecord>(Math.Clamp(limit, 0, PendingPageSize));
        var stale = new List<RedisValue>();
        var (afterScore, afterId) = (string.Empty, string.Empty);
        while (found.Count < limit)
        {
            var page = (RedisResult[])await EvaluateAsync(
                Scripts.PendingPage, [_keys.PendingByCreation, _keys.PendingByExpiry], [afterScore, afterId, PendingPageSize], "list", "*", cancellationToken)
                .ConfigureAwait(false);
            var now = FromMicros((long)page[0]);
            var pairs = (RedisResult[])page[1];
            var ids = new string[pairs.Length / 2];
            for (var i = 0; i < ids.Length; i++)
            {
                ids[i] = (string)pairs[2 * i]!;
            }

            if (ids.Length > 0)
            {
                // The score as Redis wrote it: passed back as is, it names exactly the same position.
                (afterScore, afterId) = ((string)pairs[^1]!, ids[^1]);
            }

            var grants = await Task.WhenAll(ids.Select(id => ReadablePendingAsync(id, cancellationToken))).ConfigureAwait(false);
            for (var i = 0; i < ids.Length; i++)
            {
                if (!grants[i].Readable)
                {
                    continue; // logged, and kept in the index (it may be mended, and leaves it at its expiry)
                }

                if (grants[i].Grant is { Status: GrantStatus.Pending } grant && grant.ExpiresAt > now)
                {
                    // Another route's grant stays indexed; the index is one for all routes (its pages bound each read). Routes compare
                    // ignoring case, as the route table and the consume script compare them.
                    if (found.Count < limit && (route is null || string.Equals(grant.Route, route, StringComparison.OrdinalIgnoreCase)))
                    {
                        found.Add(grant);
                    }
                }
                else
                {
                    stale.Add(ids[i]);
                }
            }

            if (ids.Length < PendingPageSize)
            {
                break;
            }
        }

        if (stale.Count > 0)
        {
            await TryUnindexAsync([_keys.PendingByCreation, _keys.PendingByExpiry], [.. stale], cancellationToken).ConfigureAwait(false);
        }

        return found;
    }

    /// <summary>
    /// A listed id's grant (null when it is gone), or not <c>Readable</c> when its record cannot be read. One damaged record
    /// (a hand edit) must not take the whole list of what waits for approval down with it: it is left out and named in
    /// the log; it can be neither approved nor used, and its GET says what is wrong with it.
    /// </summary>
    private async Task<(bool Readable, GrantRecord? Grant)> ReadablePendingAsync(string id, CancellationToken cancellationToken)
    {
        try
        {
            return (true, await GetAsync(id, cancellationToken).ConfigureAwait(false));
        }
        catch (GrantUnreadableException e)
        {
            Log.PendingUnreadable(_logger, Description, id, e.Message);
            return (false, null);
        }
    }

    public async Task AppendEventAsync(string id, GrantEvent grantEvent, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(id);
        ArgumentNullException.ThrowIfNull(grantEvent);
        try
        {
            await EvaluateAsync(
                Scripts.AppendEvent, _keys.GrantAndEvents(id), [EventJson(grantEvent, includeAt: grantEvent.At != default), GrantRules.CapFor(grantEvent), "0"], "append", id, cancellationToken)
                .ConfigureAwait(false);
        }
        catch (StoreUnavailableException) when (grantEvent.Type != GrantEvent.Denied)
        {
            // A record (a spent use that was not delivered) must reach the grant: written once the store answers again,
            // as an unknown outcome is (a retry skips an event already there), with this clock's time now. Not a denial
            // (one decided before the store): anyone with a valid token can cause those in bulk, and in the bounded queue
            // they would push out the unknown outcomes of uses that were spent.
            _unknownOutcomes.Add(new UnknownOutcome(
                id, grantEvent.At == default ? grantEvent with { At = _time.GetUtcNow() } : grantEvent, grantEvent.Workload ?? grantEvent.Origin ?? string.Empty));
            if (Volatile.Read(ref _disposed) != 0)
            {
                ReportUnrecorded();
            }

            throw;
        }
    }

    /// <summary>
    /// A probe key is written, as a consume or a new grant writes: a replica refuses it (READONLY) and so does a Redis out
    /// of memory under noeviction (OOM), while both still answer PING. With RequireReplicaAcks that many replicas must be
    /// connected, as a use needs them. A Redis Cluster must also say that its state is ok.
    /// </summary>
    public async Task<string?> NotReadyAsync(CancellationToken cancellationToken)
    {
        if (Volatile.Read(ref _evictionRisk) is { } risk)
        {
            return risk;
        }

        try
        {
            foreach (var link in _links)
            {
                if (link.IsCluster)
                {
                    // Any live master answers, also while the cluster refuses every key (CLUSTERDOWN, once a master has
                    // been down past cluster-node-timeout): then every enforced request gets 503, so not ready.
                    var info = await RunAsync(link, static db => db.ExecuteAsync("CLUSTER", "INFO"), OperationPing, "*", cancellationToken).ConfigureAwait(false);
                    if (!((string?)info ?? string.Empty).Contains("cluster_state:ok", StringComparison.Ordinal))
                    {
                        return "the cluster's state is not ok (CLUSTER INFO)";
                    }
                }

                await RunAsync(link, db => db.ExecuteAsync("SET", _keys.Readiness, "1", "PX", "60000"), OperationPing, "*", cancellationToken).ConfigureAwait(false);
                var replicas = link.IsCluster ? 0 : _settings.RequireReplicaAcks;
                if (replicas > 0)
                {
                    // Counted, not waited for: a WAIT blocks the connection it is sent on, and readiness is probed often
                    // and by anyone (it takes no token), so it would hold up every other command behind it.
                    var info = (string?)await RunAsync(link, static db => db.ExecuteAsync("INFO", "replication"), OperationPing, "*", cancellationToken).ConfigureAwait(false);
                    var connected = ConnectedReplicas(info);
                    if (connected < replicas)
                    {
                        return $"has {connected} connected replicas, fewer than the {replicas} that Store:RequireReplicaAcks asks for: every use is denied";
                    }
                }
            }

            // Answers, but has not said yet whether it evicts (the watchdog's first INFO is under way or unanswered).
            return _evictionJudged.Task.IsCompleted ? null : NotJudgedYet;
        }
        catch (StoreUnavailableException e)
        {
            return e.InnerException is RedisServerException refusal && Refusal(refusal.Message) is { } cause
                ? cause
                : $"does not answer ({e.Cause})";
        }
        catch (ObjectDisposedException)
        {
            return "closed";
        }
    }

    /// <summary>
    /// Fails closed while Redis may evict the gateway's keys. An evicted grant is only ever refused (grant_not_found),
    /// but what goes with it is the record SPEC §1 keeps for post-incident reconstruction (who used it, from where, the
    /// denials, the revocation of a leaked id) and approvals just given; and anyone with a valid token can fill the store
    /// (denials on a grant id they hold, pending grants in challenge mode), so eviction would let a caller erase the
    /// evidence of their own use. As with a Redis out of memory under noeviction: no write that a grant's record depends
    /// on, nothing sent, the outcome known. Revocations, reads and records of events go on.
    /// </summary>
    private ValueTask RefuseWhileEvictingAsync(string operation, string grantId, CancellationToken cancellationToken)
    {
        if (!_evictionJudged.Task.IsCompleted)
        {
            return WaitForEvictionJudgementAsync(operation, grantId, cancellationToken);
        }

        if (Volatile.Read(ref _evictionRisk) is { } risk)
        {
            throw Unavailable(operation, grantId, risk, outcomeUnknown: false, null);
        }

        return ValueTask.CompletedTask;
    }

    /// <summary>
    /// Before the first judgement (a gateway just started, or Redis unreachable since): "no risk" is not known, so the
    /// call waits for the watchdog's first INFO, and fails closed, nothing sent, when it does not come in time.
    /// </summary>
    private async ValueTask WaitForEvictionJudgementAsync(string operation, string grantId, CancellationToken cancellationToken)
    {
        try
        {
            await _evictionJudged.Task.WaitAsync(_settings.Timeout, _time, cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            // Most often because Redis cannot be reached at all: then say that, as any other call would.
            var why = Volatile.Read(ref _shared.Current) switch
            {
                null => "still connecting",
                { IsConnected: false } => Volatile.Read(ref _lastConnectionFailure) is { } failure ? $"not connected: {failure}" : "not connected",
                _ => NotJudgedYet,
            };
            throw Unavailable(operation, grantId, why, outcomeUnknown: false, null);
        }

        await RefuseWhileEvictingAsync(operation, grantId, cancellationToken).ConfigureAwait(false);
    }

    private const string NotJudgedYet = "has not yet said whether it evicts keys (INFO not read since the gateway started)";

    /// <summary>"connected_slaves:N" of INFO replication (0 when absent).</summary>
    private static int ConnectedReplicas(string? info)
    {
        const string Field = "connected_slaves:";
        var at = info?.IndexOf(Field, StringComparison.Ordinal) ?? -1;
        if (at < 0)
        {
            return 0;
        }

        var digits = info!.AsSpan(at + Field.Length);
        var length = digits.IndexOfAnyExceptInRange('0', '9');
        return int.TryParse(length < 0 ? digits : digits[..length], NumberStyles.None, CultureInfo.InvariantCulture, out var count) ? count : 0;
    }

    /// <summary>Why a server that answers refuses writes, for an operator; null for any other error.</summary>
    private static string? Refusal(string message) =>
        message.StartsWith("READONLY", StringComparison.Ordinal) ? "refuses writes: it is a replica (READONLY); point Assurance:Store at the primary"
        : RespError.IsOutOfMemoryMessage(message) ? "refuses writes: out of memory (maxmemory under noeviction); grants can neither be used nor created"
        : RespError.IsNotPrimaryMessage(message) ? $"is not a usable primary ({message.Split(' ')[0]})"
        : null;

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _closing, 1) != 0)
        {
            return;
        }

        _stopping.Cancel();
        try
        {
            // Both loops stop at their next await; the bound only guards against a stuck client library.
            Task.WaitAll([.. _watchdogs, _unknownOutcomeWriter], TimeSpan.FromSeconds(2));
        }
        catch (AggregateException e)
        {
            Log.BackgroundFailure(_logger, Description, e);
        }

        // The queue lives in memory only. A rolling restart usually stops a gateway whose Redis answers again and whose
        // writer had not got to its records yet (it retries every 200 ms, once the connection is judged healthy): one
        // last, bounded attempt writes them, while the connection is still open.
        try
        {
            Task.Run(FlushUnknownOutcomesAsync).Wait(FinalFlushLimit + _settings.Timeout);
        }
        catch (AggregateException e)
        {
            Log.BackgroundFailure(_logger, Description, e);
        }

        Volatile.Write(ref _disposed, 1);
        Interlocked.Exchange(ref _pipe, null)?.Dispose();
        ReportUnrecorded();

        foreach (var link in _links)
        {
            CloseNow(Interlocked.Exchange(ref link.Current, null));
        }

        _stopping.Dispose();
    }

    /// <summary>Takes one of the subject's pending slots; false when the subject already has the maximum.</summary>
    private async Task<bool> ReservePendingAsync(string id, string subject, long expiresAt, int limit, CancellationToken cancellationToken)
    {
        RedisKey[] key = [_keys.SubjectPending(subject)];
        var result = (RedisResult[])await EvaluateAsync(Scripts.ReservePending, key, [id, expiresAt, limit], "create", id, cancellationToken).ConfigureAwait(false);
        if ((string)result[0] == "done")
        {
            return true;
        }

        // At the limit: the set may still hold grants that were approved or revoked since (their clean-up step is best
        // effort) or whose creation was taken back. Check each against its grant, drop the stale ones, count again.
        var now = (long)result[1];
        var members = (RedisResult[])result[2];
        var states = await Task.WhenAll(members.Select(m => RunAsync(
            _shared, db => db.HashGetAsync(_keys.Grant((string)m), ["status", "expiresAt"]), "create", id, cancellationToken))).ConfigureAwait(false);
        var stale = new List<RedisValue>();
        for (var i = 0; i < members.Length; i++)
        {
            var status = states[i][0];
            var expires = states[i][1];
            if (status.IsNull || (string)status != StatusPending || expires.IsNull || (long)expires <= now)
            {
                stale.Add((string)members[i]);
            }
        }

        if (stale.Count == 0)
        {
            return false;
        }

        result = (RedisResult[])await EvaluateAsync(Scripts.ReservePending, key, [id, expiresAt, limit, .. stale], "create", id, cancellationToken).ConfigureAwait(false);
        return (string)result[0] == "done";
    }

    private Task UnindexPendingAsync(string id, string? subject, CancellationToken cancellationToken)
    {
        var subjectTask = subject is null
            ? Task.CompletedTask
            : TryUnindexAsync([_keys.SubjectPending(subject)], [id], cancellationToken);
        return Task.WhenAll(subjectTask, TryUnindexAsync([_keys.PendingByCreation, _keys.PendingByExpiry], [id], cancellationToken));
    }

    /// <summary>
    /// Removes ids from index sets of one slot. Best effort: the grant's own change already happened, and the index
    /// heals itself when read, so a store that is unavailable now does not fail the caller.
    /// </summary>
    private async Task TryUnindexAsync(RedisKey[] keys, RedisValue[] ids, CancellationToken cancellationToken)
    {
        try
        {
            await EvaluateAsync(Scripts.Unindex, keys, ids, "unindex", (string)ids[0], cancellationToken).ConfigureAwait(false);
        }
        catch (StoreUnavailableException e)
        {
            Log.IndexCleanupDeferred(_logger, Description, string.Join(",", ids), e);
        }
    }

    /// <summary>
    /// Writes what the queue holds, until it is empty or <see cref="FinalFlushLimit"/> passes. A standalone Redis that
    /// fails to take one would fail the rest too, each after as long: the flush stops there. On a cluster the record's
    /// master may be down while the masters of the records behind it answer (as the background writer knows): it is
    /// set aside and the flush goes on.
    /// </summary>
    private async Task FlushUnknownOutcomesAsync()
    {
        using var limit = new CancellationTokenSource(FinalFlushLimit, _time);
        var refused = new List<UnknownOutcome>();
        UnknownOutcome? writing = null;
        try
        {
            while (!limit.IsCancellationRequested && _unknownOutcomes.TryTake(out var item))
            {
                writing = item;
                try
                {
                    await EvaluateAsync(Scripts.AppendEvent, _keys.GrantAndEvents(item.GrantId), [EventJson(item.Event, includeAt: true), GrantRules.CapFor(item.Event), "1"],
                        "append", item.GrantId, limit.Token).ConfigureAwait(false);
                    writing = null;
                    Log.DeferredEventRecorded(_logger, Description, item.GrantId, item.Event.TraceId, item.Event.Type);
                }
                catch (StoreUnavailableException) when (IsCluster && !limit.IsCancellationRequested)
                {
                    // Each attempt is bounded by Store:Timeout, all of them by the limit.
                    continue;
                }
                catch (Exception e) when (e is StoreUnavailableException or OperationCanceledException or ObjectDisposedException)
                {
                    break;
                }
                finally
                {
                    if (writing is not null)
                    {
                        refused.Add(writing);
                        writing = null;
                    }
                }
            }
        }
        finally
        {
            // Back in the queue (also one whose write failed in a way not foreseen here): reported one by one by the
            // caller, or here when the close stopped waiting for this flush.
            foreach (var item in refused)
            {
                _unknownOutcomes.Add(item);
            }

            if (Volatile.Read(ref _disposed) != 0)
            {
                ReportUnrecorded();
            }
        }
    }

    /// <summary>
    /// After the close, each record still queued (and any that a request racing the close adds later) is logged with
    /// what an SRE needs to put it on the grant by hand: the grant, the request's trace and span, when, and what.
    /// </summary>
    private void ReportUnrecorded()
    {
        var count = 0;
        while (_unknownOutcomes.TryTake(out var item))
        {
            count++;
            Log.UnrecordedAtClose(_logger, Description, item.Event.Type, item.GrantId, item.Event.TraceId, item.Event.SpanId, item.Event.At, item.Event.Reason);
        }

        if (count > 0)
        {
            Log.UnknownOutcomesLost(_logger, Description, count);
        }
    }

    private void RememberUnknownOutcome(ConsumeRequest request)
    {
        var origin = request.Origin is null ? null : GrantRules.Normalize(request.Origin).ToString();
        var record = new GrantEvent
        {
            Type = GrantEvent.UnknownOutcome,
            At = _time.GetUtcNow(),
            TraceId = request.TraceId,
            SpanId = request.SpanId,

            // What the client was told: the gateway denied, whatever the store did.
            Reason = ReasonCodes.StoreUnavailable,
            Workload = request.Workload,
            Origin = origin,
        };
        Log.UnknownOutcome(_logger, Description, request.GrantId, request.TraceId);
        // Fair shares by the caller's subject (every token has one), else its workload or origin.
        _unknownOutcomes.Add(new UnknownOutcome(request.GrantId, record, request.Subject ?? request.Workload ?? origin ?? string.Empty));
        if (Volatile.Read(ref _disposed) != 0)
        {
            // A consume that was in flight when the store closed: nothing will write it any more.
            ReportUnrecorded();
        }
    }

    /// <summary>
    /// Records queued unknown outcomes once Redis answers again. Retrying this append is safe (unlike a consume): the
    /// script skips an event that is already there, so an append that timed out but ran is not written twice.
    /// </summary>
    private async Task WriteUnknownOutcomesAsync(CancellationToken stopping)
    {
        try
        {
            while (true)
            {
                await _unknownOutcomes.WaitAsync(stopping).ConfigureAwait(false);
                while (_unknownOutcomes.TryTake(out var item))
                {
                    Volatile.Write(ref _unknownOutcomeInFlight, 1);
                    var recorded = false;
                    try
                    {
                        recorded = await TryRecordAsync(item, EventJson(item.Event, includeAt: true), stopping).ConfigureAwait(false);
                    }
                    finally
                    {
                        if (!recorded)
                        {
                            // To the back of the queue: on a cluster, its master may stay down while the masters of the
                            // records behind it answer again, and those must not wait for it. Also when the store is
                            // closing (the append was cancelled): Dispose writes it or reports it, rather than losing it.
                            _unknownOutcomes.Add(item);
                        }

                        Volatile.Write(ref _unknownOutcomeInFlight, 0);
                    }

                    if (!recorded)
                    {
                        await Task.Delay(UnknownOutcomeRetry, _time, stopping).ConfigureAwait(false);
                    }
                }
            }
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested)
        {
            // Disposed: Dispose reports what was not recorded.
        }
    }

    private async Task<bool> TryRecordAsync(UnknownOutcome item, string json, CancellationToken stopping)
    {
        if (!_shared.Healthy)
        {
            return false;
        }

        try
        {
            await EvaluateAsync(Scripts.AppendEvent, _keys.GrantAndEvents(item.GrantId), [json, GrantRules.CapFor(item.Event), "1"], "append", item.GrantId, stopping)
                .ConfigureAwait(false);
            Log.DeferredEventRecorded(_logger, Description, item.GrantId, item.Event.TraceId, item.Event.Type);
            return true;
        }
        catch (StoreUnavailableException)
        {
            // Still unavailable: keep the record and try again.
            return false;
        }
        catch (ObjectDisposedException)
        {
            stopping.ThrowIfCancellationRequested();
            throw;
        }
    }

    private Task<RedisResult> EvaluateAsync(StoreScript script, RedisKey[] keys, RedisValue[] args, string operation, string grantId, CancellationToken cancellationToken) =>
        RunAsync(_shared, db => EvaluateAsync(db, script, keys, args), operation, grantId, cancellationToken);

    /// <summary>
    /// EVALSHA. When Redis does not know the script (its script cache was flushed), nothing ran: this call sends the text
    /// itself (EVAL, routed by the keys like any command), and the watchdog loads every script again on its next ping.
    /// </summary>
    private async Task<RedisResult> EvaluateAsync(IDatabaseAsync db, StoreScript script, RedisKey[] keys, RedisValue[] args)
    {
        try
        {
            return await db.ScriptEvaluateAsync(script.Sha1, keys, args).ConfigureAwait(false);
        }
        catch (RedisServerException e) when (IsNoScript(e))
        {
            ForgetLoadedScripts();
            return await db.ScriptEvaluateAsync(script.Text, keys, args).ConfigureAwait(false);
        }
    }

    private void ForgetLoadedScripts()
    {
        foreach (var link in _links)
        {
            Volatile.Write(ref link.ScriptsLoadedOn, null);
        }
    }

    private static bool IsNoScript(RedisServerException e) => e.Message.StartsWith("NOSCRIPT", StringComparison.Ordinal);

    /// <summary>
    /// SPEC §7.6: a use counts only once <see cref="StoreSettings.RequireReplicaAcks"/> replicas have it. The consume
    /// script and a WAIT go out together on the link reserved for consumes: still one round trip, and WAIT, coming
    /// after the script on the same connection, waits for exactly this write (and any before it) to be replicated.
    /// Too few acknowledgements: the request is denied as store_unavailable, and since the use was taken on the primary
    /// but may be lost in a failover, the grant is told that this consume's outcome is unknown.
    /// </summary>
    private async Task<RedisResult> ConsumeAcknowledgedAsync(Link link, RedisKey[] keys, RedisValue[] args, string grantId)
    {
        if (link.IsCluster)
        {
            // WAIT has no key, so 1.2.6 could send it to another node than the script's: refuse rather than pretend.
            Log.ReplicaAcksUnsupported(_logger, Description);
            throw Unavailable("consume", grantId, "replica acknowledgement is not supported on Redis Cluster", outcomeUnknown: false, null);
        }

        var replicas = _settings.RequireReplicaAcks;

        // WAIT must answer before our own deadline does, so that a slow replica is a known "too few", not a timeout.
        // Redis checks blocked clients' timeouts on its cron (every 100 ms at the default hz 10): leave room for that.
        var waitMs = (long)Math.Max(1, _settings.Timeout.TotalMilliseconds / 2);
        var (result, acknowledged) = await RunAsync(
            link,
            async db =>
            {
                try
                {
                    return await EvaluateThenWaitAsync(db, Scripts.Consume.Sha1).ConfigureAwait(false);
                }
                catch (RedisServerException e) when (IsNoScript(e))
                {
                    ForgetLoadedScripts();

                    // Nothing ran (and the WAIT that went with it only waited): again, with the script's text.
                    return await EvaluateThenWaitAsync(db, null).ConfigureAwait(false);
                }
            },
            "consume",
            grantId,
            CancellationToken.None).ConfigureAwait(false);

        async Task<(RedisResult, long)> EvaluateThenWaitAsync(IDatabase db, byte[]? sha)
        {
            var evaluate = sha is null ? db.ScriptEvaluateAsync(Scripts.Consume.Text, keys, args) : db.ScriptEvaluateAsync(sha, keys, args);
            var wait = db.ExecuteAsync("WAIT", replicas, waitMs);
            try
            {
                var consumed = await evaluate.ConfigureAwait(false);
                return (consumed, (long)await wait.ConfigureAwait(false));
            }
            catch (RedisException)
            {
                Observe(wait);
                throw;
            }
        }

        if ((string)((RedisResult[])result)[0] == ReasonCodes.Ok && acknowledged < replicas)
        {
            Log.TooFewReplicaAcks(_logger, Description, grantId, acknowledged, replicas);
            throw Unavailable("consume", grantId, $"acknowledged by {acknowledged} of {replicas} replicas", outcomeUnknown: true, null);
        }

        return result;
    }

    /// <summary>
    /// Runs one command with the store's own deadline (1.2.6 async calls never time out). Any failure becomes a
    /// <see cref="StoreUnavailableException"/> that says whether the command may have reached Redis.
    /// </summary>
    /// <param name="startedAt">When the caller's deadline began (a consume that first tried the dedicated connection and
    /// provably did not run there has only what is left of one Store:Timeout); by default, now.</param>
    private async Task<T> RunAsync<T>(Link link, Func<IDatabase, Task<T>> command, string operation, string grantId, CancellationToken cancellationToken, long? startedAt = null)
    {
        if (Volatile.Read(ref _disposed) != 0)
        {
            // The host is stopping and a request still came through: a denial (503) like any other outage, not a 500.
            throw Unavailable(operation, grantId, "store closed", outcomeUnknown: false, null);
        }

        var started = startedAt ?? _time.GetTimestamp();
        var connection = Volatile.Read(ref link.Current);
        if (connection is null)
        {
            // Still connecting (just started): wait within the same deadline.
            try
            {
                await link.FirstConnection.Task.WaitAsync(Remaining(), _time, cancellationToken).ConfigureAwait(false);
            }
            catch (TimeoutException e)
            {
                throw Unavailable(operation, grantId, "still connecting", outcomeUnknown: false, e);
            }

            connection = Volatile.Read(ref link.Current);
        }

        if (connection is null || !connection.IsConnected)
        {
            throw Unavailable(operation, grantId, Volatile.Read(ref _lastConnectionFailure) is { } failure ? $"not connected: {failure}" : "not connected", outcomeUnknown: false, null);
        }

        if (Remaining() <= TimeSpan.Zero)
        {
            // The deadline passed before this command was written: nothing was sent, so the outcome is known.
            throw Unavailable(operation, grantId, $"no answer within {_settings.Timeout.TotalMilliseconds} ms", outcomeUnknown: false, null);
        }

        Task<T> task;
        try
        {
            task = command(connection.GetDatabase());
        }
        catch (Exception e) when (e is RedisConnectionException or ObjectDisposedException)
        {
            throw Unavailable(operation, grantId, "connection failed", outcomeUnknown: false, e);
        }

        var remaining = Remaining();
        try
        {
            return await task.WaitAsync(remaining, _time, cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException e)
        {
            Observe(task);
            throw Unavailable(operation, grantId, $"no answer within {_settings.Timeout.TotalMilliseconds} ms", outcomeUnknown: true, e);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            Observe(task);
            throw;
        }
        catch (RedisConnectionException e)
        {
            // "No connection is available" fails before anything is written; a socket that broke afterwards may have
            // delivered the command.
            throw Unavailable(operation, grantId, "connection failed", e.CommandStatus != CommandStatus.WaitingToBeSent, e);
        }
        catch (RedisServerException e) when (RespError.IsNotPrimaryMessage(e.Message))
        {
            // Refused by a server that is not (or not yet) a usable primary: nothing was written (see RespError), as when
            // the consume connection gets the same reply. Not an unknown outcome.
            throw Unavailable(operation, grantId, "not the primary", outcomeUnknown: false, e);
        }
        catch (RedisServerException e) when (RespError.IsClusterRefusalMessage(e.Message) || e.Message.Contains(" serving hashslot ", StringComparison.Ordinal))
        {
            // The cluster refused the command before running it (CLUSTERDOWN, TRYAGAIN during a slot migration, or a
            // redirection 1.2.6 did not follow, such as MOVED to a master it cannot reach: "Endpoint … serving hashslot …
            // is not reachable"): nothing was written, so not an unknown outcome.
            throw Unavailable(operation, grantId, "refused by the cluster", outcomeUnknown: false, e);
        }
        catch (RedisServerException e) when (RespError.IsOutOfMemoryMessage(e.Message))
        {
            // Out of memory under noeviction: the script's first write was refused, so nothing was written (see RespError).
            throw Unavailable(operation, grantId, "out of memory", outcomeUnknown: false, e);
        }
        catch (Exception e) when (e is RedisException or ObjectDisposedException)
        {
            // A timeout reported by the client, another script error, a connection disposed by the watchdog: the command
            // was sent and nothing says what became of it.
            throw Unavailable(operation, grantId, e.GetType().Name, outcomeUnknown: true, e);
        }

        TimeSpan Remaining()
        {
            var left = _settings.Timeout - _time.GetElapsedTime(started);
            return left > TimeSpan.Zero ? left : TimeSpan.Zero;
        }
    }

    private StoreUnavailableException Unavailable(string operation, string grantId, string why, bool outcomeUnknown, Exception? inner)
    {
        var exception = new StoreUnavailableException($"Grant store {Description}: {operation} failed ({why}).", outcomeUnknown, inner) { Cause = why };
        if ((inner is RedisServerException e ? Refusal(e.Message) : Refusal(why)) is { } refusal)
        {
            // Redis answers but refuses to write: nothing else would tell an operator why every request is denied (the
            // connection is healthy). Said at most once a minute while it lasts.
            var now = _time.GetTimestamp();
            var last = Interlocked.Read(ref _lastRefusalLogged);
            if ((last == 0 || _time.GetElapsedTime(last, now) >= RefusalLogInterval) && Interlocked.CompareExchange(ref _lastRefusalLogged, now, last) == last)
            {
                Log.Refused(_logger, Description, refusal);
            }
        }

        // Readiness probes ask often while Redis is down; the watchdog reports that transition once.
        if (operation != OperationPing)
        {
            Log.OperationFailed(_logger, Description, operation, grantId, why, outcomeUnknown);
        }

        return exception;
    }

    /// <summary>A task we stopped waiting for still completes later: observe its failure so it is not reported as unobserved.</summary>
    private static void Observe(Task task) =>
        _ = task.ContinueWith(static t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);

    private static string FormatEndPoint(EndPoint endPoint) => endPoint switch
    {
        DnsEndPoint dns => $"{dns.Host}:{dns.Port}",
        _ => endPoint.ToString() ?? "?",
    };

}
