namespace Qtip.Tool.Cli;

/// <summary>
/// Where the CLI writes its output and error lines, and whether <c>--verbose</c> asked for stack traces. All are per
/// call of <see cref="Program.Run"/> (async-local), so tests can run the CLI in-process, several at a time, each with
/// its own writers.
/// </summary>
public static class CliConsole
{
    private static readonly AsyncLocal<TextWriter?> ErrorOverride = new();
    private static readonly AsyncLocal<TextWriter?> OutOverride = new();
    private static readonly AsyncLocal<bool> VerboseFlag = new();
    private static readonly AsyncLocal<bool> JsonOnStdoutFlag = new();

    /// <summary>The error writer of the current call (Console.Error unless <see cref="Program.Run"/> was given one).</summary>
    public static TextWriter Error => ErrorOverride.Value ?? Console.Error;

    /// <summary>The standard output of the current call (Console.Out unless <see cref="Program.Run"/> was given one).</summary>
    public static TextWriter Out => OutOverride.Value ?? Console.Out;

    /// <summary>True when <c>--json -</c> reserved stdout for the JSON report: every human-readable line (tables,
    /// progress, generated text) then goes to stderr, so stdout holds exactly one JSON document.</summary>
    public static bool JsonOnStdout => JsonOnStdoutFlag.Value;

    /// <summary>Where human-readable output goes: stdout, or stderr under <c>--json -</c>.</summary>
    public static TextWriter Human => JsonOnStdout ? Error : Out;

    /// <summary>True when <c>--verbose</c> was given: failures also print their stack trace.</summary>
    public static bool Verbose => VerboseFlag.Value;

    internal static void Set(TextWriter? error, bool verbose, TextWriter? output = null, bool jsonOnStdout = false)
    {
        ErrorOverride.Value = error;
        OutOverride.Value = output;
        VerboseFlag.Value = verbose;
        JsonOnStdoutFlag.Value = jsonOnStdout;
    }
}
