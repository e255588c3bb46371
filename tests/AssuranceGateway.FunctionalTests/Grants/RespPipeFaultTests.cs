using System.Text;
using AssuranceGateway.Configuration;
using AssuranceGateway.Enforcement;
using AssuranceGateway.Grants;
using AssuranceGateway.Testing;

namespace AssuranceGateway.FunctionalTests.Grants;

/// <summary>
/// The store's consume connection behind a misbehaving network (a fault proxy in front of a real redis-server): many
/// consumes of distinct grants share the connection, and every caller must be told what its own grant deserves, or
/// that the outcome is unknown; what Redis holds afterwards must agree with what each caller was told.
/// </summary>
public sealed class RespPipeFaultTests(RedisServer redis) : IClassFixture<RedisServer>
{
    private const int Calls = 30;
    private static readonly TimeSpan CallLimit = TimeSpan.FromSeconds(15);

    private enum Kind
    {
        Valid,
        Used,
        OtherRoute,
    }

    [Fact]
    public async Task Consume_RepliesArriveByteByByte_EachCallerGetsItsOwnGrantsOutcome()
    {
        await using var proxy = RespFaultProxy.Start(redis.Port);
        using var store = await StartAsync(proxy, TimeSpan.FromSeconds(10));
        var grants = await CreateGrantsAsync(store, i => (Kind)(i % 3));

        proxy.HoldRepliesUntilCommands = proxy.Commands + Calls;
        proxy.Fragment = true;
        var outcomes = await ConsumeAllAsync(store, grants);

        // Nothing went wrong but the pace: every outcome is known and is the grant's own.
        Assert.All(outcomes, o => Assert.Null(o.Failure));
        Assert.All(outcomes, o => Assert.Equal(Expected(o.Kind), o.Reason));
        await AssertStoreAgreesAsync(store, outcomes);
    }

    [Fact]
    public async Task Consume_ReplyDuplicatedInTheMiddleOfABatch_NoCallerIsDecidedByAnotherGrantsReply()
    {
        // One reply too many on the wire (a middlebox that retransmits, a server out of step): the valid grant's "ok"
        // arrives twice, and the caller after it, whose grant was used up long ago, must not take it for its own.
        await using var proxy = RespFaultProxy.Start(redis.Port);
        using var store = await StartAsync(proxy, TimeSpan.FromSeconds(2));
        var grants = await CreateGrantsAsync(store, i => i == 0 ? Kind.Valid : Kind.Used);

        var first = proxy.ArrayReplies;
        proxy.HoldRepliesUntilCommands = proxy.Commands + Calls;
        proxy.OnArrayReply = (number, reply) => number == first ? [reply, reply] : null;
        var outcomes = await ConsumeAllAsync(store, grants);

        Assert.All(outcomes.Where(o => o.Kind == Kind.Used), o => Assert.NotEqual(ReasonCodes.Ok, o.Reason));
        await AssertStoreAgreesAsync(store, outcomes);
    }

    [Fact]
    public async Task Consume_ExtraReplyThatIsNotOneOfOurs_NoCallerIsDecidedByAnotherGrantsReply()
    {
        // An unsolicited reply ahead of the real ones (an error, a value): everything behind it is one off.
        await using var proxy = RespFaultProxy.Start(redis.Port);
        using var store = await StartAsync(proxy, TimeSpan.FromSeconds(2));
        var grants = await CreateGrantsAsync(store, i => i % 2 == 0 ? Kind.Valid : Kind.Used);

        var first = proxy.ArrayReplies;
        proxy.HoldRepliesUntilCommands = proxy.Commands + Calls;
        proxy.OnArrayReply = (number, reply) => number == first ? ["-ERR unsolicited\r\n"u8.ToArray(), reply] : null;
        var outcomes = await ConsumeAllAsync(store, grants);

        Assert.All(outcomes.Where(o => o.Reason is not null), o => Assert.Equal(Expected(o.Kind), o.Reason));
        await AssertStoreAgreesAsync(store, outcomes);
    }

    // An error reply carries no tag, and three of them are read as "the consume did not run": NOSCRIPT and READONLY
    // send it again over the shared connection, OOM tells the caller nothing was written. Ahead of the real replies (one
    // too many on the wire), the first caller took one for its own: its consume ran over the dedicated connection and
    // again over the shared one (a valid request denied as a replay of itself, its grant spent), or was said to be a
    // known failure while it had spent the grant. Before it is trusted, such an error is now checked to be the
    // connection's own (an ECHO of a tag right behind it).
    [Theory]
    [InlineData("-NOSCRIPT No matching script. Please use EVAL.\r\n")]
    [InlineData("-READONLY You can't write against a read only replica.\r\n")]
    [InlineData("-OOM command not allowed when used memory > 'maxmemory'.\r\n")]
    public async Task Consume_UnsolicitedDidNotRunErrorAheadOfTheReplies_NoConsumeRunsTwiceOrIsSaidNotToHaveRun(string error)
    {
        await using var proxy = RespFaultProxy.Start(redis.Port);
        using var store = await StartAsync(proxy, TimeSpan.FromSeconds(2));
        var grants = await CreateGrantsAsync(store, i => i % 2 == 0 ? Kind.Valid : Kind.Used);

        var first = proxy.ArrayReplies;
        proxy.HoldRepliesUntilCommands = proxy.Commands + Calls;
        proxy.OnArrayReply = (number, reply) => number == first ? [Encoding.ASCII.GetBytes(error), reply] : null;
        var outcomes = await ConsumeAllAsync(store, grants);

        Assert.All(outcomes.Where(o => o.Reason is not null), o => Assert.Equal(Expected(o.Kind), o.Reason));
        Assert.All(outcomes.Where(o => o.Failure is { OutcomeUnknown: false }), o => Assert.Fail($"{o.Kind}: a known failure ({o.Failure!.Message})"));
        await AssertStoreAgreesAsync(store, outcomes);
    }

    [Theory]
    [InlineData("\r\n")] // an empty line: not RESP
    [InlineData("$3\r\nabcXY")] // a bulk string that does not end where its length says
    [InlineData("$-7\r\n")] // a length no server sends
    public async Task Consume_GarbageRightAfterAReply_EveryCallerAnsweredAndNoneDecidedByAnotherGrantsReply(string garbage)
    {
        await using var proxy = RespFaultProxy.Start(redis.Port);
        using var store = await StartAsync(proxy, TimeSpan.FromSeconds(2));
        var grants = await CreateGrantsAsync(store, i => (Kind)(i % 3));

        var first = proxy.ArrayReplies;
        proxy.HoldRepliesUntilCommands = proxy.Commands + Calls;

        // In the same write as the reply before it, so that the gateway reads both at once.
        proxy.OnArrayReply = (number, reply) => number == first + 3 ? [[.. reply, .. Encoding.ASCII.GetBytes(garbage)]] : null;
        var outcomes = await ConsumeAllAsync(store, grants);

        Assert.All(outcomes.Where(o => o.Reason is not null), o => Assert.Equal(Expected(o.Kind), o.Reason));
        Assert.Contains(outcomes, o => o.Failure is not null);
        await AssertStoreAgreesAsync(store, outcomes);
    }

    [Fact]
    public async Task Consume_ConnectionDroppedAfterSomeRepliesOfABatch_RestUnknownAndRecordedOnTheirGrants()
    {
        await using var proxy = RespFaultProxy.Start(redis.Port);
        using var store = await StartAsync(proxy, TimeSpan.FromSeconds(2));
        var grants = await CreateGrantsAsync(store, i => (Kind)(i % 3));

        var first = proxy.ArrayReplies;
        proxy.HoldRepliesUntilCommands = proxy.Commands + Calls;
        proxy.OnArrayReply = (number, reply) => number == first + 10 ? [] : null;
        var outcomes = await ConsumeAllAsync(store, grants);

        Assert.Equal(10, outcomes.Count(o => o.Reason is not null));
        Assert.All(outcomes.Where(o => o.Reason is not null), o => Assert.Equal(Expected(o.Kind), o.Reason));
        Assert.All(outcomes.Where(o => o.Failure is not null), o => Assert.True(o.Failure!.OutcomeUnknown));
        await AssertStoreAgreesAsync(store, outcomes);
    }

    [Fact]
    public async Task Consume_OneReplyLateBeyondTheTimeout_LateReplyReachesNobodyAndLaterCallersGetTheirOwn()
    {
        await using var proxy = RespFaultProxy.Start(redis.Port);
        var timeout = TimeSpan.FromMilliseconds(400);
        using var store = await StartAsync(proxy, timeout);
        var grants = await CreateGrantsAsync(store, i => (Kind)(i % 3));

        var first = proxy.ArrayReplies;
        proxy.HoldRepliesUntilCommands = proxy.Commands + Calls;
        proxy.DelayArrayReply = number => number == first + 5 ? timeout * 3 : TimeSpan.Zero;
        var outcomes = await ConsumeAllAsync(store, grants);
        Assert.Contains(outcomes, o => o.Failure is { OutcomeUnknown: true });
        Assert.All(outcomes.Where(o => o.Reason is not null), o => Assert.Equal(Expected(o.Kind), o.Reason));

        // The late replies come in while the next callers wait, on the connection that replaced the one given up: they
        // get their own answers.
        await RedisStores.WaitUntilAsync(() => Task.FromResult(store.ConsumesOnDedicatedConnection), TimeSpan.FromSeconds(10), "a new consume connection");
        var later = await CreateGrantsAsync(store, i => (Kind)(i % 3));
        var laterOutcomes = await ConsumeAllAsync(store, later);
        Assert.All(laterOutcomes.Where(o => o.Reason is not null), o => Assert.Equal(Expected(o.Kind), o.Reason));
        await AssertStoreAgreesAsync(store, [.. outcomes, .. laterOutcomes]);
    }

    private sealed record Grant(GrantRecord Record, Kind Kind);

    private sealed record Outcome(Grant Grant, string TraceId, string? Reason, StoreUnavailableException? Failure)
    {
        public Kind Kind => Grant.Kind;
    }

    private static string Expected(Kind kind) => kind switch
    {
        Kind.Valid => ReasonCodes.Ok,
        Kind.Used => ReasonCodes.Replayed,
        _ => ReasonCodes.RouteMismatch,
    };

    private static async Task<RedisGrantStore> StartAsync(RespFaultProxy proxy, TimeSpan timeout) =>
        await RedisStores.StartAsync(new StoreSettings
        {
            Redis = proxy.ConnectionString,
            KeyPrefix = RedisStores.NewPrefix(),
            Timeout = timeout,
            EvidenceRetention = TimeSpan.FromDays(7),
        });

    private static async Task<Grant[]> CreateGrantsAsync(RedisGrantStore store, Func<int, Kind> kind)
    {
        var grants = new Grant[Calls];
        for (var i = 0; i < Calls; i++)
        {
            var record = RedisStores.TokenGrant();
            Assert.Equal(GrantChange.Done, (await store.CreateAsync(record, RedisStores.CreatedBy(), 10, default)).Outcome);
            grants[i] = new Grant(record, kind(i));
            if (grants[i].Kind == Kind.Used)
            {
                Assert.Equal(ReasonCodes.Ok, (await store.ConsumeAsync(RedisStores.MatchingToken(record), default)).Reason);
            }
        }

        // The setup consumes went over the consume connection as well: the faults are for what follows.
        Assert.True(store.ConsumesOnDedicatedConnection);
        return grants;
    }

    /// <summary>All at once, in this order on the wire (each call runs synchronously up to the send).</summary>
    private static async Task<Outcome[]> ConsumeAllAsync(RedisGrantStore store, Grant[] grants)
    {
        var calls = grants.Select(grant =>
        {
            var request = RedisStores.MatchingToken(grant.Record) with { Route = grant.Kind == Kind.OtherRoute ? "other" : grant.Record.Route };
            return (grant, request.TraceId!, task: store.ConsumeAsync(request, default));
        }).ToArray();

        var outcomes = new List<Outcome>();
        foreach (var (grant, traceId, task) in calls)
        {
            try
            {
                // A caller left waiting is a request that never gets an answer.
                outcomes.Add(new Outcome(grant, traceId, (await task.WaitAsync(CallLimit)).Reason, null));
            }
            catch (StoreUnavailableException e)
            {
                outcomes.Add(new Outcome(grant, traceId, null, e));
            }
        }

        return [.. outcomes];
    }

    /// <summary>Each grant's uses and events agree with what its caller was told; unknown outcomes are on their grant.</summary>
    private static async Task AssertStoreAgreesAsync(RedisGrantStore store, IReadOnlyList<Outcome> outcomes)
    {
        await RedisStores.WaitUntilAsync(() => Task.FromResult(store.UnknownOutcomesPending == 0), TimeSpan.FromSeconds(10), "unknown outcomes to be recorded");
        foreach (var outcome in outcomes)
        {
            var grant = await store.GetAsync(outcome.Grant.Record.Id, default);
            Assert.NotNull(grant);
            var mine = grant.Events.Where(e => e.TraceId == outcome.TraceId).ToList();
            var uses = grant.Events.Count(e => e.Type == GrantEvent.Used);
            if (outcome.Reason == ReasonCodes.Ok)
            {
                Assert.Equal(0, grant.UsesRemaining);
                Assert.Equal(GrantEvent.Used, Assert.Single(mine).Type);
                Assert.Equal(1, uses);
            }
            else if (outcome.Reason is not null)
            {
                Assert.Equal(outcome.Reason, Assert.Single(mine).Reason);
                Assert.Equal(GrantEvent.Denied, mine[0].Type);
                Assert.Equal(outcome.Kind == Kind.Used ? 0 : 1, grant.UsesRemaining);
            }
            else
            {
                // Unknown: whatever Redis did, the grant says so, and was spent at most once.
                Assert.True(outcome.Failure!.OutcomeUnknown, outcome.Failure.Message);
                Assert.Contains(mine, e => e.Type == GrantEvent.UnknownOutcome);
            }

            Assert.True(uses <= 1, $"grant {outcome.Kind} spent {uses} times");
        }
    }
}
