using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
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
    public async Task SendAsync_PipeBrokenWhileRepliesAreBeingRead_NoCallerGetsAnotherCallersReply()
    {
        // The store drops a pipe (Dispose) while other callers' replies are still arriving, and the deadline timer breaks
        // one on its own thread: the in-flight commands are failed while the reader may be matching replies to them. A
        // reply must then reach the caller it belongs to or nobody; one handed to the next caller in the queue would be
        // another request's decision.
        var mismatched = new List<string>();
        var delivered = 0;
        var failed = 0;
        for (var round = 0; round < 40; round++)
        {
            var pipe = await ConnectAsync();
            var calls = Enumerable.Range(0, 1500).Select(i =>
            {
                var payload = FormattableString.Invariant($"r{round}-c{i}");
                return (payload, reply: pipe.SendAsync(RespPipe.Encode("ECHO", payload)));
            }).ToArray();

            // Break it while the replies stream in: after the first one is back, at a point that moves round by round.
            await calls[0].reply.WaitAsync(Timeout);
            var spin = new SpinWait();
            for (var i = 0; i < round % 20; i++)
            {
                spin.SpinOnce(sleep1Threshold: -1);
            }

            pipe.Dispose();
            foreach (var (payload, reply) in calls)
            {
                try
                {
                    var value = await reply.WaitAsync(Timeout);
                    delivered++;
                    if (!Equals(value, payload))
                    {
                        mismatched.Add($"{payload} got {value}");
                    }
                }
                catch (StoreUnavailableException)
                {
                    failed++;
                }
            }
        }

        Assert.Empty(mismatched);
        Assert.True(delivered > 0 && failed > 0, $"the test should break pipes halfway: {delivered} delivered, {failed} failed");
    }

    [Fact]
    public async Task Retire_WhileRepliesStreamIn_InFlightCommandsGetTheirRepliesNewOnesFailUnsentThenClosed()
    {
        var pipe = await ConnectAsync(name: "retired-pipe");

        // Redis stopped, so that the commands are written but not answered when the pipe is retired.
        await redis.PauseAsync();
        (string payload, Task<object?> reply)[] calls;
        try
        {
            calls = Enumerable.Range(0, 1500).Select(i =>
            {
                var payload = "c" + i.ToString(CultureInfo.InvariantCulture);
                return (payload, reply: pipe.SendAsync(RespPipe.Encode("ECHO", payload)));
            }).ToArray();
            await Task.Delay(300);

            pipe.Retire("not the primary");
            var late = await Assert.ThrowsAsync<StoreUnavailableException>(() => pipe.SendAsync(RespPipe.Encode("PING")).WaitAsync(Timeout));
            Assert.False(late.OutcomeUnknown);
        }
        finally
        {
            await redis.ResumeAsync();
        }

        // Every command either got its own reply, or provably never left: none is "sent, not answered".
        var delivered = 0;
        foreach (var (payload, reply) in calls)
        {
            var failure = await Record.ExceptionAsync(async () => Assert.Equal(payload, await reply.WaitAsync(Timeout)));
            if (failure is null)
            {
                delivered++;
            }
            else
            {
                Assert.False(Assert.IsType<StoreUnavailableException>(failure).OutcomeUnknown, failure.Message);
            }
        }

        Assert.True(delivered > 1, $"only {delivered} delivered");
        Assert.Equal("not the primary", pipe.Broken);
        await RedisStores.WaitUntilAsync(
            async () => !((string?)await redis.ExecuteAsync("CLIENT", "LIST"))!.Contains("name=retired-pipe", StringComparison.Ordinal),
            Timeout,
            "the retired connection to close");
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

    [Theory]
    [InlineData("+one\r\n+two\r\n+three\r\n")] // one reply more than was asked for
    [InlineData("+one\r\n?garbage\r\n")] // a reply that is not RESP
    [InlineData("+one\r\n\r\n")] // an empty line (the reader used to die on it, leaving "one"'s caller waiting)
    [InlineData("+one\r\n$3\r\ntwoXY")] // a bulk string that does not end where its length says
    public async Task SendAsync_ServerOutOfStepInTheMiddleOfARead_NoCallerLeftWaiting(string replies)
    {
        // Not Redis: a server that misbehaves on cue. A reply already taken off the in-flight queue when the read fails
        // must still be answered (failed), not dropped with its caller waiting forever.
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var server = Task.Run(async () =>
        {
            using var client = await listener.AcceptTcpClientAsync();
            var stream = client.GetStream();
            var received = new StringBuilder();
            var buffer = new byte[4096];
            async Task ReadUntilAsync(string text, int times)
            {
                while (CountOf(received.ToString(), text) < times)
                {
                    var n = await stream.ReadAsync(buffer);
                    if (n == 0)
                    {
                        return;
                    }

                    received.Append(Encoding.ASCII.GetString(buffer, 0, n));
                }
            }

            await ReadUntilAsync("SETNAME", 1);
            await stream.WriteAsync("+OK\r\n"u8.ToArray());
            await ReadUntilAsync("ECHO", 2);
            await stream.WriteAsync(Encoding.ASCII.GetBytes(replies)); // one write, so one read on the other side
            try
            {
                await ReadUntilAsync("never", 1);
            }
            catch (IOException)
            {
                // The broken pipe closes with replies it never read: Linux then resets the connection instead of a FIN.
            }
        });
        using var pipe = await RespPipe.ConnectAsync(
            listener.LocalEndpoint, null, 0, "resp-pipe-test", Timeout, TimeProvider.System, CancellationToken.None);

        var first = pipe.SendAsync(RespPipe.Encode("ECHO", "one"));
        var second = pipe.SendAsync(RespPipe.Encode("ECHO", "two"));

        // The first reply was matched in order before anything went wrong: it may be delivered or failed, never lost.
        try
        {
            Assert.Equal("one", await first.WaitAsync(Timeout));
        }
        catch (StoreUnavailableException failure)
        {
            Assert.True(failure.OutcomeUnknown);
        }

        // The second one's reply is in doubt: it fails (unknown outcome) instead of waiting forever.
        Assert.True((await Assert.ThrowsAsync<StoreUnavailableException>(() => second.WaitAsync(Timeout))).OutcomeUnknown);

        Assert.StartsWith("malformed reply", pipe.Broken);
        pipe.Dispose();
        await server.WaitAsync(Timeout);
    }

    private static int CountOf(string text, string value)
    {
        var count = 0;
        for (var i = text.IndexOf(value, StringComparison.Ordinal); i >= 0; i = text.IndexOf(value, i + 1, StringComparison.Ordinal))
        {
            count++;
        }

        return count;
    }

    private Task<RespPipe> ConnectAsync(TimeSpan? timeout = null, string name = "resp-pipe-test") =>
        RespPipe.ConnectAsync(
            new IPEndPoint(IPAddress.Loopback, redis.Port), null, 0, name, timeout ?? Timeout, TimeProvider.System, CancellationToken.None);
}
