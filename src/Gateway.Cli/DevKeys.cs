using System.Security.Cryptography;
using System.Text.Json;
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
        Directory.CreateDirectory(directory);
        var created = 0;
        created += Pair(directory, IdpPrivate, IdpPublic, "idp-1", force, output);
        created += Pair(directory, WorkloadPrivate, WorkloadPublic, "workload-1", force, output);
        var evidence = Path.Combine(directory, Evidence);
        if (force || !File.Exists(evidence))
        {
            Write(evidence, PrivateJwk(ECDsa.Create(ECCurve.NamedCurves.nistP256), "evidence-1"));
            output.WriteLine($"wrote {evidence}");
            created++;
        }

        if (created == 0)
        {
            output.WriteLine($"keys already present in {directory} (use --force to replace them)");
        }

        return 0;
    }

    private static int Pair(string directory, string privateName, string publicName, string kid, bool force, TextWriter output)
    {
        var privatePath = Path.Combine(directory, privateName);
        var publicPath = Path.Combine(directory, publicName);
        if (!force && File.Exists(privatePath) && File.Exists(publicPath))
        {
            return 0;
        }

        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var jwk = PrivateJwk(key, kid);
        Write(privatePath, jwk);
        var publicJwk = new Dictionary<string, string>(jwk);
        publicJwk.Remove("d");
        Write(publicPath, new Dictionary<string, object> { ["keys"] = new[] { publicJwk } });
        output.WriteLine($"wrote {privatePath} and {publicPath}");
        return 1;
    }

    private static Dictionary<string, string> PrivateJwk(ECDsa key, string kid)
    {
        var p = key.ExportParameters(includePrivateParameters: true);
        return new Dictionary<string, string>
        {
            ["kty"] = "EC",
            ["crv"] = "P-256",
            ["kid"] = kid,
            ["use"] = "sig",
            ["alg"] = "ES256",
            ["x"] = Base64UrlEncoder.Encode(p.Q.X),
            ["y"] = Base64UrlEncoder.Encode(p.Q.Y),
            ["d"] = Base64UrlEncoder.Encode(p.D),
        };
    }

    private static void Write(string path, object value)
    {
        File.WriteAllText(path, JsonSerializer.Serialize(value, Indented));
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }
    }

    public static JsonWebKey LoadPrivate(string path)
    {
        if (!File.Exists(path))
        {
            throw new UsageException($"'{path}' does not exist: run 'agw keys init' first, or pass --key");
        }

        return new JsonWebKey(File.ReadAllText(path));
    }
}
