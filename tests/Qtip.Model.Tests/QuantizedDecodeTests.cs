using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;
using Qtip.Quant.Trellis;
using Qtip.Model.Checkpoint;
using Qtip.Model.Llama;
using Qtip.Model.Quantized;
using Qtip.Testing;
using Xunit;

namespace Qtip.Model.Tests;

/// <summary>
/// The fused quantized decode step (one-launch RHTs with norms, residual adds and SwiGLU; trellis matvecs) against the
/// unfused forward of the same quantized model (each linear decoded to dense, then the product), on a tiny random model.
/// </summary>
[RunOn(BackendKind.Cpu, BackendKind.Cuda)]
public abstract class QuantizedDecodeTests(BackendKind backend) : BackendTest(backend)
{
    /// <summary>Logit difference allowed relative to the largest logit: two fp32 summation orders.</summary>
    private const double Tolerance = 2e-4;

    [Theory]
    [InlineData("hyb", 2)]
    [InlineData("hyb", 4)]
    [InlineData("3inst", 3)]
    [InlineData("1mad", 2)]
    public void DecodeStep_MatchesPrefillLogits(string codeName, int k)
    {
        var config = LlamaModel.SyntheticConfig(2, 64, 192, 4, 2, 97);
        var code = TrellisCodes.Find(codeName)!;
        var spec = QtipCodeSpec.Default(code, 16, k);
        var table = code.TableLength(16) > 0 ? Rng.Gaussian(code.TableLength(16), seed: 4) : [];
        using var model = LlamaModel.CreateRandom(Device, config, new ModelOptions { Precision = WeightPrecision.Float32, MaxContext = 16, MaxPrefillRows = 8 }, 3,
            (layer, kind, o, i) => QtipLinear.CreateRandom(Device, o, i, spec, table, (ulong)((layer * 10) + (int)kind + 1)));
        int[] ids = [5, 17, 3, 60, 42];
        model.Prefill(ids, 0, LogitsMode.Last);
        var expected = model.ReadLogits();
        model.Prefill(ids.AsSpan(0, 4), 0, LogitsMode.Last);
        model.Prefill(ids.AsSpan(4, 1), 4, LogitsMode.Last); // one token: the decode step
        var got = model.ReadLogits();
        double scale = expected.Max(Math.Abs);
        Assert.True(scale > 0 && expected.All(float.IsFinite));
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(got[i] - expected[i]) <= Tolerance * scale, $"{code} K={k} logit {i}: {got[i]} vs {expected[i]} (scale {scale})");
        // q|k|v widths differ (64 vs 32): three output transforms; 19 launches a layer.
        Assert.Equal(1 + (2 * 19) + 2, model.DecodeLaunchesPerToken);
    }

    /// <summary>
    /// The fused quantized decode of the other families: Qwen2's q|k|v biases (one more launch a layer, before RoPE)
    /// and Mistral's sliding window (3 positions here, so the last steps see part of the cache), against the prefill of
    /// the same quantized model (each biased linear's product then its bias, and windowed prefill attention).
    /// </summary>
    [Theory]
    [InlineData("qwen2", 20)]
    [InlineData("mistral", 19)]
    public void DecodeSteps_MatchPrefill_OtherFamilies(string family, int launchesPerLayer)
    {
        var config = LlamaModel.SyntheticConfig(2, 64, 192, 4, 2, 97) with
        {
            Family = Qtip.Model.Families.ModelFamilies.Find(family)!,
            SlidingWindow = family == "mistral" ? 3 : 0,
        };
        var code = TrellisCodes.Find("hyb")!;
        var spec = QtipCodeSpec.Default(code, 16, 2);
        var table = Rng.Gaussian(code.TableLength(16), seed: 4);
        using var model = LlamaModel.CreateRandom(Device, config, new ModelOptions { Precision = WeightPrecision.Float32, MaxContext = 16, MaxPrefillRows = 8 }, 3,
            (layer, kind, o, i) => QtipLinear.CreateRandom(Device, o, i, spec, table, (ulong)((layer * 10) + (int)kind + 1)));
        Assert.Equal(family == "qwen2", model.GetLinear(0, LinearKind.Q) is BiasedLinear);
        Assert.Equal(1 + (2 * launchesPerLayer) + 2, model.DecodeLaunchesPerToken);
        int[] ids = [5, 17, 3, 60, 42, 7, 11];
        model.Prefill(ids, 0, LogitsMode.All);
        var expected = Enumerable.Range(0, ids.Length).Select(model.ReadLogits).ToArray();
        model.Prefill(ids.AsSpan(0, 2), 0, LogitsMode.None);
        for (int pos = 2; pos < ids.Length; pos++)
        {
            ((ArrayView<int>)model.Tokens).SubView(0, 1).CopyFromCPU([ids[pos]]);
            model.DecodeStep(pos);
            var got = model.ReadLogits();
            double scale = expected[pos].Max(Math.Abs);
            Assert.True(scale > 0 && expected[pos].All(float.IsFinite));
            for (int i = 0; i < got.Length; i++)
                Assert.True(Math.Abs(got[i] - expected[pos][i]) <= Tolerance * scale, $"{family} pos {pos} logit {i}: {got[i]} vs {expected[pos][i]} (scale {scale})");
        }
    }
}
