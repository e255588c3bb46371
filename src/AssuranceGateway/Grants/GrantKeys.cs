using System.Buffers.Text;
using System.Security.Cryptography;
using System.Text;
using StackExchange.Redis;

namespace AssuranceGateway.Grants;

/// <summary>
/// Every Redis key the grant store uses, built in one place. Keys are hash-tagged (the part in braces is what Redis
/// Cluster hashes) so that each script only ever touches keys of ONE slot:
/// <list type="bullet">
/// <item><c>{prefix}{g:&lt;id&gt;}</c> — hash: the grant's fields (bindings as hashes, status, uses, times in µs).</item>
/// <item><c>{prefix}{g:&lt;id&gt;}:ev</c> — list: the grant's lifecycle events as JSON, oldest first. Same slot as the
/// hash, so consume can check, write the use and append the event in one script.</item>
/// <item><c>{prefix}{s:&lt;sha256(subject)&gt;}:pending</c> — sorted set: the subject's pending grant ids, score = expiry
/// (µs). Its own slot: see <see cref="RedisGrantStore"/> for why it is maintained in a separate step.</item>
/// <item><c>{prefix}{pending}:created</c> / <c>{prefix}{pending}:expires</c> — sorted sets of every pending grant id by
/// creation and by expiry time, for <c>ListPendingAsync</c>. Both share the <c>{pending}</c> slot.</item>
/// <item><c>{prefix}readyz</c> — string: the readiness probe's write, expiring after a minute.</item>
/// </list>
/// The subject is hashed because it is free text (it may hold braces, which would move the hash tag) and may be
/// long; the grant id is used as is: SPEC §4.1 limits it to <c>[A-Za-z0-9_-]</c>, and even an id with a brace keeps
/// the hash and its event list in one slot, because both keys start with the same characters.
/// </summary>
internal sealed class GrantKeys
{
    private readonly string _prefix;

    public GrantKeys(string prefix)
    {
        ArgumentNullException.ThrowIfNull(prefix);
        if (prefix.AsSpan().IndexOfAny('{', '}') >= 0)
        {
            // A brace in the prefix would become the hash tag and put every grant in one slot (or split a grant's keys).
            throw new ArgumentException("The key prefix must not contain '{' or '}'.", nameof(prefix));
        }

        _prefix = prefix;
        PendingByCreation = prefix + "{pending}:created";
        PendingByExpiry = prefix + "{pending}:expires";
        Readiness = prefix + "readyz";
    }

    /// <summary>A string the readiness probe writes (and lets expire): a store that refuses it cannot serve.</summary>
    public RedisKey Readiness { get; }

    public RedisKey PendingByCreation { get; }

    public RedisKey PendingByExpiry { get; }

    public RedisKey Grant(string id) => GrantText(id);

    public RedisKey Events(string id) => GrantText(id) + EventsSuffix;

    public RedisKey[] GrantAndEvents(string id) => KeysOf(GrantText(id));

    /// <summary>The grant's hash key as text; its event list is this plus <see cref="EventsSuffix"/>.</summary>
    public string GrantText(string id) => string.Concat(_prefix, "{g:", id, "}");

    public const string EventsSuffix = ":ev";

    public static RedisKey[] KeysOf(string grantText) => [grantText, grantText + EventsSuffix];

    public RedisKey SubjectPending(string subject)
    {
        Span<byte> digest = stackalloc byte[32];
        SHA256.HashData(Encoding.UTF8.GetBytes(subject), digest);
        return string.Concat(_prefix, "{s:", Base64Url.EncodeToString(digest), "}:pending");
    }
}
