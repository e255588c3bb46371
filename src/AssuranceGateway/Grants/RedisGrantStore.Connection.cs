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

        var healthy = connection.IsConnected && await PingOnceAsync(connection, stopping).ConfigureAwait(false);
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
        if (connection.IsConnected && await PingOnceAsync(connection, stopping).ConfigureAwait(false))
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

        Volatile.Write(ref _lastConnectionFailure, null);
        Log.ConnectionRestored(_logger, Description);
    }

    private async Task<bool> PingOnceAsync(ConnectionMultiplexer connection, CancellationToken stopping)
    {
        var ping = connection.GetDatabase().PingAsync();
        try
        {
            await ping.WaitAsync(_settings.Timeout, _time, stopping).ConfigureAwait(false);
            return true;
        }
        catch (Exception e) when (e is TimeoutException or RedisException or ObjectDisposedException)
        {
            Observe(ping);
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
