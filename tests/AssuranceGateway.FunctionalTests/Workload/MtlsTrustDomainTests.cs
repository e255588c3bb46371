using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json.Nodes;
using AssuranceGateway.Testing;
using static AssuranceGateway.Testing.GrantHelpers;

namespace AssuranceGateway.FunctionalTests.Workload;

/// <summary>
/// Workload:ClientCaFile holding the CAs of two trust domains (a federated partner next to prod). The header source
/// lets a JWT-SVID issuer spiffe://td assert spiffe://td/… only; an X.509-SVID must likewise be judged against the
/// bundle of the trust domain its SPIFFE ID names (SPIFFE X509-SVID §5), or the partner's CA can name prod's workloads.
/// </summary>
public sealed class MtlsTrustDomainTests : IAsyncLifetime
{
    private GatewayHarness _gateway = null!;
    private X509Certificate2 _prodCa = null!;
    private X509Certificate2 _partnerCa = null!;
    private string _serverThumbprint = string.Empty;

    public async Task InitializeAsync()
    {
        var harness = await GatewayHarness.CreateAsync();
        _prodCa = TestCertificates.Ca("spiffe://prod.test");
        _partnerCa = TestCertificates.Ca("spiffe://partner.test");
        var caPem = Path.Combine(harness.Directory, "client-ca.pem");
        await File.WriteAllTextAsync(caPem, _prodCa.ExportCertificatePem() + "\n" + _partnerCa.ExportCertificatePem() + "\n");
        using var server = TestCertificates.Server();
        _serverThumbprint = server.Thumbprint;
        var pfx = Path.Combine(harness.Directory, "server.pfx");
        await File.WriteAllBytesAsync(pfx, server.Export(X509ContentType.Pfx, "pw"));

        var config = harness.DefaultConfig();
        config["Urls"] = "https://127.0.0.1:0";
        config["Kestrel"] = new JsonObject { ["Certificates"] = new JsonObject { ["Default"] = new JsonObject { ["Path"] = pfx, ["Password"] = "pw" } } };
        config["Assurance"]!["Workload"]!["Sources"] = new JsonArray("mtls");
        config["Assurance"]!["Workload"]!["ClientCaFile"] = caPem;
        await harness.StartWithAsync(config);
        _gateway = harness;
    }

    public async Task DisposeAsync()
    {
        await _gateway.DisposeAsync();
        _prodCa.Dispose();
        _partnerCa.Dispose();
    }

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

    private HttpClient ClientWith(X509Certificate2 certificate)
    {
        var handler = new SocketsHttpHandler();
        handler.SslOptions.RemoteCertificateValidationCallback = (_, c, _, _) =>
            c is not null && string.Equals(c.GetCertHashString(), _serverThumbprint, StringComparison.OrdinalIgnoreCase);
        handler.SslOptions.ClientCertificates = [certificate];
        return new HttpClient(handler) { BaseAddress = new Uri(_gateway.ProxyAddress) };
    }
}
