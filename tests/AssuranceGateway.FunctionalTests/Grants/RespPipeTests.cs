using System.Globalization;
using System.Net;
using AssuranceGateway.Grants;
using AssuranceGateway.Testing;

namespace AssuranceGateway.FunctionalTests.Grants;

/// <summary>The consume connection against a real redis-server: every reply reaches the caller that asked for it.</summary>
public sealed class RespPipeTests(RedisServer redis) : IClassFixture<RedisServer>
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(5);

    [Fact]
    public async Task SendAsync_ThousandsConcurrent_EachCallerGetsItsOwnReply()
    {
        using var pipe = await ConnectAsync();

        // Many callers at once, so that commands share sends and replies share receives (and the deferred flush runs).
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var calls = Enumerable.Range(0, 3000).Select(async i =>
        {
            await gate.Task;
            var payload = "caller-" + i.ToString(CultureInfo.InvariantCulture) + new string('x', i % 700);
            return (payload, reply: await pipe.SendAsync(RespPipe.Encode("ECHO", payload)));
        }).ToArray();
        gate.SetResult();
        var results = await Task.WhenAll(calls);

        Assert.All(results, r => Assert.Equal(r.payload, r.reply));
        Assert.Null(pipe.Broken);
    }

    [Fact]
    public async Task SendAsync_ErrorReply_ReturnedToThatCallerOnly()
    {
        using var pipe = await ConnectAsync();

        var error = pipe.SendAsync(RespPipe.Encode("EVALSHA", new string('0', 40), "0"));
        var echo = pipe.SendAsync(RespPipe.Encode("ECHO", "after"));

        Assert.True(Assert.IsType<RespError>(await error).IsNoScript);
        Assert.Equal("after", await echo);
        Assert.Null(pipe.Broken);
    }

    [Fact]
    public async Task SendAsync_RedisPaused_FailsWithUnknownOutcomeAfterTheDeadlineAndStaysBroken()
    {
        using var pipe = await ConnectAsync(TimeSpan.FromMilliseconds(300));
        Assert.Equal("PONG", await pipe.SendAsync(RespPipe.Encode("PING")));

        await redis.PauseAsync();
        StoreUnavailableException failure;
        try
        {
            failure = await Assert.ThrowsAsync<StoreUnavailableException>(() => pipe.SendAsync(RespPipe.Encode("PING")).WaitAsync(Timeout));
        }
        finally
        {
            await redis.ResumeAsync();
        }

        Assert.True(failure.OutcomeUnknown);
        Assert.NotNull(pipe.Broken);
        var after = await Assert.ThrowsAsync<StoreUnavailableException>(() => pipe.SendAsync(RespPipe.Encode("PING")));
        Assert.False(after.OutcomeUnknown);
    }

    private Task<RespPipe> ConnectAsync(TimeSpan? timeout = null) =>
        RespPipe.ConnectAsync(
            new IPEndPoint(IPAddress.Loopback, redis.Port), null, 0, "resp-pipe-test", timeout ?? Timeout, TimeProvider.System, CancellationToken.None);
}
