using AssuranceGateway.Grants;

namespace AssuranceGateway.UnitTests.Grants;

/// <summary>The records waiting for the store: bounded, oldest first, and one caller's burst never evicts another's.</summary>
public sealed class UnknownOutcomeQueueTests
{
    private static UnknownOutcome Record(string caller, int n) =>
        new($"{caller}-{n}", new GrantEvent { Type = GrantEvent.UnknownOutcome, TraceId = $"trace-{caller}-{n}" }, caller);

    private static List<string> Drain(UnknownOutcomeQueue queue)
    {
        var ids = new List<string>();
        while (queue.TryTake(out var item))
        {
            ids.Add(item.GrantId);
        }

        return ids;
    }

    [Fact]
    public void BurstOfOneCaller_FillsTheQueue_OthersRecordsStay_TheBurstsOldestGiveWay()
    {
        var dropped = new List<string>();
        var queue = new UnknownOutcomeQueue(4, d => dropped.Add(d.GrantId));

        queue.Add(Record("alice", 1));
        queue.Add(Record("bob", 1));
        for (var i = 1; i <= 5; i++)
        {
            queue.Add(Record("mallory", i));
        }

        Assert.Equal(["mallory-1", "mallory-2", "mallory-3"], dropped);
        Assert.Equal(["alice-1", "bob-1", "mallory-4", "mallory-5"], Drain(queue));
    }

    [Fact]
    public void FullOfABurst_AnotherCallersRecordStillGetsIn()
    {
        var dropped = new List<string>();
        var queue = new UnknownOutcomeQueue(3, d => dropped.Add(d.GrantId));
        for (var i = 1; i <= 3; i++)
        {
            queue.Add(Record("mallory", i));
        }

        queue.Add(Record("alice", 1));

        Assert.Equal(["mallory-1"], dropped);
        Assert.Equal(["mallory-2", "mallory-3", "alice-1"], Drain(queue));
    }

    [Fact]
    public void EveryCallerHoldsOne_TheOldestGivesWay_AndOrderIsKept()
    {
        var dropped = new List<string>();
        var queue = new UnknownOutcomeQueue(2, d => dropped.Add(d.GrantId));

        queue.Add(Record("a", 1));
        queue.Add(Record("b", 1));
        queue.Add(Record("c", 1));

        Assert.Equal(["a-1"], dropped);
        Assert.Equal(2, queue.Count);
        Assert.Equal(["b-1", "c-1"], Drain(queue));
        Assert.Equal(0, queue.Count);
    }

    [Fact]
    public async Task WaitAsync_CompletesOnceSomethingIsAdded()
    {
        var queue = new UnknownOutcomeQueue(2, _ => { });
        var waiting = queue.WaitAsync(CancellationToken.None);
        Assert.False(waiting.IsCompleted);

        queue.Add(Record("a", 1));

        await waiting.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.True(queue.TryTake(out _));
    }
}
