using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Linalg;
using Qtip.Kernels.Runtime;
using Qtip.Testing;
using Xunit;

namespace Qtip.Kernels.Tests.Linalg;

public abstract class GramTests(BackendKind backend) : BackendTest(backend)
{
    [Theory]
    [InlineData(70, 48)]
    [InlineData(300, 16)]
    [InlineData(5, 40)]
    public void AccumulateThenSymmetrize_MatchesReference(int rows, int n)
    {
        var x = Rng.Gaussian(rows * n, seed: rows + n);
        var acc = Device.Accelerator;
        using var xb = acc.Allocate1D(x);
        using var h = acc.Allocate1D<double>(n * n);
        h.MemSetToZero();
        var gram = Device.Get<Gram>();
        // Two batches accumulate into one sum.
        int half = rows / 2;
        gram.Accumulate(xb.View.SubView(0, half * n), half, n, h.View);
        gram.Accumulate(xb.View.SubView(half * n, (rows - half) * n), rows - half, n, h.View);
        gram.Symmetrize(h.View, n, 1.0 / rows);
        var got = h.GetAsArray1D();
        var expected = LinalgReference.Gram(x, rows, n);
        for (int i = 0; i < n * n; i++)
            Assert.True(Math.Abs(got[i] - (expected[i] / rows)) < 1e-5, $"entry {i}: {got[i]} vs {expected[i] / rows}");
    }
}
