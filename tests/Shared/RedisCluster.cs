using System.Globalization;

namespace AssuranceGateway.Testing;

/// <summary>
/// A local Redis Cluster of three masters on loopback ports, built the way <c>redis-cli --cluster create</c> does it
/// (each node takes a third of the 16384 slots, then they MEET), without needing redis-cli.
/// </summary>
public sealed class RedisCluster : IAsyncLifetime, IAsyncDisposable
{
    private readonly RedisServer[] _nodes = [RedisServer.CreateClusterNode(), RedisServer.CreateClusterNode(), RedisServer.CreateClusterNode()];

    public IReadOnlyList<RedisServer> Nodes => _nodes;

    /// <summary>All three masters: the client discovers the slot map from any of them.</summary>
    public string ConnectionString => string.Join(',', _nodes.Select(n => n.ConnectionString));

    public async Task InitializeAsync()
    {
        foreach (var node in _nodes)
        {
            await node.StartAsync();
        }

        int[] starts = [0, 5461, 10923];
        int[] ends = [5460, 10922, 16383];
        for (var i = 0; i < 3; i++)
        {
            await _nodes[i].ExecuteAsync("CLUSTER", "ADDSLOTSRANGE", starts[i].ToString(CultureInfo.InvariantCulture), ends[i].ToString(CultureInfo.InvariantCulture));
        }

        for (var i = 1; i < 3; i++)
        {
            await _nodes[0].ExecuteAsync("CLUSTER", "MEET", "127.0.0.1", _nodes[i].Port.ToString(CultureInfo.InvariantCulture),
                _nodes[i].ClusterBusPort!.Value.ToString(CultureInfo.InvariantCulture));
        }

        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (true)
        {
            var ok = 0;
            foreach (var node in _nodes)
            {
                var info = (string?)await node.ExecuteAsync("CLUSTER", "INFO");
                if (info is not null && info.Contains("cluster_state:ok", StringComparison.Ordinal) && info.Contains("cluster_known_nodes:3", StringComparison.Ordinal))
                {
                    ok++;
                }
            }

            if (ok == 3)
            {
                return;
            }

            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException("the three-master cluster did not converge");
            }

            await Task.Delay(100);
        }
    }

    async Task IAsyncLifetime.DisposeAsync() => await DisposeAsync();

    public async ValueTask DisposeAsync()
    {
        foreach (var node in _nodes)
        {
            await node.DisposeAsync();
        }
    }
}
