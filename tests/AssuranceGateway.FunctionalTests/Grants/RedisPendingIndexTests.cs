using System.Diagnostics;
using System.Globalization;
using AssuranceGateway.Grants;
using AssuranceGateway.Testing;

namespace AssuranceGateway.FunctionalTests.Grants;

/// <summary>
/// The Redis pending list pages through a sorted set by (creation time, id). Ids created in the same microsecond (two
/// masters of a cluster) sit in byte order; the page script must compare them that way, not by Lua's '&gt;', which
/// follows the server's locale (LC_COLLATE, e.g. en_US.UTF-8 from /etc/default/locale under systemd).
/// </summary>
public sealed class RedisPendingIndexTests
{
    [Theory]
    [InlineData("C")]
    [InlineData("en_US.UTF-8")]
    public async Task ListPendingAsync_TieAcrossAPage_EveryPendingGrantListedOnce(string locale)
    {
        await using var redis = await StartRedisAsync(locale);
        var settings = RedisStores.Settings(redis);
        using var store = await RedisStores.StartAsync(settings);
        var now = DateTimeOffset.FromUnixTimeMilliseconds(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
        var ids = new List<string>();
        for (var i = 0; i < 150; i++)
        {
            var grant = new GrantRecord
            {
                Id = GrantIds.New(), Route = "deploy", Subject = "s" + i, Status = GrantStatus.Pending, MaxUses = 1, UsesRemaining = 1,
                CreatedAt = now, ExpiresAt = now.AddMinutes(5), ApprovalsRequired = 1, Approvers = [],
            };
            Assert.Equal(GrantChange.Done, (await store.CreateAsync(grant, RedisStores.CreatedBy(), 10, default)).Outcome);
            ids.Add(grant.Id);
        }

        // One creation time for all: a tie that spans more than a page (100).
        var micros = RedisGrantStore.ToMicros(now).ToString(CultureInfo.InvariantCulture);
        var index = (string)new GrantKeys(settings.KeyPrefix).PendingByCreation!;
        foreach (var id in ids)
        {
            await redis.ExecuteAsync("ZADD", index, "XX", micros, id);
        }

        var listed = (await store.ListPendingAsync(500, null, default)).Select(g => g.Id).ToList();

        Assert.Equal(listed.Count, listed.Distinct().Count());
        Assert.Equal(ids.Order(StringComparer.Ordinal), listed.Order(StringComparer.Ordinal));
    }

    /// <summary>
    /// A redis-server whose collation is <paramref name="locale"/>; a locale this machine cannot build (no localedef, no
    /// locale sources) falls back to C, which still checks the tie across pages.
    /// </summary>
    private static async Task<RedisServer> StartRedisAsync(string locale)
    {
        var directory = Path.Combine(Path.GetTempPath(), "agw-locale");
        if (locale != "C" && !Directory.Exists(Path.Combine(directory, locale)))
        {
            Directory.CreateDirectory(directory);
            try
            {
                using var build = Process.Start(new ProcessStartInfo("localedef", ["-i", locale.Split('.')[0], "-f", "UTF-8", Path.Combine(directory, locale)])
                {
                    RedirectStandardError = true,
                    RedirectStandardOutput = true,
                })!;
                await build.WaitForExitAsync();
            }
            catch (System.ComponentModel.Win32Exception)
            {
                // no localedef here
            }
        }

        var available = locale == "C" || Directory.Exists(Path.Combine(directory, locale));
        var server = RedisServer.Create();
        server.ProcessEnvironment["LOCPATH"] = available && locale != "C" ? directory : null;
        server.ProcessEnvironment["LC_ALL"] = available ? locale : "C";
        await server.StartAsync();
        return server;
    }
}
