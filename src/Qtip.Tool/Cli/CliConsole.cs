namespace Qtip.Tool.Cli;

/// <summary>
/// Where the CLI writes its error lines, and whether <c>--verbose</c> asked for stack traces. Both are per call of
/// <see cref="Program.Run"/> (async-local), so tests can run the CLI in-process, several at a time, each with its own
/// error writer.
/// </summary>
public static class CliConsole
{
    private static readonly AsyncLocal<TextWriter?> ErrorOverride = new();
    private static readonly AsyncLocal<bool> VerboseFlag = new();

    /// <summary>The error writer of the current call (Console.Error unless <see cref="Program.Run"/> was given one).</summary>
    public static TextWriter Error => ErrorOverride.Value ?? Console.Error;

    /// <summary>True when <c>--verbose</c> was given: failures also print their stack trace.</summary>
    public static bool Verbose => VerboseFlag.Value;

    internal static void Set(TextWriter? error, bool verbose)
    {
        ErrorOverride.Value = error;
        VerboseFlag.Value = verbose;
    }
}
