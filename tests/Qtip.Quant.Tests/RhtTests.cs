using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels;
using Qtip.Kernels.Runtime;
using Qtip.Testing;
using Xunit;

namespace Qtip.Quant.Tests;

/// <summary>The two-sided RHT of weights and Hessians against dense float64 products.</summary>
public abstract class RhtTests(BackendKind backend) : BackendTest(backend)
{
    private static double[,] DenseHad(int n)
    {
        int k = HadamardMatrices.SmallFactor(n);
        var h = HadamardMatrices.Kronecker(HadamardMatrices.Get(k), HadamardMatrices.Sylvester(n / k));
        var d = new double[n, n];
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j < n; j++)
                d[i, j] = h[i, j] / Math.Sqrt(n);
        }
        return d;
    }

    /// <summary>Wr[i,j] = Σ_a Σ_b Had_m[a,i] SV[a] W[a,b] SU[b] Had_n[b,j].</summary>
    private static double[] DenseRotate(float[] w, int m, int n, float[] su, float[] sv)
    {
        var hm = DenseHad(m);
        var hn = DenseHad(n);
        var right = new double[m * n];
        for (int a = 0; a < m; a++)
        {
            for (int j = 0; j < n; j++)
            {
                double acc = 0;
                for (int b = 0; b < n; b++)
                    acc += w[(a * n) + b] * su[b] * hn[b, j];
                right[(a * n) + j] = acc;
            }
        }
        var result = new double[m * n];
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < n; j++)
            {
                double acc = 0;
                for (int a = 0; a < m; a++)
                    acc += hm[a, i] * sv[a] * right[(a * n) + j];
                result[(i * n) + j] = acc;
            }
        }
        return result;
    }

    [Theory]
    [InlineData(48, 64)]
    [InlineData(64, 384)]
    [InlineData(384, 48)]
    public void RotateWeight_MatchesDenseProduct_AndInverts(int m, int n)
    {
        var w = Rng.Gaussian(m * n, seed: m * n);
        var su = Rng.Signs(n, seed: 1);
        var sv = Rng.Signs(m, seed: 2);
        var acc = Device.Accelerator;
        using var wb = acc.Allocate1D(w);
        using var sub = acc.Allocate1D(su);
        using var svb = acc.Allocate1D(sv);
        using var scratch = acc.Allocate1D<float>(m * n);
        var rht = new Rht(Device);
        rht.RotateWeight(wb.View, m, n, sub.View, svb.View, scratch.View);
        var got = wb.GetAsArray1D();
        var expected = DenseRotate(w, m, n, su, sv);
        Assert.True(Rng.MaxAbsDiff(got, expected) < Tolerances.Fp32Transform, $"max |Δ| = {Rng.MaxAbsDiff(got, expected)}");

        rht.UnrotateWeight(wb.View, m, n, sub.View, svb.View, scratch.View);
        var back = wb.GetAsArray1D();
        Assert.True(Rng.MaxAbsDiff(back, w) < Tolerances.Fp32Transform, $"round trip max |Δ| = {Rng.MaxAbsDiff(back, w)}");
    }

    [Fact]
    public void RotateHessian_EqualsWeightRuleWithSameSigns_AndKeepsTrace()
    {
        const int n = 96;
        var x = Rng.Gaussian(n * 200, seed: 5);
        var h = new float[n * n];
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j < n; j++)
            {
                double acc = 0;
                for (int t = 0; t < 200; t++)
                    acc += x[(t * n) + i] * x[(t * n) + j];
                h[(i * n) + j] = (float)(acc / 200);
            }
        }
        var su = Rng.Signs(n, seed: 9);
        var acc2 = Device.Accelerator;
        using var hb = acc2.Allocate1D(h);
        using var sub = acc2.Allocate1D(su);
        using var scratch = acc2.Allocate1D<float>(n * n);
        new Rht(Device).RotateHessian(hb.View, n, sub.View, scratch.View);
        var got = hb.GetAsArray1D();
        // Hr = Had_nᵀ diag(SU) H diag(SU) Had_n is the weight rule with m = n and SV = SU.
        var expected = DenseRotate(h, n, n, su, su);
        Assert.True(Rng.MaxAbsDiff(got, expected) < Tolerances.Fp32Transform, $"max |Δ| = {Rng.MaxAbsDiff(got, expected)}");
        double traceH = 0, traceHr = 0;
        for (int i = 0; i < n; i++)
        {
            traceH += h[(i * n) + i];
            traceHr += got[(i * n) + i];
        }
        Assert.Equal(traceH, traceHr, 3);
    }

    [Fact]
    public void ActivationPath_ReconstructsMatVec()
    {
        // y = W x equals SV ⊙ Had_m (Wr · Had_nᵀ (SU ⊙ x)) — the quantized linear's forward with Ŵ = Wr.
        const int m = 48, n = 64;
        var w = Rng.Gaussian(m * n, seed: 12);
        var x = Rng.Gaussian(n, seed: 13);
        var su = Rng.Signs(n, seed: 14);
        var sv = Rng.Signs(m, seed: 15);
        var acc = Device.Accelerator;
        using var wb = acc.Allocate1D(w);
        using var sub = acc.Allocate1D(su);
        using var svb = acc.Allocate1D(sv);
        using var scratch = acc.Allocate1D<float>(m * n);
        using var xb = acc.Allocate1D(x);
        var rht = new Rht(Device);
        rht.RotateWeight(wb.View, m, n, sub.View, svb.View, scratch.View);
        rht.RotateInput(xb.View, 1, n, sub.View);
        var wr = wb.GetAsArray1D();
        var xr = xb.GetAsArray1D();
        var yr = new float[m];
        for (int i = 0; i < m; i++)
        {
            double s = 0;
            for (int j = 0; j < n; j++)
                s += wr[(i * n) + j] * xr[j];
            yr[i] = (float)s;
        }
        using var yb = acc.Allocate1D(yr);
        rht.UnrotateOutput(yb.View, 1, m, svb.View);
        var y = yb.GetAsArray1D();
        for (int i = 0; i < m; i++)
        {
            double expected = 0;
            for (int j = 0; j < n; j++)
                expected += w[(i * n) + j] * x[j];
            Assert.True(Math.Abs(y[i] - expected) < 1e-4, $"row {i}: {y[i]} vs {expected}");
        }
    }

    [Fact]
    public void RejectsMismatchedSigns()
    {
        var acc = Device.Accelerator;
        using var w = acc.Allocate1D<float>(48 * 64);
        using var su = acc.Allocate1D<float>(48);
        using var sv = acc.Allocate1D<float>(48);
        using var scratch = acc.Allocate1D<float>(48 * 64);
        var e = Assert.Throws<ArgumentException>(() => new Rht(Device).RotateWeight(w.View, 48, 64, su.View, sv.View, scratch.View));
        Assert.Contains("SU", e.Message, StringComparison.Ordinal);
    }
}
