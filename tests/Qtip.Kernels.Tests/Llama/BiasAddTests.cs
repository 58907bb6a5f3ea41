using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Llama;
using Qtip.Kernels.Runtime;
using Qtip.Testing;
using Xunit;

namespace Qtip.Kernels.Tests.Llama;

public abstract class BiasAddTests(BackendKind backend) : BackendTest(backend)
{
    [Theory]
    [InlineData(1, 48)]
    [InlineData(5, 37)]
    public void MatchesLoops(int rows, int m)
    {
        var y = Rng.Gaussian(rows * m, seed: 1);
        var b = Rng.Gaussian(m, seed: 2);
        var acc = Device.Accelerator;
        using var yd = acc.Allocate1D(y);
        using var bd = acc.Allocate1D(b);
        Device.Get<BiasAdd>().Apply(yd.View, bd.View, rows, m);
        var got = yd.GetAsArray1D();
        for (int r = 0; r < rows; r++)
        {
            for (int j = 0; j < m; j++)
                Assert.Equal(y[(r * m) + j] + b[j], got[(r * m) + j]);
        }
    }

    [Fact]
    public void Apply_ThrowsForShortBias()
    {
        using var y = Device.Accelerator.Allocate1D<float>(12);
        using var b = Device.Accelerator.Allocate1D<float>(3);
        var e = Assert.Throws<ArgumentException>(() => Device.Get<BiasAdd>().Apply(y.View, b.View, 3, 4));
        Assert.Contains("bias", e.Message, StringComparison.Ordinal);
    }
}
