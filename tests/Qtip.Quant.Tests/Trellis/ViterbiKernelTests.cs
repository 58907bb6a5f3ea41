using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;
using Qtip.Kernels.Trellis;
using Qtip.Testing;
using Xunit;

namespace Qtip.Quant.Tests.Trellis;

/// <summary>The Viterbi kernel against the float64 dynamic program of <see cref="TrellisReference"/>, per mode and code, at small L and T.</summary>
public abstract class ViterbiKernelTests(BackendKind backend) : BackendTest(backend)
{
    /// <summary>fp32 running costs over ≤ 256 steps of O(1) errors vs float64: a few ulps of the total.</summary>
    private const double CostTolerance = 2e-5;

    private sealed record Run(uint[] States, float[] Recon, float[] Mse);

    private Run Launch<TCode>(TrellisCodeKind kind, int l, int k, int t, float[] x, int count, float[]? table, ViterbiMode mode, int[]? overlaps = null)
        where TCode : struct, ITrellisCode
    {
        var acc = Device.Accelerator;
        var vit = Device.Get<Viterbi<TCode>>();
        var plan = vit.Plan(l, k, t, Codes.SymbolBits(kind, l));
        using var ws = new ViterbiWorkspace(Device, plan);
        int n = t / default(TCode).V;
        int items = mode == ViterbiMode.OverlapCost ? count * plan.Groups : count;
        using var xd = acc.Allocate1D(x);
        using var td = acc.Allocate1D(table ?? [0f]);
        using var od = acc.Allocate1D(overlaps ?? [0]);
        using var sd = acc.Allocate1D<uint>(count * n);
        using var rd = acc.Allocate1D<float>(count * t);
        using var md = acc.Allocate1D<float>(items);
        vit.Launch(plan, ws, mode, items, xd.View, td.View, od.View, sd.View, rd.View, md.View);
        return new Run(sd.GetAsArray1D(), rd.GetAsArray1D(), md.GetAsArray1D());
    }

    public static TheoryData<string, int, int, int> Cases => new()
    {
        { "lut1", 8, 2, 32 },
        { "lut1", 6, 4, 16 },
        { "lut2", 8, 1, 32 },
        { "1mad", 8, 1, 32 },
        { "3inst", 8, 2, 32 },
        { "hyb", 10, 2, 32 },
        { "hyb", 9, 4, 16 },
    };

    private (TrellisCodeKind Kind, int V, float[]? Table) Code(string name, int l)
    {
        var rng = new Random(5);
        return name switch
        {
            "lut1" => (TrellisCodeKind.Lut, 1, Rng.Gaussian(1 << l, 17)),
            "lut2" => (TrellisCodeKind.Lut, 2, Rng.Gaussian(2 << l, 18)),
            "1mad" => (TrellisCodeKind.OneMad, 1, null),
            "3inst" => (TrellisCodeKind.ThreeInst, 1, null),
            _ => (TrellisCodeKind.Hyb, 2, Rng.Gaussian(1024, 19)),
        };
    }

    private Run Dispatch(string name, int l, int k, int t, float[] x, int count, float[]? table, ViterbiMode mode, int[]? ov = null) => name switch
    {
        "lut1" => Launch<Lut1Code>(TrellisCodeKind.Lut, l, k, t, x, count, table, mode, ov),
        "lut2" => Launch<Lut2Code>(TrellisCodeKind.Lut, l, k, t, x, count, table, mode, ov),
        "1mad" => Launch<OneMadCode>(TrellisCodeKind.OneMad, l, k, t, x, count, table, mode, ov),
        "3inst" => Launch<ThreeInstCode>(TrellisCodeKind.ThreeInst, l, k, t, x, count, table, mode, ov),
        _ => Launch<HybCode>(TrellisCodeKind.Hyb, l, k, t, x, count, table, mode, ov),
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void EveryMode_MatchesExhaustiveDynamicProgram(string name, int l, int k, int t)
    {
        const int count = 3;
        var (kind, v, table) = Code(name, l);
        var cb = TrellisReference.Codebook(kind, l, v, table);
        var x = Rng.Gaussian(count * t, seed: l * 100 + k);
        int n = t / v, kv = k * v;

        var plain = Dispatch(name, l, k, t, x, count, table, ViterbiMode.Plain);
        var two = Dispatch(name, l, k, t, x, count, table, ViterbiMode.TwoPass);
        int groups = 1 << (l - kv);
        var costs = Dispatch(name, l, k, t, x, count, table, ViterbiMode.OverlapCost);
        for (int b = 0; b < count; b++)
        {
            var xb = x.AsSpan(b * t, t);
            var walkP = plain.States[(b * n)..((b + 1) * n)];
            var walkT = two.States[(b * n)..((b + 1) * n)];

            var (_, refPlain) = TrellisReference.Viterbi(cb, l, k, v, xb);
            Assert.True(TrellisReference.IsWalk(walkP, l, kv, tailBiting: false), $"{name} b={b}: plain result is not a walk");
            AssertCost(refPlain, TrellisReference.Sse(cb, v, walkP, xb), $"{name} plain b={b}");
            Assert.Equal(TrellisReference.Sse(cb, v, walkP, xb) / t, plain.Mse[b], 1e-5);

            Assert.True(TrellisReference.IsWalk(walkT, l, kv, tailBiting: true), $"{name} b={b}: two-pass result does not bite its tail");
            int ov = (int)(walkT[0] >> kv);
            var (_, refConstrained) = TrellisReference.Viterbi(cb, l, k, v, xb, ov: ov);
            AssertCost(refConstrained, TrellisReference.Sse(cb, v, walkT, xb), $"{name} two-pass b={b} (ov {ov})");
            var (_, _, refOv) = TrellisReference.TwoPass(cb, l, k, v, xb);
            if (kind is TrellisCodeKind.Lut or TrellisCodeKind.Hyb)
                Assert.Equal(refOv, ov);

            for (int i = 0; i < t; i++)
                Assert.Equal((float)cb[(walkT[i / v] * v) + (i % v)], two.Recon[(b * t) + i]);

            double exact = double.PositiveInfinity;
            for (int o = 0; o < groups; o++)
            {
                var (_, c) = TrellisReference.Viterbi(cb, l, k, v, xb, ov: o);
                exact = Math.Min(exact, c);
                AssertCost(c, costs.Mse[(b * groups) + o], $"{name} overlap cost b={b} ov={o}");
            }
            Assert.True(TrellisReference.Sse(cb, v, walkT, xb) >= exact - 1e-9, "two-pass beat the exact optimum");
        }
    }

    private static void AssertCost(double expected, double actual, string what) =>
        Assert.True(Math.Abs(expected - actual) <= CostTolerance * (1 + Math.Abs(expected)), $"{what}: expected {expected}, got {actual}");
}

public sealed class ViterbiKernelTestsCpu() : ViterbiKernelTests(BackendKind.Cpu);

[Trait("Category", "Gpu")]
public sealed class ViterbiKernelTestsCuda() : ViterbiKernelTests(BackendKind.Cuda);
