using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json.Nodes;
using AssuranceGateway.Testing;
using static AssuranceGateway.Testing.GrantHelpers;

namespace AssuranceGateway.FunctionalTests.Workload;

/// <summary>The mtls workload source on a real TLS listener: what a client certificate does and does not prove.</summary>
public sealed class MtlsWorkloadTests : IAsyncLifetime
{
    private GatewayHarness _gateway = null!;
    private X509Certificate2 _ca = null!;
    private X509Certificate2 _prodCa = null!;
    private X509Certificate2 _partnerCa = null!;
    private string _serverThumbprint = string.Empty;

    public async Task InitializeAsync()
    {
        _ca = TestCertificates.Ca();
        // Two CAs that name their trust domains, as SPIRE's do: a federated partner's next to prod's.
        _prodCa = TestCertificates.Ca("spiffe://prod.test");
        _partnerCa = TestCertificates.Ca("spiffe://partner.test");
        (_gateway, _serverThumbprint) = await TlsGateway.StartAsync([_ca, _prodCa, _partnerCa], w => w["Sources"] = new JsonArray("mtls"));
    }

    public async Task DisposeAsync()
    {
        await _gateway.DisposeAsync();
        _ca.Dispose();
        _prodCa.Dispose();
        _partnerCa.Dispose();
    }

    /// <summary>
    /// A CA that names its trust domain vouches for that domain only (SPIFFE X509-SVID: an SVID is judged by the bundle
    /// of the trust domain it names): the partner's CA in the same file cannot name prod's workloads.
    /// </summary>
    [Fact]
    public async Task PartnerCaSignsProdSpiffeId_WorkloadInvalidNothingForwarded()
    {
        // Sanity: the partner CA's own workloads and prod's own workloads are identified as usual.
        using (var own = TestCertificates.Client(Deployer, _prodCa))
        using (var ownHttp = ClientWith(own))
        {
            var t = _gateway.Idp.Token();
            var ok = await _gateway.CreateGrantAsync(DeployGrant(t, workload: Deployer));
            using var allowed = await ownHttp.SendAsync(DeployRequest(t, svid: null, ok, out _));
            Assert.Equal(HttpStatusCode.OK, allowed.StatusCode);
        }

        using var forged = TestCertificates.Client(Deployer, _partnerCa); // partner.test's CA naming a prod.test workload
        using var http = ClientWith(forged);
        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token, workload: Deployer));

        using var response = await http.SendAsync(DeployRequest(token, svid: null, id, out _));

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal(1, _gateway.Upstream.Count); // only the sanity request
    }

    private HttpClient ClientWith(X509Certificate2? certificate, bool evenIfNotValidNow = false, X509Certificate2[]? sending = null) =>
        TlsGateway.Client(_gateway, _serverThumbprint, certificate, evenIfNotValidNow, sending);

    [Fact]
    public async Task CaSignedSpiffeCertificate_IdentifiesWorkload_GrantBoundToItIsUsed()
    {
        using var client = TestCertificates.Client(Deployer, _ca);
        using var http = ClientWith(client);
        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token, workload: Deployer));

        using var response = await http.SendAsync(DeployRequest(token, svid: null, id, out var trace));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(1, _gateway.Upstream.Count);
        var span = Assert.Single(_gateway.Spans.Enforce(trace));
        Assert.Equal("mtls", span.GetTagItem("assurance.workload.source"));
        Assert.Equal(Deployer, span.GetTagItem("assurance.workload.id"));
    }

    /// <summary>
    /// SPIRE with an upstream authority, and any two-tier PKI, signs workload certificates with an intermediate that
    /// rotates often: the client sends it in the handshake, and the CA file holds the root only.
    /// </summary>
    [Fact]
    public async Task CertificateSignedByAnIntermediateTheClientSends_IdentifiesTheWorkload()
    {
        using var intermediate = TestCertificates.Ca("spiffe://prod.test", issuer: _prodCa);
        using var client = TestCertificates.Client(Deployer, intermediate);
        using var http = ClientWith(client, sending: [intermediate]);
        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token, workload: Deployer));

        using var response = await http.SendAsync(DeployRequest(token, svid: null, id, out var trace));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(1, _gateway.Upstream.Count);
        Assert.Equal(Deployer, Assert.Single(_gateway.Spans.Enforce(trace)).GetTagItem("assurance.workload.id"));
    }

    /// <summary>
    /// What the client sends is a candidate for the chain, never trusted: its own CA (self-signed, sent along as if an
    /// intermediate), or an intermediate of the prod root that names the partner's trust domain, vouches for nothing.
    /// </summary>
    [Theory]
    [InlineData("own CA")]
    [InlineData("partner intermediate")]
    public async Task IntermediateTheClientSends_NeverMakesItsOwnCaOrAnotherDomainTrusted_WorkloadInvalid(string which)
    {
        using var rogueCa = which == "own CA" ? TestCertificates.Ca("spiffe://prod.test") : TestCertificates.Ca("spiffe://partner.test", issuer: _prodCa);
        using var client = TestCertificates.Client(Deployer, rogueCa);
        using var http = ClientWith(client, sending: [rogueCa]);

        await AssertDeployRefusedAsWorkloadInvalidAsync(http);
    }

    /// <summary>
    /// A client certificate names where its issuer and its revocation list can be fetched (AIA caIssuers, CRL distribution
    /// point): URLs of the client's choosing. Fetching them during the handshake or the workload check would let anyone who
    /// can open a TLS connection make the gateway send requests where they like and hold a thread on each (a synchronous
    /// download that a slow server keeps waiting for seconds). Only what the client sent and the CA file count.
    /// </summary>
    [Fact]
    public async Task CertificateNamingAnIssuerOrCrlUrl_NothingFetched_WorkloadInvalid()
    {
        var fetched = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var (fetchServer, address) = await LoopbackServer.StartAsync(async context =>
        {
            fetched.Enqueue(context.Request.Path);
            await Task.Delay(TimeSpan.FromSeconds(2)); // a slow server: each fetch would hold the gateway this long
            context.Response.StatusCode = 404;
        });
        await using var _ = fetchServer;

        // Signed by an intermediate of the trusted root that the client does not send, but names where to fetch it.
        using var intermediate = TestCertificates.Ca("spiffe://prod.test", issuer: _prodCa);
        using var client = TestCertificates.Client(Deployer, intermediate, fetchFrom: new Uri(address + "/issuer.cer"), crlAt: new Uri(address + "/ca.crl"));
        using var http = ClientWith(client, sending: []); // offline: the test's own client stack fetches nothing either

        // Unauthenticated: the handshake alone, then token_missing.
        using (var anonymous = await http.PostAsync(new Uri("/deploy/v1/releases", UriKind.Relative), null))
        {
            Assert.Equal("token_missing", await anonymous.ReasonAsync());
        }

        Assert.Empty(fetched);

        // Authenticated: the workload check builds the certificate's chain.
        await AssertDeployRefusedAsWorkloadInvalidAsync(http);
        Assert.Empty(fetched);
    }

    /// <summary>
    /// A client that relied on the gateway fetching its intermediate from the AIA URL (as the handshake did before
    /// downloads were turned off) is now refused: the detail must say what is missing and that nothing is downloaded, so
    /// its operator configures the client to send the chain, instead of a bare "does not chain" that reads as a wrong CA.
    /// </summary>
    [Fact]
    public async Task IntermediateNotSentOnlyNamedByAia_WorkloadInvalidDetailSaysSendTheIntermediate()
    {
        using var intermediate = TestCertificates.Ca("spiffe://prod.test", issuer: _prodCa);
        using var client = TestCertificates.Client(Deployer, intermediate, fetchFrom: new Uri("http://127.0.0.1:9/issuer.cer"));
        using var http = ClientWith(client, sending: []);
        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token, workload: Deployer));

        using var response = await http.SendAsync(DeployRequest(token, svid: null, id, out _));

        var problem = await response.ProblemAsync();
        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("workload_invalid", problem.GetProperty("reason").GetString());
        var detail = problem.GetProperty("detail").GetString()!;
        Assert.Contains("does not chain to Workload:ClientCaFile", detail, StringComparison.Ordinal);
        Assert.Contains("among the intermediates the client sent", detail, StringComparison.Ordinal);
        Assert.Contains("never downloaded", detail, StringComparison.Ordinal);
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task SelfSignedCertificateClaimingTheSameSpiffeId_WorkloadInvalid()
    {
        using var rogue = TestCertificates.Client(Deployer, issuer: null);
        using var http = ClientWith(rogue);

        await AssertDeployRefusedAsWorkloadInvalidAsync(http);
    }

    /// <summary>A deploy with a grant for <see cref="Deployer"/>, sent over <paramref name="http"/>: workload_invalid, nothing forwarded.</summary>
    private async Task AssertDeployRefusedAsWorkloadInvalidAsync(HttpClient http)
    {
        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token, workload: Deployer));

        using var response = await http.SendAsync(DeployRequest(token, svid: null, id, out _));

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("workload_invalid", await response.ReasonAsync());
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task CertificateWithoutSpiffeId_IdentifiedByThumbprint_OtherKeyMismatches()
    {
        using var pinned = TestCertificates.Client(spiffeId: null, issuer: null);
        using var other = TestCertificates.Client(spiffeId: null, issuer: null);
        var thumbprint = "x509:sha256:" + Convert.ToHexStringLower(pinned.GetCertHash(HashAlgorithmName.SHA256));
        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token, workload: thumbprint, maxUses: 2));
        using var otherClient = ClientWith(other);
        using var pinnedClient = ClientWith(pinned);

        using var stolen = await otherClient.SendAsync(DeployRequest(token, svid: null, id, out _));
        Assert.Equal("workload_mismatch", await stolen.ReasonAsync());
        Assert.Equal(0, _gateway.Upstream.Count);

        // workload_mismatch is in RevokeOn: the holder of the right key now finds the grant burned.
        using var owner = await pinnedClient.SendAsync(DeployRequest(token, svid: null, id, out _));
        Assert.Equal("grant_revoked", await owner.ReasonAsync());
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Theory]
    [InlineData(-10, -5)] // expired five days ago (a key retired by rotation)
    [InlineData(5, 10)]   // not valid for five more days
    public async Task CertificateOutsideItsValidity_NoThumbprintIdentity_WorkloadInvalid(int notBeforeDays, int notAfterDays)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=workload", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.2")], false));
        using var certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(notBeforeDays), DateTimeOffset.UtcNow.AddDays(notAfterDays));
        var thumbprint = "x509:sha256:" + Convert.ToHexStringLower(certificate.GetCertHash(HashAlgorithmName.SHA256));
        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token, workload: thumbprint));
        using var http = ClientWith(certificate, evenIfNotValidNow: true);

        using var response = await http.SendAsync(DeployRequest(token, svid: null, id, out _));

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("workload_invalid", await response.ReasonAsync());
        Assert.Equal(0, _gateway.Upstream.Count);
    }

    [Fact]
    public async Task NoClientCertificate_WorkloadUnidentified()
    {
        using var http = ClientWith(null);
        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token));

        using var response = await http.SendAsync(DeployRequest(token, svid: null, id, out _));

        Assert.Equal("workload_unidentified", await response.ReasonAsync());
        Assert.Equal(0, _gateway.Upstream.Count);
    }
}

/// <summary>
/// A trusted proxy (Envoy, a mesh ingress) that connects over mTLS with its own certificate and forwards the client's in
/// X-Forwarded-Client-Cert, with every source enabled as in SPEC §3's example.
/// </summary>
public sealed class MtlsBehindTrustedProxyTests : IAsyncLifetime
{
    private const string Envoy = "spiffe://prod.test/ns/edge/sa/envoy";
    private GatewayHarness _gateway = null!;
    private X509Certificate2 _ca = null!;
    private X509Certificate2 _proxyCertificate = null!;
    private string _serverThumbprint = string.Empty;

    public async Task InitializeAsync()
    {
        _ca = TestCertificates.Ca("spiffe://prod.test");
        _proxyCertificate = TestCertificates.Client(Envoy, _ca);
        (_gateway, _serverThumbprint) = await TlsGateway.StartAsync([_ca], w =>
        {
            w["Sources"] = new JsonArray("mtls", "xfcc", "header");
            w["TrustedProxies"] = new JsonArray("127.0.0.1/32");
        });
    }

    public async Task DisposeAsync()
    {
        await _gateway.DisposeAsync();
        _ca.Dispose();
        _proxyCertificate.Dispose();
    }

    private HttpClient ProxyClient() => TlsGateway.Client(_gateway, _serverThumbprint, _proxyCertificate);

    /// <summary>The proxy's certificate names the hop: the workload is the one it forwards, not "sources disagree".</summary>
    [Fact]
    public async Task ProxyForwardsTheClientsCertificate_XfccNamesTheWorkload()
    {
        using var http = ProxyClient();
        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token, workload: Deployer));
        using var request = DeployRequest(token, svid: null, id, out var trace);
        request.Headers.TryAddWithoutValidation("X-Forwarded-Client-Cert", $"By={Envoy};Hash=ab12;URI={Deployer}");

        using var response = await http.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(1, _gateway.Upstream.Count);
        var span = Assert.Single(_gateway.Spans.Enforce(trace));
        Assert.Equal(Deployer, span.GetTagItem("assurance.workload.id"));
        Assert.Equal("xfcc", span.GetTagItem("assurance.workload.source"));
    }

    /// <summary>
    /// The proxy still cannot lend its own identity to a caller: without X-Forwarded-Client-Cert its certificate is its
    /// own workload, and a grant for the deployer does not match; a JWT-SVID naming someone else disagrees with the xfcc.
    /// </summary>
    [Fact]
    public async Task WithoutForwardedCertificate_TheProxyIsTheWorkload_AndOtherSourcesMustAgreeWithXfcc()
    {
        using var http = ProxyClient();
        var token = _gateway.Idp.Token();
        var id = await _gateway.CreateGrantAsync(DeployGrant(token, workload: Deployer));

        using (var response = await http.SendAsync(DeployRequest(token, svid: null, id, out var trace)))
        {
            Assert.Equal("workload_mismatch", await response.ReasonAsync());
            Assert.Equal(Envoy, Assert.Single(_gateway.Spans.Enforce(trace)).GetTagItem("assurance.workload.id"));
        }

        var other = await _gateway.CreateGrantAsync(DeployGrant(token, workload: Deployer));
        using var request = DeployRequest(token, _gateway.WorkloadIssuer.Svid("spiffe://prod.test/ns/dev/sa/intruder"), other, out _);
        request.Headers.TryAddWithoutValidation("X-Forwarded-Client-Cert", $"By={Envoy};URI={Deployer}");
        using var disagreeing = await http.SendAsync(request);
        Assert.Equal("workload_invalid", await disagreeing.ReasonAsync());
        Assert.Equal(0, _gateway.Upstream.Count);
    }
}

/// <summary>A gateway whose proxy listens on HTTPS with a test server certificate, and clients that pin it.</summary>
internal static class TlsGateway
{
    /// <summary>Starts it with <paramref name="clientCas"/> as <c>Workload:ClientCaFile</c>; returns it and its certificate's thumbprint.</summary>
    public static async Task<(GatewayHarness Gateway, string ServerThumbprint)> StartAsync(X509Certificate2[] clientCas, Action<JsonNode> workload)
    {
        var harness = await GatewayHarness.CreateAsync();
        var caPem = Path.Combine(harness.Directory, "client-ca.pem");
        await File.WriteAllTextAsync(caPem, string.Join('\n', clientCas.Select(ca => ca.ExportCertificatePem())));
        using var server = TestCertificates.Server();
        var pfx = Path.Combine(harness.Directory, "server.pfx");
        await File.WriteAllBytesAsync(pfx, server.Export(X509ContentType.Pfx, "pw"));

        var config = harness.DefaultConfig();
        config["Urls"] = "https://127.0.0.1:0";
        config["Kestrel"] = new JsonObject { ["Certificates"] = new JsonObject { ["Default"] = new JsonObject { ["Path"] = pfx, ["Password"] = "pw" } } };
        config["Assurance"]!["Workload"]!["ClientCaFile"] = caPem;
        workload(config["Assurance"]!["Workload"]!);
        await harness.StartWithAsync(config);
        return (harness, server.Thumbprint);
    }

    /// <summary>
    /// A client that trusts only the test server certificate and presents <paramref name="certificate"/> (with the chain
    /// in <paramref name="sending"/>, when given, sent after it in the handshake).
    /// </summary>
    public static HttpClient Client(
        GatewayHarness gateway, string serverThumbprint, X509Certificate2? certificate, bool evenIfNotValidNow = false, X509Certificate2[]? sending = null)
    {
        var handler = new SocketsHttpHandler();
        handler.SslOptions.RemoteCertificateValidationCallback = (_, presented, _, _) =>
            presented is not null && string.Equals(presented.GetCertHashString(), serverThumbprint, StringComparison.OrdinalIgnoreCase);
        if (sending is not null)
        {
            handler.SslOptions.ClientCertificateContext = System.Net.Security.SslStreamCertificateContext.Create(certificate!, [.. sending], offline: true);
        }
        else if (certificate is not null)
        {
            handler.SslOptions.ClientCertificates = [certificate];
        }

        if (evenIfNotValidNow)
        {
            // The client stack would not offer a certificate outside its validity on its own: an attacker's would.
            handler.SslOptions.LocalCertificateSelectionCallback = (_, _, _, _, _) => certificate!;
        }

        return new HttpClient(handler) { BaseAddress = new Uri(gateway.ProxyAddress) };
    }
}
