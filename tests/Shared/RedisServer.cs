using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace AssuranceGateway.Testing;

/// <summary>
/// A private <c>redis-server</c> on a free loopback port (never 6379, never shared), for tests that need the real
/// thing: pause it (SIGSTOP), kill it, restart it on the same port, and look inside with raw commands.
/// </summary>
/// <remarks>
/// Use as an xUnit fixture (<see cref="IAsyncLifetime"/> starts it) or with <see cref="StartAsync(string[])"/>.
/// Each server gets a directory <c>$TMPDIR/agw-redis-tests/&lt;test process id&gt;-&lt;port&gt;</c> with its pid file
/// and log. A test run that crashed cannot kill its servers, so every new server first kills the servers of test
/// processes that no longer exist; servers of a test run still alive are left alone.
/// Assertion helpers (<see cref="ExecuteAsync"/>, <see cref="MonitorAsync"/>) speak RESP over their own short-lived
/// sockets: they do not depend on the client library under test.
/// </remarks>
public sealed class RedisServer : IAsyncLifetime, IAsyncDisposable
{
    private const string DefaultPath = "/usr/bin/redis-server";
    private static readonly string Root = Path.Combine(Path.GetTempPath(), "agw-redis-tests");
    private static readonly ConcurrentDictionary<RedisServer, byte> Running = new();
    private static readonly TimeSpan CommandTimeout = TimeSpan.FromSeconds(5);

    private readonly string[] _extraArgs;
    private readonly Lock _lock = new();
    private Process? _process;
    private bool _startedOnce;

    static RedisServer()
    {
        // A test host that exits normally without disposing its fixtures still takes its servers along.
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            foreach (var server in Running.Keys)
            {
                server.KillNow();
            }
        };
    }

    /// <summary>A server with the default arguments, not started yet (xUnit fixtures start it).</summary>
    public RedisServer()
        : this([])
    {
    }

    private RedisServer(string[] extraArgs, bool cluster = false)
    {
        _extraArgs = extraArgs;
        Port = FreePort();
        if (cluster)
        {
            // The cluster bus defaults to port + 10000, which can pass 65535 for a high ephemeral port or collide with
            // another listener: choose it like the port itself.
            ClusterBusPort = FreePort();
        }
    }

    /// <summary>Set for cluster-mode nodes: the cluster bus port.</summary>
    public int? ClusterBusPort { get; }

    /// <summary>A cluster-enabled node, not started yet, owning no slots.</summary>
    public static RedisServer CreateClusterNode() => new([], cluster: true);

    public int Port { get; private set; }

    /// <summary>Environment variables of the redis-server process (e.g. its locale), set before it starts.</summary>
    public Dictionary<string, string?> ProcessEnvironment { get; } = [];

    public string ConnectionString => $"127.0.0.1:{Port}";

    /// <summary>The redis-server process id while it runs.</summary>
    public int ProcessId => _process?.Id ?? throw new InvalidOperationException("redis-server is not running.");

    public bool IsRunning => _process is { HasExited: false };

    private string DataDirectory => Path.Combine(Root, string.Create(CultureInfo.InvariantCulture, $"{Environment.ProcessId}-{Port}"));

    /// <summary>A server that is not started yet: its port is chosen, nothing listens on it.</summary>
    /// <param name="extraArgs">More <c>redis-server</c> arguments, e.g. <c>"--maxmemory", "10mb"</c>.</param>
    public static RedisServer Create(params string[] extraArgs) => new(extraArgs);

    /// <summary>Starts a server and waits until it answers PING.</summary>
    public static async Task<RedisServer> StartAsync(params string[] extraArgs)
    {
        var server = new RedisServer(extraArgs);
        try
        {
            await server.StartAsync();
            return server;
        }
        catch
        {
            await server.DisposeAsync();
            throw;
        }
    }

    /// <summary>The redis-server binary: on PATH, else <c>/usr/bin/redis-server</c>.</summary>
    public static string FindExecutable()
    {
        foreach (var directory in (Environment.GetEnvironmentVariable("PATH") ?? string.Empty).Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            var candidate = Path.Combine(directory, "redis-server");
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        if (File.Exists(DefaultPath))
        {
            return DefaultPath;
        }

        throw new InvalidOperationException(
            "redis-server was not found on PATH nor at /usr/bin/redis-server. The Redis store tests start their own server: " +
            "run them through the repository's test command, which installs it (apt-get install -y redis-server), or install it yourself.");
    }

    /// <summary>Starts the server (again) on <see cref="Port"/> and waits until it answers PING.</summary>
    public async Task StartAsync()
    {
        if (IsRunning)
        {
            throw new InvalidOperationException($"redis-server is already running on port {Port}.");
        }

        KillOrphans();
        var executable = FindExecutable();
        for (var attempt = 1; ; attempt++)
        {
            var directory = DataDirectory;
            System.IO.Directory.CreateDirectory(directory);
            var info = new ProcessStartInfo(executable) { UseShellExecute = false, WorkingDirectory = directory };
            foreach (var (name, value) in ProcessEnvironment)
            {
                info.Environment[name] = value;
            }

            foreach (var arg in (string[])
            [
                "--port", Port.ToString(CultureInfo.InvariantCulture), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--pidfile", Path.Combine(directory, "redis.pid"), "--dir", directory,
                "--logfile", Path.Combine(directory, "redis.log"),
            ])
            {
                info.ArgumentList.Add(arg);
            }

            if (ClusterBusPort is { } bus)
            {
                foreach (var arg in (string[])["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-port", bus.ToString(CultureInfo.InvariantCulture)])
                {
                    info.ArgumentList.Add(arg);
                }
            }

            foreach (var arg in _extraArgs)
            {
                info.ArgumentList.Add(arg);
            }

            var process = Process.Start(info) ?? throw new InvalidOperationException($"Could not start {executable}.");
            lock (_lock)
            {
                _process = process;
            }

            Running[this] = 0;
            if (await WaitUntilAnswersAsync(process))
            {
                _startedOnce = true;
                return;
            }

            var log = ReadLog(directory);
            await KillAsync();

            // Someone took the port between choosing and binding it: before the first start, any port will do.
            if (!_startedOnce && attempt < 3 && log.Contains("Address already in use", StringComparison.Ordinal))
            {
                Port = FreePort();
                continue;
            }

            throw new InvalidOperationException($"redis-server on port {Port} did not answer PING. Its log:\n{log}");
        }
    }

    /// <summary>Freezes the server (SIGSTOP): connections stay open, nothing is answered. Always resume in a finally.</summary>
    public Task PauseAsync() => SignalAsync("-STOP");

    /// <summary>Lets a paused server run again (SIGCONT).</summary>
    public Task ResumeAsync() => SignalAsync("-CONT");

    /// <summary>Kills the server (SIGKILL): no goodbye to its clients, nothing saved.</summary>
    public async Task KillAsync()
    {
        var process = _process;
        if (process is null)
        {
            return;
        }

        KillNow();
        await process.WaitForExitAsync();
        lock (_lock)
        {
            if (ReferenceEquals(_process, process))
            {
                _process = null;
            }
        }

        process.Dispose();
        Running.TryRemove(this, out _);
    }

    /// <summary>Kills the server and starts a fresh one (empty) on the same port.</summary>
    public async Task RestartAsync()
    {
        await KillAsync();
        await StartAsync();
    }

    public Task FlushAllAsync() => ExecuteAsync("FLUSHALL");

    /// <summary>
    /// Runs one command on a fresh connection. Returns a string (simple or bulk), a long (integer), an object?[] (array)
    /// or null (nil); an error reply throws <see cref="InvalidOperationException"/>.
    /// </summary>
    public async Task<object?> ExecuteAsync(params string[] args)
    {
        using var timeout = new CancellationTokenSource(CommandTimeout);
        using var client = new TcpClient();
        await client.ConnectAsync(IPAddress.Loopback, Port, timeout.Token);
        var stream = client.GetStream();
        await stream.WriteAsync(Resp.Encode(args), timeout.Token);
        return await new Resp(stream).ReadAsync(timeout.Token);
    }

    /// <summary><c>INFO commandstats</c> as command name → number of calls (commands run by scripts included).</summary>
    public async Task<IReadOnlyDictionary<string, long>> CommandStatsAsync()
    {
        var info = (string?)await ExecuteAsync("INFO", "commandstats") ?? string.Empty;
        var calls = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var line in info.Split('\n', StringSplitOptions.TrimEntries))
        {
            // cmdstat_evalsha:calls=3,usec=120,usec_per_call=40.00,...
            if (!line.StartsWith("cmdstat_", StringComparison.Ordinal))
            {
                continue;
            }

            var colon = line.IndexOf(':', StringComparison.Ordinal);
            var value = line[(colon + 1)..].Split(',')[0];
            calls[line["cmdstat_".Length..colon]] = long.Parse(value["calls=".Length..], CultureInfo.InvariantCulture);
        }

        return calls;
    }

    /// <summary>Starts <c>MONITOR</c>: every command the server runs from now on, in order, until disposed.</summary>
    public async Task<RedisMonitor> MonitorAsync()
    {
        var client = new TcpClient();
        try
        {
            using var timeout = new CancellationTokenSource(CommandTimeout);
            await client.ConnectAsync(IPAddress.Loopback, Port, timeout.Token);
            var stream = client.GetStream();
            await stream.WriteAsync(Resp.Encode(["MONITOR"]), timeout.Token);
            var resp = new Resp(stream);
            var ok = await resp.ReadAsync(timeout.Token);
            if (!Equals(ok, "OK"))
            {
                throw new InvalidOperationException($"MONITOR answered {ok}.");
            }

            return new RedisMonitor(this, client, resp);
        }
        catch
        {
            client.Dispose();
            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        await KillAsync();
        try
        {
            System.IO.Directory.Delete(DataDirectory, recursive: true);
        }
        catch (IOException)
        {
            // Left for the next run's clean-up.
        }
        catch (UnauthorizedAccessException)
        {
            // Same.
        }
    }

    Task IAsyncLifetime.InitializeAsync() => StartAsync();

    Task IAsyncLifetime.DisposeAsync() => DisposeAsync().AsTask();

    private void KillNow()
    {
        lock (_lock)
        {
            var process = _process;
            if (process is null)
            {
                return;
            }

            try
            {
                // SIGKILL ends a stopped (paused) process too.
                process.Kill();
            }
            catch (InvalidOperationException)
            {
                // Already gone.
            }
        }
    }

    private async Task SignalAsync(string signal)
    {
        var pid = ProcessId.ToString(CultureInfo.InvariantCulture);
        using var kill = Process.Start(new ProcessStartInfo("kill") { ArgumentList = { signal, pid }, UseShellExecute = false })
            ?? throw new InvalidOperationException("Could not run kill.");
        await kill.WaitForExitAsync();
        if (kill.ExitCode != 0)
        {
            throw new InvalidOperationException($"kill {signal} {pid} exited with {kill.ExitCode}.");
        }
    }

    private async Task<bool> WaitUntilAnswersAsync(Process process)
    {
        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < TimeSpan.FromSeconds(10))
        {
            if (process.HasExited)
            {
                return false;
            }

            try
            {
                if (Equals(await ExecuteAsync("PING"), "PONG"))
                {
                    return true;
                }
            }
            catch (Exception e) when (e is SocketException or IOException or OperationCanceledException or InvalidOperationException)
            {
                // Not listening yet, or still loading.
            }

            await Task.Delay(20);
        }

        return false;
    }

    private static string ReadLog(string directory)
    {
        try
        {
            return File.ReadAllText(Path.Combine(directory, "redis.log"));
        }
        catch (IOException)
        {
            return "(no log)";
        }
    }

    private static int FreePort()
    {
        while (true)
        {
            using var listener = new TcpListener(IPAddress.Loopback, 0);
            listener.Start();
            var port = ((IPEndPoint)listener.LocalEndpoint).Port;
            listener.Stop();
            if (port != 6379)
            {
                return port;
            }
        }
    }

    /// <summary>Kills redis-servers left by test processes that died without cleaning up (directory name = owner pid).</summary>
    private static void KillOrphans()
    {
        if (!System.IO.Directory.Exists(Root))
        {
            return;
        }

        foreach (var directory in System.IO.Directory.GetDirectories(Root))
        {
            var name = Path.GetFileName(directory);
            var dash = name.IndexOf('-', StringComparison.Ordinal);
            if (dash <= 0 || !int.TryParse(name.AsSpan(0, dash), CultureInfo.InvariantCulture, out var owner) || IsAlive(owner))
            {
                continue;
            }

            try
            {
                var pidFile = Path.Combine(directory, "redis.pid");
                if (File.Exists(pidFile) && int.TryParse(File.ReadAllText(pidFile).Trim(), CultureInfo.InvariantCulture, out var pid) && IsOurRedis(pid, directory))
                {
                    using var orphan = Process.GetProcessById(pid);
                    orphan.Kill();
                }

                System.IO.Directory.Delete(directory, recursive: true);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or InvalidOperationException or System.ComponentModel.Win32Exception)
            {
                // Raced with another test run cleaning the same directory, or the process just ended.
            }
        }
    }

    private static bool IsAlive(int pid) => System.IO.Directory.Exists(Path.Combine("/proc", pid.ToString(CultureInfo.InvariantCulture)));

    // Only a redis-server working in this very directory (pid numbers get reused). Its command line is no help:
    // Redis rewrites its process title to "redis-server 127.0.0.1:port"; --dir makes it chdir to the directory.
    private static bool IsOurRedis(int pid, string directory)
    {
        var proc = Path.Combine("/proc", pid.ToString(CultureInfo.InvariantCulture));
        try
        {
            var workingDirectory = new DirectoryInfo(Path.Combine(proc, "cwd")).ResolveLinkTarget(returnFinalTarget: false)?.FullName;
            return File.ReadAllText(Path.Combine(proc, "cmdline")).Contains("redis-server", StringComparison.Ordinal)
                && string.Equals(workingDirectory, directory, StringComparison.Ordinal);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>A minimal RESP2 reader/writer: enough for assertions, independent of the client under test.</summary>
    internal sealed class Resp(Stream stream)
    {
        private readonly BufferedStream _input = new(stream);

        public static byte[] Encode(IReadOnlyList<string> args)
        {
            var builder = new StringBuilder();
            builder.Append('*').Append(args.Count).Append("\r\n");
            foreach (var arg in args)
            {
                builder.Append('$').Append(Encoding.UTF8.GetByteCount(arg)).Append("\r\n").Append(arg).Append("\r\n");
            }

            return Encoding.UTF8.GetBytes(builder.ToString());
        }

        public async Task<object?> ReadAsync(CancellationToken cancellationToken)
        {
            var line = await ReadLineAsync(cancellationToken);
            var payload = line[1..];
            switch (line[0])
            {
                case '+':
                    return payload;
                case '-':
                    throw new InvalidOperationException("Redis error: " + payload);
                case ':':
                    return long.Parse(payload, CultureInfo.InvariantCulture);
                case '$':
                    var length = int.Parse(payload, CultureInfo.InvariantCulture);
                    if (length < 0)
                    {
                        return null;
                    }

                    var bytes = new byte[length + 2];
                    await _input.ReadExactlyAsync(bytes, cancellationToken);
                    return Encoding.UTF8.GetString(bytes, 0, length);
                case '*':
                    var count = int.Parse(payload, CultureInfo.InvariantCulture);
                    if (count < 0)
                    {
                        return null;
                    }

                    var items = new object?[count];
                    for (var i = 0; i < count; i++)
                    {
                        items[i] = await ReadAsync(cancellationToken);
                    }

                    return items;
                default:
                    throw new InvalidDataException("Unexpected RESP line: " + line);
            }
        }

        private async Task<string> ReadLineAsync(CancellationToken cancellationToken)
        {
            var bytes = new List<byte>(64);
            var one = new byte[1];
            while (true)
            {
                await _input.ReadExactlyAsync(one, cancellationToken);
                if (one[0] == '\n' && bytes.Count > 0 && bytes[^1] == '\r')
                {
                    return Encoding.UTF8.GetString(bytes.ToArray(), 0, bytes.Count - 1);
                }

                bytes.Add(one[0]);
            }
        }
    }
}

/// <summary>One line of MONITOR output: who sent which command.</summary>
/// <param name="Client">"127.0.0.1:54321" for a client, "lua" for a command run by a script.</param>
/// <param name="Command">The command name, upper case (e.g. "EVALSHA").</param>
public sealed record MonitoredCommand(string Client, string Command, string Line);

/// <summary>Collects MONITOR output until disposed. <see cref="SyncAsync"/> waits until it has seen everything run so far.</summary>
public sealed class RedisMonitor : IAsyncDisposable
{
    private readonly RedisServer _server;
    private readonly TcpClient _client;
    private readonly ConcurrentQueue<MonitoredCommand> _commands = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _reader;

    internal RedisMonitor(RedisServer server, TcpClient client, RedisServer.Resp resp)
    {
        _server = server;
        _client = client;
        _reader = Task.Run(() => ReadAsync(resp));
    }

    public IReadOnlyList<MonitoredCommand> Commands => [.. _commands];

    /// <summary>Sends a marker (ECHO) on another connection and waits until the monitor has seen it.</summary>
    public async Task SyncAsync()
    {
        var marker = "monitor-sync-" + Guid.NewGuid().ToString("N");
        await _server.ExecuteAsync("ECHO", marker);
        var deadline = Stopwatch.StartNew();
        while (!_commands.Any(c => c.Line.Contains(marker, StringComparison.Ordinal)))
        {
            if (deadline.Elapsed > TimeSpan.FromSeconds(5) || _reader.IsCompleted)
            {
                throw new TimeoutException("MONITOR did not see the sync marker.");
            }

            await Task.Delay(5);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _client.Dispose();
        try
        {
            await _reader;
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or OperationCanceledException or SocketException)
        {
            // Closed under the reader: the expected way out.
        }

        _stop.Dispose();
    }

    private async Task ReadAsync(RedisServer.Resp resp)
    {
        while (!_stop.IsCancellationRequested)
        {
            // 1795337770.255732 [0 127.0.0.1:43362] "EVALSHA" "6163..." "1" "k"
            if (await resp.ReadAsync(_stop.Token) is not string line)
            {
                continue;
            }

            var open = line.IndexOf('[', StringComparison.Ordinal);
            var close = line.IndexOf(']', open + 1);
            if (open < 0 || close < 0)
            {
                continue;
            }

            var source = line[(open + 1)..close];
            var client = source[(source.IndexOf(' ', StringComparison.Ordinal) + 1)..];
            var rest = line[(close + 1)..].TrimStart();
            var end = rest.IndexOf('"', 1);
            var command = end > 0 ? rest[1..end].ToUpperInvariant() : rest;
            _commands.Enqueue(new MonitoredCommand(client, command, line));
        }
    }
}
