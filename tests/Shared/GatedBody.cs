using System.Net;

namespace AssuranceGateway.Testing;

/// <summary>
/// A request body that holds a request inside the gateway, deterministically: sent with <c>Expect: 100-continue</c>
/// (<see cref="Client"/>), none of it leaves the client until the gateway starts reading the body (Kestrel answers
/// 100 Continue at the first read, which the middleware makes after the token, AAL and workload steps), and it leaves
/// only once the test releases it.
/// </summary>
public sealed class GatedBody : HttpContent
{
    private readonly byte[] _bytes;
    private readonly TaskCompletionSource _reading = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _released = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public GatedBody(byte[] bytes, string contentType = "application/json")
    {
        _bytes = bytes;
        Headers.TryAddWithoutValidation("Content-Type", contentType);
    }

    /// <summary>Completes when the gateway asks for the body: the request has passed steps 1-3 and waits on it.</summary>
    public Task Reading => _reading.Task;

    public void Release() => _released.TrySetResult();

    /// <summary>A client that waits for 100 Continue as long as it takes (by default it sends the body after one second).</summary>
    public static HttpClient Client(string address) =>
        new(new SocketsHttpHandler { Expect100ContinueTimeout = TimeSpan.FromMinutes(5) }) { BaseAddress = new Uri(address) };

    /// <summary>
    /// Sends <paramref name="request"/> with this body, runs <paramref name="whileHeld"/> once the gateway waits on the
    /// body, then releases it and returns the response.
    /// </summary>
    public async Task<HttpResponseMessage> SendHeldAsync(HttpClient client, HttpRequestMessage request, Func<Task> whileHeld)
    {
        request.Content = this;
        request.Headers.ExpectContinue = true;
        var sending = client.SendAsync(request);
        var first = await Task.WhenAny(Reading, sending).WaitAsync(TimeSpan.FromSeconds(20));
        if (first != Reading)
        {
            using var early = await sending;
            throw new InvalidOperationException($"the gateway answered {(int)early.StatusCode} before it read the body: nothing was held");
        }

        await whileHeld();
        Release();
        return await sending;
    }

    protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context)
    {
        _reading.TrySetResult();
        await _released.Task;
        await stream.WriteAsync(_bytes);
    }

    protected override bool TryComputeLength(out long length)
    {
        length = _bytes.Length;
        return true;
    }
}
