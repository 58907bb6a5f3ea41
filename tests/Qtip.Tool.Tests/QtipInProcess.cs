namespace Qtip.Tool.Tests;

/// <summary>
/// Runs the CLI in this process through <see cref="Program.Run"/> (no process start, no JIT of a fresh runtime: a
/// failing case takes milliseconds). The error line is captured per call; stdout goes to the test host's console.
/// </summary>
internal static class QtipInProcess
{
    public sealed record Result(int ExitCode, string Stderr)
    {
        /// <summary>The stderr lines, without empty ones.</summary>
        public string[] Lines => Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

        public override string ToString() => $"exit {ExitCode}: {Stderr}";
    }

    public static Result Run(params string[] args)
    {
        using var error = new StringWriter();
        int code = Program.Run(args, error);
        return new Result(code, error.ToString());
    }

    /// <summary>Runs the CLI with both stdout and stderr captured (for <c>--json -</c> and <c>--help</c>).</summary>
    public static (int ExitCode, string Stdout, string Stderr) RunCaptured(params string[] args)
    {
        using var error = new StringWriter();
        using var output = new StringWriter();
        int code = Program.Run(args, error, output);
        return (code, output.ToString(), error.ToString());
    }
}
