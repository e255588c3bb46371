using System.Security.Cryptography;
using System.Text.Json.Nodes;
using AssuranceGateway.Evidence;
using Microsoft.IdentityModel.Tokens;

namespace AssuranceGateway.UnitTests.Evidence;

public sealed class EvidenceKeyHistoryTests
{
    private static readonly TimeSpan Skew = TimeSpan.FromSeconds(30);
    private static readonly DateTimeOffset Now = ManualTimeProvider.FarFuture;
    private static readonly long NowSeconds = Now.ToUnixTimeSeconds();

    private static string NewKeyJson(string kid)
    {
        using var ecdsa = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var p = ecdsa.ExportParameters(true);
        return new JsonObject
        {
            ["kty"] = "EC", ["crv"] = "P-256", ["kid"] = kid,
            ["x"] = Base64UrlEncoder.Encode(p.Q.X), ["y"] = Base64UrlEncoder.Encode(p.Q.Y), ["d"] = Base64UrlEncoder.Encode(p.D),
        }.ToJsonString();
    }

    private static List<string> Kids(List<Dictionary<string, string>> keys) => keys.ConvertAll(k => k["kid"]);

    [Fact]
    public void Published_RotatedKeyWithUnexpiredEvidence_ServedAfterCurrentUntilExpiryPlusSkew()
    {
        var history = new EvidenceKeyHistory();
        var old = new JsonWebKey(NewKeyJson("ev-1"));
        var current = new JsonWebKey(NewKeyJson("ev-2"));
        history.Signed(old, NowSeconds + 60);

        Assert.Equal(["ev-2", "ev-1"], Kids(history.Published(current, Now, Skew)));
        Assert.Equal(["ev-2", "ev-1"], Kids(history.Published(current, Now.AddSeconds(90), Skew)));
        Assert.Equal(["ev-2"], Kids(history.Published(current, Now.AddSeconds(91), Skew)));
    }

    [Fact]
    public void Signed_OldKeyAfterRotation_ExtendsHowLongItIsServed()
    {
        // A request that read the configuration before the reload signs with the old key after it.
        var history = new EvidenceKeyHistory();
        var old = new JsonWebKey(NewKeyJson("ev-1"));
        var current = new JsonWebKey(NewKeyJson("ev-2"));
        history.Signed(old, NowSeconds + 60);
        history.Signed(current, NowSeconds + 60);
        history.Signed(old, NowSeconds + 120);

        Assert.Equal(["ev-2", "ev-1"], Kids(history.Published(current, Now.AddSeconds(150), Skew)));
        Assert.Equal(["ev-2"], Kids(history.Published(current, Now.AddSeconds(151), Skew)));
    }

    [Fact]
    public void Published_SameKeyReadAgainOnReload_ServedOnce()
    {
        var json = NewKeyJson("ev-1");
        var history = new EvidenceKeyHistory();
        history.Signed(new JsonWebKey(json), NowSeconds + 60);
        history.Signed(new JsonWebKey(json), NowSeconds + 61);

        Assert.Equal(["ev-1"], Kids(history.Published(new JsonWebKey(json), Now, Skew)));
        Assert.Equal(["ev-2", "ev-1"], Kids(history.Published(new JsonWebKey(NewKeyJson("ev-2")), Now.AddSeconds(91), Skew)));
    }

    [Fact]
    public void Published_NoKeyConfiguredAnyMore_StillServesUnexpiredThenNothing()
    {
        var history = new EvidenceKeyHistory();
        history.Signed(new JsonWebKey(NewKeyJson("ev-1")), NowSeconds + 60);

        Assert.Equal(["ev-1"], Kids(history.Published(null, Now, Skew)));
        Assert.Empty(history.Published(null, Now.AddSeconds(91), Skew));
    }

    [Fact]
    public void Published_Keys_HoldNoPrivateMember()
    {
        var history = new EvidenceKeyHistory();
        history.Signed(new JsonWebKey(NewKeyJson("ev-1")), NowSeconds + 60);

        var keys = history.Published(new JsonWebKey(NewKeyJson("ev-2")), Now, Skew);

        Assert.Equal(2, keys.Count);
        Assert.All(keys, k => Assert.Equal(["alg", "crv", "kid", "kty", "use", "x", "y"], k.Keys.Order(StringComparer.Ordinal)));
    }

    [Fact]
    public void Published_WithPublishedKeys_SigningKeyThenPublishedInOrderThenRetiredEachKeyOnce()
    {
        // The signing key first (RFC 7517 sets are unordered, but some verifiers try the first key), then the keys the
        // operator lists, then what only the history still holds; a key both listed and retired is served once.
        var history = new EvidenceKeyHistory();
        var retired = new JsonWebKey(NewKeyJson("ev-0"));
        var listedAndRetiredJson = NewKeyJson("ev-1");
        var signingJson = NewKeyJson("ev-2");
        history.Signed(retired, NowSeconds + 60);
        history.Signed(new JsonWebKey(listedAndRetiredJson), NowSeconds + 60);
        var next = new JsonWebKey(NewKeyJson("ev-3"));

        var keys = history.Published(
            new JsonWebKey(signingJson), Now, Skew, [next, new JsonWebKey(listedAndRetiredJson), new JsonWebKey(signingJson)]);

        Assert.Equal(["ev-2", "ev-3", "ev-1", "ev-0"], Kids(keys));
        Assert.All(keys, k => Assert.False(k.ContainsKey("d")));
        Assert.Equal(["ev-2", "ev-3", "ev-1"], Kids(history.Published(
            new JsonWebKey(signingJson), Now.AddSeconds(91), Skew, [next, new JsonWebKey(listedAndRetiredJson)])));
    }
}
