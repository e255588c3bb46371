using AssuranceGateway.Grants;
using AssuranceGateway.Testing;

namespace AssuranceGateway.FunctionalTests.Grants;

/// <summary>
/// The conformance suite against a one-node Redis Cluster. A cluster refuses a script whose keys are not all in one
/// slot (CROSSSLOT), and the client refuses to send one: every operation passing here is proof that each script
/// stays within the slot of one grant, one subject or the pending index.
/// </summary>
public sealed class RedisClusterGrantStoreTests(RedisClusterGrantStoreTests.ClusterNode cluster)
    : GrantStoreConformanceTests, IClassFixture<RedisClusterGrantStoreTests.ClusterNode>
{
    private readonly string _prefix = RedisStores.NewPrefix();

    protected override DateTimeOffset Now => DateTimeOffset.FromUnixTimeMilliseconds(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());

    protected override async Task<IGrantStore> CreateStoreAsync() => await RedisStores.StartAsync(RedisStores.Settings(cluster.Server, _prefix));

    [Fact]
    public async Task GrantKeys_OfOneGrant_ShareOneSlotAndSubjectsSpreadOut()
    {
        var keys = new GrantKeys(_prefix);
        var id = NewId();

        var grantSlot = await cluster.Server.ExecuteAsync("CLUSTER", "KEYSLOT", keys.Grant(id)!);
        var eventsSlot = await cluster.Server.ExecuteAsync("CLUSTER", "KEYSLOT", keys.Events(id)!);
        var subjectSlots = new HashSet<long>();
        foreach (var subject in new[] { "alice", "bob", "carol", "dave", "erin" })
        {
            subjectSlots.Add((long)(await cluster.Server.ExecuteAsync("CLUSTER", "KEYSLOT", keys.SubjectPending(subject)!))!);
        }

        Assert.Equal(grantSlot, eventsSlot);
        Assert.True(subjectSlots.Count > 1);
        Assert.Equal(
            await cluster.Server.ExecuteAsync("CLUSTER", "KEYSLOT", keys.PendingByCreation!),
            await cluster.Server.ExecuteAsync("CLUSTER", "KEYSLOT", keys.PendingByExpiry!));
    }

    /// <summary>A redis-server in cluster mode that owns all 16384 slots.</summary>
    public sealed class ClusterNode : IAsyncLifetime
    {
        public RedisServer Server { get; } = RedisServer.CreateClusterNode();

        public async Task InitializeAsync()
        {
            await ((IAsyncLifetime)Server).InitializeAsync();
            await Server.ExecuteAsync("CLUSTER", "ADDSLOTSRANGE", "0", "16383");
            await RedisStores.WaitUntilAsync(
                async () => ((string?)await Server.ExecuteAsync("CLUSTER", "INFO"))?.Contains("cluster_state:ok", StringComparison.Ordinal) == true,
                TimeSpan.FromSeconds(10),
                "the cluster to be ok");
        }

        public Task DisposeAsync() => Server.DisposeAsync().AsTask();
    }
}
