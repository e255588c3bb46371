using System.CommandLine;

namespace AssuranceGateway.Cli;

internal static class GrantCommands
{
    public static void Add(RootCommand root) => _ = root;
}
