using System.Security.Cryptography.X509Certificates;
using AssuranceGateway.Configuration;
using AssuranceGateway.Enforcement;
using AssuranceGateway.Tokens;
using Microsoft.AspNetCore.Http;

namespace AssuranceGateway.Workload;

/// <summary>Who the calling machine is, and which source said so.</summary>
public sealed record WorkloadIdentity(string Id, WorkloadSource Source, ValidatedToken? Token)
{
    /// <summary>The end of the client certificate's validity, for an identity taken from one on this connection (mTLS).</summary>
    public DateTimeOffset? CertificateNotAfter { get; init; }
}

public readonly record struct WorkloadCheck(WorkloadIdentity? Identity, string? Reason, string? Detail)
{
    public static WorkloadCheck Fail(string reason, string detail) => new(null, reason, detail);
}

/// <summary>
/// SPEC §2 step 3. Every configured source is consulted, in order. A source that is present but invalid is an
/// error, never a silent fall-through to the next source (that is how a forged header would otherwise be skipped
/// until a weaker source vouched for the caller); two sources that disagree are an error too.
/// </summary>
public sealed class WorkloadResolver
{
    public const string WorkloadIdentityHeader = "Workload-Identity";
    public const string ClientCertHeader = "X-Forwarded-Client-Cert";

    private readonly WorkloadSettings _settings;
    private readonly TokenValidator? _jwtSvid;
    private readonly X509Certificate2Collection? _clientCas;
    private readonly TimeProvider _time;
    private readonly bool _xfcc;

    public WorkloadResolver(WorkloadSettings settings, TokenSettings tokens, TimeProvider time)
    {
        _settings = settings;
        _time = time;
        _xfcc = settings.Sources.Contains(WorkloadSource.Xfcc);
        if (settings.ClientCaFile is { } caFile && File.Exists(caFile))
        {
            _clientCas = [];
            _clientCas.ImportFromPemFile(caFile);
        }

        if (settings.Issuers.Count > 0 && settings.Audience is not null)
        {
            var svid = tokens with { Issuers = settings.Issuers, Types = ["JWT", "JOSE"] };
            _jwtSvid = new TokenValidator(svid, time, [settings.Audience], typeOptional: true);
        }
    }

    public async ValueTask<WorkloadCheck> ResolveAsync(HttpContext context, ValidatedToken? accessToken, CancellationToken cancellationToken)
    {
        WorkloadIdentity? found = null;
        foreach (var source in _settings.Sources)
        {
            WorkloadCheck check = source switch
            {
                WorkloadSource.Mtls when SpeaksForAnother(context) => default,
                WorkloadSource.Mtls => FromCertificate(context.Connection.ClientCertificate, _clientCas, _time.GetUtcNow(),
                    context.Features.Get<ClientCertificateChain>()?.Intermediates),
                WorkloadSource.Xfcc => FromXfcc(context),
                WorkloadSource.Header => await FromHeaderAsync(context, cancellationToken).ConfigureAwait(false),
                WorkloadSource.Claim => FromClaim(accessToken),
                _ => default,
            };

            if (check.Reason is not null)
            {
                return check;
            }

            if (check.Identity is not { } identity)
            {
                continue;
            }

            if (found is null)
            {
                found = identity;
            }
            else if (!string.Equals(found.Id, identity.Id, StringComparison.Ordinal))
            {
                return WorkloadCheck.Fail(ReasonCodes.WorkloadInvalid,
                    $"sources disagree: {Name(found.Source)} and {Name(identity.Source)} name different workloads");
            }
            else if (found.Token is null && identity.Token is not null)
            {
                // The same workload, and this source brought its token: RequireClaims are matched on the workload's own
                // token when there is one (SPEC §2 step 3), not on the access token because an earlier source came first.
                found = found with { Token = identity.Token };
            }
        }

        return found is null
            ? WorkloadCheck.Fail(ReasonCodes.WorkloadUnidentified, "no workload source identified the caller")
            : new WorkloadCheck(found, null, null);
    }

    /// <summary>
    /// A trusted proxy (Envoy, a mesh ingress) that connects over mTLS and forwards the client's certificate in
    /// X-Forwarded-Client-Cert: its own certificate names the hop, not the caller (Envoy writes itself as <c>By=</c>), so
    /// the mtls source steps aside for the xfcc source rather than disagree with it on every request.
    /// </summary>
    private bool SpeaksForAnother(HttpContext context) =>
        _xfcc && context.Request.Headers.ContainsKey(ClientCertHeader)
        && OriginResolver.IsTrusted(_settings.TrustedProxies, context.Connection.RemoteIpAddress);

    public static string Name(WorkloadSource source) => source switch
    {
        WorkloadSource.Mtls => "mtls",
        WorkloadSource.Xfcc => "xfcc",
        WorkloadSource.Header => "header",
        _ => "claim",
    };

    /// <summary>
    /// Identity of a client certificate: its single <c>spiffe://</c> URI SAN, else its SHA-256 thumbprint. Kestrel
    /// accepts any client certificate (the TLS handshake proves possession of its key, which is all a thumbprint
    /// identity claims), so a SPIFFE ID is believed only when the chain builds to <c>Workload:ClientCaFile</c>:
    /// anyone can put a SPIFFE URI into a self-signed certificate.
    /// </summary>
    public static WorkloadCheck FromCertificate(
        X509Certificate2? certificate, X509Certificate2Collection? trustedCas, DateTimeOffset now, X509Certificate2Collection? intermediates = null)
    {
        if (certificate is null)
        {
            return default;
        }

        // Kestrel accepts any certificate, so its dates are judged here: a key retired by letting its certificate
        // expire must stop being an identity, thumbprint or not.
        if (now < certificate.NotBefore.ToUniversalTime() || now > certificate.NotAfter.ToUniversalTime())
        {
            return WorkloadCheck.Fail(ReasonCodes.WorkloadInvalid, "client certificate is outside its validity period");
        }

        string? spiffe = null;
        foreach (var extension in certificate.Extensions)
        {
            if (extension is not X509SubjectAlternativeNameExtension san)
            {
                continue;
            }

            if (SanUris(san) is not { } uris)
            {
                return WorkloadCheck.Fail(ReasonCodes.WorkloadInvalid, "client certificate has a malformed subject alternative name");
            }

            foreach (var uri in uris)
            {
                if (!uri.StartsWith("spiffe://", StringComparison.OrdinalIgnoreCase))
                {
                    continue;
                }

                // A SPIFFE X.509-SVID carries exactly one SPIFFE ID (SPIFFE X509-SVID §2).
                if (spiffe is not null)
                {
                    return WorkloadCheck.Fail(ReasonCodes.WorkloadInvalid, "client certificate carries more than one SPIFFE ID");
                }

                spiffe = uri;
            }
        }

        if (spiffe is not null && ChainProblem(certificate, trustedCas, intermediates, spiffe, now) is { } problem)
        {
            return WorkloadCheck.Fail(ReasonCodes.WorkloadInvalid, problem);
        }

        var id = spiffe ?? "x509:sha256:" + Convert.ToHexStringLower(certificate.GetCertHash(System.Security.Cryptography.HashAlgorithmName.SHA256));
        return new WorkloadCheck(new WorkloadIdentity(id, WorkloadSource.Mtls, null) { CertificateNotAfter = new DateTimeOffset(certificate.NotAfter.ToUniversalTime(), TimeSpan.Zero) }, null, null);
    }

    /// <summary>
    /// Why the certificate's SPIFFE ID is not believed, or null. The chain must build to <c>Workload:ClientCaFile</c>
    /// (through intermediates the client sent in the handshake, if it needs them: <see cref="ClientCertificateChain"/>),
    /// and a CA on it that names its own trust domain (a <c>spiffe://td</c> URI SAN, as SPIRE's CAs carry) vouches for
    /// that trust domain only (SPIFFE X509-SVID §5: an SVID is judged by the bundle of the trust domain it names), so
    /// a federated partner's CA in the same file cannot name this domain's workloads. A CA that names no trust domain
    /// vouches for every SPIFFE ID it signs: such a file should hold one trust domain (README, workload identity).
    /// </summary>
    private static string? ChainProblem(
        X509Certificate2 certificate, X509Certificate2Collection? trustedCas, X509Certificate2Collection? intermediates, string spiffe, DateTimeOffset now)
    {
        const string NoChain = "client certificate names a SPIFFE ID but does not chain to Workload:ClientCaFile";
        if (trustedCas is null || trustedCas.Count == 0)
        {
            return NoChain;
        }

        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(trustedCas);
        if (intermediates is not null)
        {
            chain.ChainPolicy.ExtraStore.AddRange(intermediates); // candidates the client sent, never trusted themselves
        }

        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        // The CAs are judged at the same clock as the leaf above (X509Chain would read the machine's): a CA's dates need
        // not contain its leaves', and the gateway's TimeProvider is the one clock of every time rule.
        chain.ChainPolicy.VerificationTime = now.UtcDateTime;
        // Never fetch a missing issuer from the URL the certificate names (AIA): the client chose it, and the download is
        // synchronous on a request thread. Only the intermediates the client sent and the CA file build the chain.
        chain.ChainPolicy.DisableCertificateDownloads = true;
        chain.ChainPolicy.ApplicationPolicy.Add(new System.Security.Cryptography.Oid("1.3.6.1.5.5.7.3.2")); // clientAuth
        if (!chain.Build(certificate))
        {
            return $"{NoChain}: {WhyNoChain(chain)}";
        }

        var trustDomain = TrustDomainOf(spiffe);
        for (var i = 1; i < chain.ChainElements.Count; i++)
        {
            var ca = chain.ChainElements[i].Certificate;
            var named = new List<string>();
            foreach (var extension in ca.Extensions)
            {
                if (extension is X509SubjectAlternativeNameExtension san)
                {
                    named.AddRange((SanUris(san) ?? []).Where(u => u.StartsWith("spiffe://", StringComparison.OrdinalIgnoreCase)).Select(TrustDomainOf));
                }
            }

            if (named.Count > 0 && !named.Contains(trustDomain, StringComparer.Ordinal))
            {
                return $"client certificate names a SPIFFE ID of trust domain '{trustDomain}', but its CA '{ca.Subject}' vouches for {string.Join(", ", named.Select(n => $"'{n}'"))} only";
            }
        }

        return null;
    }

    /// <summary>
    /// What the chain lacks, for the workload's operator: above all an issuer that the client did not send (one it may
    /// have counted on the gateway downloading from the URL its certificate names, which it never does).
    /// </summary>
    private static string WhyNoChain(X509Chain chain)
    {
        var flags = X509ChainStatusFlags.NoError;
        foreach (var status in chain.ChainStatus)
        {
            flags |= status.Status;
        }

        var why = new List<string>();
        if ((flags & X509ChainStatusFlags.PartialChain) != 0)
        {
            why.Add("its issuing CA is neither in that file nor among the intermediates the client sent in its TLS handshake "
                + "(an issuer is never downloaded from the URL a certificate names: configure the client to send its chain)");
        }

        if ((flags & X509ChainStatusFlags.UntrustedRoot) != 0)
        {
            why.Add("the chain ends at a root that is not in that file");
        }

        if ((flags & X509ChainStatusFlags.NotTimeValid) != 0)
        {
            why.Add("a CA on the chain is outside its validity dates at the gateway's clock");
        }

        if ((flags & (X509ChainStatusFlags.NotValidForUsage | X509ChainStatusFlags.InvalidExtension)) != 0)
        {
            why.Add("a certificate on the chain is not valid for client authentication");
        }

        var other = flags & ~(X509ChainStatusFlags.PartialChain | X509ChainStatusFlags.UntrustedRoot | X509ChainStatusFlags.NotTimeValid
            | X509ChainStatusFlags.NotValidForUsage | X509ChainStatusFlags.InvalidExtension);
        if (other != X509ChainStatusFlags.NoError || why.Count == 0)
        {
            why.Add($"chain status {other}");
        }

        return string.Join("; ", why);
    }

    /// <summary>The trust domain of a SPIFFE ID: "prod.example" for "spiffe://prod.example/ns/ci".</summary>
    private static string TrustDomainOf(string spiffeId)
    {
        var rest = spiffeId["spiffe://".Length..];
        var slash = rest.IndexOf('/', StringComparison.Ordinal);
        return slash < 0 ? rest : rest[..slash];
    }

    /// <summary>The uniformResourceIdentifier ([6] IA5String) entries of a SAN extension (RFC 5280 §4.2.1.6).</summary>
    private static List<string>? SanUris(X509SubjectAlternativeNameExtension san)
    {
        var uris = new List<string>();
        try
        {
            var reader = new System.Formats.Asn1.AsnReader(san.RawData, System.Formats.Asn1.AsnEncodingRules.DER);
            var names = reader.ReadSequence();
            var uriTag = new System.Formats.Asn1.Asn1Tag(System.Formats.Asn1.TagClass.ContextSpecific, 6);
            while (names.HasData)
            {
                if (names.PeekTag().HasSameClassAndValue(uriTag))
                {
                    uris.Add(names.ReadCharacterString(System.Formats.Asn1.UniversalTagNumber.IA5String, uriTag));
                }
                else
                {
                    names.ReadEncodedValue();
                }
            }
        }
        catch (System.Formats.Asn1.AsnContentException)
        {
            return null;
        }

        return uris;
    }

    private WorkloadCheck FromXfcc(HttpContext context)
    {
        var values = context.Request.Headers[ClientCertHeader];
        if (values.Count == 0)
        {
            return default;
        }

        // Only a trusted proxy may vouch for a client certificate; from anyone else the header is a forgery.
        if (!OriginResolver.IsTrusted(_settings.TrustedProxies, context.Connection.RemoteIpAddress))
        {
            return WorkloadCheck.Fail(ReasonCodes.WorkloadInvalid, "X-Forwarded-Client-Cert from an untrusted peer");
        }

        var uri = Xfcc.LastUri(string.Join(',', values.ToArray()), out var error);
        return uri is null
            ? WorkloadCheck.Fail(ReasonCodes.WorkloadInvalid, error!)
            : new WorkloadCheck(new WorkloadIdentity(uri, WorkloadSource.Xfcc, null), null, null);
    }

    private async ValueTask<WorkloadCheck> FromHeaderAsync(HttpContext context, CancellationToken cancellationToken)
    {
        var values = context.Request.Headers[WorkloadIdentityHeader];
        if (values.Count == 0)
        {
            return default;
        }

        if (values.Count > 1 || string.IsNullOrWhiteSpace(values[0]) || _jwtSvid is null)
        {
            return WorkloadCheck.Fail(ReasonCodes.WorkloadInvalid, "Workload-Identity must be one JWT-SVID");
        }

        var check = await _jwtSvid.ValidateAsync(values[0]!.Trim(), cancellationToken).ConfigureAwait(false);
        if (check.Token is not { } token)
        {
            return WorkloadCheck.Fail(ReasonCodes.WorkloadInvalid, "Workload-Identity: " + check.Failure);
        }

        return SubjectProblem(token.Subject, token.Issuer) is { } problem
            ? WorkloadCheck.Fail(ReasonCodes.WorkloadInvalid, "Workload-Identity: " + problem)
            : new WorkloadCheck(new WorkloadIdentity(token.Subject, WorkloadSource.Header, token), null, null);
    }

    /// <summary>
    /// A JWT-SVID speaks for its own trust domain only (SPIFFE JWT-SVID §3): an issuer named <c>spiffe://td</c> may
    /// assert <c>spiffe://td/…</c> and nothing else, so one trusted domain cannot name another's workloads. An issuer
    /// that is not a trust domain may not assert SPIFFE IDs or certificate thumbprints (the mtls source's identities).
    /// </summary>
    internal static string? SubjectProblem(string subject, string issuer)
    {
        const string Scheme = "spiffe://";
        if (issuer.StartsWith(Scheme, StringComparison.Ordinal))
        {
            var prefix = issuer.TrimEnd('/') + "/";
            return subject.StartsWith(prefix, StringComparison.Ordinal) && subject.Length > prefix.Length
                ? null
                : $"sub must be a SPIFFE ID of the trust domain {issuer}";
        }

        return subject.StartsWith("spiffe:", StringComparison.OrdinalIgnoreCase) || subject.StartsWith("x509:", StringComparison.OrdinalIgnoreCase)
            ? $"issuer {issuer} is not a SPIFFE trust domain: its sub cannot be a SPIFFE ID or a certificate identity"
            : null;
    }

    private WorkloadCheck FromClaim(ValidatedToken? accessToken)
    {
        if (accessToken is null)
        {
            return default;
        }

        if (!accessToken.HasClaim(_settings.Claim))
        {
            return default;
        }

        // Present but not one non-empty string (an array naming two workloads, a number): invalid, never a workload.
        // Named in the issuer's namespace as its subjects are: client 'ci-deployer' of one IdP is not that of another.
        return accessToken.StringClaim(_settings.Claim) is { Length: > 0 } workload
            ? new WorkloadCheck(new WorkloadIdentity(accessToken.SubjectPrefix + workload, WorkloadSource.Claim, null), null, null)
            : WorkloadCheck.Fail(ReasonCodes.WorkloadInvalid, $"access token claim '{_settings.Claim}' is not a single string");
    }
}
