using System.Text.Json;
using Xunit;

namespace Qtip.Tool.Tests;

/// <summary><c>qtip sweep</c> on llama-nano with tiny settings (1MAD at 2 and 3 bits, L = 8, plus RTN; CPU): the table,
/// the JSON and the picture (PNG and SVG) are written and hold what was measured.</summary>
public sealed class SweepTests : IDisposable
{
    private readonly string work = Path.Combine(Path.GetTempPath(), $"qtip-sweep-{Environment.ProcessId}-{Guid.NewGuid():N}");

    public SweepTests() => Directory.CreateDirectory(work);

    public void Dispose()
    {
        if (Directory.Exists(work))
            Directory.Delete(work, recursive: true);
    }

    [Fact]
    public void Sweep_Nano_WritesTableJsonAndPlot()
    {
        var outDir = Path.Combine(work, "sweep");
        var fpJson = Path.Combine(work, "fp.json");
        string[] eval = ["--ctx", "64", "--max-windows", "2", "--backend", "cpu"];
        var r = QtipProcess.Run(["sweep", "--model", QuantizedNanoFixture.Nano, "--codes", "1mad", "--bits", "2,3", "--rtn", "--L", "8",
            "--calib-ctx", "64", "--calib-windows", "2", .. eval, "--out", outDir]);
        Assert.True(r.ExitCode == 0, r.Stderr + r.Stdout);
        Assert.Equal(0, QtipProcess.Run(["eval", "--model", QuantizedNanoFixture.Nano, .. eval, "--json", fpJson]).ExitCode);

        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "sweep.json")));
        var root = doc.RootElement;
        double fp = root.GetProperty("fp_perplexity").GetDouble();
        const double evalTolerance = 1e-4; // host double vs the NLL kernel's float
        Assert.Equal(1, fp / JsonDocument.Parse(File.ReadAllText(fpJson)).RootElement.GetProperty("perplexity").GetDouble(), evalTolerance);
        var rows = root.GetProperty("rows").EnumerateArray().ToList();
        Assert.Equal(4, rows.Count);
        Assert.Equal(["1mad", "1mad", "rtn", "rtn"], rows.Select(x => x.GetProperty("method").GetString()));
        foreach (var method in new[] { "1mad", "rtn" })
        {
            var two = rows.Single(x => x.GetProperty("method").GetString() == method && x.GetProperty("bits").GetInt32() == 2);
            var three = rows.Single(x => x.GetProperty("method").GetString() == method && x.GetProperty("bits").GetInt32() == 3);
            Assert.InRange(two.GetProperty("bits_per_weight").GetDouble(), 2.0, 2.5);
            Assert.InRange(three.GetProperty("bits_per_weight").GetDouble(), 3.0, 3.5);
            // More bits: closer to FP. The gaps on nano are large (2-bit ppl > 2× the 3-bit one).
            Assert.True(three.GetProperty("perplexity").GetDouble() < two.GetProperty("perplexity").GetDouble(), method);
            Assert.True(three.GetProperty("kld_mean").GetDouble() < two.GetProperty("kld_mean").GetDouble(), method);
            foreach (var x in new[] { two, three })
            {
                Assert.True(x.GetProperty("perplexity").GetDouble() > fp);
                Assert.True(x.GetProperty("kld_mean").GetDouble() > 0);
                Assert.InRange(x.GetProperty("top1_agreement").GetDouble(), 0.01, 0.999);
            }
        }

        var table = File.ReadAllText(Path.Combine(outDir, "sweep.md"));
        Assert.Contains("| 1mad | 3 |", table, StringComparison.Ordinal);
        Assert.Contains("| rtn | 2 |", table, StringComparison.Ordinal);
        Assert.Contains($"{fp:F4}", table, StringComparison.Ordinal);
        var png = File.ReadAllBytes(Path.Combine(outDir, "sweep.png"));
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, png[..4]);
        Assert.True(png.Length > 10_000, $"PNG of {png.Length} bytes");
        var svg = File.ReadAllText(Path.Combine(outDir, "sweep.svg"));
        Assert.Contains("<svg", svg, StringComparison.Ordinal);
        Assert.True(svg.Split("<path").Length > 20, "the SVG has few paths");
        Assert.False(Directory.Exists(Path.Combine(outDir, "models")), "quantized checkpoints are removed without --keep-models");
    }

    /// <summary>--replot draws the picture of a saved sweep.json again (here the llama-small sweep recorded in docs/),
    /// with no device or model; a file that is not a sweep report is one line and exit code 3.</summary>
    [Fact]
    public void Replot_SavedSweep_WritesPngAndSvg_AndRefusesOtherJson()
    {
        var saved = Path.Combine(QuantizedNanoFixture.Repo, "docs", "sweep", "llama-small-h100.json");
        var outDir = Path.Combine(work, "replot");
        var r = QtipProcess.Run("sweep", "--replot", saved, "--out", outDir);
        Assert.True(r.ExitCode == 0, r.Stderr + r.Stdout);
        var png = File.ReadAllBytes(Path.Combine(outDir, "sweep.png"));
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, png[..4]);
        Assert.True(png.Length > 10_000, $"PNG of {png.Length} bytes");
        Assert.True(File.ReadAllText(Path.Combine(outDir, "sweep.svg")).Split("<path").Length > 20, "the SVG has few paths");

        var other = Path.Combine(work, "other.json");
        File.WriteAllText(other, "{\"perplexity\": 3}");
        var bad = QtipProcess.Run("sweep", "--replot", other, "--out", Path.Combine(work, "bad"));
        Assert.Equal(3, bad.ExitCode);
        Assert.Contains("no sweep rows", bad.Stderr, StringComparison.Ordinal);
        Assert.False(Directory.Exists(Path.Combine(work, "bad")), "nothing is written for a bad report");
    }
}
