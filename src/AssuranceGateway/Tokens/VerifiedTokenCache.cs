using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Security.Cryptography;
using AssuranceGateway.Requests;

namespace AssuranceGateway.Tokens;

/// <summary>
/// The SHA-256 of a token's ASCII text (SPEC §4.2's token hash), held as a value: the key of the verified-token cache
/// and the source of the <c>sha256:</c> spelling. The raw token is never kept.
/// </summary>
internal readonly record struct TokenDigest(ulong A, ulong B, ulong C, ulong D)
{
    /// <summary>Hashes <paramref name="token"/>, which must be ASCII (the validator checks this first).</summary>
    public static TokenDigest Of(ReadOnlySpan<char> token)
    {
        // Tokens are bounded by MaxTokenBytes (64 KiB at most), so the bytes fit on the stack or in one small rental.
        var bytes = token.Length <= 4096 ? stackalloc byte[token.Length] : new byte[token.Length];
        for (var i = 0; i < token.Length; i++)
        {
            bytes[i] = (byte)token[i];
        }

        Span<byte> digest = stackalloc byte[32];
        SHA256.HashData(bytes, digest);
        return new TokenDigest(
            BinaryPrimitives.ReadUInt64LittleEndian(digest),
            BinaryPrimitives.ReadUInt64LittleEndian(digest[8..]),
            BinaryPrimitives.ReadUInt64LittleEndian(digest[16..]),
            BinaryPrimitives.ReadUInt64LittleEndian(digest[24..]));
    }

    /// <summary><c>sha256:</c> + base64url, as grants bind it.</summary>
    public string ToHash()
    {
        Span<byte> digest = stackalloc byte[32];
        BinaryPrimitives.WriteUInt64LittleEndian(digest, A);
        BinaryPrimitives.WriteUInt64LittleEndian(digest[8..], B);
        BinaryPrimitives.WriteUInt64LittleEndian(digest[16..], C);
        BinaryPrimitives.WriteUInt64LittleEndian(digest[24..], D);
        return Hashes.Spell(digest);
    }
}

/// <summary>
/// Tokens whose every check passed, by the SHA-256 of their text. Bounded: at capacity, entries past their expiry
/// are dropped, and if that frees too little the cache starts over (which only costs re-verification). Expiry and
/// key rotation are judged by the caller on every hit; this class only stores.
/// </summary>
/// <remarks>
/// <para>
/// A token is held from its second verification on, not its first (a doorkeeper, as in TinyLFU): a table of
/// <see cref="DoorkeeperSlots"/> tags remembers which digests were offered once. A client that reuses its token, as
/// real clients do for minutes, pays one more verification; a caller that sends every token once (a fresh token per
/// request, or a flood of distinct valid tokens) never fills the cache. Measured with the benchmark's fresh-token
/// scenario: admitting every token held ~10,000 decoded tokens at a time, dropped them all at each start-over, and the
/// garbage collector spent its time moving them through the generations.
/// </para>
/// <para>
/// Counting is done here with one interlocked integer because <see cref="ConcurrentDictionary{TKey,TValue}.Count"/>
/// takes every lock of the dictionary: called on each insert, it serialised all requests carrying new tokens
/// (measured: most of the request threads' time under load went to waiting on that lock).
/// </para>
/// </remarks>
internal sealed class VerifiedTokenCache<T>(int capacity)
    where T : class
{
    private readonly ConcurrentDictionary<TokenDigest, Entry> _entries = new();

    /// <summary>
    /// Tags (the digest's second word, never 0) of the digests offered once, one slot per value of the first word's low
    /// bits. A slot taken by another digest forgets the first: that token is verified once more before it is held.
    /// </summary>
    private readonly ulong[] _seen = new ulong[DoorkeeperSlotsFor(capacity)];

    private int _count;
    private int _sweeping;

    public int Capacity { get; } = capacity;

    /// <summary>Slots of the doorkeeper: a power of two, at least four per entry the cache may hold.</summary>
    public int DoorkeeperSlots => _seen.Length;

    /// <summary>Entries held (exact when no insert races a sweep).</summary>
    public int Count => Volatile.Read(ref _count);

    public bool TryGet(in TokenDigest key, out T value)
    {
        if (_entries.TryGetValue(key, out var entry))
        {
            value = entry.Value;
            return true;
        }

        value = null!;
        return false;
    }

    /// <summary>
    /// Remembers <paramref name="value"/> until <paramref name="expires"/> (Unix seconds) at the latest, if
    /// <paramref name="key"/> was offered before; otherwise only notes that it was. True when it is held now.
    /// </summary>
    public bool Add(in TokenDigest key, T value, long expires, long now)
    {
        if (!SeenBefore(key))
        {
            return false;
        }

        if (Volatile.Read(ref _count) >= Capacity && !Sweep(now))
        {
            return false;
        }

        if (_entries.TryAdd(key, new Entry(value, expires)))
        {
            Interlocked.Increment(ref _count);
        }

        return true;
    }

    /// <summary>True when the slot of <paramref name="key"/> holds its tag; otherwise puts it there.</summary>
    private bool SeenBefore(in TokenDigest key)
    {
        // Racing writers of one slot leave one of their tags (a 64-bit store is atomic): the other is verified once more.
        ref var slot = ref _seen[(int)(key.A & (ulong)(_seen.Length - 1))];
        var tag = key.B | 1;
        if (Volatile.Read(ref slot) == tag)
        {
            return true;
        }

        Volatile.Write(ref slot, tag);
        return false;
    }

    private static int DoorkeeperSlotsFor(int capacity) =>
        (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)Math.Clamp(capacity, 16, 1 << 24) * 4);

    public void Remove(in TokenDigest key)
    {
        if (_entries.TryRemove(key, out _))
        {
            Interlocked.Decrement(ref _count);
        }
    }

    /// <summary>
    /// Forgets every entry (not the doorkeeper's tags: a token verified before is held again at its next verification).
    /// Clearing the 512 KiB of tags as well cost the cold-validation microbenchmark, which clears before each run, more
    /// than what it measures apart from the signature.
    /// </summary>
    public void Clear()
    {
        _entries.Clear();
        Volatile.Write(ref _count, 0);
    }

    /// <summary>One thread makes room; the others skip caching meanwhile. True when there is room now.</summary>
    private bool Sweep(long now)
    {
        if (Interlocked.CompareExchange(ref _sweeping, 1, 0) != 0)
        {
            return false;
        }

        try
        {
            // Enumerating a ConcurrentDictionary takes no lock; entries added meanwhile may or may not be seen.
            foreach (var (key, entry) in _entries)
            {
                if (entry.Expires <= now)
                {
                    _entries.TryRemove(key, out _);
                }
            }

            // Recount once (this one takes every lock, but runs once per Capacity inserts at most).
            var left = _entries.Count;
            if (left > Capacity * 3 / 4)
            {
                _entries.Clear();
                left = 0;
            }

            Volatile.Write(ref _count, left);
            return true;
        }
        finally
        {
            Volatile.Write(ref _sweeping, 0);
        }
    }

    private sealed record Entry(T Value, long Expires);
}
