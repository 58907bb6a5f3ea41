using System.CommandLine;
using System.Text.Json;
using Qtip.Testing;
using Xunit;

namespace Qtip.Tool.Tests;

/// <summary>
/// The option conventions users know from llama.cpp and exllamav3 (-m/--model, -o/--out, -b/--bits; --backend long
/// only; -t is not temperature), defaults shown only where they are the real ones, clean usage lines (no .NET
/// "(Parameter '…')" suffix), and <c>--json -</c> writing the JSON document alone to stdout. In-process: milliseconds,
/// except the one tiny quantize run.
/// </summary>
public sealed class CliConventionsTests : IDisposable
{
    private static readonly string Repo = TestData.RepoRoot();
    private static readonly string Nano = Path.Combine(Repo, "models", "llama-nano");
    private static readonly string Calib = Path.Combine(Repo, "data", "corpus", "calib.txt");
    private readonly string work = Path.Combine(Path.GetTempPath(), $"qtip-conv-{Environment.ProcessId}-{Guid.NewGuid():N}");

    public CliConventionsTests() => Directory.CreateDirectory(work);

    public void Dispose()
    {
        if (Directory.Exists(work))
            Directory.Delete(work, recursive: true);
    }

    [Fact]
    public void Quantize_TakesShortModelOutAndBits()
    {
        var outDir = Path.Combine(work, "o");
        var parse = Program.BuildRoot().Parse(["quantize", "-m", Nano, "-o", outDir, "-b", "3"]);
        Assert.Empty(parse.Errors);
        Assert.Equal(Nano, parse.GetValue<DirectoryInfo>("--model")!.ToString());
        Assert.Equal(outDir, parse.GetValue<DirectoryInfo>("--out")!.ToString());
        Assert.Equal(3, parse.GetValue<int>("--bits"));
    }

    [Theory]
    [InlineData("quantize")]
    [InlineData("demo")]
    [InlineData("sweep")]
    [InlineData("bench", "decode")]
    [InlineData("bench", "quantize")]
    [InlineData("bench", "matvec")]
    [InlineData("bench", "distortion")]
    public void Bits_HasShortB_AndBackendHasNone(params string[] command)
    {
        var cmd = Program.BuildRoot().Subcommands.Single(c => c.Name == command[0]);
        if (command.Length > 1)
            cmd = cmd.Subcommands.Single(c => c.Name == command[1]);
        Assert.Contains("-b", cmd.Options.Single(o => o.Name == "--bits").Aliases);
        if (cmd.Options.SingleOrDefault(o => o.Name == "--backend") is { } backend)
            Assert.Empty(backend.Aliases);
    }

    [Fact]
    public void EveryModelOption_HasShortM_AndEveryOutOption_ShortO()
    {
        var commands = Program.BuildRoot().Subcommands.SelectMany(c => c.Subcommands.Prepend(c)).ToList();
        var models = commands.SelectMany(c => c.Options).Where(o => o.Name == "--model").ToList();
        var outs = commands.SelectMany(c => c.Options).Where(o => o.Name == "--out").ToList();
        Assert.True(models.Count >= 5, $"{models.Count} --model options"); // quantize, eval, sweep, generate, inspect
        Assert.All(models, o => Assert.Contains("-m", o.Aliases));
        Assert.True(outs.Count >= 3, $"{outs.Count} --out options");
        Assert.All(outs, o => Assert.Contains("-o", o.Aliases));
    }

    [Theory]
    [InlineData("generate", "-p", "The", "-t", "0.5")]
    [InlineData("quantize", "-m", "x", "-o", "y", "-b", "cpu")]
    public void OldShortOptions_AreGone(params string[] args)
    {
        var (code, _, _) = QtipInProcess.RunCaptured(args);
        Assert.Equal(1, code);
    }

    [Fact]
    public void Quantize_RefusesOneBit_WithACleanUsageLine()
    {
        var r = QtipInProcess.Run("quantize", "-m", Nano, "-o", Path.Combine(work, "o"), "-b", "1", "--calib", Calib, "--backend", "cpu");
        Assert.Equal(1, r.ExitCode);
        Assert.Equal("qtip: usage: --bits must be 2, 3 or 4 (got 1)", Assert.Single(r.Lines));
        Assert.False(Directory.Exists(Path.Combine(work, "o")));
    }

    [Theory]
    [InlineData("quantize", "--bits", "5")]
    [InlineData("quantize", "--L", "20")]
    [InlineData("quantize", "--calib-ctx", "1")]
    [InlineData("quantize", "--sigma-reg", "-1")]
    [InlineData("quantize", "--group-layers", "0")]
    [InlineData("quantize", "--batch-mb", "-1")]
    [InlineData("quantize", "--layers", "3-1")]
    [InlineData("quantize", "--scale-override", "0")]
    [InlineData("bench", "quantize", "--bits", "1")]
    [InlineData("demo", "--windows", "0")]
    [InlineData("demo", "--L", "7")]
    public void UsageLines_CarryNoParameterSuffix(params string[] args)
    {
        string[] full = args[0] == "quantize"
            ? [.. args[..1], "-m", Nano, "-o", Path.Combine(work, "o"), "--calib", Calib, "--backend", "cpu", .. args[1..]]
            : [.. args, "--backend", "cpu"];
        var r = QtipInProcess.Run(full);
        Assert.Equal(1, r.ExitCode);
        var line = Assert.Single(r.Lines);
        Assert.StartsWith("qtip: usage: ", line, StringComparison.Ordinal);
        Assert.DoesNotContain("(Parameter", line, StringComparison.Ordinal);
        Assert.DoesNotContain("Actual value", line, StringComparison.Ordinal);
    }

    [Fact]
    public void UsageException_CleansArgumentMessages()
    {
        Assert.Equal("--bits must be 2, 3 or 4 (got 1)",
            Cli.UsageException.From(new ArgumentException("--bits must be 2, 3 or 4 (got 1)", "Bits")).Message);
        Assert.Equal("K out of range (got 7)",
            Cli.UsageException.CleanMessage(new ArgumentOutOfRangeException("k", 7, "K out of range")));
    }

    [Theory]
    [InlineData("quantize", "--scale-override")]
    [InlineData("demo", "--calib-windows")]
    [InlineData("demo", "--windows")]
    [InlineData("demo", "--L")]
    public void AutoDefaults_AreNotShownAsNumbers(string command, string option)
    {
        var (code, stdout, _) = QtipInProcess.RunCaptured(command, "--help");
        Assert.Equal(0, code);
        var line = stdout.Split('\n').Single(l => l.TrimStart().StartsWith(option + " ", StringComparison.Ordinal));
        Assert.DoesNotContain("[default:", line, StringComparison.Ordinal);
        Assert.Contains("Default: auto", line, StringComparison.Ordinal);
    }

    [Fact]
    public void Help_ShowsRanges()
    {
        var (_, stdout, _) = QtipInProcess.RunCaptured("quantize", "--help");
        Assert.Contains("-b, --bits <2|3|4>", stdout, StringComparison.Ordinal);
        Assert.Contains("8…16", stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void JsonDash_WritesOnlyJsonToStdout_AndTheTableToStderr()
    {
        var (code, stdout, stderr) = QtipInProcess.RunCaptured("devices", "--json", "-");
        Assert.Equal(0, code);
        using var doc = JsonDocument.Parse(stdout);
        Assert.Contains(doc.RootElement.EnumerateArray(), b => b.GetProperty("backend").GetString() == "cpu");
        Assert.Contains("CPU accelerator", stderr, StringComparison.Ordinal);
        Assert.False(File.Exists(Path.Combine(Environment.CurrentDirectory, "-")));
    }

    [Fact]
    public void JsonDash_OnAQuantizeRun_IsParseableAndNamesTheShortOptionsValues()
    {
        var outDir = Path.Combine(work, "q");
        var (code, stdout, stderr) = QtipInProcess.RunCaptured("quantize", "-m", Nano, "-o", outDir, "-b", "3", "--calib", Calib,
            "--calib-ctx", "64", "--calib-windows", "2", "--code", "1mad", "--L", "8", "--backend", "cpu", "--json", "-");
        Assert.True(code == 0, stderr);
        using var doc = JsonDocument.Parse(stdout);
        Assert.Equal(3, doc.RootElement.GetProperty("bits").GetInt32());
        Assert.Equal(outDir, doc.RootElement.GetProperty("out_dir").GetString());
        Assert.Contains("qtip quantize", stderr, StringComparison.Ordinal);
        Assert.True(File.Exists(Path.Combine(outDir, "config.json")));
    }
}
