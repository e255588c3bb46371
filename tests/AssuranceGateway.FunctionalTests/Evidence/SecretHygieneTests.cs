using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using AssuranceGateway.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.IdentityModel.Tokens;
using static AssuranceGateway.Testing.GrantHelpers;

namespace AssuranceGateway.FunctionalTests.Evidence;

/// <summary>
/// SPEC §6 "never in a span, log, metric or the store": realistic traffic (allowed, every kind of denial, the API, a
/// reload, Redis refusing the password) with every log category at Trace, then every sink searched for every secret:
/// raw tokens and their signatures, workload JWTs, request bodies, the Redis password and the evidence signing key.
/// </summary>
public sealed class SecretHygieneTests
{
    private const string BodyMarker = "body-marker-7f3c9a-do-not-log";
    private const string RedisPassword = "redis-pw-4b1e8d-do-not-log";

    [Fact]
    public async Task TraceLoggingEverywhere_RealisticTraffic_NoSecretInLogsTelemetryResponsesStoreOrFiles()
    {
        await using var redis = await RedisServer.StartAsync();
        await redis.ExecuteAsync("CONFIG", "SET", "requirepass", RedisPassword);
        var logs = new AllLevelsLogCollector();
        using var metrics = MetricCapture.Start();
        await using var gateway = await GatewayHarness.CreateAsync();
        var config = gateway.DefaultConfig($"{redis.ConnectionString},password={RedisPassword}");
        var (keyFile, evidenceKeyD) = await WriteEvidenceKeyAsync(gateway.Directory);
        config["Assurance"]!["Evidence"] = new JsonObject { ["SigningKeyFile"] = keyFile };
        var filesBefore = Files(gateway.Directory);
        await gateway.StartWithAsync(config, services =>
        {
            services.AddSingleton<ILoggerProvider>(logs);
            services.Configure<LoggerFilterOptions>(o => o.MinLevel = LogLevel.Trace);
        });

        var secrets = new SecretList();
        secrets.Add("redis password", RedisPassword);
        secrets.Add("evidence key d", evidenceKeyD);
        secrets.Add("body marker", BodyMarker);
        var body = $$"""{"release":"5.2","note":"{{BodyMarker}}"}""";
        secrets.Add("body", body);
        var token = secrets.Jwt("token", gateway.Idp.Token());
        var svid = secrets.Jwt("svid", gateway.WorkloadIssuer.Svid());
        var otherSvid = secrets.Jwt("other svid", gateway.WorkloadIssuer.Svid(OtherWorkload));
        var apiToken = secrets.Jwt("api token", gateway.Idp.ApiToken());
        var approverToken = secrets.Jwt("approver token", gateway.Idp.ApiToken("bob"));
        var expired = secrets.Jwt("expired token", gateway.Idp.Token(edit: c => c["exp"] = DateTimeOffset.UtcNow.AddHours(-1).ToUnixTimeSeconds()));
        var forged = secrets.Jwt("forged token", token[..^4] + (token[^4] == 'A' ? "BBBB" : "AAAA"));
        var agentToken = secrets.Jwt("agent token", gateway.Idp.Token(acr: "urn:aal1", sid: "agent-session-7"));
        var responses = new StringBuilder();

        async Task<HttpStatusCode> SendAsync(HttpClient client, HttpRequestMessage request)
        {
            using (request)
            {
                using var response = await client.SendAsync(request);
                responses.Append((int)response.StatusCode).Append(' ').Append(response.Headers).Append(response.Content.Headers)
                    .Append(await response.Content.ReadAsStringAsync()).Append('\n');
                return response.StatusCode;
            }
        }

        HttpRequestMessage Api(HttpMethod method, string path, string bearer, JsonNode? json = null)
        {
            var request = new HttpRequestMessage(method, path);
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", bearer);
            if (json is not null)
            {
                request.Content = new StringContent(json.ToJsonString(), Encoding.UTF8, "application/json");
            }

            return request;
        }

        // The API: a grant with the request (body inline), read, listed, revoked.
        var grant = DeployGrant(token, body: body, maxUses: 2);
        using (var created = await gateway.PostGrantAsync(grant, apiToken))
        {
            var text = await created.Content.ReadAsStringAsync();
            responses.Append(text).Append('\n');
            Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        }

        var id = GrantIdOf(responses);
        Assert.Equal(HttpStatusCode.OK, await SendAsync(gateway.Api, Api(HttpMethod.Get, $"/assurance/v1/grants/{id}", apiToken)));
        Assert.Equal(HttpStatusCode.OK, await SendAsync(gateway.Api, Api(HttpMethod.Get, "/assurance/v1/grants?status=pending", apiToken)));
        var revokedId = await gateway.CreateGrantAsync(DeployGrant(token, body: body), apiToken);
        Assert.Equal(HttpStatusCode.NoContent, await SendAsync(gateway.Api, Api(HttpMethod.Delete, $"/assurance/v1/grants/{revokedId}", apiToken)));
        // A grant body that the API refuses still names no secret back.
        var refused = DeployGrant(token, body: body);
        refused["tokenHash"] = token;
        Assert.Equal(HttpStatusCode.BadRequest, await SendAsync(gateway.Api, Api(HttpMethod.Post, "/assurance/v1/grants", apiToken, refused)));
        Assert.Equal(HttpStatusCode.Unauthorized, await SendAsync(gateway.Api, Api(HttpMethod.Get, $"/assurance/v1/grants/{id}", forged)));

        // The proxy: allowed, then each kind of denial.
        Assert.Equal(HttpStatusCode.OK, await SendAsync(gateway.Proxy, DeployRequest(token, svid, id, out _, body: body)));
        Assert.Equal(HttpStatusCode.Forbidden, await SendAsync(gateway.Proxy, DeployRequest(token, svid, id, out _, body: body + " ")));
        Assert.Equal(HttpStatusCode.Unauthorized, await SendAsync(gateway.Proxy, DeployRequest(forged, svid, id, out _, body: body)));
        Assert.Equal(HttpStatusCode.Unauthorized, await SendAsync(gateway.Proxy, DeployRequest(expired, svid, id, out _, body: body)));
        Assert.Equal(HttpStatusCode.Unauthorized, await SendAsync(gateway.Proxy, DeployRequest("not-a-jwt-" + token, svid, id, out _, body: body)));
        Assert.Equal(HttpStatusCode.Unauthorized, await SendAsync(gateway.Proxy, DeployRequest(token, "garbage." + svid, id, out _, body: body)));
        Assert.Equal(HttpStatusCode.BadRequest, await SendAsync(gateway.Proxy, DeployRequest(token, svid, "bad id/" + token, out _, body: body)));
        Assert.Equal(HttpStatusCode.Forbidden, await SendAsync(gateway.Proxy, DeployRequest(token, otherSvid, id, out _, body: body)));
        Assert.Equal(HttpStatusCode.Forbidden, await SendAsync(gateway.Proxy, DeployRequest(token, svid, id, out _, body: body)));
        Assert.Equal(HttpStatusCode.OK, await SendAsync(gateway.Proxy, GatewayHarness.Request(HttpMethod.Get, "/status", token, out _)));

        // What a broken client sends: a credential folded over two lines (obs-fold, RFC 9112 §5.2), a header line without
        // its colon. Kestrel refuses both (400) before any middleware runs; the refused lines hold the credentials.
        foreach (var head in new[]
        {
            $"POST /deploy/v1/releases HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token[..(token.LastIndexOf('.') + 1)]}\r\n {token[(token.LastIndexOf('.') + 1)..]}\r\nContent-Length: 0\r\n",
            $"POST /deploy/v1/releases HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\nWorkload-Identity: {svid[..(svid.LastIndexOf('.') + 1)]}\r\n\t{svid[(svid.LastIndexOf('.') + 1)..]}\r\nContent-Length: 0\r\n",
            $"POST /deploy/v1/releases HTTP/1.1\r\nHost: gw\r\nAuthorization Bearer {token}\r\nContent-Length: 0\r\n",
        })
        {
            var (rawStatus, rawContent) = await RawHttp.SendAsync(gateway.ProxyAddress, head, ReadOnlyMemory<byte>.Empty);
            responses.Append(rawStatus).Append(' ').Append(rawContent).Append('\n');
            Assert.Equal(400, rawStatus);
        }

        // The challenge flow: a pending grant made from the agent's request, approved, then used.
        var agentCall = () =>
        {
            var request = GatewayHarness.Request(HttpMethod.Post, "/agent/tools/kubectl", agentToken, out _);
            request.Content = new StringContent(body, Encoding.UTF8, "application/json");
            request.Headers.TryAddWithoutValidation("Workload-Identity", svid);
            return request;
        };
        Assert.Equal(HttpStatusCode.Forbidden, await SendAsync(gateway.Proxy, agentCall()));
        var pending = PendingGrantId(responses);
        Assert.Equal(HttpStatusCode.OK, await SendAsync(gateway.Api, Api(HttpMethod.Get, "/assurance/v1/grants?status=pending", apiToken)));
        Assert.Equal(HttpStatusCode.OK, await SendAsync(gateway.Api, Api(HttpMethod.Post, $"/assurance/v1/grants/{pending}/approve", approverToken)));
        var used = agentCall();
        used.Headers.TryAddWithoutValidation("Assurance-Id", pending);
        Assert.Equal(HttpStatusCode.OK, await SendAsync(gateway.Proxy, used));

        // A configuration reload (the file holds the Redis password), which also publishes the next evidence key from
        // its private file, as a rotation does: its d must stay in the file.
        config["Assurance"]!["Policies"]!["single-use-approval"]!["MaxUses"] = 4;
        var (nextKeyFile, nextKeyD) = await EvidenceKeys.WriteAsync(gateway.Directory, "ev-2", name: "evidence-next.jwk.json");
        secrets.Add("next evidence key d", nextKeyD);
        config["Assurance"]!["Evidence"]!["PublishedKeyFiles"] = new JsonArray(nextKeyFile);
        Assert.True(await gateway.ReloadAsync(config));
        Assert.Equal(HttpStatusCode.OK, await SendAsync(gateway.Api, new HttpRequestMessage(HttpMethod.Get, "/.well-known/jwks.json")));
        Assert.Contains("\"kid\":\"ev-2\"", responses.ToString(), StringComparison.Ordinal);

        // Redis refuses the gateway's password from now on: its connections are dropped and re-established in vain.
        await RedisCli(redis, RedisPassword, "CONFIG", "SET", "requirepass", "another-password");
        await RedisCli(redis, "another-password", "CLIENT", "KILL", "TYPE", "normal");
        var storeDown = DateTime.UtcNow.AddSeconds(15);
        HttpStatusCode status;
        do
        {
            status = await SendAsync(gateway.Proxy, DeployRequest(token, svid, id, out _, body: body));
            await Task.Delay(200);
        }
        while (status != HttpStatusCode.ServiceUnavailable && DateTime.UtcNow < storeDown);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, status);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, await SendAsync(gateway.Api, new HttpRequestMessage(HttpMethod.Get, "/readyz")));
        await Task.Delay(1000); // the connection's own failure reports arrive from its threads

        var upstreamCount = gateway.Upstream.Count;
        gateway.Services.GetRequiredService<AssuranceGateway.Diagnostics.GatewayTelemetry>().ForceFlush();
        var keyspace = await RedisCli(redis, "another-password", "EVAL", DumpScript, "0");
        var files = Files(gateway.Directory).Where(f => !filesBefore.Contains(f) || File.GetLastWriteTimeUtc(f) > DateTime.UtcNow.AddMinutes(-5))
            .Where(f => f != keyFile && f != nextKeyFile && f != gateway.ConfigPath && !f.StartsWith(gateway.ConfigPath, StringComparison.Ordinal))
            .Select(f => f + "\n" + File.ReadAllText(f));

        Assert.Equal(3, upstreamCount); // the allowed deploy, /status and the approved agent call
        Assert.Contains(logs.Lines, l => l.StartsWith("Trace ", StringComparison.Ordinal)); // Trace really was on
        Assert.Contains(logs.Lines, l => l.Contains("Kestrel.BadRequests is held at Information", StringComparison.Ordinal));
        Assert.Contains("sha256:", keyspace, StringComparison.Ordinal); // the dump really holds the grants
        var sinks = new Dictionary<string, string>
        {
            ["logs"] = string.Join('\n', logs.Lines),
            ["spans"] = SpanText(gateway.Spans.All),
            ["metrics"] = metrics.Text(),
            ["responses"] = responses.ToString(),
            ["redis keyspace"] = keyspace,
            ["files"] = string.Join('\n', files),
        };
        // The detector itself finds what the upstream rightly received (the body of the allowed request).
        Assert.NotEmpty(secrets.FoundIn(new Dictionary<string, string> { ["upstream"] = Encoding.UTF8.GetString(gateway.Upstream.Received[0].Body) }));
        var leaks = secrets.FoundIn(sinks);
        Assert.True(leaks.Count == 0, "secrets found:\n" + string.Join('\n', leaks));
    }

    [Fact]
    public async Task KestrelBadRequestsConfiguredAtTrace_FoldedCredentials_RefusedAndNeverLogged()
    {
        // An operator chasing 400s turns Kestrel's bad-request log up, for every provider and for one by name.
        var logs = new AllLevelsLogCollector();
        await using var gateway = await GatewayHarness.CreateAsync();
        var config = gateway.DefaultConfig();
        config["Logging"] = new JsonObject
        {
            ["LogLevel"] = new JsonObject { ["Default"] = "Trace", ["Microsoft.AspNetCore.Server.Kestrel.BadRequests"] = "Trace" },
            [typeof(AllLevelsLogCollector).FullName!] = new JsonObject
            {
                ["LogLevel"] = new JsonObject { ["Microsoft.AspNetCore.Server.Kestrel"] = "Trace", ["Microsoft.AspNetCore.Server.Kestrel.BadRequests.Sub"] = "Debug" },
            },
        };
        await gateway.StartWithAsync(config, services => services.AddSingleton<ILoggerProvider>(logs));
        var token = gateway.Idp.Token();
        var svid = gateway.WorkloadIssuer.Svid();
        var tokenSignature = token[(token.LastIndexOf('.') + 1)..];
        var svidSignature = svid[(svid.LastIndexOf('.') + 1)..];

        var folded = await RawHttp.SendAsync(gateway.ProxyAddress,
            $"POST /deploy/v1/releases HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token[..(token.Length - tokenSignature.Length)]}\r\n {tokenSignature}\r\n"
            + $"Workload-Identity: {svid}\r\nContent-Length: 0\r\n", ReadOnlyMemory<byte>.Empty);
        var foldedSvid = await RawHttp.SendAsync(gateway.ProxyAddress,
            $"POST /deploy/v1/releases HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\nWorkload-Identity: {svid[..(svid.Length - svidSignature.Length)]}\r\n\t{svidSignature}\r\n"
            + "Content-Length: 0\r\n", ReadOnlyMemory<byte>.Empty);
        // A request line Kestrel refuses is still served (400) and the gateway still logs at Trace elsewhere.
        using var allowed = await gateway.Proxy.SendAsync(GatewayHarness.Request(HttpMethod.Get, "/status", token, out _));

        Assert.Equal((400, 400, HttpStatusCode.OK), (folded.Status, foldedSvid.Status, allowed.StatusCode));
        Assert.Equal(1, gateway.Upstream.Count);
        var text = string.Join('\n', logs.Lines);
        Assert.Contains("Trace Microsoft.AspNetCore", text, StringComparison.Ordinal);
        Assert.DoesNotContain(tokenSignature, text, StringComparison.Ordinal);
        Assert.DoesNotContain(svidSignature, text, StringComparison.Ordinal);
        Assert.Contains(logs.Lines, l => l.Contains("[4]", StringComparison.Ordinal) && l.Contains("Kestrel.BadRequests is held at Information", StringComparison.Ordinal));
    }

    [Fact]
    public async Task HostProcess_ConsoleAtTrace_FoldedCredentialsAndDenials_NoSecretInOutput()
    {
        // The real host with its default console log, turned to Trace the way an operator does: by environment.
        await using var harness = await GatewayHarness.CreateAsync();
        var (gateway, client, api) = await GatewayProcess.StartAsync(harness, new Dictionary<string, string>
        {
            ["Logging__LogLevel__Default"] = "Trace",
            ["Logging__Console__LogLevel__Microsoft.AspNetCore.Server.Kestrel.BadRequests"] = "Trace",
        });
        await using var host = gateway;
        using var proxyClient = client;
        using var apiClient = api;
        var proxy = client.BaseAddress!.ToString().TrimEnd('/');
        var token = harness.Idp.Token();
        var svid = harness.WorkloadIssuer.Svid();
        var tokenSignature = token[(token.LastIndexOf('.') + 1)..];

        var folded = await RawHttp.SendAsync(proxy,
            $"POST /deploy/v1/releases HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token[..(token.Length - tokenSignature.Length)]}\r\n {tokenSignature}\r\n"
            + "Content-Length: 0\r\n", ReadOnlyMemory<byte>.Empty);
        using var denied = await client.SendAsync(DeployRequest(token, svid, "noSuchGrant", out _, body: BodyMarker));
        using var forged = await client.SendAsync(DeployRequest(token[..^2] + "AA", svid, "noSuchGrant", out _, body: BodyMarker));
        Assert.Equal(0, await gateway.StopGracefullyAsync(TimeSpan.FromSeconds(30)));

        Assert.Equal((400, HttpStatusCode.Forbidden, HttpStatusCode.Unauthorized), (folded.Status, denied.StatusCode, forged.StatusCode));
        Assert.Equal(0, harness.Upstream.Count);
        Assert.Contains("trce: Microsoft.AspNetCore", gateway.Output, StringComparison.Ordinal);
        foreach (var secret in new[] { token, tokenSignature, svid, svid[(svid.LastIndexOf('.') + 1)..], BodyMarker })
        {
            Assert.DoesNotContain(secret, gateway.Output, StringComparison.Ordinal);
        }

        Assert.Contains("Kestrel.BadRequests is held at Information", gateway.Output, StringComparison.Ordinal);
    }

    /// <summary>Every key of the keyspace with its value, whatever its type, in one server-side pass.</summary>
    private const string DumpScript = """
        local out = {}
        for _, key in ipairs(redis.call('KEYS', '*')) do
          local t = redis.call('TYPE', key)['ok']
          out[#out + 1] = key .. ' (' .. t .. ')'
          local values
          if t == 'string' then values = { redis.call('GET', key) }
          elseif t == 'hash' then values = redis.call('HGETALL', key)
          elseif t == 'list' then values = redis.call('LRANGE', key, 0, -1)
          elseif t == 'set' then values = redis.call('SMEMBERS', key)
          elseif t == 'zset' then values = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
          elseif t == 'stream' then
            values = {}
            for _, entry in ipairs(redis.call('XRANGE', key, '-', '+')) do
              values[#values + 1] = entry[1]
              for _, v in ipairs(entry[2]) do values[#values + 1] = v end
            end
          else values = {} end
          for _, v in ipairs(values) do out[#out + 1] = tostring(v) end
        end
        return out
        """;

    private static async Task<string> RedisCli(RedisServer redis, string password, params string[] args)
    {
        var start = new ProcessStartInfo("redis-cli") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { "-h", "127.0.0.1", "-p", redis.Port.ToString(System.Globalization.CultureInfo.InvariantCulture), "--no-auth-warning", "-a", password }.Concat(args))
        {
            start.ArgumentList.Add(a);
        }

        using var process = Process.Start(start)!;
        var output = await process.StandardOutput.ReadToEndAsync();
        var error = await process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        Assert.True(process.ExitCode == 0 && !output.StartsWith("(error)", StringComparison.Ordinal) && !output.StartsWith("ERR", StringComparison.Ordinal), $"redis-cli {string.Join(' ', args)}: {output} {error}");
        return output;
    }

    private static string GrantIdOf(StringBuilder responses)
    {
        var text = responses.ToString();
        var last = text.TrimEnd('\n').Split('\n')[^1];
        return JsonDocument.Parse(last).RootElement.GetProperty("id").GetString()!;
    }

    private static string PendingGrantId(StringBuilder responses)
    {
        var line = responses.ToString().TrimEnd('\n').Split('\n')[^1];
        var json = line[line.IndexOf('{', StringComparison.Ordinal)..];
        return JsonDocument.Parse(json).RootElement.GetProperty("grantId").GetString()!;
    }

    private static HashSet<string> Files(string directory) =>
        [.. Directory.EnumerateFiles(directory, "*", SearchOption.AllDirectories)];

    private static async Task<(string Path, string D)> WriteEvidenceKeyAsync(string directory)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var p = key.ExportParameters(true);
        var path = Path.Combine(directory, "evidence.jwk.json");
        var d = Base64UrlEncoder.Encode(p.D);
        await File.WriteAllTextAsync(path, new JsonObject
        {
            ["kty"] = "EC", ["crv"] = "P-256", ["kid"] = "ev-1",
            ["x"] = Base64UrlEncoder.Encode(p.Q.X), ["y"] = Base64UrlEncoder.Encode(p.Q.Y), ["d"] = d,
        }.ToJsonString());
        return (path, d);
    }

    internal static string SpanText(IEnumerable<Activity> spans)
    {
        var text = new StringBuilder();
        foreach (var span in spans)
        {
            text.Append(span.OperationName).Append(' ').Append(span.DisplayName).Append(' ').Append(span.StatusDescription).Append('\n');
            foreach (var tag in span.TagObjects)
            {
                text.Append(tag.Key).Append('=').Append(tag.Value).Append('\n');
            }

            foreach (var e in span.Events)
            {
                text.Append(e.Name).Append(string.Join(',', e.Tags.Select(t => $"{t.Key}={t.Value}"))).Append('\n');
            }

            foreach (var link in span.Links)
            {
                text.Append(link.Context.TraceState).Append(string.Join(',', (link.Tags ?? []).Select(t => $"{t.Key}={t.Value}"))).Append('\n');
            }

            foreach (var baggage in span.Baggage)
            {
                text.Append(baggage.Key).Append('=').Append(baggage.Value).Append('\n');
            }

            text.Append(span.TraceStateString).Append('\n');
        }

        return text.ToString();
    }

    /// <summary>Secrets by name; a JWT also contributes its signature part, which alone makes a copy usable.</summary>
    internal sealed class SecretList
    {
        private readonly List<(string Name, string Value)> _secrets = [];

        public void Add(string name, string value) => _secrets.Add((name, value));

        public string Jwt(string name, string jwt)
        {
            Add(name, jwt);
            Add(name + " signature", jwt[(jwt.LastIndexOf('.') + 1)..]);
            return jwt;
        }

        public List<string> FoundIn(IReadOnlyDictionary<string, string> sinks)
        {
            var found = new List<string>();
            foreach (var (sink, text) in sinks)
            {
                foreach (var (name, value) in _secrets)
                {
                    var at = text.IndexOf(value, StringComparison.Ordinal);
                    if (at >= 0)
                    {
                        var from = Math.Max(0, text.LastIndexOf('\n', at) + 1);
                        var to = text.IndexOf('\n', at);
                        var line = text[from..(to < 0 ? text.Length : to)];
                        found.Add($"{name} in {sink}: {(line.Length > 400 ? line[..400] + "…" : line)}");
                    }
                }
            }

            return found;
        }
    }

    /// <summary>Every measurement of every meter (the gateway's, ASP.NET Core's, Kestrel's, HttpClient's) with its tags.</summary>
    internal sealed class MetricCapture : IDisposable
    {
        private readonly MeterListener _listener = new();
        private readonly ConcurrentQueue<string> _lines = new();

        public static MetricCapture Start()
        {
            var capture = new MetricCapture();
            capture._listener.InstrumentPublished = (instrument, l) => l.EnableMeasurementEvents(instrument);
            capture._listener.SetMeasurementEventCallback<long>((i, v, tags, _) => capture.Record(i, tags));
            capture._listener.SetMeasurementEventCallback<int>((i, v, tags, _) => capture.Record(i, tags));
            capture._listener.SetMeasurementEventCallback<double>((i, v, tags, _) => capture.Record(i, tags));
            capture._listener.Start();
            return capture;
        }

        private void Record(Instrument instrument, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            var line = new StringBuilder(instrument.Meter.Name).Append(' ').Append(instrument.Name);
            foreach (var tag in tags)
            {
                line.Append(' ').Append(tag.Key).Append('=').Append(tag.Value);
            }

            _lines.Enqueue(line.ToString());
        }

        public string Text() => string.Join('\n', _lines);

        public void Dispose() => _listener.Dispose();
    }

    /// <summary>Every log line at every level, with its structured fields, scopes and exception.</summary>
    internal sealed class AllLevelsLogCollector : ILoggerProvider, ISupportExternalScope
    {
        private readonly ConcurrentQueue<string> _lines = new();
        private IExternalScopeProvider? _scopes;

        public IReadOnlyList<string> Lines => [.. _lines];

        public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

        public void SetScopeProvider(IExternalScopeProvider scopeProvider) => _scopes = scopeProvider;

        public void Dispose()
        {
        }

        private sealed class Logger(AllLevelsLogCollector owner, string category) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state)
                where TState : notnull => owner._scopes?.Push(state);

            public bool IsEnabled(LogLevel logLevel) => true;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            {
                var line = new StringBuilder($"{logLevel} {category}[{eventId.Id}] {formatter(state, exception)}");
                if (state is IReadOnlyList<KeyValuePair<string, object?>> fields)
                {
                    line.Append(' ').Append(string.Join(' ', fields.Select(f => $"{f.Key}={f.Value}")));
                }

                owner._scopes?.ForEachScope(
                    (scope, text) =>
                    {
                        text.Append(" scope:").Append(scope);
                        if (scope is IReadOnlyList<KeyValuePair<string, object?>> pairs)
                        {
                            text.Append(' ').Append(string.Join(' ', pairs.Select(f => $"{f.Key}={f.Value}")));
                        }
                    },
                    line);
                if (exception is not null)
                {
                    line.Append(' ').Append(exception);
                }

                owner._lines.Enqueue(line.ToString());
            }
        }
    }
}
