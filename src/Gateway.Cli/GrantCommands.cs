using System.CommandLine;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using AssuranceGateway.Requests;

namespace AssuranceGateway.Cli;

/// <summary>
/// <c>agw grant create|show|list|approve|deny|revoke</c> against the assurance API, for people and CI pipelines.
/// The raw access token given to <c>create --token</c> is hashed here: it never travels to the API.
/// </summary>
internal static class GrantCommands
{
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static void Add(RootCommand root)
    {
        var api = new Option<string>("--api") { Description = "Assurance API base URL (or AGW_API)", DefaultValueFactory = _ => Environment.GetEnvironmentVariable("AGW_API") ?? "http://127.0.0.1:8081" };
        var bearer = new Option<string?>("--as") { Description = "Bearer token of the caller for the API (or AGW_TOKEN)" };
        var quiet = new Option<bool>("--quiet", "-q") { Description = "Print only the grant id" };

        var route = new Option<string>("--route") { Description = "Route id the grant is for", Required = true };
        var subject = new Option<string?>("--subject") { Description = "Bound subject (sub of the caller's token)" };
        var session = new Option<string?>("--session") { Description = "Bound session (sid)" };
        var token = new Option<string?>("--token") { Description = "Bound access token; hashed locally, never sent" };
        var tokenHash = new Option<string?>("--token-hash") { Description = "Bound token hash (sha256:...)" };
        var workload = new Option<string?>("--workload") { Description = "Bound workload, e.g. spiffe://prod.example/ns/ci/sa/deployer" };
        var origin = new Option<string[]>("--origin") { Description = "Bound origin CIDR (repeatable)" };
        var method = new Option<string?>("--method") { Description = "Bound request: method" };
        var path = new Option<string?>("--path") { Description = "Bound request: path as sent on the wire" };
        var query = new Option<string?>("--query") { Description = "Bound request: raw query without '?'" };
        var header = new Option<string[]>("--header") { Description = "Bound request: 'name: value' of a bound header (repeatable)" };
        var body = new Option<FileInfo?>("--body") { Description = "Bound request: file with the exact body bytes" };
        var requestHash = new Option<string?>("--request-hash") { Description = "Bound request hash instead of the request itself" };
        var maxUses = new Option<int?>("--max-uses") { Description = "Uses (default 1)" };
        var ttl = new Option<int?>("--ttl") { Description = "Seconds of validity (default: the policy's MaxTtl)" };
        var notBefore = new Option<string?>("--not-before") { Description = "Start of the window (ISO 8601 with Z or an offset)" };
        var reason = new Option<string?>("--reason") { Description = "Why (change ticket, incident)" };
        var create = new Command("create", "Issue a grant")
        {
            api, bearer, quiet, route, subject, session, token, tokenHash, workload, origin, method, path, query, header, body, requestHash, maxUses, ttl, notBefore, reason,
        };
        create.SetAction(async (r, ct) =>
        {
            var json = new JsonObject { ["route"] = r.GetValue(route) };
            void Set(string name, JsonNode? value)
            {
                if (value is not null)
                {
                    json[name] = value;
                }
            }

            Set("subject", r.GetValue(subject));
            Set("session", r.GetValue(session));
            if (r.GetValue(token) is not null && r.GetValue(tokenHash) is not null)
            {
                throw new UsageException("--token and --token-hash: give one of them");
            }

            Set("tokenHash", r.GetValue(token) is { } raw ? Hashes.TokenHash(CommandInput.AccessToken(raw)) : r.GetValue(tokenHash));
            Set("workload", r.GetValue(workload));
            if (r.GetValue(origin) is { Length: > 0 } origins)
            {
                json["origin"] = new JsonArray([.. origins.Select(o => JsonValue.Create(o))]);
            }

            // Parsed even without --method, so that a malformed --header is refused rather than silently dropped.
            var given = CommandInput.Headers(r.GetValue(header));
            if (r.GetValue(method) is null)
            {
                // The bound request is sent only with its method: without it these were dropped, and the API answered
                // "request: required" about options that were given.
                var orphans = new Option[] { path, query, header, body }.Where(o => r.GetResult(o) is { Implicit: false }).Select(o => o.Name).ToList();
                if (orphans.Count > 0)
                {
                    throw new UsageException($"{string.Join(", ", orphans)} {(orphans.Count == 1 ? "needs" : "need")} --method: they describe the bound request, sent only with its method");
                }
            }

            if (r.GetValue(method) is { } m)
            {
                // Every value of a repeated header, as an array: the API hashes them joined with "," (SPEC §4.2), as the
                // gateway hashes a header sent twice and as `agw hash` does; keeping only the last bound a hash that the
                // real request never has.
                var headers = new JsonObject();
                foreach (var (name, values) in given)
                {
                    headers[name] = new JsonArray([.. values.Select(v => JsonValue.Create(v))]);
                }

                if (CanonicalRequest.PathProblem(r.GetValue(path) ?? "/") is { } pathProblem)
                {
                    throw new UsageException($"--path {pathProblem}");
                }

                json["request"] = new JsonObject
                {
                    ["method"] = CommandInput.Method(m),
                    ["path"] = r.GetValue(path) ?? "/",
                    ["query"] = r.GetValue(query) ?? string.Empty,
                    ["headers"] = headers,
                    ["body"] = Convert.ToBase64String(CommandInput.ReadBody(r.GetValue(body))),
                };
            }

            Set("requestHash", r.GetValue(requestHash));
            Set("maxUses", r.GetValue(maxUses));
            Set("ttlSeconds", r.GetValue(ttl));
            Set("notBefore", r.GetValue(notBefore) is { } start ? CommandInput.Instant("--not-before", start).ToString("O", System.Globalization.CultureInfo.InvariantCulture) : null);
            Set("reason", r.GetValue(reason));
            return await SendAsync(r, api, bearer, HttpMethod.Post, "/assurance/v1/grants", json, r.GetValue(quiet) ? "id" : null, ct);
        });

        var id = new Argument<string>("id") { Description = "Grant id" };
        var show = new Command("show", "Show a grant with its bindings and events") { api, bearer, id };
        show.SetAction((r, ct) => SendAsync(r, api, bearer, HttpMethod.Get, $"/assurance/v1/grants/{CommandInput.GrantId(r.GetValue(id))}", null, null, ct));
        var listRoute = new Option<string?>("--route") { Description = "Only the grants of this route (a route the gateway does not have is an error, not an empty list)" };
        var list = new Command("list", "List grants waiting for approval, oldest first") { api, bearer, listRoute };
        list.SetAction((r, ct) => SendAsync(r, api, bearer, HttpMethod.Get,
            "/assurance/v1/grants?status=pending" + (r.GetValue(listRoute) is { } only ? "&route=" + Uri.EscapeDataString(only) : string.Empty), null, null, ct));
        var approve = new Command("approve", "Approve a pending grant") { api, bearer, id };
        approve.SetAction((r, ct) => SendAsync(r, api, bearer, HttpMethod.Post, $"/assurance/v1/grants/{CommandInput.GrantId(r.GetValue(id))}/approve", null, null, ct));
        var deny = new Command("deny", "Deny (revoke) a pending grant") { api, bearer, id };
        deny.SetAction((r, ct) => SendAsync(r, api, bearer, HttpMethod.Post, $"/assurance/v1/grants/{CommandInput.GrantId(r.GetValue(id))}/deny", null, null, ct));
        var revoke = new Command("revoke", "Revoke a grant") { api, bearer, id };
        revoke.SetAction((r, ct) => SendAsync(r, api, bearer, HttpMethod.Delete, $"/assurance/v1/grants/{CommandInput.GrantId(r.GetValue(id))}", null, null, ct));

        root.Subcommands.Add(new Command("grant", "Grants on the assurance API") { create, show, list, approve, deny, revoke });
    }

    private static async Task<int> SendAsync(ParseResult r, Option<string> api, Option<string?> bearer, HttpMethod method, string path,
        JsonObject? body, string? onlyField, CancellationToken ct)
    {
        var token = r.GetValue(bearer) ?? Environment.GetEnvironmentVariable("AGW_TOKEN");
        using var client = new HttpClient { BaseAddress = CommandInput.ApiAddress(r.GetValue(api)!), Timeout = CommandInput.HttpTimeout() };
        using var request = new HttpRequestMessage(method, path);
        if (token is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        if (body is not null)
        {
            request.Content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json");
        }

        HttpResponseMessage response;
        try
        {
            response = await client.SendAsync(request, ct);
        }
        catch (HttpRequestException e)
        {
            // Unreachable (wrong --api / AGW_API, gateway down): say which address, not a stack trace.
            await Console.Error.WriteLineAsync($"cannot reach the assurance API at {client.BaseAddress}: {e.Message}");
            return 2;
        }
        catch (TaskCanceledException e) when (!ct.IsCancellationRequested)
        {
            // HttpClient's own timeout (something listens there but never answers), not the user's Ctrl+C.
            await Console.Error.WriteLineAsync($"the assurance API at {client.BaseAddress} did not answer: {e.Message}");
            return 2;
        }

        using var _ = response;
        var text = await response.Content.ReadAsStringAsync(ct);
        // A login page of an ingress, the proxy listener, another service on that port: not the assurance API.
        Task NotTheApiAsync(string what) => Console.Error.WriteLineAsync(
            $"unexpected answer from {client.BaseAddress}: {(int)response.StatusCode} {response.Content.Headers.ContentType?.MediaType ?? "(no content type)"}, {what} (is --api / AGW_API the assurance API?)");
        if (!response.IsSuccessStatusCode)
        {
            // Every error of the API is problem+json; anything else (an ingress's page) would print as just "404 ".
            if (!string.Equals(response.Content.Headers.ContentType?.MediaType, "application/problem+json", StringComparison.OrdinalIgnoreCase))
            {
                await NotTheApiAsync("not a problem+json error of the API");
                return 1;
            }

            // The proxy listener answers problem+json too, with a reason the API never gives.
            if (text.Contains($"\"reason\":\"{Enforcement.ReasonCodes.NoRoute}\"", StringComparison.Ordinal))
            {
                await NotTheApiAsync("the gateway's proxy listener (no route matches)");
                return 1;
            }

            await Console.Error.WriteLineAsync($"{(int)response.StatusCode} {TerminalText.Line(text)}");
            return 1;
        }

        if (text.Length == 0 && onlyField is null)
        {
            // The reason phrase is the server's (read as Latin-1: a C1 control comes through), perhaps not the API's.
            Console.WriteLine($"{(int)response.StatusCode} {TerminalText.Line(response.ReasonPhrase ?? string.Empty)}");
            return 0;
        }

        JsonNode? node;
        try
        {
            node = text.Length == 0 ? null : JsonNode.Parse(text);
        }
        catch (JsonException)
        {
            node = null;
        }

        if (node is not JsonObject and not JsonArray)
        {
            await NotTheApiAsync("not a JSON object");
            return 1;
        }

        if (onlyField is not null)
        {
            if ((node as JsonObject)?[onlyField] is not JsonValue field || !field.TryGetValue<string>(out var value) || value.Length == 0)
            {
                // `ID=$(agw grant create -q …)` must not carry on with an empty id.
                await Console.Error.WriteLineAsync($"the answer from {client.BaseAddress} has no '{onlyField}' (is --api / AGW_API the assurance API?)");
                return 1;
            }

            if (!string.Equals(TerminalText.Line(value), value, StringComparison.Ordinal))
            {
                // Printed as is for `ID=$(agw …)`: escaped it would be another value, raw it could drive the terminal.
                await Console.Error.WriteLineAsync($"the answer from {client.BaseAddress} has a '{onlyField}' with hidden characters: {TerminalText.Line(value)}");
                return 1;
            }

            Console.WriteLine(value);
            return 0;
        }

        Console.WriteLine(TerminalText.Json(node.ToJsonString(Indented)));
        return 0;
    }
}
