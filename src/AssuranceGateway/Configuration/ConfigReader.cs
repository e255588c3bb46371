using System.Globalization;
using System.Text;
using Microsoft.Extensions.Configuration;

namespace AssuranceGateway.Configuration;

/// <summary>
/// Reads typed values from configuration and collects every problem instead of throwing at the first one,
/// so an operator fixes a broken file in one pass (the reason YARP's ConfigValidator collects too).
/// </summary>
internal sealed class ConfigReader(List<string> errors)
{
    public List<string> Errors { get; } = errors;

    /// <summary>
    /// Set when compiling a change to a running gateway rather than a start: a few things that would stop a start (a
    /// mistake there) are what an operator does on purpose at run time, and are collected here as warnings instead.
    /// </summary>
    public List<string>? Warnings { get; init; }

    /// <summary>An error at start, a warning on reload (<see cref="Warnings"/>).</summary>
    public void ErrorAtStart(IConfigurationSection section, string message)
    {
        if (Warnings is not null)
        {
            Warnings.Add($"{section.Path}: {message}");
        }
        else
        {
            Error(section, message);
        }
    }

    public void Error(IConfigurationSection section, string message) => Error(section.Path, message);

    /// <summary>
    /// Control characters (a NUL or a line break in a value or in an exception's message) are written as \uXXXX: each
    /// problem stays one line, and the terminal shows what the file holds.
    /// </summary>
    public void Error(string path, string message)
    {
        var line = $"{path}: {message}";
        if (line.Any(char.IsControl))
        {
            var escaped = new StringBuilder(line.Length + 16);
            foreach (var c in line)
            {
                if (char.IsControl(c))
                {
                    escaped.Append(CultureInfo.InvariantCulture, $"\\u{(int)c:x4}");
                }
                else
                {
                    escaped.Append(c);
                }
            }

            line = escaped.ToString();
        }

        Errors.Add(line);
    }

    /// <summary>A mistyped key ("Binds", "MaxTTL ") would otherwise be silently ignored and its default used.</summary>
    public void RejectUnknownKeys(IConfigurationSection section, params string[] known)
    {
        foreach (var child in section.GetChildren())
        {
            if (Array.FindIndex(known, k => string.Equals(k, child.Key, StringComparison.OrdinalIgnoreCase)) < 0)
            {
                Error(child, $"unknown setting (known: {string.Join(", ", known)})");
            }
        }
    }

    public string? String(IConfigurationSection parent, string key)
    {
        var section = parent.GetSection(key);
        if (section.Value is null && section.GetChildren().Any())
        {
            Error(section, "must be a single value, not a section");
            return null;
        }

        return string.IsNullOrWhiteSpace(section.Value) ? null : section.Value.Trim();
    }

    /// <summary>
    /// A section where a section is expected. A single value there ("Store": "host:6379", a policy written as null) would
    /// otherwise be read as an empty section, and every setting in it as its default: the embedded store, no signed
    /// evidence, a policy with nothing bound. An empty object ({}) is an empty section and fine.
    /// </summary>
    public IConfigurationSection Section(IConfigurationSection parent, string key) => Section(parent.GetSection(key));

    public IConfigurationSection Section(IConfigurationSection section)
    {
        if (section.Value is not null)
        {
            Error(section, section.Value.Length == 0
                ? "must be a section (a JSON object), not null or empty"
                : $"must be a section (a JSON object), not the single value '{section.Value}'");
        }

        return section;
    }

    /// <summary>
    /// The value of a typed setting, or null when the key is absent (its default applies). A key that is there but empty
    /// ("" from an empty environment variable such as Assurance__Policies__p__MinimumAal=, or null, {} or [] in JSON) is a
    /// problem, not "absent": its default may be weaker than what the file says (MinimumAal 0 instead of 2).
    /// </summary>
    private string? Typed(IConfigurationSection parent, string key)
    {
        var section = parent.GetSection(key);
        if (section.Value is null && section.GetChildren().Any())
        {
            Error(section, "must be a single value, not a section");
            return null;
        }

        if (!string.IsNullOrWhiteSpace(section.Value))
        {
            return section.Value.Trim();
        }

        if (section.Value is not null || parent.GetChildren().Any(c => string.Equals(c.Key, key, StringComparison.OrdinalIgnoreCase)))
        {
            Error(section, "is empty: give a value, or leave the key out for its default");
        }

        return null;
    }

    public int Int(IConfigurationSection parent, string key, int fallback, int min, int max)
    {
        var value = Typed(parent, key);
        if (value is null)
        {
            return fallback;
        }

        if (!int.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out var result) || result < min || result > max)
        {
            Error(parent.GetSection(key), $"'{value}' is not a whole number from {min} to {max}");
            return fallback;
        }

        return result;
    }

    public long Long(IConfigurationSection parent, string key, long fallback, long min, long max)
    {
        var value = Typed(parent, key);
        if (value is null)
        {
            return fallback;
        }

        if (!long.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out var result) || result < min || result > max)
        {
            Error(parent.GetSection(key), $"'{value}' is not a whole number from {min} to {max}");
            return fallback;
        }

        return result;
    }

    public bool Bool(IConfigurationSection parent, string key, bool fallback)
    {
        var value = Typed(parent, key);
        if (value is null)
        {
            return fallback;
        }

        if (!bool.TryParse(value, out var result))
        {
            Error(parent.GetSection(key), $"'{value}' is not true or false");
            return fallback;
        }

        return result;
    }

    public TimeSpan Duration(IConfigurationSection parent, string key, TimeSpan fallback, TimeSpan min, TimeSpan max)
    {
        var value = Typed(parent, key);
        if (value is null)
        {
            return fallback;
        }

        // At least hh:mm:ss. TimeSpan.TryParse also reads a bare "300" as 300 DAYS and "00:05" as five minutes, where
        // an operator may well have meant seconds: a ten-thousand-fold mistake in a TTL must not pass silently.
        if (value.AsSpan().Count(':') < 2 || !TimeSpan.TryParse(value, CultureInfo.InvariantCulture, out var result))
        {
            Error(parent.GetSection(key), $"'{value}' is not a duration (expected [d.]hh:mm:ss[.fff], e.g. 00:05:00)");
            return fallback;
        }

        if (result < min || result > max)
        {
            Error(parent.GetSection(key), $"'{value}' must be from {min:c} to {max:c}");
            return fallback;
        }

        return result;
    }

    /// <summary>A list, written as a JSON array; a single string counts as a list of one.</summary>
    public List<string> List(IConfigurationSection parent, string key) => [.. Entries(parent, key).Select(e => e.Value)];

    /// <summary>
    /// As <see cref="List"/>, each value with the section it was read from, so that a problem with one entry names it
    /// (<c>…:PublishedKeyFiles:2</c>). A non-string entry is reported as it is met, in order.
    /// </summary>
    public IEnumerable<(IConfigurationSection Section, string Value)> Entries(IConfigurationSection parent, string key)
    {
        var section = parent.GetSection(key);
        if (!string.IsNullOrWhiteSpace(section.Value))
        {
            yield return (section, section.Value.Trim());
            yield break;
        }

        foreach (var child in section.GetChildren())
        {
            if (child.Value is null)
            {
                Error(child, "must be a string");
                continue;
            }

            if (!string.IsNullOrWhiteSpace(child.Value))
            {
                yield return (child, child.Value.Trim());
            }
        }
    }

    /// <summary>
    /// One of the enum's names, in any case, and nothing else. Enum.TryParse alone also takes numbers ("1", "+1") and
    /// comma lists, which it ORs together even for non-flag enums: "enforce,shadow" would read as shadow.
    /// </summary>
    public static bool TryParseName<T>(string value, out T result)
        where T : struct, Enum
    {
        result = default;
        foreach (var c in value)
        {
            if (!char.IsAsciiLetter(c))
            {
                return false;
            }
        }

        return value.Length > 0 && System.Enum.TryParse(value, ignoreCase: true, out result) && System.Enum.IsDefined(result);
    }

    public T Enum<T>(IConfigurationSection parent, string key, T fallback)
        where T : struct, Enum
    {
        var value = Typed(parent, key);
        if (value is null)
        {
            return fallback;
        }

        if (!TryParseName<T>(value, out var result))
        {
            var names = string.Join(" | ", System.Enum.GetNames<T>().Select(n => n.ToLowerInvariant()));
            Error(parent.GetSection(key), $"'{value}' is not one of {names}");
            return fallback;
        }

        return result;
    }
}
