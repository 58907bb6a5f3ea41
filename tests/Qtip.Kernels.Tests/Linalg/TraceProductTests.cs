using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Linalg;
using Qtip.Kernels.Runtime;
using Qtip.Testing;
using Xunit;

namespace Qtip.Kernels.Tests.Linalg;

public abstract class TraceProductTests(BackendKind backend) : BackendTest(backend)
{
    [Fact]
    public void EqualsQuadraticFormSum()
    {
        const int m = 24, n = 32;
        var d = Rng.Gaussian(m * n, 11);
        var h = LinalgReference.RandomSpd(n, 12);
        double expected = 0;
        for (int r = 0; r < m; r++)
        {
            for (int i = 0; i < n; i++)
            {
                for (int j = 0; j < n; j++)
                    expected += d[(r * n) + i] * h[(i * n) + j] * d[(r * n) + j];
            }
        }
        var acc = Device.Accelerator;
        using var db = acc.Allocate1D(d);
        using var hb = acc.Allocate1D(h);
        using var g = acc.Allocate1D<double>(n * n);
        g.MemSetToZero();
        Device.Get<Gram>().Accumulate(db.View, m, n, g.View);
        double got = Device.Get<TraceProduct>().Compute(hb.View, g.View, n);
        Assert.True(Math.Abs(got - expected) < 1e-4 * Math.Abs(expected), $"{got} vs {expected}");
    }
}
