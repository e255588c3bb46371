using System.Globalization;
using System.Text;

namespace AssuranceGateway.Cli;

/// <summary>
/// A mistake in what the user gave agw (a missing file, a malformed option value): Program prints the message as one
/// line and exits 2, as for other usage errors, instead of a stack trace.
/// </summary>
internal sealed class UsageException(string message) : Exception(message)
{
    /// <summary>
    /// The message as one printable line: a value the user gave is quoted in it, and a carriage return or an escape
    /// sequence in that value (an id read from a CRLF file, a pasted terminal sequence) would rewrite the operator's
    /// terminal. Control characters are shown as \r, \n, \t or \uXXXX.
    /// </summary>
    public string Printable => Escape(Message);

    /// <summary>A value the user gave, for quoting in a message: escaped, and cut after <paramref name="max"/> characters.</summary>
    public static string Shown(string value, int max = 80) =>
        value.Length <= max ? value : string.Concat(value.AsSpan(0, max), $"… ({value.Length} characters)");

    /// <summary>Any text for the terminal as one printable line (the parser's own errors quote what the user gave too).</summary>
    public static string Escape(string text)
    {
        if (!text.Any(char.IsControl))
        {
            return text;
        }

        var line = new StringBuilder(text.Length + 16);
        foreach (var c in text)
        {
            _ = c switch
            {
                '\r' => line.Append("\\r"),
                '\n' => line.Append("\\n"),
                '\t' => line.Append("\\t"),
                _ when char.IsControl(c) => line.Append("\\u").Append(((int)c).ToString("X4", CultureInfo.InvariantCulture)),
                _ => line.Append(c),
            };
        }

        return line.ToString();
    }
}
