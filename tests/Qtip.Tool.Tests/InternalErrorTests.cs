using Qtip.Tool.Cli;
using Xunit;

namespace Qtip.Tool.Tests;

/// <summary>The CLI's safety net: an exception no check anticipated is one "internal error" line and exit code 4;
/// --verbose adds the stack trace.</summary>
public sealed class InternalErrorTests
{
    [Fact]
    public void UnexpectedException_IsOneLine_ExitCode4()
    {
        using var error = new StringWriter();
        CliConsole.Set(error, verbose: false);
        try
        {
            int code = CommandRunner.Run(() => throw new InvalidOperationException("boom"));
            Assert.Equal(ExitCodes.InternalError, code);
            Assert.Equal(4, code);
        }
        finally
        {
            CliConsole.Set(null, false);
        }
        var lines = error.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.StartsWith("qtip: internal error: InvalidOperationException: boom", lines[0], StringComparison.Ordinal);
        Assert.Contains("please report", lines[0], StringComparison.Ordinal);
    }

    [Fact]
    public void Verbose_AddsTheStackTrace()
    {
        using var error = new StringWriter();
        CliConsole.Set(error, verbose: true);
        try
        {
            Assert.Equal(4, CommandRunner.Run(() => throw new KeyNotFoundException("no such key")));
        }
        finally
        {
            CliConsole.Set(null, false);
        }
        var text = error.ToString();
        Assert.Contains("qtip: internal error: KeyNotFoundException: no such key", text, StringComparison.Ordinal);
        Assert.Contains("   at ", text, StringComparison.Ordinal);
        Assert.Contains(nameof(Verbose_AddsTheStackTrace), text, StringComparison.Ordinal);
    }

    [Fact]
    public void VerboseOption_IsAcceptedAfterAnyCommand_AndBadInputStaysExit3()
    {
        var r = QtipInProcess.Run("inspect", "--model", Path.Combine(Path.GetTempPath(), $"qtip-no-such-{Guid.NewGuid():N}"), "--verbose");
        Assert.Equal(3, r.ExitCode);
        Assert.StartsWith("qtip: error: ", r.Lines[0], StringComparison.Ordinal);
        Assert.Contains("   at ", r.Stderr, StringComparison.Ordinal);
        var quiet = QtipInProcess.Run("inspect", "--model", Path.Combine(Path.GetTempPath(), $"qtip-no-such-{Guid.NewGuid():N}"));
        Assert.Equal(3, quiet.ExitCode);
        Assert.Single(quiet.Lines);
    }

    [Fact]
    public void Help_DocumentsExitCode4()
    {
        Assert.Contains("4 internal error", Program.ExitCodesHelp, StringComparison.Ordinal);
        Assert.Contains(Program.ExitCodesHelp, Program.BuildRoot().Description, StringComparison.Ordinal);
    }
}
