using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;
using Qtip.Testing;
using Xunit;

namespace Qtip.Kernels.Tests;

/// <summary>The one-launch vector RHT (norm, signs, Hadamard, epilogue) against float64 references, on every backend.</summary>
public abstract class VectorRhtTests(BackendKind backend) : BackendTest(backend)
{
    /// <summary>Relative-to-magnitude tolerance of fp32 sums of up to n terms against float64.</summary>
    private const double Tolerance = 2e-5;

    private static float[] Signs(int count, int seed)
    {
        var r = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => r.Next(2) == 0 ? -1f : 1f).ToArray();
    }

    private static void AssertClose(double[] expected, float[] got, int offset, string what)
    {
        double scale = 1 + expected.Max(Math.Abs);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(got[offset + i] - expected[i]) < Tolerance * scale, $"{what}, element {i}: {got[offset + i]} vs {expected[i]}");
    }

    [Theory]
    [InlineData(128)]
    [InlineData(384)]
    [InlineData(1376)]
    [InlineData(2048)]
    public void NormedSharedInput_ThreeVectors_MatchTransposedReference(int n)
    {
        var x = Rng.Gaussian(n, seed: n);
        var w = Rng.Gaussian(n, seed: n + 1);
        var si = Signs(3 * n, n + 2);
        const float eps = 1e-5f;
        double ms = x.Sum(v => (double)v * v) / n;
        float rs = (float)(1 / Math.Sqrt(ms + eps));
        var normed = x.Select((v, i) => v * rs * w[i]).ToArray();
        var acc = Device.Accelerator;
        using var xb = acc.Allocate1D(x);
        using var wb = acc.Allocate1D(w);
        using var sb = acc.Allocate1D(si);
        using var y = acc.Allocate1D(Enumerable.Repeat(float.NaN, 3 * n).ToArray());
        Device.Get<VectorRht>().Apply(xb.View, 0, y.View, n, n, 3, transpose: true, RhtEpilogue.Store, wb.View, eps, sb.View, n);
        var got = y.GetAsArray1D();
        var dense = HadamardReference.Dense(n);
        for (int v = 0; v < 3; v++)
            AssertClose(HadamardReference.Apply(normed, 1, n, true, si[(v * n)..((v + 1) * n)], null, dense), got, v * n, $"n = {n}, vector {v}");
    }

    [Theory]
    [InlineData(384)]
    [InlineData(2048)]
    public void OutSignAddInto_MatchesReferencePlusResidual(int n)
    {
        var src = Rng.Gaussian(2 * n, seed: 7);
        var so = Signs(2 * n, 8);
        var residual = Rng.Gaussian(2 * n, seed: 9);
        var acc = Device.Accelerator;
        using var sb = acc.Allocate1D(src);
        using var ob = acc.Allocate1D(so);
        using var dst = acc.Allocate1D(residual);
        Device.Get<VectorRht>().Apply(sb.View, n, dst.View, n, n, 2, transpose: false, RhtEpilogue.AddInto, outSign: ob.View, outStride: n);
        var got = dst.GetAsArray1D();
        var dense = HadamardReference.Dense(n);
        for (int v = 0; v < 2; v++)
        {
            var e = HadamardReference.Apply(src[(v * n)..((v + 1) * n)], 1, n, false, null, so[(v * n)..((v + 1) * n)], dense);
            for (int i = 0; i < n; i++)
                e[i] += residual[(v * n) + i];
            AssertClose(e, got, v * n, $"n = {n}, vector {v}");
        }
    }

    [Fact]
    public void SwiGluPair_MatchesSiluOfGateTimesUp()
    {
        const int n = 1376;
        var src = Rng.Gaussian(2 * n, seed: 11);
        var so = Signs(2 * n, 12);
        var acc = Device.Accelerator;
        using var sb = acc.Allocate1D(src);
        using var ob = acc.Allocate1D(so);
        using var dst = acc.Allocate1D(Enumerable.Repeat(float.NaN, n).ToArray());
        Device.Get<VectorRht>().Apply(sb.View, n, dst.View, 0, n, 2, transpose: false, RhtEpilogue.SwiGlu, outSign: ob.View, outStride: n);
        var dense = HadamardReference.Dense(n);
        var g = HadamardReference.Apply(src[..n], 1, n, false, null, so[..n], dense);
        var u = HadamardReference.Apply(src[n..], 1, n, false, null, so[n..], dense);
        var e = g.Select((gv, i) => gv / (1 + Math.Exp(-gv)) * u[i]).ToArray();
        AssertClose(e, dst.GetAsArray1D(), 0, "SwiGLU");
    }

    [Fact]
    public void RejectsShortDestination()
    {
        var acc = Device.Accelerator;
        using var a = acc.Allocate1D<float>(256);
        using var b = acc.Allocate1D<float>(100);
        var e = Assert.ThrowsAny<ArgumentException>(() => Device.Get<VectorRht>().Apply(a.View, 0, b.View, 128, 128, 1, false, RhtEpilogue.Store));
        Assert.Contains("dst", e.Message, StringComparison.Ordinal);
    }
}
