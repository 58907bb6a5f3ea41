using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;
using Qtip.Model.Llama;
using Qtip.Testing;
using Xunit;

namespace Qtip.Model.Tests;

[RunOn(BackendKind.Cpu, BackendKind.Cuda)]
public abstract class DenseLinearTests(BackendKind backend) : BackendTest(backend)
{
    [Theory]
    [InlineData(WeightPrecision.Float32)]
    [InlineData(WeightPrecision.Float16)]
    public void WeightFloat32_ReturnsTheStoredWeights(WeightPrecision precision)
    {
        var w = Rng.Gaussian(6 * 16, seed: 3);
        using var layer = DenseLinear.FromHost(Device, w, 6, 16, precision);
        using var back = layer.WeightFloat32();
        var want = precision == WeightPrecision.Float32 ? w : w.Select(v => (float)(System.Half)v).ToArray();
        Assert.Equal(want, back.GetAsArray1D());
        Assert.Equal(6L * 16 * (precision == WeightPrecision.Float32 ? 4 : 2), layer.WeightBytes);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(5)]
    public void Forward_MatchesLoops(int rows)
    {
        int m = 7, n = 16;
        var w = Rng.Gaussian(m * n, seed: 1);
        var x = Rng.Gaussian(rows * n, seed: 2);
        using var layer = DenseLinear.FromHost(Device, w, m, n, WeightPrecision.Float32);
        using var xd = Device.Accelerator.Allocate1D(x);
        using var yd = Device.Accelerator.Allocate1D<float>(rows * m);
        layer.Forward(xd.View, yd.View, rows, Device.Accelerator.DefaultStream);
        var y = yd.GetAsArray1D();
        for (int r = 0; r < rows; r++)
        {
            for (int i = 0; i < m; i++)
            {
                double want = 0;
                for (int k = 0; k < n; k++)
                    want += (double)w[(i * n) + k] * x[(r * n) + k];
                Assert.True(Math.Abs(y[(r * m) + i] - want) < 1e-4, $"y[{r},{i}] = {y[(r * m) + i]}, want {want}");
            }
        }
    }
}
