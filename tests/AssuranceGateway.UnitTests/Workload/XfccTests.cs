using AssuranceGateway.Workload;

namespace AssuranceGateway.UnitTests.Workload;

public sealed class XfccTests
{
    [Theory]
    [InlineData("By=spiffe://gw;Hash=abc;URI=spiffe://prod.example/ns/ci/sa/deployer", "spiffe://prod.example/ns/ci/sa/deployer")]
    [InlineData("URI=spiffe://a/first,By=x;URI=spiffe://b/last", "spiffe://b/last")]
    [InlineData("Hash=\"a,b;c\";URI=\"spiffe://q/quoted\"", "spiffe://q/quoted")]
    [InlineData("Subject=\"CN=x,\\\"O=y\\\"\";URI=spiffe://e/escaped", "spiffe://e/escaped")]
    public void LastUri_EnvoyFormat_ReturnsLastElementsUri(string header, string expected)
    {
        Assert.Equal(expected, Xfcc.LastUri(header, out var error));
        Assert.Null(error);
    }

    [Theory]
    [InlineData("By=spiffe://gw;Hash=abc")]
    [InlineData("URI=spiffe://a,Hash=abc")]
    [InlineData("Hash=\"unterminated;URI=spiffe://x")]
    [InlineData("URI=spiffe://a;URI=spiffe://b")]
    [InlineData("garbage")]
    [InlineData("")]
    public void LastUri_MalformedOrWithoutUri_Fails(string header)
    {
        Assert.Null(Xfcc.LastUri(header, out var error));
        Assert.NotNull(error);
    }
}
