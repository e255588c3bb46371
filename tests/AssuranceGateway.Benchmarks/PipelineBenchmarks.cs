using System.Collections.Frozen;
using System.Net;
using System.Security.Claims;
using System.Security.Cryptography;
using AssuranceGateway.Configuration;
using AssuranceGateway.Enforcement;
using AssuranceGateway.Grants;
using AssuranceGateway.Requests;
using AssuranceGateway.Tokens;
using BenchmarkDotNet.Attributes;
using Microsoft.Extensions.Primitives;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;

namespace AssuranceGateway.Benchmarks;

/// <summary>
/// The decision's pieces without network I/O: the canonical hash of a 1 KiB request, token validation cold (a token
/// never seen) and cached (the same token again), and the whole decision with the in-process store.
/// </summary>
[MemoryDiagnoser]
public class PipelineBenchmarks
{
    private static readonly string[] BoundHeaders = ["content-type"];
    private readonly byte[] _body = RandomNumberGenerator.GetBytes(1024);
    private TokenValidator _validator = null!;
    private string _token = null!;
    private InMemoryGrantStore _store = null!;
    private string _grantId = null!;
    private ECDsa _publicKey = null!;
    private byte[] _signingInput = null!;
    private byte[] _signature = null!;

    [GlobalSetup]
    public async Task Setup()
    {
        using var ec = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var parameters = ec.ExportParameters(true);
        var jwk = new JsonWebKey
        {
            Kty = "EC", Crv = "P-256", Kid = "k1",
            X = Base64UrlEncoder.Encode(parameters.Q.X), Y = Base64UrlEncoder.Encode(parameters.Q.Y), D = Base64UrlEncoder.Encode(parameters.D),
        };
        var publicSet = new JsonWebKeySet($$"""{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","x":"{{jwk.X}}","y":"{{jwk.Y}}"}]}""");
        var settings = new TokenSettings
        {
            Issuers =
            [
                new TokenIssuer
                {
                    Issuer = "https://idp.bench", Audiences = ["gateway"], Algorithms = new[] { "ES256" }.ToFrozenSet(),
                    Keys = new StaticKeySource(IssuerKeys.From(publicSet)), KeyLocation = "memory",
                },
            ],
            AalMap = new Dictionary<string, int> { ["urn:aal2"] = 2 }.ToFrozenDictionary(),
        };
        _validator = new TokenValidator(settings, TimeProvider.System);
        var now = DateTime.UtcNow;
        _token = new JsonWebTokenHandler { SetDefaultTimesOnTokenCreation = false }.CreateToken(new SecurityTokenDescriptor
        {
            Issuer = "https://idp.bench", Audience = "gateway", Subject = new ClaimsIdentity([new Claim("sub", "bench")]),
            IssuedAt = now, NotBefore = now, Expires = now.AddMinutes(30), TokenType = "at+jwt",
            Claims = new Dictionary<string, object> { ["acr"] = "urn:aal2" },
            SigningCredentials = new SigningCredentials(jwk, SecurityAlgorithms.EcdsaSha256),
        });

        _publicKey = ECDsa.Create(new ECParameters { Curve = ECCurve.NamedCurves.nistP256, Q = parameters.Q });
        var dot = _token.LastIndexOf('.');
        _signingInput = System.Text.Encoding.ASCII.GetBytes(_token[..dot]);
        _signature = Base64UrlEncoder.DecodeBytes(_token[(dot + 1)..]);

        _store = new InMemoryGrantStore(TimeProvider.System, TimeSpan.FromDays(1));
        var hash = Hash();
        var token = (await _validator.ValidateAsync(_token, default)).Token!;
        _grantId = GrantIds.New();
        await _store.CreateAsync(new GrantRecord
        {
            Id = _grantId, Route = "bound", Status = GrantStatus.Active, TokenHash = token.TokenHash, Workload = "spiffe://bench/w",
            RequestHash = hash.Hash, Digests = hash.Digests, MaxUses = int.MaxValue, UsesRemaining = int.MaxValue,
            ExpiresAt = DateTimeOffset.UtcNow.AddDays(1), Bound = Bindings.Token | Bindings.Workload | Bindings.Request,
        }, new GrantEvent { Type = GrantEvent.Created }, 10, default);
    }

    private RequestHash Hash() =>
        CanonicalRequest.Compute("POST", "/bound/v1/releases", "a=1&b=2", BoundHeaders, _ => new StringValues("application/json"), _body);

    [Benchmark]
    public RequestHash CanonicalHash1KiB() => Hash();

    [Benchmark]
    public async Task<TokenCheck> TokenCold()
    {
        _validator.ClearCache();
        return await _validator.ValidateAsync(_token, default);
    }

    /// <summary>The ES256 check alone (<c>ECDsa.VerifyData</c> over the token's signing input): what TokenCold costs beyond it is the validator's.</summary>
    [Benchmark]
    public bool Es256VerifyOnly() => _publicKey.VerifyData(_signingInput, _signature, HashAlgorithmName.SHA256);

    [Benchmark]
    public ValueTask<TokenCheck> TokenCached() => _validator.ValidateAsync(_token, default);

    /// <summary>Token (cached), request hash and the atomic check-and-consume in the in-process store.</summary>
    [Benchmark]
    public async Task<ConsumeResult> DecisionWithoutIo()
    {
        var token = (await _validator.ValidateAsync(_token, default)).Token!;
        var hash = Hash();
        return await _store.ConsumeAsync(new ConsumeRequest
        {
            GrantId = _grantId, Route = "bound", Required = Bindings.Token | Bindings.Workload | Bindings.Request,
            Subject = token.Subject, TokenHash = token.TokenHash, Workload = "spiffe://bench/w", Origin = IPAddress.Loopback,
            RequestHash = hash.Hash, Components = hash.Components,
        }, default);
    }
}
