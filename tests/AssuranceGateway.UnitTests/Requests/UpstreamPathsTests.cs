using AssuranceGateway.Requests;

namespace AssuranceGateway.UnitTests.Requests;

public sealed class UpstreamPathsTests
{
    [Theory]
    [InlineData("/public/../deploy")]
    [InlineData("/public/./deploy")]
    [InlineData("/public/..")]
    [InlineData("/public/..;/deploy")] // Tomcat, Jetty and Spring cut path parameters, then remove dot segments
    [InlineData("/public/..;x=1/deploy")]
    [InlineData("/public/.;/deploy")]
    [InlineData("/public/..\\deploy")] // IIS reads '\' as '/'
    [InlineData("/public\\..\\deploy")]
    [InlineData("/public/.. /deploy")] // Windows drops trailing spaces and dots
    [InlineData("/public/... /deploy")]
    [InlineData("/public/.../deploy")]
    [InlineData("..")]
    public void HasDotSegment_SegmentSomeUpstreamReadsAsADotSegment_True(string path) =>
        Assert.True(UpstreamPaths.HasDotSegment(path));

    [Theory]
    [InlineData("")]
    [InlineData("/")]
    [InlineData("/public/docs")]
    [InlineData("/public/..x/x../.x/x.")]
    [InlineData("/public/a;..")]
    [InlineData("/public/cart;jsessionid=0A1B")]
    [InlineData("/public//docs/")]
    [InlineData("/public/a b/ /c")]
    [InlineData("/public/x%2F..%2F..%2Fdeploy")] // Kestrel keeps %2F, and the forwarder sends it as %252F
    public void HasDotSegment_NoSegmentReadAsADotSegment_False(string path) =>
        Assert.False(UpstreamPaths.HasDotSegment(path));

    [Theory]
    [InlineData("/deploy;x=1/v1/releases", "/deploy/v1/releases")]
    [InlineData("/;x/deploy/v1", "/deploy/v1")]
    [InlineData("//deploy/v1", "/deploy/v1")]
    [InlineData("/deploy//v1/", "/deploy/v1/")]
    [InlineData("/deploy\\v1\\", "/deploy/v1/")]
    [InlineData("/deploy./v1", "/deploy/v1")]
    [InlineData("/deploy. ./v1", "/deploy/v1")]
    [InlineData("/deploy/v1.", "/deploy/v1")]
    [InlineData("/deploy/v1 ", "/deploy/v1")]
    [InlineData("//", "/")]
    [InlineData("", "/")]
    public void Read_PathCommonUpstreamsReadOtherwise_AsTheyReadIt(string path, string read) =>
        Assert.Equal(read, UpstreamPaths.Read(path));

    [Theory]
    [InlineData("/")]
    [InlineData("/deploy/v1/releases")]
    [InlineData("/deploy/v1/releases/")]
    [InlineData("/a.b/c d/%2F/caf\u00e9")]
    public void Read_PathEveryoneReadsAlike_TheSameInstance(string path) =>
        Assert.Same(path, UpstreamPaths.Read(path));
}
