using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Linalg;
using Qtip.Kernels.Runtime;
using Qtip.Testing;
using Xunit;

namespace Qtip.Kernels.Tests.Linalg;

public abstract class LdlqStepTests(BackendKind backend) : BackendTest(backend)
{
    private static int[] Permutation(int seed)
    {
        var p = Enumerable.Range(0, 256).ToArray();
        new Random(seed).Shuffle(p);
        return p;
    }

    [Theory]
    [InlineData(32, 64, 16)]
    [InlineData(48, 96, 0)]
    [InlineData(16, 48, 32)]
    public void Gather_AddsFeedbackInSequenceOrder(int m, int n, int j0)
    {
        var wr = Rng.Gaussian(m * n, 1);
        var r = Rng.Gaussian(m * n, 2);
        var a = Rng.Gaussian(n * n, 3);
        var perm = Permutation(4);
        var acc = Device.Accelerator;
        using var wrb = acc.Allocate1D(wr);
        using var rb = acc.Allocate1D(r);
        using var ab = acc.Allocate1D(a);
        using var pb = acc.Allocate1D(perm);
        using var tb = acc.Allocate1D<float>(m / 16 * 256);
        Device.Get<LdlqStep>().Gather(wrb.View, rb.View, ab.View, pb.View, tb.View, m, n, j0);
        var got = tb.GetAsArray1D();
        for (int i = 0; i < m; i++)
        {
            for (int c = 0; c < 16; c++)
            {
                double x = wr[(i * n) + j0 + c];
                for (int k = j0 + 16; k < n; k++)
                    x += r[(i * n) + k] * (double)a[(k * n) + j0 + c];
                int pos = ((i / 16) * 256) + perm[((i % 16) * 16) + c];
                Assert.True(Math.Abs(got[pos] - x) < 1e-4, $"row {i} col {c}: {got[pos]} vs {x}");
            }
        }
    }

    [Fact]
    public void Scatter_WritesReconstructionAndResidual()
    {
        const int m = 32, n = 48, j0 = 16;
        var wr = Rng.Gaussian(m * n, 5);
        var recon = Rng.Gaussian(m / 16 * 256, 6);
        var perm = Permutation(7);
        var acc = Device.Accelerator;
        using var wrb = acc.Allocate1D(wr);
        using var what = acc.Allocate1D<float>(m * n);
        using var rb = acc.Allocate1D<float>(m * n);
        using var pb = acc.Allocate1D(perm);
        using var recb = acc.Allocate1D(recon);
        Device.Get<LdlqStep>().Scatter(wrb.View, what.View, rb.View, pb.View, recb.View, m, n, j0);
        var w = what.GetAsArray1D();
        var res = rb.GetAsArray1D();
        for (int i = 0; i < m; i++)
        {
            for (int c = 0; c < 16; c++)
            {
                float v = recon[((i / 16) * 256) + perm[((i % 16) * 16) + c]];
                Assert.Equal(v, w[(i * n) + j0 + c]);
                Assert.Equal(wr[(i * n) + j0 + c] - v, res[(i * n) + j0 + c]);
            }
        }
    }
}
