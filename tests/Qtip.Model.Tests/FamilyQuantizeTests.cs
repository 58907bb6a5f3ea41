using Qtip.Kernels.Runtime;
using Qtip.Model.Checkpoint;
using Qtip.Model.Llama;
using Qtip.Model.Quantized;
using Qtip.Testing;
using Xunit;

namespace Qtip.Model.Tests;

/// <summary>
/// Each family through <c>qtip quantize</c>'s pipeline (HYB 2-bit, a few calibration windows) and back: the QTIP
/// checkpoint (L = 8 for speed) opens as the same family (window kept), carries the biases unquantized and bit-exact under their
/// original names, evaluates to a finite perplexity (log-perplexity within <see cref="NllFactor"/> of the FP one), and
/// its fused decode (biases before RoPE, the window in the decode kernel) agrees with its prefill.
/// </summary>
[RunOn(BackendKind.Cpu, BackendKind.Cuda)]
public abstract class FamilyQuantizeTests(BackendKind backend) : BackendTest(backend), IDisposable
{
    /// <summary>
    /// Quantized log-perplexity (mean NLL) ≤ this × the FP one on the first windows of the validation text. The models
    /// are untrained: their perplexities are 10⁵ (llama3, mistral) to 10²¹ (qwen2-tiny, whose tied N(0, 1) embedding
    /// spreads the logits over tens of units), so a ratio of perplexities would say little; the mean NLL moves by 1–3 %.
    /// Random Gaussian weights have no structure for 2 bits to keep: the quantized logits are 0.65–1.15 (relative L2)
    /// away from the FP ones here, so closeness is not checked on these models (llama-nano's quantize tests and the
    /// demo check it on trained weights); what is checked is that each family quantizes, stores, loads and runs.
    /// </summary>
    private const double NllFactor = 1.1;

    /// <summary>Decode vs prefill of the same quantized model, relative to the largest logit (fp32 sums in other orders).</summary>
    private const double DecodeTolerance = 2e-4;

    private const int Context = 64;

    private readonly string work = Fixtures.TempDir("family-quantize");

    public void Dispose()
    {
        if (Directory.Exists(work))
            Directory.Delete(work, recursive: true);
        GC.SuppressFinalize(this);
    }

    /// <summary>The source checkpoint: a synthetic family (llama3, mistral, qwen2) or a transformers fixture of models/ (…-tiny).</summary>
    private string Source(string name) =>
        name.EndsWith("-tiny", StringComparison.Ordinal)
            ? FamilyReferenceTests.Folder(name)
            : FamilyCheckpoints.Write(Path.Combine(work, name), name, quantizable: true);

    [Theory]
    [InlineData("llama3", false)]
    [InlineData("mistral", false)]
    [InlineData("qwen2", false)]
    [InlineData("qwen2", true)] // --sequential: the calibration forward runs the reconstructions with their biases
    [InlineData("mistral-tiny", false)]
    [InlineData("qwen2-tiny", false)]
    [InlineData("llama3-tiny", false)]
    public void Quantizes_Evaluates_AndDecodes(string name, bool sequential)
    {
        var source = Source(name);
        var outDir = Path.Combine(work, name + "-q");
        var options = new QuantizeOptions
        {
            ModelDir = source,
            OutDir = outDir,
            CalibrationFile = Fixtures.Corpus("calib.txt"),
            CalibrationContext = Context,
            CalibrationWindows = 4,
            Bits = 2,
            Code = Qtip.Quant.Trellis.TrellisCodes.Hyb,
            L = 8, // a 256-state trellis: seconds on the CPU (L = 16 takes minutes)
            Hessian = sequential ? HessianSource.Sequential : HessianSource.FullPrecision,
        };
        var report = new QuantizePipeline(Device, options).Run();
        Assert.Equal(7 * 2, report.Matrices.Count);

        using var fp = LlamaCheckpoint.Open(source);
        using var q = LlamaCheckpoint.Open(outDir);
        Assert.NotNull(q.Quip);
        Assert.Same(fp.Config.Family, q.Config.Family);
        Assert.Equal(fp.Config.SlidingWindow, q.Config.SlidingWindow);
        Assert.Equal(fp.TiedEmbeddings, q.TiedEmbeddings);
        int biases = 0;
        for (int l = 0; l < fp.Config.NumHiddenLayers; l++)
        {
            foreach (var spec in fp.Config.Family.Linears)
            {
                Assert.False(q.Tensors.Contains(spec.WeightName(l)), $"{spec.WeightName(l)} is quantized, not stored dense");
                if (!spec.Bias)
                    continue;
                Assert.Equal(fp.Tensors.Info(spec.BiasName(l)).DType, q.Tensors.Info(spec.BiasName(l)).DType);
                Assert.Equal(fp.Tensors.ReadFloat32(spec.BiasName(l)), q.Tensors.ReadFloat32(spec.BiasName(l)));
                biases++;
            }
        }
        Assert.Equal(fp.Config.Family.HasBiases ? 3 * fp.Config.NumHiddenLayers : 0, biases);

        var stream = Fixtures.ValidTokens().Take(4 * Context).Select(t => (int)t).ToArray();
        var modelOptions = new ModelOptions { Precision = WeightPrecision.Float32, MaxContext = Context };
        using var fpModel = LlamaModel.Load(Device, fp, modelOptions);
        using var qModel = LlamaModel.Load(Device, q, modelOptions);
        double fpNll = Perplexity.Evaluate(fpModel, stream, Context, 4).MeanNll;
        double qNll = Perplexity.Evaluate(qModel, stream, Context, 4).MeanNll;
        Assert.True(double.IsFinite(fpNll) && double.IsFinite(qNll));
        Assert.True(qNll <= NllFactor * fpNll, $"{name}: quantized mean NLL {qNll:F4} vs FP {fpNll:F4}");

        int[] ids = [.. stream.Take(12)];
        qModel.Prefill(ids);
        double scale = Enumerable.Range(0, ids.Length).Max(r => qModel.ReadLogits(r).Max(Math.Abs));
        ReferenceModelTests.CheckDecodeAgainstPrefill(qModel, ids, DecodeTolerance * scale);
        TestContext.Current.SendDiagnosticMessage($"{name}: mean NLL FP {fpNll:F4}, HYB 2-bit {qNll:F4}");
    }
}
