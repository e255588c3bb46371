namespace AssuranceGateway.Enforcement;

/// <summary>The contexts a grant can be bound to (SPEC §1). The route always binds.</summary>
[Flags]
public enum Bindings
{
    None = 0,
    Subject = 1,
    Session = 2,
    Token = 4,
    Workload = 8,
    Origin = 16,
    Request = 32,
}

internal static class BindingNames
{
    public const string Subject = "subject";
    public const string Session = "session";
    public const string Token = "token";
    public const string Workload = "workload";
    public const string Origin = "origin";
    public const string Request = "request";

    public static readonly IReadOnlyList<(string Name, Bindings Flag)> All =
    [
        (Subject, Bindings.Subject), (Session, Bindings.Session), (Token, Bindings.Token),
        (Workload, Bindings.Workload), (Origin, Bindings.Origin), (Request, Bindings.Request),
    ];

    /// <summary>Every binding this version can check: a stored grant that names another (a newer version's) is unreadable.</summary>
    public const Bindings Known = Bindings.Subject | Bindings.Session | Bindings.Token | Bindings.Workload | Bindings.Origin | Bindings.Request;

    /// <summary><see cref="Known"/> as text, for the Lua scripts (const interpolation; a unit test holds the two together).</summary>
    public const string KnownText = "63";

    public static bool TryParse(string? name, out Bindings binding)
    {
        foreach (var (n, flag) in All)
        {
            if (string.Equals(n, name, StringComparison.Ordinal))
            {
                binding = flag;
                return true;
            }
        }

        binding = Bindings.None;
        return false;
    }

    public static List<string> Names(Bindings bindings)
    {
        var names = new List<string>(6);
        foreach (var (n, flag) in All)
        {
            if ((bindings & flag) != 0)
            {
                names.Add(n);
            }
        }

        return names;
    }
}
