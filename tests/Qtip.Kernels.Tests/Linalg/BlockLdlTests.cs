using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Linalg;
using Qtip.Kernels.Runtime;
using Qtip.Testing;
using Xunit;

namespace Qtip.Kernels.Tests.Linalg;

public abstract class BlockLdlTests(BackendKind backend) : BackendTest(backend)
{
    [Theory]
    [InlineData(16)]
    [InlineData(48)]
    [InlineData(80)]
    public void Factor_MatchesReferenceFeedbackMatrix(int n)
    {
        var h = LinalgReference.RandomSpd(n, seed: n);
        var acc = Device.Accelerator;
        using var hb = acc.Allocate1D(h);
        using var a = acc.Allocate1D<float>(n * n);
        using var status = acc.Allocate1D<int>(1);
        int failed = Device.Get<BlockLdl>().Factor(hb.View, n, a.View, status.View);
        Assert.Equal(-1, failed);
        var got = a.GetAsArray1D();
        var expected = LinalgReference.FeedbackMatrix(h, n);
        for (int i = 0; i < n * n; i++)
            Assert.True(Math.Abs(got[i] - expected[i]) < 1e-4, $"A[{i / n},{i % n}] = {got[i]}, expected {expected[i]}");
    }

    [Fact]
    public void Factor_ReportsTheFirstNonPositiveBlock()
    {
        const int n = 48;
        var h = LinalgReference.RandomSpd(n, seed: 5);
        h[(20 * n) + 20] = -5; // block 1 loses positive-definiteness
        var acc = Device.Accelerator;
        using var hb = acc.Allocate1D(h);
        using var a = acc.Allocate1D<float>(n * n);
        using var status = acc.Allocate1D<int>(1);
        Assert.Equal(1, Device.Get<BlockLdl>().Factor(hb.View, n, a.View, status.View));
    }

    [Fact]
    public void Diagonal_ReadsAndDamps()
    {
        const int n = 32;
        var h = LinalgReference.RandomSpd(n, seed: 9);
        var acc = Device.Accelerator;
        using var hb = acc.Allocate1D(h);
        using var d = acc.Allocate1D<double>(n);
        Device.Get<BlockLdl>().Diagonal(hb.View, n, d.View, 0.5);
        var diag = d.GetAsArray1D();
        var after = hb.GetAsArray1D();
        for (int i = 0; i < n; i++)
        {
            Assert.Equal(h[(i * n) + i], diag[i]);
            Assert.Equal(h[(i * n) + i] + 0.5, after[(i * n) + i], 12);
        }
    }

    [Fact]
    public void RejectsBadShape()
    {
        var acc = Device.Accelerator;
        using var hb = acc.Allocate1D<double>(20 * 20);
        using var a = acc.Allocate1D<float>(20 * 20);
        using var status = acc.Allocate1D<int>(1);
        var e = Assert.Throws<ArgumentException>(() => Device.Get<BlockLdl>().Factor(hb.View, 20, a.View, status.View));
        Assert.Contains("multiple of 16", e.Message, StringComparison.Ordinal);
    }
}
