using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;
using Qtip.Testing;
using Xunit;

namespace Qtip.Kernels.Tests;

/// <summary>The Hadamard kernels against float64 references, on every backend.</summary>
public abstract class HadamardTests(BackendKind backend) : BackendTest(backend)
{
    public static TheoryData<int> SmallOrders => [.. HadamardMatrices.Orders];

    private float[] Run(float[] x, int rows, int n, bool transpose, float[]? si, float[]? so, float scale = 1f)
    {
        var acc = Device.Accelerator;
        using var data = acc.Allocate1D(x);
        using var s0 = acc.Allocate1D(si ?? [0f]);
        using var s1 = acc.Allocate1D(so ?? [0f]);
        Device.Get<Hadamard>().Apply(data.View, rows, n, transpose,
            si is null ? null : s0.View, so is null ? null : s1.View, scale);
        return data.GetAsArray1D();
    }

    [Theory]
    [MemberData(nameof(SmallOrders))]
    public void EveryOrder_MatchesDenseProduct(int k)
    {
        foreach (int pow2 in new[] { 1, 2, 8 })
        {
            int n = k * pow2;
            const int rows = 3;
            var x = Rng.Gaussian(rows * n, seed: k + pow2);
            var si = Rng.Signs(n, seed: 7 * k);
            var so = Rng.Signs(n, seed: 11 * k);
            foreach (bool transpose in new[] { false, true })
            {
                var expected = HadamardReference.Apply(x, rows, n, transpose, si, so);
                var got = Run(x, rows, n, transpose, si, so);
                Assert.True(Rng.MaxAbsDiff(got, expected) < Tolerances.Fp32Transform,
                    $"n = {k}·{pow2}, transpose = {transpose}: max |Δ| = {Rng.MaxAbsDiff(got, expected)}");
            }
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    [InlineData(8)]
    [InlineData(16)]
    [InlineData(32)]
    [InlineData(64)]
    [InlineData(128)]
    [InlineData(512)]
    [InlineData(2048)]
    [InlineData(8192)]
    [InlineData(16384)]
    public void PowerOfTwo_MatchesFwht(int n)
    {
        int rows = n >= 4096 ? 1 : 3;
        var x = Rng.Gaussian(rows * n, seed: n);
        var si = Rng.Signs(n, seed: n + 1);
        var got = Run(x, rows, n, transpose: false, si, null, scale: 2f);
        var v = new double[n];
        double maxDiff = 0;
        for (int r = 0; r < rows; r++)
        {
            for (int j = 0; j < n; j++)
                v[j] = x[(r * n) + j] * si[j];
            HadamardReference.Fwht(v);
            for (int j = 0; j < n; j++)
                maxDiff = Math.Max(maxDiff, Math.Abs(got[(r * n) + j] - (2.0 * v[j] / Math.Sqrt(n))));
        }
        Assert.True(maxDiff < Tolerances.Fp32Transform, $"n = {n}: max |Δ| = {maxDiff}");
    }

    [Theory]
    [InlineData(384)]
    [InlineData(1376)]
    [InlineData(256)]
    [InlineData(12 * 1024)]
    public void RoundTrip_IsIdentity(int n)
    {
        const int rows = 2;
        var x = Rng.Gaussian(rows * n, seed: 3);
        var s = Rng.Signs(n, seed: 4);
        var acc = Device.Accelerator;
        using var data = acc.Allocate1D(x);
        using var sign = acc.Allocate1D(s);
        var had = Device.Get<Hadamard>();
        had.Apply(data.View, rows, n, transpose: true, inSign: sign.View);   // Had_nᵀ (s ⊙ x)
        had.Apply(data.View, rows, n, transpose: false, outSign: sign.View); // s ⊙ Had_n (…)
        var back = data.GetAsArray1D();
        Assert.True(Rng.MaxAbsDiff(back, x) < Tolerances.Fp32Transform, $"n = {n}: max |Δ| = {Rng.MaxAbsDiff(back, x)}");
    }

    [Theory]
    [InlineData(48)]
    [InlineData(344)]
    [InlineData(64)]
    public void Orthogonal_HadTimesHadTransposeIsIdentity(int n)
    {
        // Rows of the identity: row i of Had applied to e_j gives Had[:, j]; Hadᵀ of that gives e_j back,
        // and Had applied to every e_j builds the whole matrix, whose rows must be orthonormal.
        var eye = new float[n * n];
        for (int i = 0; i < n; i++)
            eye[(i * n) + i] = 1f;
        var cols = Run(eye, n, n, transpose: false, null, null); // row j = Had e_j = column j of Had
        for (int a = 0; a < n; a++)
        {
            for (int b = 0; b < n; b++)
            {
                double dot = 0;
                for (int c = 0; c < n; c++)
                    dot += (double)cols[(a * n) + c] * cols[(b * n) + c];
                Assert.True(Math.Abs(dot - (a == b ? 1 : 0)) < 1e-5, $"n = {n}: column {a}·column {b} = {dot}");
            }
        }
    }

    [Fact]
    public void BatchedRows_EqualSingleRows()
    {
        const int n = 1376, rows = 5;
        var x = Rng.Gaussian(rows * n, seed: 21);
        var all = Run(x, rows, n, transpose: true, null, null);
        for (int r = 0; r < rows; r++)
        {
            var one = Run(x[(r * n)..((r + 1) * n)], 1, n, transpose: true, null, null);
            Assert.Equal(one, all[(r * n)..((r + 1) * n)]);
        }
    }

    [Fact]
    public void MatchesReferenceGoldenVectors()
    {
        foreach (var item in TestData.Golden.GetProperty("hadamard").EnumerateArray())
        {
            int n = item.GetProperty("n").GetInt32();
            Assert.Equal(item.GetProperty("K").GetInt32(), HadamardMatrices.SmallFactor(n));
            var x = TestData.Floats(item.GetProperty("x"));
            var had = Run(x, 1, n, transpose: false, null, null);
            var hadT = Run(x, 1, n, transpose: true, null, null);
            var expected = TestData.Floats(item.GetProperty("had_x_float32"));
            var expectedT = TestData.Floats(item.GetProperty("hadT_x_float32"));
            Assert.True(Rng.MaxAbsDiff(had, expected) < Tolerances.GoldenFp32, $"Had_{n} x: max |Δ| = {Rng.MaxAbsDiff(had, expected)}");
            Assert.True(Rng.MaxAbsDiff(hadT, expectedT) < Tolerances.GoldenFp32, $"Had_{n}ᵀ x: max |Δ| = {Rng.MaxAbsDiff(hadT, expectedT)}");
        }
    }

    [Fact]
    public void RejectsBadShapes()
    {
        var acc = Device.Accelerator;
        using var data = acc.Allocate1D<float>(100);
        var had = Device.Get<Hadamard>();
        var e = Assert.ThrowsAny<ArgumentException>(() => had.Apply(data.View, 1, 100, false));
        Assert.Contains("100", e.Message, StringComparison.Ordinal);
        e = Assert.ThrowsAny<ArgumentException>(() => had.Apply(data.View, 2, 64, false));
        Assert.Contains("rows·n", e.Message, StringComparison.Ordinal);
        using var sign = acc.Allocate1D<float>(10);
        e = Assert.ThrowsAny<ArgumentException>(() => had.Apply(data.View, 1, 64, false, inSign: sign.View));
        Assert.Contains("sign", e.Message, StringComparison.Ordinal);
    }
}
