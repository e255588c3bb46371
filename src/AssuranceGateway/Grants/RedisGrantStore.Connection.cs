using System.Globalization;
using System.Net;
using System.Net.Sockets;
using StackExchange.Redis;

namespace AssuranceGateway.Grants;

// Connection upkeep for StackExchange.Redis 1.2.6, which (measured here) can sit on a dead connection that says
// IsConnected while Redis is frozen, can fail to reconnect after a restart, forgets loaded scripts on reconnect, and
// blocks for a second in a plain Dispose. Everything that works around that lives in this file.
internal sealed partial class RedisGrantStore
{
    /// <summary>
    /// One multiplexer and its watchdog. The store has one for everything, plus, when uses must be acknowledged by
    /// replicas, one for consumes only: WAIT blocks the connection it is sent on until the replicas answer, so it must
    /// not hold up every other command (DEPENDENCIES.md).
    /// </summary>
    private sealed class Link(string name)
    {
        public string Name { get; } = name;

        public TaskCompletionSource FirstConnection { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>The multiplexer in service (null until the first connect returned).</summary>
        public ConnectionMultiplexer? Current;

        /// <summary>The multiplexer on which the scripts were last loaded (reset when it reconnects).</summary>
        public ConnectionMultiplexer? ScriptsLoadedOn;

        /// <summary>True while the watchdog's last ping was answered.</summary>
        public volatile bool Healthy;

        /// <summary>What was last logged: null (nothing yet), true (answers), false (does not).</summary>
        public bool? Reported;

        /// <summary>The server is a Redis Cluster node (known once connected).</summary>
        public volatile bool IsCluster;
    }

    /// <summary>
    /// Pings every 250 ms. After ~1 s without an answer, builds a fresh multiplexer and retires the old one.
    /// </summary>
    private async Task WatchdogAsync(Link link, CancellationToken stopping)
    {
        var unhealthySince = (long?)null;
        while (!stopping.IsCancellationRequested)
        {
            try
            {
                unhealthySince = await CheckAsync(link, unhealthySince, stopping).ConfigureAwait(false);
                await Task.Delay(WatchdogInterval, _time, stopping).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested)
            {
                return;
            }
#pragma warning disable CA1031 // The watchdog is what brings the store back: whatever one round throws, it must keep running.
            catch (Exception e)
#pragma warning restore CA1031
            {
                Log.BackgroundFailure(_logger, Description, e);
                await Task.Delay(WatchdogInterval, _time, CancellationToken.None).ConfigureAwait(false);
            }
        }
    }

    /// <summary>One watchdog round; returns since when the link has been unhealthy (null: healthy).</summary>
    private async Task<long?> CheckAsync(Link link, long? unhealthySince, CancellationToken stopping)
    {
        var connection = Volatile.Read(ref link.Current);
        if (connection is null)
        {
            connection = await ConnectAsync(link, stopping).ConfigureAwait(false);
            Volatile.Write(ref link.Current, connection);
            link.FirstConnection.TrySetResult();
        }

        var healthy = connection.IsConnected && await PingOnceAsync(link, connection, stopping).ConfigureAwait(false);
        link.Healthy = healthy;
        if (link.Reported != healthy)
        {
            // Transitions only: an outage is one warning, not one per probe.
            link.Reported = healthy;
            if (healthy)
            {
                Log.Reachable(_logger, Description, link.Name);
            }
            else
            {
                Log.Unreachable(_logger, Description, link.Name, Volatile.Read(ref _lastConnectionFailure) ?? (connection.IsConnected ? "no answer to PING" : "not connected"));
            }
        }
        if (healthy)
        {
            if (!ReferenceEquals(Volatile.Read(ref link.ScriptsLoadedOn), connection))
            {
                await LoadScriptsAsync(link, connection, stopping).ConfigureAwait(false);
            }

            if (ReferenceEquals(link, _shared))
            {
                // The judgement first: until it is made, uses and new grants wait for it, and the consume connection
                // can take up to Store:Timeout to open.
                await CheckEvictionAsync(connection, stopping).ConfigureAwait(false);
                await EnsurePipeAsync(link, connection, stopping).ConfigureAwait(false);
            }

            return null;
        }

        unhealthySince ??= _time.GetTimestamp();
        var elapsed = _time.GetElapsedTime(unhealthySince.Value);
        if (elapsed < RebuildAfter)
        {
            return unhealthySince;
        }

        Log.Rebuilding(_logger, Description, link.Name, elapsed);
        var fresh = await ConnectAsync(link, stopping).ConfigureAwait(false);

        // Connecting takes a while: if the old connection answers by now (Redis came back meanwhile), keep it and
        // spare its callers a switch.
        if (connection.IsConnected && await PingOnceAsync(link, connection, stopping).ConfigureAwait(false))
        {
            CloseLater(fresh, TimeSpan.Zero);
            return null;
        }

        // Commands already sent on the old connection are bounded by Store:Timeout: close it once they are all
        // answered or given up, not under them.
        CloseLater(Interlocked.Exchange(ref link.Current, fresh), _settings.Timeout);
        return _time.GetTimestamp();
    }

    /// <summary>A new multiplexer; not connected yet when Redis is down (it keeps trying on its own).</summary>
    private async Task<ConnectionMultiplexer> ConnectAsync(Link link, CancellationToken stopping)
    {
        while (true)
        {
            Log.Connecting(_logger, Description, link.Name);
            var connecting = ConnectionMultiplexer.ConnectAsync(_options.Clone());
            try
            {
                var connection = await connecting.WaitAsync(TimeSpan.FromMilliseconds(_options.ConnectTimeout + 1000), _time, stopping).ConfigureAwait(false);

                // 1.2.6 completes awaited tasks in order on one worker by default, which deadlocks when a continuation
                // waits for another reply.
                connection.PreserveAsyncOrder = false;
                connection.ConnectionFailed += OnConnectionFailed;
                connection.ConnectionRestored += OnConnectionRestored;

                // Before the connection serves anything, so that even the first consume is one EVALSHA.
                if (connection.IsConnected)
                {
                    link.IsCluster = connection.GetEndPoints().Any(endPoint => connection.GetServer(endPoint).ServerType == ServerType.Cluster);
                    await LoadScriptsAsync(link, connection, stopping).ConfigureAwait(false);
                }

                return connection;
            }
            catch (Exception e) when (e is TimeoutException or OperationCanceledException)
            {
                // A connect that never returns is a stuck client: close it whenever it does return.
                _ = connecting.ContinueWith(
                    static t => CloseNow(t.Result), CancellationToken.None, TaskContinuationOptions.OnlyOnRanToCompletion, TaskScheduler.Default);
                stopping.ThrowIfCancellationRequested();
            }
        }
    }

    private void OnConnectionFailed(object? sender, ConnectionFailedEventArgs e)
    {
        // Said when the cause changes, not at every retry: "AuthenticationFailure" is what sends an operator to the
        // password instead of the network.
        var failure = e.FailureType.ToString();
        if (!string.Equals(Interlocked.Exchange(ref _lastConnectionFailure, failure), failure, StringComparison.Ordinal))
        {
            Log.ConnectionFailed(_logger, Description, failure);
        }
    }

    private void OnConnectionRestored(object? sender, ConnectionFailedEventArgs e)
    {
        // The server may have restarted and lost its script cache, and 1.2.6 forgets which scripts it loaded: load them
        // again on the next healthy ping, so that a consume stays one EVALSHA.
        foreach (var link in _links)
        {
            Interlocked.CompareExchange(ref link.ScriptsLoadedOn, null, sender as ConnectionMultiplexer);
        }

        // A server that came back may be another one, or the same one restarted with another configuration.
        Volatile.Write(ref _evictionCheckedOn, null);
        Volatile.Write(ref _lastConnectionFailure, null);
        Log.ConnectionRestored(_logger, Description);
    }

    /// <summary>
    /// One PING, answered within Store:Timeout. On a cluster, one to every node the multiplexer holds a connection to:
    /// a keyless PING goes to one node of the client's choosing, in turn, so a link to one node that sat connected and
    /// unanswering (seen in a CI run: its slots' commands timed out, the store never became ready) failed one round in
    /// three and was never judged down for the whole <see cref="RebuildAfter"/>. A node the multiplexer knows is
    /// disconnected (down, or failed over) is not asked: it would keep the store rebuilding for nothing.
    /// </summary>
    private async Task<bool> PingOnceAsync(Link link, ConnectionMultiplexer connection, CancellationToken stopping)
    {
        var pings = new List<Task>(3);
        if (link.IsCluster)
        {
            foreach (var endPoint in connection.GetEndPoints())
            {
                var server = connection.GetServer(endPoint);
                if (server.IsConnected)
                {
                    pings.Add(server.PingAsync());
                }
            }
        }

        if (pings.Count == 0)
        {
            pings.Add(connection.GetDatabase().PingAsync());
        }

        try
        {
            await Task.WhenAll(pings).WaitAsync(_settings.Timeout, _time, stopping).ConfigureAwait(false);
            return true;
        }
        catch (Exception e) when (e is TimeoutException or RedisException or ObjectDisposedException)
        {
            foreach (var ping in pings)
            {
                Observe(ping);
            }

            return false;
        }
    }

    /// <summary>
    /// Keeps the dedicated consume connection (<see cref="RespPipe"/>) up while the multiplexer reaches a standalone
    /// primary. Not for TLS (1.2.6 owns that handshake) or Redis Cluster (a consume must reach its slot's node): there,
    /// consumes stay on the multiplexer. A broken pipe is replaced on a later healthy round.
    /// </summary>
    private async Task EnsurePipeAsync(Link link, ConnectionMultiplexer connection, CancellationToken stopping)
    {
        if (_options.Ssl || link.IsCluster)
        {
            return;
        }

        var primaries = connection.GetEndPoints()
            .Select(endPoint => connection.GetServer(endPoint))
            .Where(server => server.IsConnected && !server.IsSlave && server.ServerType == ServerType.Standalone)
            .ToList();
        var current = Volatile.Read(ref _pipe);
        if (primaries.Count != 1 || (current is { Broken: null } && Equals(current.EndPoint, primaries[0].EndPoint)))
        {
            // Up and talking to the primary (or no single primary to talk to: consumes stay on the multiplexer).
            return;
        }

        try
        {
            var fresh = await RespPipe.ConnectAsync(
                primaries[0].EndPoint, _options.Password, _options.DefaultDatabase ?? 0, (_options.ClientName ?? "assurance-gateway") + "-consume",
                _settings.Timeout, _time, stopping).ConfigureAwait(false);
            if (Volatile.Read(ref _disposed) != 0)
            {
                fresh.Dispose();
                return;
            }

            // The old one finishes what it has in flight (those are known outcomes), then closes.
            Interlocked.Exchange(ref _pipe, fresh)?.Retire("replaced");
            _pipeFailureReported = false;
            Log.PipeConnected(_logger, Description, FormatEndPoint(primaries[0].EndPoint));
        }
        catch (Exception e) when (e is SocketException or StoreUnavailableException or OperationCanceledException)
        {
            stopping.ThrowIfCancellationRequested();

            // Once per outage, not every 250 ms: consumes work meanwhile, over the multiplexer.
            if (!_pipeFailureReported)
            {
                _pipeFailureReported = true;
                Log.PipeUnavailable(_logger, Description, e.Message);
            }
        }
    }

    /// <summary>
    /// Reads <c>INFO</c> on a new or restored connection and every
    /// <see cref="EvictionCheckInterval"/> after (an operator can change the policy at run time with CONFIG SET). INFO
    /// rather than CONFIG GET: managed services (ElastiCache, Azure Cache, Memorystore) refuse CONFIG but answer INFO.
    /// No answer in time leaves the last judgement in force (before the first one, uses and new grants wait and then
    /// fail closed); a refusal (an ACL without INFO) is judged a risk; a reply without the fields (a Redis-compatible
    /// server that does not report them) is judged no risk.
    /// </summary>
    private async Task CheckEvictionAsync(ConnectionMultiplexer connection, CancellationToken stopping)
    {
        var now = _time.GetTimestamp();
        if (ReferenceEquals(Volatile.Read(ref _evictionCheckedOn), connection) && _time.GetElapsedTime(_evictionCheckedAt, now) < EvictionCheckInterval)
        {
            return;
        }

        string? risk;
        var sent = _time.GetUtcNow();
        if (_shared.IsCluster && !_options.Ssl)
        {
            // Every master has its own memory and its own policy, and one that evicts takes its slots' records away.
            if (await ClusterEvictionRiskAsync(connection, stopping).ConfigureAwait(false) is not { } judged)
            {
                return; // a master did not answer: judged again on the next round; the last judgement stays meanwhile
            }

            CheckClock(judged.Info, sent, _time.GetUtcNow());
            risk = judged.Risk;
        }
        else
        {
            try
            {
                // Through the database, as readiness reads INFO replication: IServer.Info needs the client's admin mode,
                // which would also unlock FLUSHALL and the like. On a cluster over TLS (the nodes cannot be reached one
                // by one here) this reaches one master of the client's choosing per round: README says so.
                // The default sections: memory for the policy, server for the clock (server_time_usec).
                var info = (string?)await connection.GetDatabase().ExecuteAsync("INFO").WaitAsync(_settings.Timeout, _time, stopping).ConfigureAwait(false);
                CheckClock(info, sent, _time.GetUtcNow());
                risk = RiskOf(info, null);
            }
            catch (RedisServerException e)
            {
                // Redis answered, with a refusal (an ACL without INFO: -@dangerous takes it away). Whether it evicts
                // cannot be told, and will not be until the user may read INFO: not "no risk", and said at Error.
                risk = RefusedInfo(e.Message, null);
            }
            catch (Exception e) when (e is TimeoutException or RedisException or ObjectDisposedException)
            {
                // No answer: judged again on the next round; the last judgement stays meanwhile (none yet: uses wait, then fail).
                Log.EvictionCheckFailed(_logger, Description, e);
                return;
            }
        }

        _evictionCheckedAt = now;
        Volatile.Write(ref _evictionCheckedOn, connection);
        var before = Interlocked.Exchange(ref _evictionRisk, risk);
        if (risk is not null && !string.Equals(before, risk, StringComparison.Ordinal))
        {
            Log.Evicting(_logger, Description, risk);
        }
        else if (risk is null && before is not null)
        {
            Log.NoLongerEvicting(_logger, Description);
        }

        _evictionJudged.TrySetResult();
    }

    /// <summary>
    /// Compares Redis's clock with this gateway's (<c>server_time_usec</c> of the eviction check's INFO). A grant's window
    /// is Redis's alone: the create script sets it (expiresAt = max(TIME, notBefore) + ttl, what <c>MaxTtl</c> bounds)
    /// and every use judges it (the scripts read TIME, so that all gateways sharing the store agree). This gateway's clock
    /// still judges tokens and stamps signed evidence, which an offset moves by as much. Said once when the offset
    /// goes beyond <see cref="ClockOffsetWarning"/> (plus half the round trip, which is how far the reading can be off),
    /// and once when it is back within.
    /// </summary>
    private void CheckClock(string? info, DateTimeOffset sent, DateTimeOffset received)
    {
        if (!long.TryParse(InfoField(info, "server_time_usec"), NumberStyles.None, CultureInfo.InvariantCulture, out var micros))
        {
            return; // before Redis 7.0: not said
        }

        var halfTrip = (received - sent) / 2;
        var offset = DateTimeOffset.UnixEpoch.AddTicks(micros * 10) - (sent + halfTrip);
        var off = offset.Duration() > ClockOffsetWarning + halfTrip;
        if (off && !_clockOffReported)
        {
            Log.ClockOffset(_logger, Description, Math.Round(offset.Duration().TotalSeconds, 1), offset > TimeSpan.Zero ? "ahead of" : "behind");
        }
        else if (!off && _clockOffReported)
        {
            Log.ClockAgrees(_logger, Description);
        }

        _clockOffReported = off;
    }

    private static string? RiskOf(string? info, EndPoint? node) => EvictionRisk(info) is { } found
        ? $"evicts keys{On(node)} (maxmemory-policy {found.Policy} with maxmemory {found.MaxMemory} bytes): when it is full it drops grants and their evidence; set maxmemory-policy noeviction"
        : null;

    private static string RefusedInfo(string refusal, EndPoint? node) =>
        $"refuses INFO{On(node)} ({refusal}), so whether it evicts keys cannot be told; allow INFO to the gateway's Redis user (ACL +info)";

    private static string On(EndPoint? node) => node is null ? string.Empty : " on " + FormatEndPoint(node);

    /// <summary>
    /// INFO of every master of a cluster, each over a short-lived connection of its own (the multiplexer sends a keyless
    /// command to one master of its choosing, and the admin mode that would let it address a node also unlocks
    /// FLUSHALL). The first risk found, naming its node; null when a master did not answer (nothing judged).
    /// </summary>
    private async Task<(string? Info, string? Risk)?> ClusterEvictionRiskAsync(ConnectionMultiplexer connection, CancellationToken stopping)
    {
        var masters = connection.GetEndPoints()
            .Select(endPoint => connection.GetServer(endPoint))
            .Where(server => server.IsConnected && !server.IsSlave)
            .Select(server => server.EndPoint)
            .ToList();
        if (masters.Count == 0)
        {
            return null;
        }

        var replies = await Task.WhenAll(masters.Select(master => NodeInfoAsync(master, stopping))).ConfigureAwait(false);
        string? first = null;
        string? risk = null;
        for (var i = 0; i < masters.Count; i++)
        {
            switch (replies[i])
            {
                case string info:
                    first ??= info;
                    risk ??= RiskOf(info, masters[i]);
                    break;
                case RespError error:
                    risk ??= RefusedInfo(error.Message, masters[i]);
                    break;
                default:
                    return null;
            }
        }

        return (first, risk);
    }

    /// <summary>The INFO reply of one node (a string or a <see cref="RespError"/>); null when it did not answer in time.</summary>
    private async Task<object?> NodeInfoAsync(EndPoint node, CancellationToken stopping)
    {
        try
        {
            using var pipe = await RespPipe.ConnectAsync(
                node, _options.Password, 0, (_options.ClientName ?? "assurance-gateway") + "-info", _settings.Timeout, _time, stopping).ConfigureAwait(false);
            return await pipe.SendAsync(RespPipe.Encode("INFO")).WaitAsync(_settings.Timeout, _time, stopping).ConfigureAwait(false);
        }
        catch (Exception e) when (e is SocketException or StoreUnavailableException or TimeoutException or OperationCanceledException)
        {
            stopping.ThrowIfCancellationRequested();
            Log.EvictionCheckFailed(_logger, Description, e);
            return null;
        }
    }

    /// <summary>
    /// The policy and limit of an <c>INFO</c> reply when they let Redis evict keys: a memory limit (maxmemory 0 is
    /// none, so nothing is ever evicted) with any policy but noeviction. Every key of the gateway has a TTL, so the
    /// volatile-* policies evict them as surely as the allkeys-* ones. Null when nothing is evicted or the reply does not say.
    /// </summary>
    internal static (string Policy, long MaxMemory)? EvictionRisk(string? info)
    {
        var policy = InfoField(info, "maxmemory_policy");
        var limit = InfoField(info, "maxmemory");
        if (policy is null || limit is null || !long.TryParse(limit, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var maxMemory))
        {
            return null;
        }

        return maxMemory > 0 && !string.Equals(policy, "noeviction", StringComparison.Ordinal) ? (policy, maxMemory) : null;
    }

    /// <summary>The value of "name:value" on a line of its own in an INFO reply; null when absent.</summary>
    private static string? InfoField(string? info, string name)
    {
        if (info is null)
        {
            return null;
        }

        foreach (var line in info.Split('\n'))
        {
            var text = line.TrimEnd('\r');
            if (text.Length > name.Length && text[name.Length] == ':' && text.StartsWith(name, StringComparison.Ordinal))
            {
                return text[(name.Length + 1)..];
            }
        }

        return null;
    }

    private async Task LoadScriptsAsync(Link link, ConnectionMultiplexer connection, CancellationToken stopping)
    {
        try
        {
            var loads = new List<Task<byte[]>>();
            foreach (var endPoint in connection.GetEndPoints())
            {
                var server = connection.GetServer(endPoint);
                foreach (var script in Scripts.All)
                {
                    loads.Add(server.ScriptLoadAsync(script.Text));
                }
            }

            await Task.WhenAll(loads).WaitAsync(_settings.Timeout, _time, stopping).ConfigureAwait(false);
            Volatile.Write(ref link.ScriptsLoadedOn, connection);
        }
        catch (Exception e) when (e is TimeoutException or RedisException or ObjectDisposedException)
        {
            // Not fatal: ScriptEvaluateAsync sends the script itself when Redis does not know it.
            Log.ScriptLoadFailed(_logger, Description, e);
        }
    }

    private void CloseLater(ConnectionMultiplexer? connection, TimeSpan delay)
    {
        if (connection is null)
        {
            return;
        }

        // Closing a multiplexer whose server is frozen can block: never on the watchdog's thread.
        _ = Task.Run(async () =>
        {
            if (delay > TimeSpan.Zero)
            {
                await Task.Delay(delay, _time).ConfigureAwait(false);
            }

            CloseNow(connection);
        });
    }

    /// <summary>
    /// Closes without waiting for outstanding commands: a plain Dispose in 1.2.6 waits for them (seen here: a second),
    /// and whoever waited for them has long been answered by our own timeout.
    /// </summary>
    private static void CloseNow(ConnectionMultiplexer? connection)
    {
        if (connection is null)
        {
            return;
        }

        try
        {
            connection.Close(allowCommandsToComplete: false);
            connection.Dispose();
        }
        catch (Exception e) when (e is RedisException or ObjectDisposedException or IOException)
        {
            // Already broken; nothing left to release.
        }
    }
}
