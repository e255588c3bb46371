using System.Text;
using AssuranceGateway.Grants;

namespace AssuranceGateway.UnitTests.Grants;

public sealed class RespPipeTests
{
    [Fact]
    public void TryRead_ConsumeShapedReply_ReadsEveryElementType()
    {
        var data = Encoding.UTF8.GetBytes("*5\r\n$2\r\nok\r\n:1\r\n$-1\r\n+PONG\r\n*1\r\n$0\r\n\r\n");
        var position = 0;

        Assert.True(RespPipe.TryRead(data, ref position, 0, out var value));

        var items = Assert.IsType<object?[]>(value);
        Assert.Equal("ok", items[0]);
        Assert.Equal(1L, items[1]);
        Assert.Null(items[2]);
        Assert.Equal("PONG", items[3]);
        Assert.Equal([string.Empty], Assert.IsType<object?[]>(items[4]));
        Assert.Equal(data.Length, position);
    }

    [Fact]
    public void TryRead_EveryPrefixOfAReply_NotCompleteAndPositionUnchanged()
    {
        var data = Encoding.UTF8.GetBytes("*2\r\n$5\r\nhello\r\n:42\r\n");

        for (var length = 0; length < data.Length; length++)
        {
            var position = 0;
            Assert.False(RespPipe.TryRead(data.AsSpan(0, length), ref position, 0, out _), $"prefix of {length} bytes");
            Assert.Equal(0, position);
        }
    }

    [Fact]
    public void TryRead_TwoRepliesInOneBuffer_ReadInOrder()
    {
        var data = Encoding.UTF8.GetBytes("-NOSCRIPT No matching script\r\n$3\r\nabc\r\n");
        var position = 0;

        Assert.True(RespPipe.TryRead(data, ref position, 0, out var first));
        Assert.True(RespPipe.TryRead(data, ref position, 0, out var second));

        Assert.True(Assert.IsType<RespError>(first).IsNoScript);
        Assert.Equal("abc", second);
    }

    [Theory]
    [InlineData("?what\r\n")]
    [InlineData(":12x\r\n")]
    [InlineData("$99999999999\r\n")]
    public void TryRead_MalformedReply_Throws(string reply)
    {
        var data = Encoding.UTF8.GetBytes(reply);
        var position = 0;

        Assert.Throws<FormatException>(() => RespPipe.TryRead(data, ref position, 0, out _));
    }

    [Fact]
    public void TryRead_ArraysNestedTooDeep_Throws()
    {
        var data = Encoding.UTF8.GetBytes(string.Concat(Enumerable.Repeat("*1\r\n", 20)) + ":1\r\n");
        var position = 0;

        Assert.Throws<FormatException>(() => RespPipe.TryRead(data, ref position, 0, out _));
    }

    [Fact]
    public void Encode_Command_IsRespArrayOfBulkStrings()
    {
        Assert.Equal("*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$2\r\né\r\n", Encoding.UTF8.GetString(RespPipe.Encode("CLIENT", "SETNAME", "é")));
    }
}
