using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Llama;
using Qtip.Kernels.Runtime;
using Qtip.Testing;
using Xunit;
using static Qtip.Kernels.Tests.Llama.LlamaReference;

namespace Qtip.Kernels.Tests.Llama;

public abstract class MatMulTests(BackendKind backend, KernelStyle style = KernelStyle.Grouped) : BackendTest(backend)
{
    private MatMul MatMulOp
    {
        get
        {
            var op = Device.Get<MatMul>();
            SkipUnsupportedStyle(style);
            op.Style = style;
            return op;
        }
    }

    [Theory]
    [InlineData(5, 19, 40, true)]
    [InlineData(5, 19, 40, false)]
    [InlineData(1, 3, 7, false)]
    [InlineData(70, 33, 48, true)]
    public void MatchesLoops(int rows, int m, int n, bool half)
    {
        SkipWithoutFloat16(half);
        var w = Rng.Gaussian(m * n, seed: rows + m);
        if (half)
            w = RoundHalf(w);
        var x = Rng.Gaussian(rows * n, seed: n);
        var acc = Device.Accelerator;
        using var xd = acc.Allocate1D(x);
        using var yd = acc.Allocate1D<float>(rows * m);
        if (half)
        {
            using var wd = acc.Allocate1D(ToHalf(w));
            MatMulOp.Apply(wd.View, xd.View, yd.View, rows, m, n);
        }
        else
        {
            using var wd = acc.Allocate1D(w);
            MatMulOp.Apply(wd.View, xd.View, yd.View, rows, m, n);
        }
        var y = yd.GetAsArray1D();
        for (int r = 0; r < rows; r++)
        {
            var want = MatVec(w, x[(r * n)..((r + 1) * n)], m, n);
            for (int i = 0; i < m; i++)
                Assert.True(Math.Abs(y[(r * m) + i] - want[i]) <= LlamaTolerances.Dot * (1 + Math.Abs(want[i])), $"Y[{r},{i}] = {y[(r * m) + i]}, want {want[i]}");
        }
    }

    /// <summary>
    /// fp16 weights with n a multiple of 32: on CUDA the tensor-core kernel (X rounded to fp16 on the way in, fp32
    /// accumulation), elsewhere the SIMT kernels. X is drawn fp16-representable, so every path computes the same exact
    /// products and differs from the loops only by fp32 summation order. Sizes span two 64×64 tiles with ragged edges
    /// and three k chunks of 32.
    /// </summary>
    [Theory]
    [InlineData(67, 72, 96)]
    [InlineData(1, 64, 32)]
    public void Fp16WeightsWithKChunksOf32_MatchLoops(int rows, int m, int n)
    {
        SkipWithoutFloat16();
        var w = RoundHalf(Rng.Gaussian(m * n, seed: 3 * m));
        var x = RoundHalf(Rng.Gaussian(rows * n, seed: 5 * n));
        var acc = Device.Accelerator;
        using var xd = acc.Allocate1D(x);
        using var yd = acc.Allocate1D(Enumerable.Repeat(float.NaN, rows * m).ToArray());
        using var wd = acc.Allocate1D(ToHalf(w));
        MatMulOp.Apply(wd.View, xd.View, yd.View, rows, m, n);
        var y = yd.GetAsArray1D();
        for (int r = 0; r < rows; r++)
        {
            var want = MatVec(w, x[(r * n)..((r + 1) * n)], m, n);
            for (int i = 0; i < m; i++)
                Assert.True(Math.Abs(y[(r * m) + i] - want[i]) <= LlamaTolerances.Dot * (1 + Math.Abs(want[i])), $"Y[{r},{i}] = {y[(r * m) + i]}, want {want[i]}");
        }
    }

    [Fact]
    public void Apply_ThrowsForShortWeights()
    {
        var acc = Device.Accelerator;
        using var w = acc.Allocate1D<float>(10);
        using var x = acc.Allocate1D<float>(8);
        using var y = acc.Allocate1D<float>(8);
        var e = Assert.Throws<ArgumentException>(() => MatMulOp.Apply(w.View, x.View, y.View, 2, 4, 4));
        Assert.Contains("4×4", e.Message, StringComparison.Ordinal);
    }
}
