using AssuranceGateway.Tokens;

namespace AssuranceGateway.UnitTests.Tokens;

public sealed class VerifiedTokenCacheTests
{
    private const long Now = 1_000_000;

    [Fact]
    public void TokenDigest_SameText_SameKeyAndContractHash()
    {
        const string Token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln";

        Assert.Equal(TokenDigest.Of(Token), TokenDigest.Of(Token));
        Assert.NotEqual(TokenDigest.Of(Token), TokenDigest.Of(Token + "x"));
        Assert.Equal(AssuranceGateway.Requests.Hashes.TokenHash(Token), TokenDigest.Of(Token).ToHash());
    }

    [Fact]
    public void TokenDigest_TokenLongerThanTheStackBuffer_HashedWhole()
    {
        var token = new string('a', 5000) + "." + new string('b', 3000) + ".c";

        Assert.Equal(AssuranceGateway.Requests.Hashes.TokenHash(token), TokenDigest.Of(token).ToHash());
    }

    [Fact]
    public void Add_UnderCapacity_EveryEntryKeptAndCounted()
    {
        var cache = new VerifiedTokenCache<string>(4);

        for (var i = 0; i < 4; i++)
        {
            Offer(cache, Key(i), "v" + i, Now + 60, Now);
        }

        Assert.Equal(4, cache.Count);
        Assert.True(cache.TryGet(Key(3), out var value));
        Assert.Equal("v3", value);
    }

    [Fact]
    public void Add_AtCapacityWithExpiredEntries_DropsOnlyTheExpired()
    {
        var cache = new VerifiedTokenCache<string>(4);
        Offer(cache, Key(0), "live", Now + 60, Now - 10);
        Offer(cache, Key(1), "gone", Now - 1, Now - 10);
        Offer(cache, Key(2), "gone", Now, Now - 10);
        Offer(cache, Key(3), "gone", Now - 5, Now - 10);

        Offer(cache, Key(4), "new", Now + 60, Now);

        Assert.Equal(2, cache.Count);
        Assert.True(cache.TryGet(Key(0), out _));
        Assert.True(cache.TryGet(Key(4), out _));
        Assert.False(cache.TryGet(Key(1), out _));
    }

    [Fact]
    public void Add_AtCapacityWithNothingExpired_StartsOverAndStaysBounded()
    {
        var cache = new VerifiedTokenCache<string>(100);

        for (var i = 0; i < 1000; i++)
        {
            Offer(cache, Key(i), "v", Now + 60, Now);
            Assert.InRange(cache.Count, 1, 100);
        }

        Assert.True(cache.TryGet(Key(999), out _));
    }

    [Fact]
    public void Remove_Entry_GoneAndUncounted()
    {
        var cache = new VerifiedTokenCache<string>(4);
        Offer(cache, Key(1), "v", Now + 60, Now);

        cache.Remove(Key(1));
        cache.Remove(Key(1));

        Assert.False(cache.TryGet(Key(1), out _));
        Assert.Equal(0, cache.Count);
    }

    [Fact]
    public async Task Add_ManyThreadsPastCapacity_StaysBounded()
    {
        var cache = new VerifiedTokenCache<string>(500);

        await Task.WhenAll(Enumerable.Range(0, 4).Select(t => Task.Run(() =>
        {
            for (var i = 0; i < 5000; i++)
            {
                Offer(cache, Key((t * 100_000) + i), "v", Now + 60, Now);
            }
        })));

        Assert.InRange(cache.Count, 1, 500);
        var held = Enumerable.Range(0, 4).SelectMany(t => Enumerable.Range(0, 5000).Select(i => Key((t * 100_000) + i))).Count(k => cache.TryGet(k, out _));
        // The count is exact unless an insert races a sweep; what is held is bounded either way.
        Assert.InRange(held, 1, 500);
    }

    [Fact]
    public void Add_FirstOffer_OnlyNotedSecondHeld()
    {
        var cache = new VerifiedTokenCache<string>(4);

        Assert.False(cache.Add(Key(1), "v", Now + 60, Now));
        Assert.False(cache.TryGet(Key(1), out _));
        Assert.True(cache.Add(Key(1), "v", Now + 60, Now));

        Assert.True(cache.TryGet(Key(1), out _));
        Assert.Equal(1, cache.Count);
    }

    [Fact]
    public void Add_FloodOfDigestsOfferedOnce_NothingHeldAndAHeldEntryStays()
    {
        var cache = new VerifiedTokenCache<string>(100);
        Offer(cache, Key(-1), "reused", Now + 60, Now);

        for (var i = 0; i < 100_000; i++)
        {
            cache.Add(Key(i), "v", Now + 60, Now);
        }

        Assert.Equal(1, cache.Count);
        Assert.True(cache.TryGet(Key(-1), out var value));
        Assert.Equal("reused", value);
    }

    [Fact]
    public void Add_OtherDigestTakesTheSlotBetweenOffers_OfferedAgainBeforeHeld()
    {
        var cache = new VerifiedTokenCache<string>(16);
        var first = Key(0);
        var rival = Enumerable.Range(1, 100_000).Select(Key).First(k => ((k.A ^ first.A) & (ulong)(cache.DoorkeeperSlots - 1)) == 0 && k.B != first.B);

        cache.Add(first, "v", Now + 60, Now);
        cache.Add(rival, "r", Now + 60, Now);

        Assert.False(cache.Add(first, "v", Now + 60, Now));
        Assert.True(cache.Add(first, "v", Now + 60, Now));
        Assert.True(cache.TryGet(first, out _));
        Assert.False(cache.TryGet(rival, out _));
    }

    [Fact]
    public void Clear_EntriesGone_ADigestOfferedBeforeHeldAgainAtItsNextOffer()
    {
        var cache = new VerifiedTokenCache<string>(4);
        Offer(cache, Key(1), "v", Now + 60, Now);

        cache.Clear();

        Assert.False(cache.TryGet(Key(1), out _));
        Assert.Equal(0, cache.Count);
        Assert.True(cache.Add(Key(1), "v", Now + 60, Now));
        Assert.True(cache.TryGet(Key(1), out _));
    }

    /// <summary>Offers an entry twice, as a reused token is: the second offer is the one held.</summary>
    private static void Offer(VerifiedTokenCache<string> cache, TokenDigest key, string value, long expires, long now)
    {
        cache.Add(key, value, expires, now);
        cache.Add(key, value, expires, now);
    }

    private static TokenDigest Key(int i) => TokenDigest.Of("t." + i.ToString(System.Globalization.CultureInfo.InvariantCulture) + ".s");
}
