namespace AssuranceGateway.Cli;

/// <summary>Option values that System.CommandLine cannot check by itself, read the same way by every command.</summary>
internal static class CommandInput
{
    /// <summary>The exact body bytes of <c>--body</c> (empty when not given).</summary>
    public static byte[] ReadBody(FileInfo? file)
    {
        if (file is null)
        {
            return [];
        }

        if (!file.Exists)
        {
            throw new UsageException($"--body '{file}': no such file");
        }

        return File.ReadAllBytes(file.FullName);
    }

    /// <summary>The assurance API base address of <c>--api</c> / AGW_API.</summary>
    public static Uri ApiAddress(string text)
    {
        if (!Uri.TryCreate(text, UriKind.Absolute, out var uri) || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps))
        {
            throw new UsageException($"--api '{text}': expected an absolute http:// or https:// URL");
        }

        return uri;
    }
}
