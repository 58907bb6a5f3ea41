using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;
using Qtip.Testing;
using Xunit;

namespace Qtip.Kernels.Tests;

public abstract class TransposeTests(BackendKind backend) : BackendTest(backend)
{
    [Theory]
    [InlineData(1, 1)]
    [InlineData(3, 70)]
    [InlineData(64, 32)]
    [InlineData(45, 33)]
    public void MatchesLoops(int m, int n)
    {
        var a = Rng.Gaussian(m * n, seed: m + n);
        var acc = Device.Accelerator;
        using var input = acc.Allocate1D(a);
        using var output = acc.Allocate1D<float>(m * n);
        Device.Get<Transpose>().Apply(input.View, output.View, m, n);
        var b = output.GetAsArray1D();
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < n; j++)
                Assert.Equal(a[(i * n) + j], b[(j * m) + i]);
        }
    }
}
