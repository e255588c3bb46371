using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using AssuranceGateway.Workload;

namespace AssuranceGateway.UnitTests.Workload;

/// <summary>
/// A client certificate's SPIFFE ID is judged at the gateway's clock (its TimeProvider), the leaf and the chain alike:
/// not the leaf at one clock and the CAs above it at the machine's.
/// </summary>
public sealed class ClientCertificateClockTests
{
    private const string SpiffeId = "spiffe://prod.test/ns/ci/sa/deployer";

    [Fact]
    public void FromCertificate_WholeChainValidAtTheGatewaysClock_Identified()
    {
        // Two days ago by the machine's clock, both the CA and the leaf were valid; the CA has expired since.
        var real = DateTimeOffset.UtcNow;
        using var ca = Ca(real.AddDays(-3), real.AddDays(-1));
        using var leaf = Leaf(ca, real.AddDays(-3).AddHours(1), real.AddDays(-1).AddHours(-1));

        var check = WorkloadResolver.FromCertificate(leaf, [ca], real.AddDays(-2));

        Assert.Null(check.Detail);
        Assert.Equal(SpiffeId, check.Identity?.Id);
    }

    [Fact]
    public void FromCertificate_CaNotYetValidAtTheGatewaysClock_Refused()
    {
        // The CA's validity starts after the leaf's (X.509 does not forbid it, CAs other than .NET's issue such chains):
        // at the gateway's clock the leaf is valid and the CA is not, while at the machine's clock both are.
        var real = DateTimeOffset.UtcNow;
        using var caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        using var ca = Ca(real.AddHours(-1), real.AddDays(1), caKey);
        using var leaf = LeafSignedBy(ca, caKey, real.AddHours(-3), real.AddHours(1));

        var check = WorkloadResolver.FromCertificate(leaf, [ca], real.AddHours(-2));

        Assert.Null(check.Identity);
        Assert.Equal("workload_invalid", check.Reason);
    }

    private static X509Certificate2 Ca(DateTimeOffset notBefore, DateTimeOffset notAfter, ECDsa? key = null)
    {
        using var own = key is null ? ECDsa.Create(ECCurve.NamedCurves.nistP256) : null;
        var request = new CertificateRequest("CN=clock test CA", key ?? own!, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign, true));
        return request.CreateSelfSigned(notBefore, notAfter);
    }

    private static CertificateRequest LeafRequest(ECDsa key)
    {
        var request = new CertificateRequest("CN=workload", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.2")], false));
        var san = new SubjectAlternativeNameBuilder();
        san.AddUri(new Uri(SpiffeId));
        request.CertificateExtensions.Add(san.Build());
        return request;
    }

    private static X509Certificate2 Leaf(X509Certificate2 ca, DateTimeOffset notBefore, DateTimeOffset notAfter)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        return LeafRequest(key).Create(ca, notBefore, notAfter, RandomNumberGenerator.GetBytes(8));
    }

    /// <summary>Signed with the CA's key directly, so that the leaf's dates need not lie within the CA's.</summary>
    private static X509Certificate2 LeafSignedBy(X509Certificate2 ca, ECDsa caKey, DateTimeOffset notBefore, DateTimeOffset notAfter)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        return LeafRequest(key).Create(ca.SubjectName, X509SignatureGenerator.CreateForECDsa(caKey), notBefore, notAfter, RandomNumberGenerator.GetBytes(8));
    }
}
