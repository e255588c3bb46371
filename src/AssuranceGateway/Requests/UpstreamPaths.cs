using System.Text;

namespace AssuranceGateway.Requests;

/// <summary>
/// How common upstream servers read a decoded request path, which is not always as ASP.NET Core routing reads it: Tomcat,
/// Jetty and Spring cut path parameters (<c>;...</c>) from every segment before they route; nginx (<c>merge_slashes</c>,
/// on by default), Tomcat and many frameworks merge repeated slashes; IIS and servers on Windows read '\' as '/' and drop
/// trailing dots and spaces from a segment. The gateway routes on its own reading and the upstream acts on its own: where
/// the two differ, a path can pass a weak route and be served as a protected one.
/// </summary>
public static class UpstreamPaths
{
    /// <summary>
    /// True when some upstream reads a segment of <paramref name="decodedPath"/> as "." or "..": the segment is one
    /// (Kestrel removes those from an origin-form target, but an absolute-form one keeps them, see
    /// <c>AssuranceMiddleware</c>), or becomes one once its path parameters are cut ("..;x=1"), or is only dots and
    /// spaces (".. ", "..."), or '\' splits it ("..\x"). None of these is in legitimate traffic, and each lets the
    /// upstream leave the route the gateway matched.
    /// </summary>
    public static bool HasDotSegment(ReadOnlySpan<char> decodedPath)
    {
        var rest = decodedPath;
        while (!rest.IsEmpty)
        {
            var segment = NextSegment(ref rest);
            if (segment.Contains('.') && !segment.ContainsAnyExcept('.', ' '))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// <paramref name="decodedPath"/> as the upstreams described above read it: '\' as '/', path parameters cut, trailing
    /// dots and spaces dropped from each segment, and empty segments merged (a trailing slash is kept). The same string
    /// when they all read it as the gateway does. Meaningful only for a path without <see cref="HasDotSegment"/>.
    /// </summary>
    public static string Read(string decodedPath)
    {
        if (!NeedsReading(decodedPath))
        {
            return decodedPath;
        }

        var read = new StringBuilder(decodedPath.Length);
        var rest = decodedPath.AsSpan();
        while (!rest.IsEmpty)
        {
            var segment = NextSegment(ref rest).TrimEnd(". ");
            if (!segment.IsEmpty)
            {
                read.Append('/').Append(segment);
            }
        }

        if (read.Length == 0 || decodedPath[^1] is '/' or '\\')
        {
            read.Append('/');
        }

        return read.ToString();
    }

    /// <summary>The segment <paramref name="rest"/> starts with ('/' or '\\' ends it), its path parameters cut; rest moves past it.</summary>
    private static ReadOnlySpan<char> NextSegment(ref ReadOnlySpan<char> rest)
    {
        var end = rest.IndexOfAny('/', '\\');
        var segment = end < 0 ? rest : rest[..end];
        rest = end < 0 ? [] : rest[(end + 1)..];
        var parameters = segment.IndexOf(';');
        return parameters >= 0 ? segment[..parameters] : segment;
    }

    private static bool NeedsReading(string path)
    {
        if (path.Length == 0 || path[0] != '/' || path.AsSpan().IndexOfAny('\\', ';') >= 0)
        {
            return true;
        }

        for (var i = 1; i < path.Length; i++)
        {
            // An empty segment ("//"), or a segment that ends in '.' or ' '.
            if ((path[i] == '/' && path[i - 1] is '/' or '.' or ' ') || (i == path.Length - 1 && path[i] is '.' or ' '))
            {
                return true;
            }
        }

        return false;
    }
}
