using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Llama;
using Qtip.Kernels.Runtime;
using Qtip.Testing;
using Xunit;
using static Qtip.Kernels.Tests.Llama.LlamaReference;

namespace Qtip.Kernels.Tests.Llama;

public abstract class MatVecTests(BackendKind backend, KernelStyle style = KernelStyle.Grouped) : BackendTest(backend)
{
    private MatVec MatVecOp
    {
        get
        {
            var op = Device.Get<MatVec>();
            SkipUnsupportedStyle(style);
            op.Style = style;
            return op;
        }
    }

    [Theory]
    [InlineData(7, 5, 3, 64, true)]
    [InlineData(7, 5, 3, 64, false)]
    [InlineData(9, 0, 0, 20, true)] // n not a multiple of 8: scalar path
    [InlineData(33, 0, 0, 8, false)] // short rows: several rows per warp
    [InlineData(4, 4, 0, 384, true)]
    public void Stacked_MatchesLoops(int m0, int m1, int m2, int n, bool half)
    {
        SkipWithoutFloat16(half);
        int m = m0 + m1 + m2;
        var w = Rng.Gaussian(m * n, seed: m + n);
        if (half)
            w = RoundHalf(w);
        var x = Rng.Gaussian(n, seed: 7);
        var acc = Device.Accelerator;
        using var xd = acc.Allocate1D(x);
        using var yd = acc.Allocate1D<float>(m);
        var mv = MatVecOp;
        // Three separate buffers, as a model holds q, k, v.
        var w0 = w[..(m0 * n)];
        var w1 = w[(m0 * n)..((m0 + m1) * n)];
        var w2 = w[((m0 + m1) * n)..];
        if (half)
        {
            using var b0 = acc.Allocate1D(ToHalf(w0));
            using var b1 = acc.Allocate1D(ToHalf(w1.Length > 0 ? w1 : [0f]));
            using var b2 = acc.Allocate1D(ToHalf(w2.Length > 0 ? w2 : [0f]));
            mv.Apply(b0.View, m0, b1.View, m1, b2.View, m2, xd.View, yd.View, n);
            Compare(yd.GetAsArray1D(), MatVec(w, x, m, n));
        }
        else
        {
            using var b0 = acc.Allocate1D(w0);
            using var b1 = acc.Allocate1D(w1.Length > 0 ? w1 : [0f]);
            using var b2 = acc.Allocate1D(w2.Length > 0 ? w2 : [0f]);
            mv.Apply(b0.View, m0, b1.View, m1, b2.View, m2, xd.View, yd.View, n);
            Compare(yd.GetAsArray1D(), MatVec(w, x, m, n));
        }
    }

    [Theory]
    [InlineData(6, 32, true)]
    [InlineData(6, 32, false)]
    [InlineData(5, 12, true)]
    public void SwiGlu_MatchesLoops(int m, int n, bool half)
    {
        SkipWithoutFloat16(half);
        var g = Rng.Gaussian(m * n, seed: 1);
        var u = Rng.Gaussian(m * n, seed: 2);
        if (half)
        {
            g = RoundHalf(g);
            u = RoundHalf(u);
        }
        var x = Rng.Gaussian(n, seed: 3);
        var acc = Device.Accelerator;
        using var xd = acc.Allocate1D(x);
        using var yd = acc.Allocate1D<float>(m);
        if (half)
        {
            using var gd = acc.Allocate1D(ToHalf(g));
            using var ud = acc.Allocate1D(ToHalf(u));
            MatVecOp.SwiGlu(gd.View, ud.View, m, xd.View, yd.View, n);
        }
        else
        {
            using var gd = acc.Allocate1D(g);
            using var ud = acc.Allocate1D(u);
            MatVecOp.SwiGlu(gd.View, ud.View, m, xd.View, yd.View, n);
        }
        var gy = MatVec(g, x, m, n);
        var uy = MatVec(u, x, m, n);
        Compare(yd.GetAsArray1D(), gy.Select((v, i) => Silu(v) * uy[i]).ToArray());
    }

    /// <summary>Uploads W as fp16 (values rounded to fp16 first) or fp32 and runs <paramref name="run"/> with the device view.</summary>
    private void WithWeights(float[] w, bool half, Action<ArrayView<ILGPU.Half>> runHalf, Action<ArrayView<float>> runFloat)
    {
        var acc = Device.Accelerator;
        if (half)
        {
            using var b = acc.Allocate1D(ToHalf(w));
            runHalf(b.View);
        }
        else
        {
            using var b = acc.Allocate1D(w);
            runFloat(b.View);
        }
    }

    [Theory]
    [InlineData(9, 296, true)]   // 37 chunks of 8: unrolled steps with a masked tail
    [InlineData(9, 296, false)]
    [InlineData(5, 20, true)]    // scalar path
    [InlineData(40, 64, false)]
    [InlineData(10, 296, true)]  // even m: two rows per task (AddPair), masked tail
    [InlineData(8, 20, false)]   // even m, scalar path
    public void AddTo_AddsIntoY(int m, int n, bool half)
    {
        SkipWithoutFloat16(half);
        var w = Rng.Gaussian(m * n, seed: 21);
        if (half)
            w = RoundHalf(w);
        var x = Rng.Gaussian(n, seed: 22);
        var y0 = Rng.Gaussian(m, seed: 23);
        using var xd = Device.Accelerator.Allocate1D(x);
        using var yd = Device.Accelerator.Allocate1D(y0);
        WithWeights(w, half, b => MatVecOp.AddTo(b, m, xd.View, yd.View, n), b => MatVecOp.AddTo(b, m, xd.View, yd.View, n));
        Compare(yd.GetAsArray1D(), MatVec(w, x, m, n).Select((v, i) => v + y0[i]).ToArray());
    }

    [Theory]
    [InlineData(7, 296, true)]
    [InlineData(7, 296, false)]
    [InlineData(3, 20, false)]   // scalar path
    [InlineData(8, 296, true)]   // even m: two rows per task (StorePair)
    [InlineData(6, 20, false)]   // even m, scalar path
    public void ApplyNormed_NormalisesTheInput(int m, int n, bool half)
    {
        SkipWithoutFloat16(half);
        var w = Rng.Gaussian(m * n, seed: 31);
        if (half)
            w = RoundHalf(w);
        var x = Rng.Gaussian(n, seed: 32).Select(v => 3 * v).ToArray();
        var g = Rng.Gaussian(n, seed: 33);
        var xn = RmsNorm(x, g, 1, n, 1e-5).Select(v => (float)v).ToArray();
        var acc = Device.Accelerator;
        using var xd = acc.Allocate1D(x);
        using var gd = acc.Allocate1D(g);
        using var yd = acc.Allocate1D<float>(m);
        var norm = new InputNorm(gd.View, 1e-5f);
        WithWeights(w, half, b => MatVecOp.ApplyNormed(b, m, xd.View, norm, yd.View, n), b => MatVecOp.ApplyNormed(b, m, xd.View, norm, yd.View, n));
        Compare(yd.GetAsArray1D(), MatVec(w, xn, m, n));
        Assert.Equal(x, xd.GetAsArray1D());
    }

    [Theory]
    [InlineData(6, 296, true)]
    [InlineData(5, 40, false)]
    [InlineData(4, 12, true)]    // scalar path
    public void SwiGluNormed_MatchesLoops(int m, int n, bool half)
    {
        SkipWithoutFloat16(half);
        var gw = Rng.Gaussian(m * n, seed: 41);
        var uw = Rng.Gaussian(m * n, seed: 42);
        if (half)
        {
            gw = RoundHalf(gw);
            uw = RoundHalf(uw);
        }
        var x = Rng.Gaussian(n, seed: 43).Select(v => 0.5f * v).ToArray();
        var g = Rng.Gaussian(n, seed: 44);
        var xn = RmsNorm(x, g, 1, n, 1e-6).Select(v => (float)v).ToArray();
        var acc = Device.Accelerator;
        using var xd = acc.Allocate1D(x);
        using var nd = acc.Allocate1D(g);
        using var yd = acc.Allocate1D<float>(m);
        var norm = new InputNorm(nd.View, 1e-6f);
        if (half)
        {
            using var gd = acc.Allocate1D(ToHalf(gw));
            using var ud = acc.Allocate1D(ToHalf(uw));
            MatVecOp.SwiGluNormed(gd.View, ud.View, m, xd.View, norm, yd.View, n);
        }
        else
        {
            using var gd = acc.Allocate1D(gw);
            using var ud = acc.Allocate1D(uw);
            MatVecOp.SwiGluNormed(gd.View, ud.View, m, xd.View, norm, yd.View, n);
        }
        var gy = MatVec(gw, xn, m, n);
        var uy = MatVec(uw, xn, m, n);
        Compare(yd.GetAsArray1D(), gy.Select((v, i) => Silu(v) * uy[i]).ToArray());
    }

    [Theory]
    [InlineData(4, 2, 8, 64, 3, true)]    // GQA
    [InlineData(2, 2, 16, 296, 5, false)]
    [InlineData(3, 1, 4, 20, 0, true)]    // scalar path, position 0
    public void QkvRope_MatchesNormMatVecRopeAndCacheWrite(int heads, int kvHeads, int hd, int n, int position, bool half)
    {
        SkipWithoutFloat16(half);
        int qDim = heads * hd, kvDim = kvHeads * hd, half2 = hd / 2, maxPos = position + 2;
        var wq = Rng.Gaussian(qDim * n, seed: 51);
        var wk = Rng.Gaussian(kvDim * n, seed: 52);
        var wv = Rng.Gaussian(kvDim * n, seed: 53);
        if (half)
        {
            wq = RoundHalf(wq);
            wk = RoundHalf(wk);
            wv = RoundHalf(wv);
        }
        var x = Rng.Gaussian(n, seed: 54).Select(v => 2 * v).ToArray();
        var g = Rng.Gaussian(n, seed: 55);
        var xn = RmsNorm(x, g, 1, n, 1e-5).Select(v => (float)v).ToArray();
        var inv = RopeTable.DefaultFrequencies(hd, 10000.0);
        var (cos, sin) = RopeTable.Build(inv, maxPos);
        var acc = Device.Accelerator;
        using var xd = acc.Allocate1D(x);
        using var gd = acc.Allocate1D(g);
        using var qd = acc.Allocate1D<float>(qDim);
        using var kc = acc.Allocate1D(Enumerable.Repeat(7f, maxPos * kvDim).ToArray());
        using var vc = acc.Allocate1D(Enumerable.Repeat(7f, maxPos * kvDim).ToArray());
        using var cd = acc.Allocate1D(cos);
        using var sd = acc.Allocate1D(sin);
        var norm = new InputNorm(gd.View, 1e-5f);
        if (half)
        {
            using var bq = acc.Allocate1D(ToHalf(wq));
            using var bk = acc.Allocate1D(ToHalf(wk));
            using var bv = acc.Allocate1D(ToHalf(wv));
            MatVecOp.QkvRope(bq.View, bk.View, bv.View, xd.View, norm, qd.View, kc.View, vc.View, cd.View, sd.View, position, heads, kvHeads, hd, n);
        }
        else
        {
            using var bq = acc.Allocate1D(wq);
            using var bk = acc.Allocate1D(wk);
            using var bv = acc.Allocate1D(wv);
            MatVecOp.QkvRope(bq.View, bk.View, bv.View, xd.View, norm, qd.View, kc.View, vc.View, cd.View, sd.View, position, heads, kvHeads, hd, n);
        }
        double[] Rotate(double[] y, int count)
        {
            var r = new double[y.Length];
            for (int h = 0; h < count; h++)
            {
                for (int j = 0; j < half2; j++)
                {
                    double angle = (float)(position * inv[j]);
                    double c = Math.Cos(angle), s = Math.Sin(angle);
                    double a = y[(h * hd) + j], b = y[(h * hd) + j + half2];
                    r[(h * hd) + j] = (a * c) - (b * s);
                    r[(h * hd) + j + half2] = (b * c) + (a * s);
                }
            }
            return r;
        }
        Compare(qd.GetAsArray1D(), Rotate(MatVec(wq, xn, qDim, n), heads));
        var kAll = kc.GetAsArray1D();
        var vAll = vc.GetAsArray1D();
        Compare(kAll.AsSpan(position * kvDim, kvDim).ToArray(), Rotate(MatVec(wk, xn, kvDim, n), kvHeads));
        Compare(vAll.AsSpan(position * kvDim, kvDim).ToArray(), MatVec(wv, xn, kvDim, n));
        for (int i = 0; i < kAll.Length; i++)
        {
            if (i / kvDim != position)
            {
                Assert.Equal(7f, kAll[i]);
                Assert.Equal(7f, vAll[i]);
            }
        }
    }

    [Fact]
    public void Apply_UnalignedInputTakesTheScalarPath()
    {
        int m = 5, n = 32;
        var w = Rng.Gaussian(m * n, seed: 61);
        var x = Rng.Gaussian(n + 1, seed: 62);
        using var xd = Device.Accelerator.Allocate1D(x);
        using var yd = Device.Accelerator.Allocate1D<float>(m);
        WithWeights(w, false, _ => { }, b => MatVecOp.Apply(b, m, xd.View.SubView(1, n), yd.View, n));
        Compare(yd.GetAsArray1D(), MatVec(w, x[1..], m, n));
    }

    [Fact]
    public void Apply_ThrowsForShortOutput()
    {
        var acc = Device.Accelerator;
        using var w = acc.Allocate1D<float>(16 * 8);
        using var x = acc.Allocate1D<float>(8);
        using var y = acc.Allocate1D<float>(15);
        var e = Assert.Throws<ArgumentException>(() => MatVecOp.Apply(w.View, 16, x.View, y.View, 8));
        Assert.Contains("16", e.Message, StringComparison.Ordinal);
    }

    private static void Compare(float[] got, double[] want)
    {
        for (int i = 0; i < want.Length; i++)
            Assert.True(Math.Abs(got[i] - want[i]) <= LlamaTolerances.Dot * (1 + Math.Abs(want[i])), $"y[{i}] = {got[i]}, want {want[i]}");
    }
}
