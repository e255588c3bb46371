using System.CommandLine;
using AssuranceGateway.Cli;
using AssuranceGateway.Requests;
using Microsoft.Extensions.Primitives;

var root = new RootCommand("agw: helpers for the Assurance Gateway (request hashes, grants, local keys and tokens)");

// agw hash — the canonical request hash, computed by the gateway's own code.
var method = new Option<string>("--method") { Description = "HTTP method", Required = true };
var path = new Option<string>("--path") { Description = "Path exactly as sent on the wire (percent-encoding kept)", Required = true };
var query = new Option<string>("--query") { Description = "Raw query string, without '?'", DefaultValueFactory = _ => string.Empty };
var header = new Option<string[]>("--header") { Description = "A bound header as 'name: value' (repeatable; absent bound headers via --bound)", AllowMultipleArgumentsPerToken = false };
var bound = new Option<string[]>("--bound") { Description = "Names of the policy's BoundHeaders (default: the names given with --header; give --bound when a bound header is absent from the request, or the hash lacks its \"name:\" line)" };
var bodyFile = new Option<FileInfo?>("--body") { Description = "File holding the exact body bytes (default: empty body)" };
var hash = new Command("hash", "Print the request hash (SPEC: AGW-REQUEST-V1) of a request") { method, path, query, header, bound, bodyFile };
hash.SetAction(result =>
{
    var headers = CommandInput.Headers(result.GetValue(header));
    var names = (result.GetValue(bound) is { Length: > 0 } b ? b.Select(n => n.ToLowerInvariant()) : headers.Keys)
        .Distinct().OrderBy(n => n, StringComparer.Ordinal).ToList();
    var body = CommandInput.ReadBody(result.GetValue(bodyFile));
    // A hash the gateway would never accept a request for is a usage error, not a hash.
    var requestMethod = CommandInput.Method(result.GetValue(method)!);
    if (CanonicalRequest.PathProblem(result.GetValue(path)!) is { } pathProblem)
    {
        throw new UsageException($"--path {pathProblem}");
    }

    if (CanonicalRequest.QueryProblem(result.GetValue(query) ?? string.Empty) is { } queryProblem)
    {
        throw new UsageException($"--query {queryProblem}");
    }

    if (headers.FirstOrDefault(h => CanonicalRequest.PresentButEmpty(new StringValues([.. h.Value]))) is { Key: not null } empty)
    {
        throw new UsageException($"--header '{empty.Key}' is empty: the gateway refuses a bound header sent empty (it hashes like an absent one); leave it out");
    }

    var computed = CanonicalRequest.Compute(requestMethod, result.GetValue(path)!, result.GetValue(query) ?? string.Empty, names,
        n => headers.TryGetValue(n, out var v) ? new StringValues([.. v]) : StringValues.Empty, body);
    Console.WriteLine(computed.Hash);
    return 0;
});
root.Subcommands.Add(hash);

// agw keys init — local development keys.
var dir = new Option<string>("--dir") { Description = "Where to write the keys", DefaultValueFactory = _ => "config/keys" };
var force = new Option<bool>("--force") { Description = "Replace existing keys" };
var keysInit = new Command("init", "Create local issuer, workload and evidence keys for a first run") { dir, force };
keysInit.SetAction(result => DevKeys.Init(result.GetValue(dir)!, result.GetValue(force), Console.Out));
root.Subcommands.Add(new Command("keys", "Local development keys") { keysInit });

// agw token — a development access token.
var key = new Option<string>("--key") { Description = "Private JWK to sign with", DefaultValueFactory = _ => "config/keys/" + DevKeys.IdpPrivate };
var iss = new Option<string>("--iss") { Description = "Issuer", DefaultValueFactory = _ => "https://idp.example" };
var aud = new Option<string>("--aud") { Description = "Audience", DefaultValueFactory = _ => "gateway" };
var sub = new Option<string>("--sub") { Description = "Subject", Required = true };
var sid = new Option<string?>("--sid") { Description = "Session id" };
var acr = new Option<string?>("--acr") { Description = "Authentication context, e.g. urn:aal2" };
var azp = new Option<string?>("--azp") { Description = "Authorized party (the 'claim' workload source)" };
var scope = new Option<string?>("--scope") { Description = "Space-separated scopes (for the assurance API)" };
var ttl = new Option<int>("--ttl") { Description = "Lifetime in seconds (the gateway refuses more than Tokens:MaxLifetime, 1 h by default)", DefaultValueFactory = _ => 300 };
var claim = new Option<string[]>("--claim") { Description = "Extra claim name=value (repeatable)" };
var token = new Command("token", "Mint a development access token with the local issuer key") { key, iss, aud, sub, sid, acr, azp, scope, ttl, claim };
token.SetAction(result =>
{
    var claims = new Dictionary<string, object>();
    void Add(string name, string? value)
    {
        if (value is not null)
        {
            claims[name] = value;
        }
    }

    Add("sid", result.GetValue(sid));
    Add("acr", result.GetValue(acr));
    Add("azp", result.GetValue(azp));
    Add("scope", result.GetValue(scope));
    foreach (var c in result.GetValue(claim) ?? [])
    {
        var eq = c.IndexOf('=', StringComparison.Ordinal);
        Add(eq > 0 ? c[..eq] : c, eq > 0 ? c[(eq + 1)..] : string.Empty);
    }

    Console.WriteLine(DevTokens.Create(DevKeys.LoadPrivate(result.GetValue(key)!), "at+jwt", result.GetValue(iss)!, result.GetValue(aud)!,
        result.GetValue(sub)!, CommandInput.Lifetime(result.GetValue(ttl)), claims));
    return 0;
});
root.Subcommands.Add(token);

// agw svid — a development JWT-SVID for the Workload-Identity header.
var svidKey = new Option<string>("--key") { Description = "Private JWK to sign with", DefaultValueFactory = _ => "config/keys/" + DevKeys.WorkloadPrivate };
var svidIss = new Option<string>("--iss") { Description = "Trust domain issuer", DefaultValueFactory = _ => "spiffe://prod.example" };
var svidAud = new Option<string>("--aud") { Description = "Audience", DefaultValueFactory = _ => "gateway" };
var svidId = new Option<string>("--id") { Description = "SPIFFE ID of the workload", Required = true };
var svidTtl = new Option<int>("--ttl") { Description = "Lifetime in seconds", DefaultValueFactory = _ => 300 };
var svidClaim = new Option<string[]>("--claim") { Description = "Extra claim name=value (repeatable)" };
var svid = new Command("svid", "Mint a development JWT-SVID with the local workload key") { svidKey, svidIss, svidAud, svidId, svidTtl, svidClaim };
svid.SetAction(result =>
{
    var claims = new Dictionary<string, object>();
    foreach (var c in result.GetValue(svidClaim) ?? [])
    {
        var eq = c.IndexOf('=', StringComparison.Ordinal);
        claims[eq > 0 ? c[..eq] : c] = eq > 0 ? c[(eq + 1)..] : string.Empty;
    }

    Console.WriteLine(DevTokens.Create(DevKeys.LoadPrivate(result.GetValue(svidKey)!), "JWT", result.GetValue(svidIss)!, result.GetValue(svidAud)!,
        result.GetValue(svidId)!, CommandInput.Lifetime(result.GetValue(svidTtl)), claims));
    return 0;
});
root.Subcommands.Add(svid);

// agw upstream — a sample upstream that echoes what it received.
var urls = new Option<string>("--urls") { Description = "Listen address", DefaultValueFactory = _ => "http://127.0.0.1:5001" };
var upstream = new Command("upstream", "Run a sample upstream that echoes each request") { urls };
upstream.SetAction((result, ct) => SampleUpstream.RunAsync(result.GetValue(urls)!, ct));
root.Subcommands.Add(upstream);

GrantCommands.Add(root);

// System.CommandLine's default handler would catch every exception first and print "Unhandled exception:" with a stack
// trace (exit 1), even for a usage mistake such as a missing key file: it is off, and the two kinds are told apart here.
if (args.Length == 0)
{
    // Nothing asked: the overview, as a usage error (nothing was done).
    await root.Parse(["--help"]).InvokeAsync();
    return 2;
}

var parsed = root.Parse(args);
if (parsed.Errors.Count > 0)
{
    // A malformed option is a usage error like any other: stderr and exit 2, and nothing on stdout, where a script
    // capturing `ID=$(agw grant create -q …)` would otherwise take the help text for an id.
    // The parser quotes the argument it could not place: escaped like a usage error's (an id list read from a CRLF file
    // gives arguments ending in a carriage return, a pasted one may hold an escape sequence).
    foreach (var error in parsed.Errors)
    {
        Console.Error.WriteLine(TerminalText.Line(error.Message));
    }

    Console.Error.WriteLine($"see: {string.Join(' ', ["agw", .. CommandPath(parsed.CommandResult), "--help"])}");
    return 2;
}

try
{
    return await parsed.InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
}
catch (UsageException e)
{
    Console.Error.WriteLine(e.Printable);
    return 2;
}
catch (Exception e) when (e is not OperationCanceledException)
{
    // A defect, not a usage error: keep the stack trace for the bug report, and the exit code the default handler used.
    Console.Error.WriteLine($"agw: unexpected error: {e}");
    return 1;
}

static IEnumerable<string> CommandPath(System.CommandLine.Parsing.CommandResult result)
{
    var names = new Stack<string>();
    for (var current = result; current?.Parent is System.CommandLine.Parsing.CommandResult parent; current = parent)
    {
        names.Push(current.Command.Name);
    }

    return names;
}
