using Microsoft.AspNetCore.Http;

namespace AssuranceGateway.Enforcement;

/// <summary>The reason codes of the product contract: what the client, the evidence span and the grant's record show.</summary>
public static class ReasonCodes
{
    public const string Ok = "ok";
    public const string TokenMissing = "token_missing";
    public const string TokenInvalid = "token_invalid";
    public const string InsufficientAal = "insufficient_aal";
    public const string WorkloadUnidentified = "workload_unidentified";
    public const string WorkloadInvalid = "workload_invalid";
    public const string ClaimsMismatch = "claims_mismatch";
    public const string BodyTooLarge = "body_too_large";

    /// <summary>
    /// Not in SPEC §4.3 (an addition): the request target is not in normal form, so the upstream would receive another
    /// path or query than the one hashed and bound (dot segments, percent-encoding the proxy decodes or re-encodes).
    /// </summary>
    public const string RequestAmbiguous = "request_ambiguous";
    public const string AssuranceRequired = "assurance_required";
    public const string AssuranceMalformed = "assurance_malformed";
    public const string GrantNotFound = "grant_not_found";
    public const string GrantPending = "grant_pending";
    public const string GrantRevoked = "grant_revoked";
    public const string GrantExpired = "grant_expired";
    public const string GrantNotYetValid = "grant_not_yet_valid";
    public const string RouteMismatch = "route_mismatch";
    public const string SubjectMismatch = "subject_mismatch";
    public const string SessionMismatch = "session_mismatch";
    public const string TokenMismatch = "token_mismatch";
    public const string WorkloadMismatch = "workload_mismatch";
    public const string OriginMismatch = "origin_mismatch";
    public const string RequestMismatch = "request_mismatch";
    public const string Replayed = "replayed";

    /// <summary>
    /// Not in SPEC §4.3 (an addition): the grant's record holds a status this gateway does not know, or a field that
    /// does not parse (a hand edit, a newer version's write): never used, and said so rather than guessed at.
    /// </summary>
    public const string GrantUnreadable = "grant_unreadable";
    public const string TooManyPending = "too_many_pending";
    public const string StoreUnavailable = "store_unavailable";

    /// <summary>
    /// Not in SPEC §4.3 (an addition), <c>/readyz</c> only: the host was told to stop (SIGTERM) and finishes the requests
    /// it accepted; a load balancer or the kubelet takes it out of rotation before its listeners close.
    /// </summary>
    public const string ShuttingDown = "shutting_down";

    /// <summary>
    /// Not in SPEC §4.3 (an addition): allowed and the use consumed, but the forwarder could not deliver the request or
    /// its response. YARP's status (502, 504) is kept; the body says so instead of being empty.
    /// </summary>
    public const string UpstreamFailed = "upstream_failed";

    /// <summary>The proxy listener: no route matches the request (an addition to SPEC §4.3; it was YARP's empty 404).</summary>
    public const string NoRoute = "no_route";

    // Assurance API only.
    public const string InvalidRequest = "invalid_request";
    public const string InsufficientScope = "insufficient_scope";
    public const string SelfApproval = "self_approval";
    public const string UnknownRoute = "unknown_route";
    public const string Conflict = "conflict";

    /// <summary>
    /// A method the endpoint does not take: on the API, and on the proxy listener for a path whose routes take only other
    /// methods (Match.Methods; an addition to SPEC §4.3), with <c>Allow</c>.
    /// </summary>
    public const string MethodNotAllowed = "method_not_allowed";

    /// <summary>The mismatches a policy may name in <c>RevokeOn</c>: the step-6 binding checks.</summary>
    public static readonly IReadOnlyList<string> Mismatches =
    [
        RouteMismatch, SubjectMismatch, SessionMismatch, TokenMismatch, WorkloadMismatch, OriginMismatch, RequestMismatch,
    ];

    public static int StatusCode(string reason) => reason switch
    {
        AssuranceMalformed or InvalidRequest or RequestAmbiguous => StatusCodes.Status400BadRequest,
        TokenMissing or TokenInvalid or InsufficientAal or WorkloadUnidentified or WorkloadInvalid => StatusCodes.Status401Unauthorized,
        BodyTooLarge => StatusCodes.Status413PayloadTooLarge,
        TooManyPending => StatusCodes.Status429TooManyRequests,
        StoreUnavailable or ShuttingDown => StatusCodes.Status503ServiceUnavailable,
        UpstreamFailed => StatusCodes.Status502BadGateway,
        UnknownRoute or NoRoute => StatusCodes.Status404NotFound,
        GrantNotFound => StatusCodes.Status403Forbidden,
        Conflict => StatusCodes.Status409Conflict,
        GrantUnreadable => StatusCodes.Status403Forbidden,
        MethodNotAllowed => StatusCodes.Status405MethodNotAllowed,
        _ => StatusCodes.Status403Forbidden,
    };

    public static string Title(string reason) => reason switch
    {
        TokenMissing => "Access token required",
        TokenInvalid => "Access token invalid",
        InsufficientAal => "Stronger authentication required",
        WorkloadUnidentified => "Workload identity required",
        WorkloadInvalid => "Workload identity invalid",
        ClaimsMismatch => "Claims do not satisfy the policy",
        BodyTooLarge => "Request body too large",
        RequestAmbiguous => "Request ambiguous",
        AssuranceRequired => "Assurance required",
        AssuranceMalformed => "Assurance-Id malformed",
        GrantNotFound => "Assurance not found",
        GrantPending => "Assurance awaiting approval",
        GrantRevoked => "Assurance revoked",
        GrantExpired => "Assurance expired",
        GrantNotYetValid => "Assurance not yet valid",
        RouteMismatch => "Assurance bound to another route",
        SubjectMismatch => "Assurance bound to another subject",
        SessionMismatch => "Assurance bound to another session",
        TokenMismatch => "Assurance bound to another token",
        WorkloadMismatch => "Assurance bound to another workload",
        OriginMismatch => "Assurance bound to another origin",
        RequestMismatch => "Assurance bound to another request",
        Replayed => "Assurance already used",
        GrantUnreadable => "Assurance record unreadable",
        TooManyPending => "Too many pending assurances",
        StoreUnavailable => "Assurance store unavailable",
        ShuttingDown => "Gateway shutting down",
        UpstreamFailed => "Upstream request failed",
        NoRoute => "No route matches",
        InvalidRequest => "Invalid request",
        InsufficientScope => "Insufficient scope",
        SelfApproval => "Self-approval is not allowed",
        UnknownRoute => "Unknown route",
        Conflict => "Conflict",
        MethodNotAllowed => "Method not allowed",
        _ => reason,
    };
}
