using System.Text.Json;
using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;
using Qtip.Kernels.Trellis;
using Qtip.Quant.Trellis;
using Qtip.Testing;
using Xunit;

namespace Qtip.Quant.Tests.Trellis;

/// <summary>The quantizer API: golden Viterbi cases, exact mode, matrices in both layouts, device views, bad input.</summary>
public abstract class TrellisQuantizerTests(BackendKind backend) : BackendTest(backend)
{
    /// <summary>The golden README: equal MSE within ~1e-6 where the search is exact-optimal for the same constraint
    /// (fp32 costs here vs the reference's fp32/fp16 arithmetic).</summary>
    private const double GoldenMse = 1.5e-6;

    private static JsonElement Viterbi(string name) => TestData.Golden.GetProperty("viterbi").GetProperty(name);

    private static float[][] Rows(JsonElement e) => e.EnumerateArray().Select(TestData.Floats).ToArray();

    private static double Mse(float[] a, int offset, float[] x, int t)
    {
        double s = 0;
        for (int i = 0; i < t; i++)
        {
            double d = a[offset + i] - x[i];
            s += d * d;
        }
        return s / t;
    }

    private void CheckGolden(string name, TrellisCodebook cb, int sequences)
    {
        var g = Viterbi(name);
        int l = g.GetProperty("L").GetInt32(), k = g.GetProperty("K").GetInt32();
        var xf = Rows(g.GetProperty("x_fp16")).Take(sequences).ToArray();
        var x = Rows(g.GetProperty("x"));
        var mseFp16 = TestData.Doubles(g.GetProperty("mse_vs_fp16_targets"));
        var mse = TestData.Doubles(g.GetProperty("mse"));
        var ov = TestData.Ints(g.GetProperty("pass1_overlap"));
        var golden = g.GetProperty("states").EnumerateArray().Select(e => e.EnumerateArray().Select(u => (uint)u.GetInt32()).ToArray()).ToArray();
        using var q = new TrellisQuantizer(Device, cb, l, k);
        var r = q.Quantize(xf.SelectMany(v => v).ToArray(), TailBiting.Approx);
        int n = q.Steps, kv = k * cb.V;
        for (int b = 0; b < sequences; b++)
        {
            var walk = r.States[(b * n)..((b + 1) * n)];
            Assert.True(TrellisReference.IsWalk(walk, l, kv, tailBiting: true), $"{name} b={b}: not a tail-biting walk");
            Assert.True(Math.Abs(r.Mse[b] - mseFp16[b]) < GoldenMse, $"{name} b={b}: MSE vs x_fp16 {r.Mse[b]} vs golden {mseFp16[b]}");
            Assert.True(Math.Abs(Mse(r.Reconstruction, b * 256, x[b], 256) - mse[b]) < GoldenMse, $"{name} b={b}: MSE vs x");
            Assert.Equal(ov[b], (int)(walk[0] >> kv));
            // Ties (HYB: 64 states share each point) go to the first index, as in the reference: same walk.
            Assert.Equal(golden[b], walk);
        }
    }

    [Fact]
    public void Golden_Lut12_TwoPass()
    {
        var g = Viterbi("lut12");
        CheckGolden("lut12", TrellisCodebook.Lut(TestData.Floats(g.GetProperty("lut")), 12, 1), IsCpu ? 4 : 8);
    }

    [Fact]
    public void Golden_Hyb16_TwoPass()
    {
        var lut = GoldenJson.Flat(TestData.Golden.GetProperty("codes").GetProperty("hyb").GetProperty("lut_fp16"));
        CheckGolden("hyb16", TrellisCodebook.Hyb(lut), IsCpu ? 1 : 8);
    }

    [Fact]
    public void Golden_Lut12_ExactEqualsTheExactOptimum()
    {
        var g = Viterbi("lut12");
        int sequences = IsCpu ? 1 : 8;
        var xf = Rows(g.GetProperty("x_fp16")).Take(sequences).SelectMany(v => v).ToArray();
        var exact = TestData.Doubles(g.GetProperty("exact_tailbiting_optimum_mse_vs_fp16_targets"));
        using var q = new TrellisQuantizer(Device, TrellisCodebook.Lut(TestData.Floats(g.GetProperty("lut")), 12, 1), 12, 2);
        if (IsCpu)
        {
            // 1024 constrained passes cost minutes on the simulator: check the fixed-overlap pass the exact mode ends
            // with, at the golden optimum's overlap, through the kernel directly.
            var vit = Device.Get<Viterbi<Lut1Code>>();
            var acc = Device.Accelerator;
            using var ws = new ViterbiWorkspace(Device, q.Plan);
            using var xd = acc.Allocate1D(xf);
            using var od = acc.Allocate1D(new[] { TestData.Ints(g.GetProperty("pass1_overlap"))[0] });
            using var s = acc.Allocate1D<uint>(256);
            using var rc = acc.Allocate1D<float>(256);
            using var m = acc.Allocate1D<float>(1);
            vit.Launch(q.Plan, ws, ViterbiMode.FixedOverlap, 1, xd.View, q.CodeTable, od.View, s.View, rc.View, m.View);
            Assert.True(Math.Abs(m.GetAsArray1D()[0] - exact[0]) < GoldenMse);
            return;
        }
        var r = q.Quantize(xf, TailBiting.Exact);
        for (int b = 0; b < sequences; b++)
            Assert.True(Math.Abs(r.Mse[b] - exact[b]) < GoldenMse, $"b={b}: exact {r.Mse[b]} vs {exact[b]}");
    }

    [Theory]
    [InlineData("lut", 8, 2, 1)]
    [InlineData("1mad", 8, 1, 1)]
    [InlineData("hyb", 9, 2, 2)]
    public void Exact_IsTheBestOverlap_AndNeverWorseThanTwoPass(string code, int l, int k, int v)
    {
        var cb = code switch
        {
            "lut" => TrellisCodebook.RandomLut(l, v, 3),
            "1mad" => TrellisCodebook.OneMad(),
            _ => TrellisCodebook.Hyb(Rng.Gaussian(1024, 4)),
        };
        const int t = 32, count = 3;
        var x = Rng.Gaussian(count * t, 21);
        using var q = new TrellisQuantizer(Device, cb, l, k, t);
        var exact = q.Quantize(x, TailBiting.Exact);
        var approx = q.Quantize(x, TailBiting.Approx);
        var cbd = TrellisReference.Codebook(cb.Code, l, v, cb.Table);
        for (int b = 0; b < count; b++)
        {
            var xb = x.AsSpan(b * t, t);
            var (_, best) = TrellisReference.Exact(cbd, l, k, v, xb);
            Assert.Equal(best / t, exact.Mse[b], 1e-6);
            Assert.True(exact.Mse[b] <= approx.Mse[b] + 1e-7);
            var walk = exact.States[(b * q.Steps)..((b + 1) * q.Steps)];
            Assert.True(TrellisReference.IsWalk(walk, l, k * v, tailBiting: true));
            Assert.Equal(TrellisReference.Pack(walk, l, k * v, k, t), exact.Packed![(b * q.WordsPerSequence)..((b + 1) * q.WordsPerSequence)]);
        }
        Assert.Equal(exact.Reconstruction, q.Decode(exact.Packed!));
    }

    [Theory]
    [InlineData(TileLayoutKind.Generic)]
    [InlineData(TileLayoutKind.Kernel)]
    public void Matrix_TilesFollowTheLayout_AndDecodeFromThePackedTensor(TileLayoutKind layout)
    {
        const int m = 32, n = 64, l = 8, k = 2;
        var w = Rng.Gaussian(m * n, 31);
        using var q = new TrellisQuantizer(Device, TrellisCodebook.RandomLut(l, 2, 5), l, k);
        var r = q.QuantizeMatrix(w, m, n, TailBiting.Approx, layout);
        Assert.Equal((m / 16) * (n / 16) * 16 * k, r.Trellis.Length);
        // Every tile's MSE equals the MSE of its 256 matrix elements, and the tile sequence is the layout's order.
        int tilesPerRow = n / 16;
        for (int tile = 0; tile < (m / 16) * tilesPerRow; tile++)
        {
            var seq = new float[256];
            double sse = 0;
            for (int p = 0; p < 256; p++)
            {
                int row, col;
                if (layout == TileLayoutKind.Kernel)
                    default(KernelLayout).Position(tile, p, new LayoutParams(k, 256, m, n), out row, out col);
                else
                    default(GenericLayout).Position(tile, p, new LayoutParams(k, 256, m, n), out row, out col);
                seq[p] = w[(row * n) + col];
                double d = r.Reconstruction[(row * n) + col] - w[(row * n) + col];
                sse += d * d;
            }
            Assert.Equal(sse / 256, r.TileMse[tile], 1e-6);
            var single = q.Quantize(seq, TailBiting.Approx);
            Assert.Equal(single.Mse[0], r.TileMse[tile], 1e-7);
        }
    }

    [Theory]
    [InlineData(TileLayoutKind.Generic)]
    [InlineData(TileLayoutKind.Kernel)]
    public void ColumnBands_AsBlockLdlqCallsThem_AssembleTheSameMatrix(TileLayoutKind layout)
    {
        const int m = 64, n = 64, l = 8, k = 3;
        var w = Rng.Gaussian(m * n, 32);
        using var q = new TrellisQuantizer(Device, TrellisCodebook.RandomLut(l, 2, 6), l, k);
        var whole = q.QuantizeMatrix(w, m, n, TailBiting.Approx, layout);
        var acc = Device.Accelerator;
        int rows = m / 16, words = q.WordsPerSequence;
        using var wd = acc.Allocate1D(w);
        using var seq = acc.Allocate1D<float>(rows * 256);
        using var s = acc.Allocate1D<uint>(rows * q.Steps);
        using var r = acc.Allocate1D<float>(rows * 256);
        using var mse = acc.Allocate1D<float>(rows);
        using var bands = acc.Allocate1D<short>((n / 16) * rows * words);
        using var rec = acc.Allocate1D<float>(m * n);
        using var packed = acc.Allocate1D<short>((n / 16) * rows * words);
        for (int j = n / 16 - 1; j >= 0; j--)
        {
            // One call per 16-column block, all m/16 tiles batched; the words land contiguously, band-major.
            if (layout == TileLayoutKind.Kernel)
                Device.Get<TileGather<KernelLayout>>().Gather(wd.View, m, n, j, 1, seq.View);
            else
                Device.Get<TileGather<GenericLayout>>().Gather(wd.View, m, n, j, 1, seq.View);
            q.Quantize(seq.View, rows, TailBiting.Approx, s.View, r.View, mse.View, bands.View.SubView(j * rows * words, rows * words));
            if (layout == TileLayoutKind.Kernel)
                Device.Get<TileGather<KernelLayout>>().Scatter(r.View, m, n, j, 1, rec.View);
            else
                Device.Get<TileGather<GenericLayout>>().Scatter(r.View, m, n, j, 1, rec.View);
        }
        if (layout == TileLayoutKind.Kernel)
            Device.Get<TrellisRelayout<BandMajorLayout, KernelLayout>>().Apply(bands.View, m, n, k, packed.View);
        else
            Device.Get<TrellisRelayout<BandMajorLayout, GenericLayout>>().Apply(bands.View, m, n, k, packed.View);
        Assert.Equal(whole.Trellis, packed.GetAsArray1D());
        Assert.Equal(whole.Reconstruction, rec.GetAsArray1D());
    }

    [Fact]
    public void DeviceViews_BatchInOneCall_MatchesHostOverload()
    {
        const int l = 8, k = 2, t = 64, count = 5;
        var x = Rng.Gaussian(count * t, 41);
        using var q = new TrellisQuantizer(Device, TrellisCodebook.ThreeInst(), l, k, t);
        var host = q.Quantize(x, TailBiting.Approx);
        var acc = Device.Accelerator;
        using var xd = acc.Allocate1D(x);
        using var s = acc.Allocate1D<uint>(count * q.Steps);
        using var r = acc.Allocate1D<float>(count * t);
        using var m = acc.Allocate1D<float>(count);
        using var p = acc.Allocate1D<short>(count * q.WordsPerSequence);
        q.Quantize(xd.View, count, TailBiting.Approx, s.View, r.View, m.View, p.View);
        Assert.Equal(host.States, s.GetAsArray1D());
        Assert.Equal(host.Reconstruction, r.GetAsArray1D());
        Assert.Equal(host.Mse, m.GetAsArray1D());
        Assert.Equal(host.Packed, p.GetAsArray1D());
        var none = q.Quantize(x, TailBiting.None);
        Assert.Null(none.Packed);
        for (int b = 0; b < count; b++)
            Assert.True(none.Mse[b] <= host.Mse[b] + 1e-7, "the unconstrained optimum is never worse than a tail-biting walk");
    }

    [Fact]
    public void BadInput_NamesTheParameterAndRange()
    {
        var cb = TrellisCodebook.OneMad();
        Assert.Contains("[2, 16]", Assert.Throws<ArgumentOutOfRangeException>(() => new TrellisQuantizer(Device, cb, 17, 2)).Message, StringComparison.Ordinal);
        Assert.Equal("l", Assert.Throws<ArgumentOutOfRangeException>(() => new TrellisQuantizer(Device, cb, 1, 2)).ParamName);
        Assert.Equal("k", Assert.Throws<ArgumentOutOfRangeException>(() => new TrellisQuantizer(Device, cb, 16, 0)).ParamName);
        Assert.Equal("k", Assert.Throws<ArgumentOutOfRangeException>(() => new TrellisQuantizer(Device, cb, 16, 5)).ParamName);
        var kv = Assert.Throws<ArgumentOutOfRangeException>(() => new TrellisQuantizer(Device, TrellisCodebook.Hyb(new float[1024]), 8, 4));
        Assert.Contains("K·V", kv.Message, StringComparison.Ordinal);
        Assert.Equal("t", Assert.Throws<ArgumentOutOfRangeException>(() => new TrellisQuantizer(Device, cb, 8, 2, 100)).ParamName);
        Assert.Equal("t", Assert.Throws<ArgumentOutOfRangeException>(() => new TrellisQuantizer(Device, cb, 8, 2, 2048)).ParamName);
        Assert.Throws<ArgumentException>(() => new TrellisQuantizer(Device, TrellisCodebook.RandomLut(10, 1, 0), 8, 2));

        using var q = new TrellisQuantizer(Device, cb, 8, 2, 32);
        var x = Rng.Gaussian(64, 1);
        x[40] = float.NaN;
        Assert.Contains("finite", Assert.Throws<ArgumentException>(() => q.Quantize(x, TailBiting.Approx)).Message, StringComparison.Ordinal);
        x[40] = float.PositiveInfinity;
        var acc = Device.Accelerator;
        using var xd = acc.Allocate1D(x);
        using var s = acc.Allocate1D<uint>(64);
        using var r = acc.Allocate1D<float>(64);
        using var m = acc.Allocate1D<float>(2);
        m.MemSet(123);
        var e = Assert.Throws<ArgumentException>(() => q.Quantize(xd.View, 2, TailBiting.Approx, s.View, r.View, m.View, default));
        Assert.Contains("NaN or infinite", e.Message, StringComparison.Ordinal);
        Assert.All(m.GetAsArray1D(), v => Assert.NotEqual(0f, v)); // nothing ran
        Assert.Throws<ArgumentException>(() => q.Quantize(xd.View, 3, TailBiting.Approx, s.View, r.View, m.View, default));
        Assert.Throws<ArgumentException>(() => q.Quantize(Rng.Gaussian(33, 1), TailBiting.Approx));
    }
}

public sealed class TrellisQuantizerTestsCpu() : TrellisQuantizerTests(BackendKind.Cpu);

[Trait("Category", "Gpu")]
public sealed class TrellisQuantizerTestsCuda() : TrellisQuantizerTests(BackendKind.Cuda);

[Trait("Category", "Gpu")]
public sealed class TrellisQuantizerTestsOpenCL() : TrellisQuantizerTests(BackendKind.OpenCL);
