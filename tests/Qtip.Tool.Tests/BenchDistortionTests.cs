using System.Text.Json;
using Xunit;

namespace Qtip.Tool.Tests;

/// <summary><c>qtip bench distortion</c> as a user runs it, on the CPU accelerator at small L.</summary>
public sealed class BenchDistortionTests
{
    /// <summary>Relative agreement of a figure derived from others in the same JSON (rounding only).</summary>
    private const double DerivedRelTol = 1e-9;

    [Fact]
    public void RunsOnCpu_AndWritesJson()
    {
        var file = Path.Combine(Path.GetTempPath(), $"qtip-distortion-{Environment.ProcessId}.json");
        var r = QtipProcess.Run("bench", "distortion", "--backend", "cpu", "--code", "lut", "--L", "8", "--bits", "2",
            "--sequences", "8", "--tail-biting", "approx", "--json", file);
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.Contains("gap to D(R)", r.Stdout, StringComparison.Ordinal);
        using var doc = JsonDocument.Parse(File.ReadAllText(file));
        var root = doc.RootElement;
        Assert.Equal("lut", root.GetProperty("code").GetString());
        Assert.Equal(8, root.GetProperty("sequences").GetInt32());
        double mse = root.GetProperty("mse").GetDouble();
        // A 2-bit L = 8 trellis lands between the D(R) bound (0.0625) and Lloyd–Max (0.1175) give or take sampling.
        Assert.InRange(mse, 0.0625, 0.14);
        Assert.Equal(10 * Math.Log10(mse / 0.0625), root.GetProperty("gap_db").GetDouble(), 9);
        // The throughput figures are the sequence count over the measured times, and the Viterbi is part of the call.
        double total = root.GetProperty("seconds_total").GetDouble(), kernel = root.GetProperty("seconds_kernel").GetDouble();
        Assert.True(kernel > 0 && kernel <= total, $"Viterbi {kernel} s of a {total} s call");
        Assert.Equal(8 / total, root.GetProperty("sequences_per_second").GetDouble(), DerivedRelTol * (8 / total));
        Assert.Equal(8 / kernel, root.GetProperty("kernel_sequences_per_second").GetDouble(), DerivedRelTol * (8 / kernel));
        File.Delete(file);
    }

    [Fact]
    public void ScaleSearch_ReportsTheScaleUsed()
    {
        var file = Path.Combine(Path.GetTempPath(), $"qtip-distortion-s-{Environment.ProcessId}.json");
        var r = QtipProcess.Run("bench", "distortion", "--backend", "cpu", "--code", "3inst", "--L", "6", "--bits", "1",
            "--sequences", "4", "--scale", "search", "--search-sequences", "2", "--json", file);
        Assert.True(r.ExitCode == 0, r.Stderr);
        using var doc = JsonDocument.Parse(File.ReadAllText(file));
        Assert.Equal("search", doc.RootElement.GetProperty("scale_mode").GetString());
        double s = doc.RootElement.GetProperty("scale").GetDouble();
        double rms = doc.RootElement.GetProperty("code_rms").GetDouble();
        Assert.InRange(s * rms, 0.5, 1.5);
        File.Delete(file);
    }

    [Theory]
    [InlineData("--bits", "5")]
    [InlineData("--L", "17")]
    [InlineData("--code", "e8p")]
    [InlineData("--tail-biting", "sometimes")]
    [InlineData("--scale", "-1")]
    public void BadOptions_AreUsageErrors(string option, string value)
    {
        var args = new List<string> { "bench", "distortion", "--backend", "cpu", "--sequences", "1", option, value };
        if (option != "--L")
            args.AddRange(["--L", "8"]);
        var r = QtipProcess.Run([.. args]);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains(value, r.Stderr, StringComparison.Ordinal);
    }
}
