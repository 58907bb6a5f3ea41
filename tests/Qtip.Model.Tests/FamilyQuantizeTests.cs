using Qtip.Kernels.Runtime;
using Qtip.Kernels.Trellis;
using Qtip.Model.Checkpoint;
using Qtip.Model.Llama;
using Qtip.Model.Quantized;
using Qtip.Testing;
using Xunit;

namespace Qtip.Model.Tests;

/// <summary>
/// Each family through <c>qtip quantize</c>'s pipeline (HYB 2-bit, a few calibration windows) and back: the QTIP
/// checkpoint (L = 8 for speed) opens as the same family (window kept), carries the biases unquantized and bit-exact under their
/// original names, evaluates to a finite perplexity within <see cref="PerplexityFactor"/> of the FP one, and its fused
/// decode (biases before RoPE, the window in the decode kernel) agrees with its prefill.
/// </summary>
public abstract class FamilyQuantizeTests(BackendKind backend) : BackendTest(backend), IDisposable
{
    /// <summary>
    /// Quantized perplexity ≤ this × the FP one on the first windows of the validation text. The random models are
    /// untrained (ppl 10⁵, and 10¹³ for the synthetic Qwen2, whose tied N(0, 1) embedding spreads the logits over tens of
    /// units); measured 2-bit HYB (L = 8) ratios on the CPU: synthetic llama3 1.19, mistral 1.07, qwen2 1.69. A wrong
    /// layout, sign or a lost bias moves it by orders of magnitude.
    /// </summary>
    private const double PerplexityFactor = 2.0;

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
            Code = TrellisCodeKind.Hyb,
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
        double fpNll, qNll;
        using (var m = LlamaModel.Load(Device, fp, modelOptions))
            fpNll = Perplexity.Evaluate(m, stream, Context, 4).MeanNll;
        using (var m = LlamaModel.Load(Device, q, modelOptions))
        {
            qNll = Perplexity.Evaluate(m, stream, Context, 4).MeanNll;
            int[] ids = [.. stream.Take(12)];
            m.Prefill(ids);
            double scale = Enumerable.Range(0, ids.Length).Max(r => m.ReadLogits(r).Max(Math.Abs));
            ReferenceModelTests.CheckDecodeAgainstPrefill(m, ids, DecodeTolerance * scale);
        }
        Assert.True(double.IsFinite(fpNll) && double.IsFinite(qNll));
        Assert.True(Math.Exp(qNll) <= PerplexityFactor * Math.Exp(fpNll), $"{name}: quantized ppl {Math.Exp(qNll):F1} vs FP {Math.Exp(fpNll):F1}");
        TestContext.Current.SendDiagnosticMessage($"{name}: ppl FP {Math.Exp(fpNll):F2}, HYB 2-bit {Math.Exp(qNll):F2} (×{Math.Exp(qNll - fpNll):F3})");
    }
}

public sealed class FamilyQuantizeTestsCpu() : FamilyQuantizeTests(BackendKind.Cpu);

[Trait("Category", "Gpu")]
public sealed class FamilyQuantizeTestsCuda() : FamilyQuantizeTests(BackendKind.Cuda);
