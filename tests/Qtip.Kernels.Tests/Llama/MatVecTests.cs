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

public sealed class MatVecTestsCpu() : MatVecTests(BackendKind.Cpu, KernelStyle.Serial);

public sealed class MatVecTestsCpuGrouped() : MatVecTests(BackendKind.Cpu, KernelStyle.Grouped);

[Trait("Category", "Gpu")]
public sealed class MatVecTestsCuda() : MatVecTests(BackendKind.Cuda);

[Trait("Category", "Gpu")]
public sealed class MatVecTestsOpenCL() : MatVecTests(BackendKind.OpenCL);
