using System.Globalization;
using System.Text;

namespace AssuranceGateway.Cli;

/// <summary>
/// Text for an operator's terminal. What agw prints quotes values others chose: an id read from a CRLF file, a pasted
/// escape sequence, and, on the way to an approver, a grant's <c>reason</c> written by its creator. A hidden character
/// there changes what the approver sees: a carriage return or an escape sequence rewrites the screen, a C1 control
/// (U+009B is a one-character CSI) can too, and a bidirectional override or isolate (U+202E, U+2066…) shows text in
/// another order than it is stored. Each is shown as \uXXXX (\r, \n and \t as such).
/// </summary>
internal static class TerminalText
{
    /// <summary>Any text as one printable line: every hidden character escaped, line breaks included.</summary>
    public static string Line(string text) => EscapeWhere(text, keepLineBreaks: false);

    /// <summary>
    /// JSON as written by the serializer, for the terminal: the writer already escapes C0 controls inside strings, so
    /// the line breaks left are its own indentation and stay; every other hidden character (inside a string, the only
    /// place one can be) is escaped, which leaves the JSON valid and meaning the same.
    /// </summary>
    public static string Json(string json) => EscapeWhere(json, keepLineBreaks: true);

    /// <summary>Controls, format characters (bidi, zero-width, the invisible tag characters U+E0000…), line and paragraph separators.</summary>
    private static bool Hidden(Rune r) =>
        Rune.IsControl(r) || Rune.GetUnicodeCategory(r) is UnicodeCategory.Format or UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator;

    private static string EscapeWhere(string text, bool keepLineBreaks)
    {
        bool Escaped(Rune r) => Hidden(r) && !(keepLineBreaks && r.Value is '\n' or '\r');
        if (!Any(text, Escaped))
        {
            return text;
        }

        var line = new StringBuilder(text.Length + 16);
        Span<char> units = stackalloc char[2];
        foreach (var r in text.EnumerateRunes())
        {
            _ = r.Value switch
            {
                _ when !Escaped(r) => line.Append(r.ToString()),
                '\r' => line.Append("\\r"),
                '\n' => line.Append("\\n"),
                '\t' => line.Append("\\t"),
                _ => AppendUnits(line, units[..r.EncodeToUtf16(units)]),
            };
        }

        return line.ToString();
    }

    private static bool Any(string text, Func<Rune, bool> predicate)
    {
        foreach (var r in text.EnumerateRunes())
        {
            if (predicate(r))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>\uXXXX for each UTF-16 unit: a character beyond the BMP as its surrogate pair, as JSON writes it.</summary>
    private static StringBuilder AppendUnits(StringBuilder line, ReadOnlySpan<char> units)
    {
        foreach (var unit in units)
        {
            line.Append("\\u").Append(((int)unit).ToString("X4", CultureInfo.InvariantCulture));
        }

        return line;
    }
}
