using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using AssuranceGateway.Tokens;
using Microsoft.IdentityModel.Tokens;

namespace AssuranceGateway.Cli;

/// <summary>
/// Local keys for a first run: an access-token issuer, a workload (JWT-SVID) issuer and the evidence signing key.
/// Private keys stay in config/keys (ignored by git); the gateway reads only the public JWK Sets and its own
/// evidence key. For development only: production issuers are your IdP and your SPIFFE trust domain.
/// </summary>
internal static class DevKeys
{
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    public const string IdpPrivate = "idp.private.jwk.json";
    public const string IdpPublic = "idp.jwks.json";
    public const string WorkloadPrivate = "workload.private.jwk.json";
    public const string WorkloadPublic = "workload.jwks.json";
    public const string Evidence = "evidence.jwk.json";

    public static int Init(string directory, bool force, TextWriter output)
    {
        CreateOwnerOnlyDirectory(directory);
        var created = 0;
        created += Pair(directory, IdpPrivate, IdpPublic, "idp", force, output);
        created += Pair(directory, WorkloadPrivate, WorkloadPublic, "workload", force, output);
        var evidence = Path.Combine(directory, Evidence);
        if (force || !File.Exists(evidence))
        {
            using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
            Write(evidence, PrivateJwk(key, "evidence"));
            output.WriteLine($"wrote {evidence}");
            created++;
        }

        if (created == 0)
        {
            output.WriteLine($"keys already present in {directory} (use --force to replace them)");
        }

        return 0;
    }

    private static int Pair(string directory, string privateName, string publicName, string purpose, bool force, TextWriter output)
    {
        var privatePath = Path.Combine(directory, privateName);
        var publicPath = Path.Combine(directory, publicName);
        if (!force && File.Exists(privatePath))
        {
            if (File.Exists(publicPath))
            {
                return 0;
            }

            // Only --force replaces a private key: tokens it signed and anything configured to trust it would stop
            // working. A missing public JWK Set is derived from the private key instead.
            Write(publicPath, JwkSet(PublicJwk(privatePath)));
            output.WriteLine($"wrote {publicPath} from {privatePath}");
            return 1;
        }

        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var jwk = PrivateJwk(key, purpose);
        Write(privatePath, jwk);
        var publicJwk = new Dictionary<string, string>(jwk);
        publicJwk.Remove("d");
        Write(publicPath, JwkSet(publicJwk));
        output.WriteLine($"wrote {privatePath} and {publicPath}");
        return 1;
    }

    private static Dictionary<string, object> JwkSet(object publicJwk) => new() { ["keys"] = new[] { publicJwk } };

    /// <summary>The public members of a private JWK file (RFC 7518 §6: EC keeps x and y, RSA n and e).</summary>
    private static JsonObject PublicJwk(string privatePath)
    {
        JsonObject? jwk;
        try
        {
            jwk = JsonNode.Parse(File.ReadAllText(privatePath)) as JsonObject;
        }
        catch (JsonException e)
        {
            throw new UsageException($"'{privatePath}' is not a JWK ({e.Message}): fix or remove it, or use --force to replace the keys");
        }

        if (jwk?["kty"]?.GetValueKind() != JsonValueKind.String || jwk["kty"]!.GetValue<string>() is not ("EC" or "RSA"))
        {
            throw new UsageException($"'{privatePath}' is not an EC or RSA JWK: its public JWK Set cannot be derived (use --force to replace the keys)");
        }

        foreach (var member in new[] { "d", "p", "q", "dp", "dq", "qi", "oth" })
        {
            jwk.Remove(member);
        }

        return jwk;
    }

    /// <summary>
    /// A private JWK whose kid is the purpose and the start of the key's RFC 7638 thumbprint: a replaced key (--force)
    /// gets a new kid, so a verifier that caches keys by kid and refetches on an unknown one sees the rotation.
    /// </summary>
    private static Dictionary<string, string> PrivateJwk(ECDsa key, string purpose)
    {
        var p = key.ExportParameters(includePrivateParameters: true);
        var x = Base64UrlEncoder.Encode(p.Q.X);
        var y = Base64UrlEncoder.Encode(p.Q.Y);
        var thumbprint = Base64UrlEncoder.Encode(SHA256.HashData(Encoding.UTF8.GetBytes($$"""{"crv":"P-256","kty":"EC","x":"{{x}}","y":"{{y}}"}""")));
        return new Dictionary<string, string>
        {
            ["kty"] = "EC",
            ["crv"] = "P-256",
            ["kid"] = $"{purpose}-{thumbprint[..12]}",
            ["use"] = "sig",
            ["alg"] = "ES256",
            ["x"] = x,
            ["y"] = y,
            ["d"] = Base64UrlEncoder.Encode(p.D),
        };
    }

    /// <summary>
    /// Writes an owner-only (0600) file. The file is created with that mode: writing it with the default mode and
    /// restricting it afterwards left the private key readable by everyone (umask 022) in between. Written beside the
    /// target and renamed over it, so that --force also gives a replaced file the new mode, and a reader never sees half
    /// a key.
    /// </summary>
    private static void Write(string path, object value)
    {
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, Share = FileShare.None };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        }

        var temporary = $"{path}.{Guid.NewGuid():N}.tmp";
        try
        {
            using (var stream = new FileStream(temporary, options))
            {
                JsonSerializer.Serialize(stream, value, Indented);
            }

            File.Move(temporary, path, overwrite: true);
        }
        catch
        {
            File.Delete(temporary);
            throw;
        }
    }

    /// <summary>
    /// The keys directory is created owner-only (0700); an existing directory is left as its owner set it. A --dir that
    /// names a file, or lies under one, is a usage error (once an IOException with a stack trace).
    /// </summary>
    private static void CreateOwnerOnlyDirectory(string directory)
    {
        if (Directory.Exists(directory))
        {
            return;
        }

        if (File.Exists(directory))
        {
            throw new UsageException($"--dir '{directory}' is a file, not a directory: give a directory for the keys");
        }

        try
        {
            if (OperatingSystem.IsWindows())
            {
                Directory.CreateDirectory(directory);
            }
            else
            {
                Directory.CreateDirectory(directory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UsageException($"--dir '{directory}': cannot create the directory ({e.Message})");
        }
    }

    public static JsonWebKey LoadPrivate(string path)
    {
        if (!File.Exists(path))
        {
            throw new UsageException($"'{path}' does not exist: run 'agw keys init' first, or pass --key");
        }

        JsonWebKey key;
        try
        {
            key = new JsonWebKey(File.ReadAllText(path));
        }
        catch (ArgumentException)
        {
            // The library's message quotes the whole file, private key included: never printed.
            throw new UsageException($"'{path}' is not a JSON Web Key");
        }

        if (string.IsNullOrEmpty(key.D))
        {
            throw new UsageException($"'{path}' holds no private key (a public key or JWK Set?): pass the private JWK with --key");
        }

        // A key that parses but cannot sign (a damaged d, an unknown curve, a missing x) would fail only while signing,
        // with the library's exception: proved here, and said in one line that never quotes the key.
        if (key.Crv != "P-256" || EcJwk.ProveKeyPair(key) is not null)
        {
            throw new UsageException($"'{path}' is not a usable private EC P-256 key (ES256): create one with 'agw keys init'");
        }

        return key;
    }
}
