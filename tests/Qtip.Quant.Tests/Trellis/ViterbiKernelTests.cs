using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;
using Qtip.Kernels.Trellis;
using Qtip.Quant.Trellis;
using Qtip.Testing;
using Xunit;

namespace Qtip.Quant.Tests.Trellis;

/// <summary>The Viterbi kernel against the float64 dynamic program of <see cref="TrellisReference"/>, per mode and code, at
/// small L and T, with the device's own plan and with every minima layout, group size and reduction strategy forced.</summary>
public abstract class ViterbiKernelTests(BackendKind backend) : BackendTest(backend)
{
    /// <summary>fp32 running costs over ≤ 256 steps of O(1) errors vs float64: a few ulps of the total.</summary>
    private const double CostTolerance = 2e-5;

    /// <summary>Walks found with fixed-point minima: at most N·Δ (Δ = 2^−12) above the optimum's squared error (see
    /// <see cref="Viterbi{TCode}"/>); the costs they report are within N·Δ/2 of it.</summary>
    private static double FixedTolerance(int steps) => steps / (double)Viterbi<OneMadCode>.FixedPointScale;

    private sealed record Run(uint[] States, float[] Mse, float[] Recon, ViterbiPlan Plan);

    /// <summary>A way to launch the kernel: the device's plan (all null), or a forced layout, group size, reduction.</summary>
    /// <param name="Interleave">Use interleaved ownership where the plan allows it (the plan only chooses it with shuffles).</param>
    /// <param name="Table">Force the per-step error table (codes with ≤ 2^10 symbols; the plan uses it from L ≥ 12).</param>
    public sealed record Variant(string Name, MinimaLayout? Minima = null, int MaxThreads = 0, bool? Shuffles = null, bool Interleave = false, bool? Table = null);

    private static readonly (string Code, int L, int K, int T)[] CaseList =
    [
        ("lut1", 8, 2, 32),
        ("lut1", 6, 4, 16),
        ("lut2", 8, 1, 32),
        ("1mad", 8, 1, 32),
        ("3inst", 8, 2, 32),
        ("hyb", 10, 2, 32),
        ("hyb", 9, 4, 16),
        ("lut2", 10, 3, 32),
    ];

    public static TheoryData<string, int, int, int> Cases => new(CaseList);

    /// <summary>The variants run on this device. Small groups (4 threads on the CPU, whose simulated barriers are
    /// OS-thread handoffs; 16 elsewhere, rounded up to a warp for shuffles) exercise several threads per group on every
    /// backend (the CPU plan uses one); warp-shuffle variants run where shuffles compile (not OpenCL).</summary>
    private List<Variant> Variants(int l, int kv, bool tabulated)
    {
        bool butterflies = l >= 2 * kv && kv <= Viterbi<OneMadCode>.MaxFanoutBits;
        bool shuffles = Backend != BackendKind.OpenCL;
        int few = IsCpu ? 4 : 16;
        var list = new List<Variant> { new("global", MinimaLayout.Global), new("global-few-shared", MinimaLayout.Global, few, false, Interleave: true) };
        if (shuffles)
            list.Add(new("global-few-warp", MinimaLayout.Global, few, true));
        list.Add(new("shared-few-shared", MinimaLayout.Shared, few, false));
        if (butterflies)
        {
            list.Add(new("inplace", MinimaLayout.InPlace));
            list.Add(new("inplace-few-shared", MinimaLayout.InPlace, few, false));
            list.Add(new("fixed", MinimaLayout.FixedPoint));
            list.Add(new("fixed-few-shared", MinimaLayout.FixedPoint, few, false));
            if (shuffles)
                list.Add(new("fixed-few-warp", MinimaLayout.FixedPoint, few, true));
        }
        if (tabulated)
        {
            list.Add(new("table", Table: true));
            list.Add(new("table-global-few-shared", MinimaLayout.Global, few, false, Interleave: true, Table: true));
            if (shuffles)
                list.Add(new("table-global-few-warp", MinimaLayout.Global, few, true, Table: true));
            if (butterflies)
            {
                list.Add(new("table-inplace-few-shared", MinimaLayout.InPlace, few, false, Table: true));
                list.Add(new("table-fixed", MinimaLayout.FixedPoint, Table: true));
            }
        }
        return list;
    }

    private ViterbiPlan PlanFor<TCode>(int l, int k, int t, Variant? variant)
        where TCode : struct, ITrellisCode
    {
        var vit = Device.Get<Viterbi<TCode>>();
        var plan = vit.Plan(l, k, t, default(TCode).SymbolBits(l), maxThreads: variant?.MaxThreads ?? 0,
            overrides: variant is null ? null : new ViterbiOverrides(variant.Minima, variant.Shuffles, variant.Table));
        return variant is { Interleave: true } ? plan with { Interleaved = plan.CanInterleave(Device.WarpSize) } : plan;
    }

    private Run Launch<TCode>(int l, int k, int t, float[] x, int count, float[]? table, ViterbiMode mode, Variant? variant)
        where TCode : struct, ITrellisCode
    {
        var acc = Device.Accelerator;
        var vit = Device.Get<Viterbi<TCode>>();
        var plan = PlanFor<TCode>(l, k, t, variant);
        using var ws = new ViterbiWorkspace(Device, plan);
        int n = t / default(TCode).V;
        int items = mode == ViterbiMode.OverlapCost ? count * plan.Groups : count;
        using var xd = acc.Allocate1D(x);
        using var td = acc.Allocate1D(table ?? [0f]);
        using var od = acc.Allocate1D([0]);
        using var sd = acc.Allocate1D<uint>(count * n);
        using var rd = acc.Allocate1D<float>(count * t);
        using var md = acc.Allocate1D<float>(items);
        vit.Launch(plan, ws, mode, items, xd.View, td.View, od.View, sd.View, rd.View, md.View);
        return new Run(sd.GetAsArray1D(), md.GetAsArray1D(), rd.GetAsArray1D(), plan);
    }

    /// <summary>The registry row of a case's code ("lut1"/"lut2": the lut code with V = 1/2) and a seeded random table when it has one.</summary>
    private static (TrellisCodeInfo Kind, int V, float[]? Table) Code(string name, int l)
    {
        var row = name.StartsWith("lut", StringComparison.Ordinal) ? TrellisCodes.Find("lut", name[^1] - '0')! : TrellisCodes.Find(name)!;
        int seed = 17 + TrellisCodes.All.ToList().IndexOf(row);
        return (row, row.V, row.TableLength(l) > 0 ? Rng.Gaussian(row.TableLength(l), seed) : null);
    }

    private readonly struct LaunchOp(ViterbiKernelTests test, int l, int k, int t, float[] x, int count, float[]? table, ViterbiMode mode, Variant? variant) : ICodeOp<ViterbiKernelTests.Run>
    {
        public ViterbiKernelTests.Run Run<TCode>() where TCode : struct, ITrellisCode => test.Launch<TCode>(l, k, t, x, count, table, mode, variant);
    }

    private readonly struct PlanOp(ViterbiKernelTests test, int l, int k, int t, Variant variant) : ICodeOp<ViterbiPlan>
    {
        public ViterbiPlan Run<TCode>() where TCode : struct, ITrellisCode => test.PlanFor<TCode>(l, k, t, variant);
    }

    private Run Dispatch(string name, int l, int k, int t, float[] x, int count, float[]? table, ViterbiMode mode, Variant? variant = null) =>
        Code(name, l).Kind.Run<LaunchOp, ViterbiKernelTests.Run>(new LaunchOp(this, l, k, t, x, count, table, mode, variant));

    private ViterbiPlan PlanOf(string name, int l, int k, int t, Variant variant) =>
        Code(name, l).Kind.Run<PlanOp, ViterbiPlan>(new PlanOp(this, l, k, t, variant));

    [Fact]
    public void Variants_ExerciseEveryLayout_AndInterleavedOwnership()
    {
        // The plans the variant test launches, with this device's warp size and group limits: every layout, both
        // ownerships of global minima, and (where shuffles compile) both reduction strategies must occur.
        var plans = new List<ViterbiPlan>();
        foreach (var (name, l, k, t) in CaseList)
        {
            var (kind, v, _) = Code(name, l);
            plans.AddRange(Variants(l, k * v, Tabulated(kind, l)).Select(variant => PlanOf(name, l, k, t, variant)));
        }
        foreach (var layout in Enum.GetValues<MinimaLayout>())
            Assert.Contains(plans, p => p.Minima == layout);
        Assert.Contains(plans, p => p.Interleaved);
        Assert.Contains(plans, p => p.Minima == MinimaLayout.Global && !p.Interleaved);
        Assert.Contains(plans, p => p.Threads > 1 && !p.Shuffles);
        if (Backend != BackendKind.OpenCL)
            Assert.Contains(plans, p => p.Threads > 1 && p.Shuffles);
        Assert.Contains(plans, p => p.TableSymbols > 0 && p.Minima == MinimaLayout.FixedPoint);
        Assert.Contains(plans, p => p.TableSymbols > 0 && p.Interleaved);
        Assert.Contains(plans, p => p.TableSymbols == 0);
    }

    /// <summary>Whether the code has a per-step error table at this L (at most 2^10 symbols).</summary>
    private static bool Tabulated(TrellisCodeInfo kind, int l) => kind.SymbolBits(l) <= Viterbi<OneMadCode>.MaxTableBits;

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
        bool fix = two.Plan.Minima == MinimaLayout.FixedPoint;
        for (int b = 0; b < count; b++)
        {
            var xb = x.AsSpan(b * t, t);
            var walkP = plain.States[(b * n)..((b + 1) * n)];
            var walkT = two.States[(b * n)..((b + 1) * n)];

            var (_, refPlain) = TrellisReference.Viterbi(cb, l, k, v, xb);
            Assert.True(TrellisReference.IsWalk(walkP, l, kv, tailBiting: false), $"{name} b={b}: plain result is not a walk");
            AssertWalkCost(refPlain, TrellisReference.Sse(cb, v, walkP, xb), fix, n, $"{name} plain b={b}");
            Assert.Equal(TrellisReference.Sse(cb, v, walkP, xb) / t, plain.Mse[b], 1e-5);

            Assert.True(TrellisReference.IsWalk(walkT, l, kv, tailBiting: true), $"{name} b={b}: two-pass result does not bite its tail");
            int ov = (int)(walkT[0] >> kv);
            var (_, refConstrained) = TrellisReference.Viterbi(cb, l, k, v, xb, ov: ov);
            AssertWalkCost(refConstrained, TrellisReference.Sse(cb, v, walkT, xb), fix, n, $"{name} two-pass b={b} (ov {ov})");
            var (_, _, refOv) = TrellisReference.TwoPass(cb, l, k, v, xb);
            if (!fix && kind.TableBits(l) > 0)
                Assert.Equal(refOv, ov);

            for (int i = 0; i < t; i++)
                Assert.Equal((float)cb[(walkT[i / v] * v) + (i % v)], two.Recon[(b * t) + i]);

            double exact = double.PositiveInfinity;
            for (int o = 0; o < groups; o++)
            {
                var (_, c) = TrellisReference.Viterbi(cb, l, k, v, xb, ov: o);
                exact = Math.Min(exact, c);
                AssertCost(c, costs.Mse[(b * groups) + o], fix ? FixedTolerance(n) / 2 : 0, $"{name} overlap cost b={b} ov={o}");
            }
            Assert.True(TrellisReference.Sse(cb, v, walkT, xb) >= exact - 1e-9, "two-pass beat the exact optimum");
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void EveryLayoutAndGroupShape_FindsTheSameWalks(string name, int l, int k, int t)
    {
        // fp32 layouts do the same float operations in the same order whatever the layout, group size or reduction:
        // the two-pass walks are identical (the MSE is a sum in another order). Fixed-point walks are checked against
        // the float64 optimum with the overlap they chose, and their overlap costs against the reference.
        const int count = 3;
        var (kind, v, table) = Code(name, l);
        var cb = TrellisReference.Codebook(kind, l, v, table);
        var x = Rng.Gaussian(count * t, seed: l * 100 + k + 7);
        int n = t / v, kv = k * v;
        var baseline = Dispatch(name, l, k, t, x, count, table, ViterbiMode.TwoPass, new Variant("fp32", MinimaLayout.Global));
        foreach (var variant in Variants(l, kv, Tabulated(kind, l)))
        {
            var run = Dispatch(name, l, k, t, x, count, table, ViterbiMode.TwoPass, variant);
            string what = $"{name} L={l} K={k} {variant.Name} ({run.Plan.Threads} threads, {run.Plan.Minima}{(run.Plan.Interleaved ? ", interleaved" : "")})";
            if (run.Plan.Minima != MinimaLayout.FixedPoint)
            {
                Assert.True(baseline.States.SequenceEqual(run.States), $"{what}: walks differ from the fp32 global-minima walks");
                for (int b = 0; b < count; b++)
                    Assert.True(Math.Abs(baseline.Mse[b] - run.Mse[b]) <= 1e-6 * (1 + baseline.Mse[b]), $"{what} b={b}: MSE {run.Mse[b]} vs {baseline.Mse[b]}");
                continue;
            }
            for (int b = 0; b < count; b++)
            {
                var xb = x.AsSpan(b * t, t);
                var walk = run.States[(b * n)..((b + 1) * n)];
                Assert.True(TrellisReference.IsWalk(walk, l, kv, tailBiting: true), $"{what} b={b}: the walk does not bite its tail");
                double sse = TrellisReference.Sse(cb, v, walk, xb);
                var (_, optimum) = TrellisReference.Viterbi(cb, l, k, v, xb, ov: (int)(walk[0] >> kv));
                AssertWalkCost(optimum, sse, fix: true, n, $"{what} b={b}");
                Assert.Equal(sse / t, run.Mse[b], 1e-5);
            }
            var costs = Dispatch(name, l, k, t, x, 1, table, ViterbiMode.OverlapCost, variant);
            for (int o = 0; o < costs.Plan.Groups; o++)
            {
                var (_, c) = TrellisReference.Viterbi(cb, l, k, v, x.AsSpan(0, t), ov: o);
                AssertCost(c, costs.Mse[o], FixedTolerance(n) / 2, $"{what} overlap cost ov={o}");
            }
        }
    }

    /// <summary>The walk's squared error equals the optimum (fp32 rounding), or for fixed-point minima lies in [optimum, optimum + N·Δ].</summary>
    private static void AssertWalkCost(double optimum, double walk, bool fix, int steps, string what)
    {
        double tol = CostTolerance * (1 + Math.Abs(optimum));
        if (fix)
            Assert.True(walk >= optimum - tol && walk <= optimum + FixedTolerance(steps) + tol, $"{what}: walk {walk}, optimum {optimum}, allowed excess {FixedTolerance(steps)}");
        else
            Assert.True(Math.Abs(walk - optimum) <= tol, $"{what}: expected {optimum}, got {walk}");
    }

    private static void AssertCost(double expected, double actual, double extra, string what) =>
        Assert.True(Math.Abs(expected - actual) <= extra + (CostTolerance * (1 + Math.Abs(expected))), $"{what}: expected {expected}, got {actual}");
}

public sealed class ViterbiKernelTestsCpu() : ViterbiKernelTests(BackendKind.Cpu);

[Trait("Category", "Gpu")]
public sealed class ViterbiKernelTestsCuda() : ViterbiKernelTests(BackendKind.Cuda);

[Trait("Category", "Gpu")]
public sealed class ViterbiKernelTestsOpenCL() : ViterbiKernelTests(BackendKind.OpenCL);
