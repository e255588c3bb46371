using System.Diagnostics;
using System.Net;
using AssuranceGateway.Grants;
using AssuranceGateway.Testing;
using Microsoft.Extensions.DependencyInjection;
using NSubstitute;
using NSubstitute.ExceptionExtensions;
using static AssuranceGateway.Testing.GrantHelpers;

namespace AssuranceGateway.FunctionalTests.Enforcement;

/// <summary>Fail closed (SPEC §2, §7.3) with a store that fails on cue; the real Redis faults are in the Redis suites.</summary>
public sealed class StoreFailureTests
{
    [Fact]
    public async Task Consume_StoreUnavailable_503WithRetryAfterAndNothingForwarded()
    {
        var store = Substitute.For<IGrantStore>();
        store.Description.Returns("failing");
        store.ConsumeAsync(Arg.Any<ConsumeRequest>(), Arg.Any<CancellationToken>())
            .ThrowsAsync(new StoreUnavailableException("timed out", outcomeUnknown: true));
        store.NotReadyAsync(Arg.Any<CancellationToken>()).Returns("does not answer");
        await using var gateway = await GatewayHarness.StartAsync(services: s => s.AddSingleton(store));

        using var response = await gateway.Proxy.SendAsync(DeployRequest(gateway.Idp.Token(), gateway.WorkloadIssuer.Svid(), "someGrant", out var trace));
        using var ready = await gateway.Api.GetAsync("/readyz");

        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        Assert.Equal("store_unavailable", await response.ReasonAsync());
        Assert.Equal("1", response.Headers.RetryAfter?.ToString());
        Assert.Equal(0, gateway.Upstream.Count);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, ready.StatusCode);
        Assert.Equal("store_unavailable", Assert.Single(gateway.Spans.Enforce(trace)).GetTagItem("assurance.reason"));
    }

    [Fact]
    public async Task Create_StoreUnavailable_Api503()
    {
        var store = Substitute.For<IGrantStore>();
        store.CreateAsync(Arg.Any<GrantRecord>(), Arg.Any<GrantEvent>(), Arg.Any<int>(), Arg.Any<CancellationToken>())
            .ThrowsAsync(new StoreUnavailableException("unreachable"));
        await using var gateway = await GatewayHarness.StartAsync(services: s => s.AddSingleton(store));

        using var response = await gateway.PostGrantAsync(DeployGrant(gateway.Idp.Token()));

        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        Assert.Equal("store_unavailable", await response.ReasonAsync());
    }

    [Fact]
    public async Task Challenge_StoreUnavailable_503NotForwarded()
    {
        var store = Substitute.For<IGrantStore>();
        store.CreateAsync(Arg.Any<GrantRecord>(), Arg.Any<GrantEvent>(), Arg.Any<int>(), Arg.Any<CancellationToken>())
            .ThrowsAsync(new StoreUnavailableException("unreachable"));
        await using var gateway = await GatewayHarness.StartAsync(services: s => s.AddSingleton(store));
        using var request = GatewayHarness.Request(HttpMethod.Post, "/agent/tools/x", gateway.Idp.Token(), out _);
        request.Headers.TryAddWithoutValidation("Workload-Identity", gateway.WorkloadIssuer.Svid());

        using var response = await gateway.Proxy.SendAsync(request);

        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        Assert.Equal(0, gateway.Upstream.Count);
    }

    [Fact]
    public async Task DeniedBeforeTheGrantStep_StoreNeverCalled()
    {
        var store = Substitute.For<IGrantStore>();
        await using var gateway = await GatewayHarness.StartAsync(services: s => s.AddSingleton(store));

        using var noToken = await gateway.Proxy.SendAsync(DeployRequest("not.a.jwt", gateway.WorkloadIssuer.Svid(), "g1", out _));
        using var lowAal = await gateway.Proxy.SendAsync(DeployRequest(gateway.Idp.Token(acr: "urn:aal1"), gateway.WorkloadIssuer.Svid(), "g1", out _));
        using var noWorkload = await gateway.Proxy.SendAsync(DeployRequest(gateway.Idp.Token(), null, "g1", out _));
        using var tooLarge = await gateway.Proxy.SendAsync(DeployRequest(gateway.Idp.Token(), gateway.WorkloadIssuer.Svid(), "g1", out _, body: new string('x', 5000)));

        Assert.Equal(["token_invalid", "insufficient_aal", "workload_unidentified", "body_too_large"],
            [await noToken.ReasonAsync(), await lowAal.ReasonAsync(), await noWorkload.ReasonAsync(), await tooLarge.ReasonAsync()]);
        await store.DidNotReceiveWithAnyArgs().ConsumeAsync(default!, default);
        Assert.Equal(0, gateway.Upstream.Count);
    }
}
