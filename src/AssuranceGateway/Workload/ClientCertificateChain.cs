using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Connections;

namespace AssuranceGateway.Workload;

/// <summary>
/// The certificates a client sent after its own in the TLS handshake (RFC 8446 §4.4.2): the intermediates between its
/// certificate and a root. SPIRE with an upstream authority, and any two-tier PKI, signs workload certificates with an
/// intermediate that rotates often, while <c>Workload:ClientCaFile</c> holds the root; Kestrel keeps only the leaf, so
/// they are captured here, as a feature of the connection, while the handshake validates the client's certificate.
/// </summary>
/// <remarks>
/// They are only ever candidates for building a chain (an <see cref="X509ChainPolicy.ExtraStore"/>), never trusted:
/// the chain must still end at a CA of the file, and every CA on it is held to its trust domain. Kestrel's validation
/// callback is not told which connection it validates; <see cref="BeginHandshake"/> runs on the connection's own flow
/// just before the handshake and leaves this connection's instance in an <see cref="AsyncLocal{T}"/> that the callback,
/// run within that handshake, reads.
/// </remarks>
public sealed class ClientCertificateChain
{
    // A handshake carries a few intermediates; more only make chain building slower for whoever sent them.
    private const int MaxIntermediates = 8;

    private static readonly AsyncLocal<ClientCertificateChain?> Handshake = new();

    public X509Certificate2Collection Intermediates { get; } = [];

    /// <summary>
    /// Kestrel's <c>OnAuthenticate</c>: a new, empty chain for this connection, filled by its handshake, and a chain policy
    /// that never goes to the network. The handshake builds a chain for the client's certificate before
    /// <see cref="Accept"/> is called, and by default (.NET 10, Kestrel's <c>CheckCertificateRevocation</c>) it would
    /// download a missing issuer from the certificate's AIA URL and its CRL from the URLs the certificate names: URLs of
    /// the client's choosing, fetched synchronously before any token is seen, so that anyone who can open a TLS connection
    /// could make the gateway send requests where they like and hold a thread on each for as long as that server is slow.
    /// The outcome of that chain is not used (the workload resolver builds its own, offline too), so nothing is lost.
    /// </summary>
    public static void BeginHandshake(ConnectionContext connection, SslServerAuthenticationOptions options)
    {
        ArgumentNullException.ThrowIfNull(connection);
        ArgumentNullException.ThrowIfNull(options);
        var chain = new ClientCertificateChain();
        connection.Features.Set(chain);
        Handshake.Value = chain;

        // One policy per connection: SslStream adds what the client sent to its ExtraStore.
        options.CertificateChainPolicy = new X509ChainPolicy
        {
            DisableCertificateDownloads = true,
            RevocationMode = X509RevocationMode.NoCheck,
        };
    }

    /// <summary>
    /// Kestrel's <c>ClientCertificateValidation</c>: accepts any client certificate (the workload resolver decides what
    /// it proves) and keeps copies of what the client sent with it (the handshake disposes its own).
    /// </summary>
    public static bool Accept(X509Certificate2 certificate, X509Chain? chain, SslPolicyErrors errors)
    {
        if (Handshake.Value is not { } kept || chain is null)
        {
            return true;
        }

        foreach (var sent in chain.ChainPolicy.ExtraStore)
        {
            if (kept.Intermediates.Count == MaxIntermediates)
            {
                break;
            }

            if (!sent.RawDataMemory.Span.SequenceEqual(certificate.RawDataMemory.Span))
            {
                kept.Intermediates.Add(X509CertificateLoader.LoadCertificate(sent.RawDataMemory.Span));
            }
        }

        return true;
    }
}
