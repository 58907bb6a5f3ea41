using System.Text.Json;
using Qtip.Testing;
using Xunit;

namespace Qtip.Tool.Tests;

/// <summary>A tiny quantized llama-nano (1MAD, K = 2, L = 8, two calibration windows of 64 tokens; CPU), made once.</summary>
public sealed class QuantizedNanoFixture : IDisposable
{
    public QuantizedNanoFixture()
    {
        Dir = Path.Combine(Work, "q");
        var r = QtipProcess.Run("quantize", "--model", Nano, "--out", Dir, "--calib", Path.Combine(Repo, "data", "corpus", "calib.txt"),
            "--calib-ctx", "64", "--calib-windows", "2", "--code", "1mad", "--bits", "2", "--L", "8", "--backend", "cpu");
        Assert.True(r.ExitCode == 0, r.Stderr + r.Stdout);
    }

    public static string Repo { get; } = TestData.RepoRoot();

    public static string Nano => Path.Combine(Repo, "models", "llama-nano");

    public string Work { get; } = Path.Combine(Path.GetTempPath(), $"qtip-evalref-{Environment.ProcessId}-{Guid.NewGuid():N}");

    public string Dir { get; }

    public void Dispose()
    {
        if (Directory.Exists(Work))
            Directory.Delete(Work, recursive: true);
    }
}

/// <summary><c>inspect</c> on a quantized folder and <c>eval --reference</c> (KL divergence, top-1 agreement), on the CPU.</summary>
public sealed class EvalReferenceTests(QuantizedNanoFixture q) : IClassFixture<QuantizedNanoFixture>
{

    private static JsonElement Json(string path) => JsonDocument.Parse(File.ReadAllText(path)).RootElement;

    [Fact]
    public void Inspect_QuantizedFolder_ShowsTheQuantizationBlockBitsAndOriginalParameters()
    {
        var jq = Path.Combine(q.Work, "inspect-q.json");
        var jfp = Path.Combine(q.Work, "inspect-fp.json");
        var r = QtipProcess.Run("inspect", "--model", q.Dir, "--json", jq);
        Assert.True(r.ExitCode == 0, r.Stderr + r.Stdout);
        Assert.Contains("QTIP 1MAD", r.Stdout, StringComparison.Ordinal);
        Assert.Contains("2 / 8 / 1 / -", r.Stdout, StringComparison.Ordinal);
        Assert.Contains("bits/weight", r.Stdout, StringComparison.Ordinal);
        Assert.Equal(0, QtipProcess.Run("inspect", "--model", QuantizedNanoFixture.Nano, "--json", jfp).ExitCode);
        var iq = Json(jq);
        var ifp = Json(jfp);
        var quant = iq.GetProperty("quantization");
        Assert.Equal("1mad", quant.GetProperty("code").GetString());
        Assert.Equal(2, quant.GetProperty("k").GetInt32());
        Assert.Equal(8, quant.GetProperty("l").GetInt32());
        Assert.Equal(1, quant.GetProperty("v").GetInt32());
        // The model's parameter count is the original's, not the stored elements'.
        Assert.Equal(ifp.GetProperty("parameters").GetInt64(), iq.GetProperty("parameters").GetInt64());
        Assert.True(iq.GetProperty("stored_elements").GetInt64() < iq.GetProperty("parameters").GetInt64());
        // Decoder bits/weight as the quantize report counts them; everything included is more (bf16 embeddings and head).
        double reported = Json(Path.Combine(q.Dir, "qtip-report.json")).GetProperty("bits_per_weight").GetDouble();
        var bpw = iq.GetProperty("bits_per_weight");
        Assert.Equal(reported, bpw.GetProperty("decoder").GetDouble(), 1e-12);
        Assert.InRange(bpw.GetProperty("decoder").GetDouble(), 2.0, 2.5);
        Assert.True(bpw.GetProperty("all").GetDouble() > bpw.GetProperty("decoder").GetDouble());
        Assert.Equal(16.0, ifp.GetProperty("bits_per_weight").GetProperty("decoder").GetDouble());
        Assert.False(ifp.TryGetProperty("quantization", out _));
    }

    [Fact]
    public void Eval_ReferenceItself_KldZeroAgreementOne()
    {
        var j = Path.Combine(q.Work, "self.json");
        var r = QtipProcess.Run("eval", "--model", QuantizedNanoFixture.Nano, "--reference", QuantizedNanoFixture.Nano, "--backend", "cpu",
            "--ctx", "64", "--max-windows", "2", "--json", j);
        Assert.True(r.ExitCode == 0, r.Stderr + r.Stdout);
        var e = Json(j);
        var reference = e.GetProperty("reference");
        Assert.Equal(0.0, reference.GetProperty("kld_mean").GetDouble());
        Assert.Equal(0.0, reference.GetProperty("kld_max").GetDouble());
        Assert.Equal(1.0, reference.GetProperty("top1_agreement").GetDouble());
        Assert.Equal(e.GetProperty("perplexity").GetDouble(), reference.GetProperty("perplexity").GetDouble());
        Assert.Equal(126, reference.GetProperty("tokens").GetInt64());
    }

    [Fact]
    public void Eval_QuantizedAgainstFullPrecision_ReportsKldAgreementAndBothPerplexities()
    {
        var j = Path.Combine(q.Work, "q.json");
        var jfp = Path.Combine(q.Work, "fp.json");
        var jq = Path.Combine(q.Work, "qplain.json");
        string[] common = ["--backend", "cpu", "--ctx", "64", "--max-windows", "3"];
        var r = QtipProcess.Run(["eval", "--model", q.Dir, "--reference", QuantizedNanoFixture.Nano, .. common, "--json", j]);
        Assert.True(r.ExitCode == 0, r.Stderr + r.Stdout);
        Assert.Contains("KLD mean", r.Stdout, StringComparison.Ordinal);
        Assert.Contains("top-1 agreement", r.Stdout, StringComparison.Ordinal);
        Assert.Contains("[3/3] ppl ", r.Stderr, StringComparison.Ordinal); // the running perplexity, piped: plain lines
        Assert.Contains("[1/3] ppl ", r.Stderr, StringComparison.Ordinal);
        Assert.Contains("ETA", r.Stderr, StringComparison.Ordinal);
        Assert.Equal(0, QtipProcess.Run(["eval", "--model", QuantizedNanoFixture.Nano, .. common, "--json", jfp]).ExitCode);
        Assert.Equal(0, QtipProcess.Run(["eval", "--model", q.Dir, .. common, "--json", jq]).ExitCode);
        var e = Json(j);
        var reference = e.GetProperty("reference");
        double kld = reference.GetProperty("kld_mean").GetDouble();
        Assert.True(kld > 0.01, $"KLD {kld}");
        Assert.True(reference.GetProperty("kld_median").GetDouble() <= reference.GetProperty("kld_p99").GetDouble());
        Assert.True(reference.GetProperty("kld_p99").GetDouble() <= reference.GetProperty("kld_max").GetDouble());
        double agreement = reference.GetProperty("top1_agreement").GetDouble();
        Assert.InRange(agreement, 0.05, 0.999);
        // Both perplexities agree with plain eval of each model (the GPU-kernel NLL in float vs the host's in double).
        const double evalTolerance = 1e-4;
        Assert.Equal(1, reference.GetProperty("perplexity").GetDouble() / Json(jfp).GetProperty("perplexity").GetDouble(), evalTolerance);
        Assert.Equal(1, e.GetProperty("perplexity").GetDouble() / Json(jq).GetProperty("perplexity").GetDouble(), evalTolerance);
        // inspect names the tokenizer eval used.
        var ji = Path.Combine(q.Work, "inspect-for-eval.json");
        Assert.Equal(0, QtipProcess.Run("inspect", "--model", q.Dir, "--json", ji).ExitCode);
        Assert.StartsWith("SentencePiece BPE", e.GetProperty("tokenizer").GetString(), StringComparison.Ordinal);
        Assert.Equal(e.GetProperty("tokenizer").GetString(), Json(ji).GetProperty("tokenizer").GetString());
    }
}
