using System.Net;
using System.Text.Json.Nodes;
using AssuranceGateway.Grants;
using AssuranceGateway.Testing;
using static AssuranceGateway.Testing.GrantHelpers;

namespace AssuranceGateway.FunctionalTests.Grants;

/// <summary>
/// The conformance suite against a three-master Redis Cluster: grants, subjects and the pending index land on
/// different masters, and every operation must still be one slot per script.
/// </summary>
public sealed class RedisThreeMasterClusterGrantStoreTests(RedisCluster cluster)
    : GrantStoreConformanceTests, IClassFixture<RedisCluster>
{
    private readonly string _prefix = RedisStores.NewPrefix();

    protected override DateTimeOffset Now => DateTimeOffset.FromUnixTimeMilliseconds(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());

    protected override async Task<IGrantStore> CreateStoreAsync() =>
        await RedisStores.StartAsync(RedisStores.Settings(cluster.Nodes[0], _prefix) with { Redis = cluster.ConnectionString });

    [Fact]
    public async Task Grants_SpreadOverAllThreeMasters()
    {
        var keys = new GrantKeys(_prefix);
        var owners = new HashSet<int>();
        for (var i = 0; i < 30; i++)
        {
            var slot = (long)(await cluster.Nodes[0].ExecuteAsync("CLUSTER", "KEYSLOT", keys.Grant(GrantIds.New())!))!;
            owners.Add(slot <= 5460 ? 0 : slot <= 10922 ? 1 : 2);
        }

        Assert.Equal(3, owners.Count);
    }
}

/// <summary>SPEC §7.2 on a cluster: two gateways, one single-use grant, 200 concurrent uses, one forwarded.</summary>
public sealed class RedisClusterGatewayTests(RedisCluster cluster) : IClassFixture<RedisCluster>
{
    [Fact]
    public async Task ExactlyOnce_200ConcurrentUsesAcrossTwoGatewaysOnACluster_OneForwarded()
    {
        await using var a = await GatewayHarness.StartAsync(redis: cluster.ConnectionString);
        await using var b = await GatewayHarness.CreateAsync();
        await b.StartWithAsync(JsonNode.Parse(await File.ReadAllTextAsync(a.ConfigPath))!.AsObject());
        var token = a.Idp.Token();
        var svid = a.WorkloadIssuer.Svid();
        var ids = new List<string>();
        for (var i = 0; i < 3; i++)
        {
            ids.Add(await a.CreateGrantAsync(DeployGrant(token)));
        }

        foreach (var id in ids)
        {
            var responses = await Task.WhenAll(Enumerable.Range(0, 200).Select(async i =>
            {
                using var request = DeployRequest(token, svid, id, out _);
                using var response = await (i % 2 == 0 ? a.Proxy : b.Proxy).SendAsync(request);
                return response.StatusCode;
            }));

            Assert.Equal(1, responses.Count(s => s == HttpStatusCode.OK));
        }

        Assert.Equal(3, a.Upstream.Count);
    }
}
