using System.Threading.Channels;

namespace AssuranceGateway.Grants;

/// <summary>A record that must reach a grant once the store answers again, and whose request it came from.</summary>
internal sealed record UnknownOutcome(string GrantId, GrantEvent Event, string Caller);

/// <summary>
/// The records waiting for the store to answer again (unknown outcomes, undelivered spent uses): bounded, oldest first,
/// and fair between callers. When full, the oldest record of the caller holding the most is dropped, never another
/// caller's: anyone with a valid token can send well-formed made-up grant ids while Redis stalls, and each one's
/// timed-out consume is queued like a real one (the gateway cannot know it is made up before the store answers). With
/// plain drop-oldest such a burst pushed out the unknown outcomes of other callers' spent uses.
/// </summary>
internal sealed class UnknownOutcomeQueue(int capacity, Action<UnknownOutcome> dropped)
{
    private readonly Lock _lock = new();
    private readonly LinkedList<UnknownOutcome> _items = new();
    private readonly Dictionary<string, int> _perCaller = new(StringComparer.Ordinal);
    // One pending signal at most: "added since the last wait" (a burst of adds is one wake-up).
    private readonly Channel<bool> _added = Channel.CreateBounded<bool>(new BoundedChannelOptions(1) { FullMode = BoundedChannelFullMode.DropWrite, SingleReader = true });

    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _items.Count;
            }
        }
    }

    public void Add(UnknownOutcome item)
    {
        UnknownOutcome? victim = null;
        lock (_lock)
        {
            if (_items.Count >= capacity)
            {
                victim = RemoveOldestOfLargestCaller(item.Caller);
            }

            _items.AddLast(item);
            _perCaller[item.Caller] = _perCaller.GetValueOrDefault(item.Caller) + 1;
        }

        if (victim is not null)
        {
            dropped(victim);
        }

        _added.Writer.TryWrite(true);
    }

    public bool TryTake(out UnknownOutcome item)
    {
        lock (_lock)
        {
            if (_items.First is not { } first)
            {
                item = null!;
                return false;
            }

            _items.RemoveFirst();
            Forget(first.Value.Caller);
            item = first.Value;
            return true;
        }
    }

    /// <summary>Completes when something was added since the last wait (it may have been taken already).</summary>
    public async Task WaitAsync(CancellationToken cancellationToken) => await _added.Reader.ReadAsync(cancellationToken).ConfigureAwait(false);

    private UnknownOutcome RemoveOldestOfLargestCaller(string adding)
    {
        // The caller about to add counts its new record too: between equals, whoever is adding gives way.
        var largest = adding;
        var most = _perCaller.GetValueOrDefault(adding) + 1;
        foreach (var (caller, count) in _perCaller)
        {
            if (count > most)
            {
                (largest, most) = (caller, count);
            }
        }

        for (var node = _items.First; node is not null; node = node.Next)
        {
            if (string.Equals(node.Value.Caller, largest, StringComparison.Ordinal))
            {
                _items.Remove(node);
                Forget(largest);
                return node.Value;
            }
        }

        // The adding caller holds nothing yet and every other holds one: the oldest record gives way.
        var oldest = _items.First!.Value;
        _items.RemoveFirst();
        Forget(oldest.Caller);
        return oldest;
    }

    private void Forget(string caller)
    {
        if (--_perCaller[caller] == 0)
        {
            _perCaller.Remove(caller);
        }
    }
}
