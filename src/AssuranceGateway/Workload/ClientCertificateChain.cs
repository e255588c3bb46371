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

    /// <summary>Kestrel's <c>OnAuthenticate</c>: a new, empty chain for this connection, filled by its handshake.</summary>
    public static void BeginHandshake(ConnectionContext connection, SslServerAuthenticationOptions options)
    {
        ArgumentNullException.ThrowIfNull(connection);
        var chain = new ClientCertificateChain();
        connection.Features.Set(chain);
        Handshake.Value = chain;
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
