using Qtip.Kernels.Runtime;
using Qtip.Kernels.Trellis;
using Qtip.Quant.Trellis;
using Qtip.Testing;
using Xunit;

namespace Qtip.Quant.Tests.Trellis;

/// <summary>
/// GPU only: the CUDA Viterbi at production sizes (L = 12…16, T = 256) against the float64 reference and against the
/// CPU accelerator, on a few sequences. Covers every minima layout the CUDA plan picks — fp32 shared (HYB, 1MAD
/// L = 14 K = 3, LUT L = 12), fp32 in place (V = 1 K = 3 at L = 16), 16-bit fixed point in place (V = 1 K = 2 at
/// L = 16, direct and table codes), global interleaved with 1-bit back-pointers (V = 1 K = 1 at L = 16) — and both
/// cost modes.
/// </summary>
[Trait("Category", "Gpu")]
public sealed class ViterbiGpuTests
{
    private const double CostTolerance = 2e-5;

    public static TheoryData<string, int, int> Cases => new()
    {
        { "hyb", 16, 2 },
        { "hyb", 16, 3 },
        { "hyb", 16, 4 },
        { "3inst", 16, 2 },
        { "1mad", 14, 3 },
        { "1mad", 16, 3 },
        { "1mad", 16, 2 },
        { "3inst", 16, 1 },
        { "lut", 12, 1 },
        { "lut", 12, 4 },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Cuda_MatchesFloat64Reference_AndCpuAccelerator(string code, int l, int k)
    {
        var (cuda, reason) = TestDevices.Get(BackendKind.Cuda);
        if (cuda is null)
            Assert.Skip($"backend cuda unavailable: {reason}");
        var (cpu, _) = TestDevices.Get(BackendKind.Cpu);
        var cb = code switch
        {
            "hyb" => TrellisCodebook.Hyb(GoldenJson.Flat(TestData.Golden.GetProperty("codes").GetProperty("hyb").GetProperty("lut_fp16"))),
            "3inst" => TrellisCodebook.ThreeInst(),
            "1mad" => TrellisCodebook.OneMad(),
            _ => TrellisCodebook.RandomLut(l, 1, 9),
        };
        const int count = 2, t = 256;
        var x = Rng.Gaussian(count * t, l * 10 + k);
        if (code == "3inst")
            x = x.Select(v => v * 1.2f).ToArray();
        using var qg = new TrellisQuantizer(cuda!, cb, l, k);
        using var qc = new TrellisQuantizer(cpu!, cb, l, k);
        var g = qg.Quantize(x, TailBiting.Approx);
        var c = qc.Quantize(x, TailBiting.Approx);
        var cbd = TrellisReference.Codebook(cb.Code, l, cb.V, cb.Table);
        int n = qg.Steps, kv = k * cb.V;
        // Fixed-point minima find walks within N·Δ (Δ = 2^−12) of the optimum's squared error (see Viterbi).
        double excess = qg.Plan.Minima == MinimaLayout.FixedPoint ? n / (double)Viterbi<OneMadCode>.FixedPointScale : 0;
        for (int b = 0; b < count; b++)
        {
            var xb = x.AsSpan(b * t, t);
            var walk = g.States[(b * n)..((b + 1) * n)];
            Assert.True(TrellisReference.IsWalk(walk, l, kv, tailBiting: true));
            var (_, sseRef, ovRef) = TrellisReference.TwoPass(cbd, l, k, cb.V, xb);
            int ov = (int)(walk[0] >> kv);
            var (_, sseOv) = TrellisReference.Viterbi(cbd, l, k, cb.V, xb, ov: ov);
            double sse = TrellisReference.Sse(cbd, cb.V, walk, xb);
            Assert.True(sse >= sseOv - (CostTolerance * (1 + sseOv)) && sse <= sseOv + excess + (CostTolerance * (1 + sseOv)),
                $"{code} L={l} K={k} b={b} ({qg.Plan.Minima} minima): {sse} vs constrained optimum {sseOv}");
            if (ov == ovRef)
                Assert.True(Math.Abs(sse - sseRef) <= excess + (CostTolerance * (1 + sseRef)));
            Assert.Equal(sse / t, g.Mse[b], 1e-5);
            // fp32 rounding differs between backends (FMA contraction on CUDA): compare with the CPU accelerator when both
            // passes picked the same overlap (a near-tie in pass 1 may legitimately pick another).
            if ((int)(c.States[b * n] >> kv) == ov)
                Assert.True(Math.Abs(c.Mse[b] - g.Mse[b]) <= 1e-5 + (excess / t), $"{code} L={l} K={k} b={b}: CPU MSE {c.Mse[b]}, CUDA {g.Mse[b]}");
        }
        Assert.Equal(g.Packed!.Length, c.Packed!.Length);
        Assert.Equal(g.Reconstruction, qg.Decode(g.Packed));
    }
}
