using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Llama;
using Qtip.Kernels.Runtime;
using Qtip.Testing;
using Xunit;
using static Qtip.Kernels.Tests.Llama.LlamaReference;

namespace Qtip.Kernels.Tests.Llama;

public abstract class EmbeddingTests(BackendKind backend) : BackendTest(backend)
{
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void GathersRows(bool half)
    {
        SkipWithoutFloat16(half);
        int vocab = 11, dim = 6;
        var table = Rng.Gaussian(vocab * dim, seed: 5);
        if (half)
            table = RoundHalf(table);
        int[] ids = [3, 0, 10, 3];
        var acc = Device.Accelerator;
        using var idd = acc.Allocate1D(ids);
        using var xd = acc.Allocate1D<float>(ids.Length * dim);
        if (half)
        {
            using var t = acc.Allocate1D(ToHalf(table));
            Device.Get<Embedding>().Apply(t.View, vocab, dim, idd.View, xd.View, ids.Length);
        }
        else
        {
            using var t = acc.Allocate1D(table);
            Device.Get<Embedding>().Apply(t.View, vocab, dim, idd.View, xd.View, ids.Length);
        }
        var x = xd.GetAsArray1D();
        for (int r = 0; r < ids.Length; r++)
        {
            for (int d = 0; d < dim; d++)
                Assert.Equal(table[(ids[r] * dim) + d], x[(r * dim) + d]);
        }
    }

    [Fact]
    public void CheckIds_ThrowsOutsideVocabulary()
    {
        var e = Assert.Throws<InvalidInputException>(() => Embedding.CheckIds([1, 2, 11], 11));
        Assert.Contains("11", e.Message, StringComparison.Ordinal);
    }
}

public abstract class RmsNormTests(BackendKind backend, KernelStyle style = KernelStyle.Grouped) : BackendTest(backend)
{
    private RmsNorm RmsNormOp
    {
        get
        {
            var op = Device.Get<RmsNorm>();
            SkipUnsupportedStyle(style);
            op.Style = style;
            return op;
        }
    }

    [Theory]
    [InlineData(3, 40, false)]
    [InlineData(2, 128, true)]
    [InlineData(1, 5, true)]
    public void MatchesLoops(int rows, int n, bool residual)
    {
        var x = Rng.Gaussian(rows * n, seed: n);
        var res = Rng.Gaussian(rows * n, seed: n + 1);
        var w = Rng.Gaussian(n, seed: 3);
        var acc = Device.Accelerator;
        using var xd = acc.Allocate1D(x);
        using var rd = acc.Allocate1D(res);
        using var wd = acc.Allocate1D(w);
        using var yd = acc.Allocate1D<float>(rows * n);
        RmsNormOp.Apply(xd.View, residual ? rd.View : null, wd.View, yd.View, rows, n, 1e-5f);
        var sum = residual ? x.Select((v, i) => v + res[i]).ToArray() : x;
        var want = RmsNorm(sum, w, rows, n, 1e-5);
        var y = yd.GetAsArray1D();
        var xAfter = xd.GetAsArray1D();
        for (int i = 0; i < want.Length; i++)
        {
            Assert.True(Math.Abs(y[i] - want[i]) <= LlamaTolerances.Dot * (1 + Math.Abs(want[i])), $"y[{i}] = {y[i]}, want {want[i]}");
            Assert.Equal(sum[i], xAfter[i]);
        }
    }
}

public abstract class SwiGluTests(BackendKind backend) : BackendTest(backend)
{
    [Fact]
    public void MatchesLoops()
    {
        int count = 37;
        var g = Rng.Gaussian(count, seed: 1).Select(v => v * 4).ToArray();
        var u = Rng.Gaussian(count, seed: 2);
        var acc = Device.Accelerator;
        using var gd = acc.Allocate1D(g);
        using var ud = acc.Allocate1D(u);
        using var hd = acc.Allocate1D<float>(count);
        Device.Get<SwiGlu>().Apply(gd.View, ud.View, hd.View, count);
        var h = hd.GetAsArray1D();
        for (int i = 0; i < count; i++)
        {
            double want = Silu(g[i]) * u[i];
            Assert.True(Math.Abs(h[i] - want) <= LlamaTolerances.Transcendental * (1 + Math.Abs(want)), $"h[{i}] = {h[i]}, want {want}");
        }
    }
}

public abstract class HalfToFloatAndRandomFillTests(BackendKind backend) : BackendTest(backend)
{
    [Fact]
    public void HalfToFloat_IsExact()
    {
        SkipWithoutFloat16();
        var x = RoundHalf(Rng.Gaussian(50, seed: 9));
        var acc = Device.Accelerator;
        using var h = acc.Allocate1D(ToHalf(x));
        using var f = acc.Allocate1D<float>(50);
        Device.Get<HalfToFloat>().Apply(h.View, f.View);
        Assert.Equal(x, f.GetAsArray1D());
    }

    /// <summary>On a device without fp16 every fp16 variant is refused before it is compiled, naming the op and the device.</summary>
    [Fact]
    public void Float16Variants_ThrowNotSupportedWithoutFloat16()
    {
        if (Device.SupportsFloat16)
            Assert.Skip($"{Device} has fp16");
        var acc = Device.Accelerator;
        using var h = acc.Allocate1D<ILGPU.Half>(64);
        using var f = acc.Allocate1D<float>(64);
        using var ids = acc.Allocate1D<int>(1);
        var cases = new (string Op, Action Run)[]
        {
            ("HalfToFloat", () => Device.Get<HalfToFloat>().Apply(h.View, f.View)),
            ("RandomFill", () => Device.Get<RandomFill>().Apply(h.View, 1, 1f)),
            ("Embedding", () => Device.Get<Embedding>().Apply(h.View, 8, 8, ids.View, f.View, 1)),
            ("MatVec", () => Device.Get<MatVec>().Apply(h.View, 8, f.View, f.View, 8)),
            ("MatMul", () => Device.Get<MatMul>().Apply(h.View, f.View, f.View, 1, 8, 8)),
        };
        foreach (var (op, run) in cases)
        {
            var e = Assert.Throws<NotSupportedException>(run);
            Assert.Contains(op, e.Message, StringComparison.Ordinal);
            Assert.Contains(Device.Name, e.Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void RandomFill_IsSeededAndInRange()
    {
        var acc = Device.Accelerator;
        using var a = acc.Allocate1D<float>(1000);
        using var b = acc.Allocate1D<float>(1000);
        var fill = Device.Get<RandomFill>();
        fill.Apply(a.View, 42, 0.5f);
        fill.Apply(b.View, 43, 0.5f);
        var va = a.GetAsArray1D();
        var vb = b.GetAsArray1D();
        Assert.All(va, v => Assert.InRange(v, -0.5f, 0.5f));
        Assert.Equal(RandomFill.Uniform(42, 17) * 0.5f, va[17]);
        Assert.NotEqual(va, vb);
        Assert.InRange(va.Average(), -0.05, 0.05);
    }
}
