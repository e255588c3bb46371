using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace AssuranceGateway.Testing;

/// <summary>Certificates for mTLS tests: a workload CA, the proxy's own server certificate, and client certificates.</summary>
public static class TestCertificates
{
    /// <summary>
    /// A CA; with <paramref name="trustDomain"/> ("spiffe://td") it names its trust domain, as SPIRE's CAs do; with
    /// <paramref name="issuer"/> an intermediate signed by it, else a root.
    /// </summary>
    public static X509Certificate2 Ca(string? trustDomain = null, X509Certificate2? issuer = null)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={trustDomain ?? "test workload"} {(issuer is null ? "root" : "intermediate")} CA", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign, true));
        if (trustDomain is not null)
        {
            var san = new SubjectAlternativeNameBuilder();
            san.AddUri(new Uri(trustDomain));
            request.CertificateExtensions.Add(san.Build());
        }

        var (notBefore, notAfter) = (DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddHours(1));
        if (issuer is null)
        {
            return request.CreateSelfSigned(notBefore, notAfter);
        }

        using var signed = request.Create(issuer, notBefore, notAfter.AddMinutes(-1), RandomNumberGenerator.GetBytes(8));
        return signed.CopyWithPrivateKey(key);
    }

    /// <summary>A self-signed server certificate for 127.0.0.1 (clients pin it by thumbprint).</summary>
    public static X509Certificate2 Server()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=127.0.0.1", key, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        san.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(san.Build());
        return request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddHours(1));
    }

    /// <summary>A client certificate (clientAuth), with a SPIFFE ID when given, signed by <paramref name="issuer"/> or self-signed.</summary>
    /// <remarks>
    /// <paramref name="fetchFrom"/> and <paramref name="crlAt"/> add an Authority Information Access (caIssuers) and a
    /// CRL distribution point extension: URLs a verifier could be made to fetch.
    /// </remarks>
    public static X509Certificate2 Client(string? spiffeId, X509Certificate2? issuer, Uri? fetchFrom = null, Uri? crlAt = null, DateTimeOffset? notAfter = null)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=workload", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.2")], false));
        if (spiffeId is not null)
        {
            var san = new SubjectAlternativeNameBuilder();
            san.AddUri(new Uri(spiffeId));
            request.CertificateExtensions.Add(san.Build());
        }

        if (fetchFrom is not null)
        {
            request.CertificateExtensions.Add(new X509AuthorityInformationAccessExtension(null, [fetchFrom.AbsoluteUri]));
        }

        if (crlAt is not null)
        {
            request.CertificateExtensions.Add(CertificateRevocationListBuilder.BuildCrlDistributionPointExtension([crlAt.AbsoluteUri]));
        }

        var notBefore = DateTimeOffset.UtcNow.AddMinutes(-1);
        var validUntil = notAfter ?? DateTimeOffset.UtcNow.AddMinutes(30);
        if (issuer is null)
        {
            return request.CreateSelfSigned(notBefore, validUntil);
        }

        using var signed = request.Create(issuer, notBefore, validUntil, RandomNumberGenerator.GetBytes(8));
        return signed.CopyWithPrivateKey(key);
    }
}
