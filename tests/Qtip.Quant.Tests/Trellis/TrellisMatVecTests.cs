using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;
using Qtip.Kernels.Trellis;
using Qtip.Testing;
using Xunit;

namespace Qtip.Quant.Tests.Trellis;

/// <summary>The fused decode-matvec against decode-to-dense followed by a float64 product.</summary>
public abstract class TrellisMatVecTests(BackendKind backend) : BackendTest(backend)
{
    private static short[] Shorts(System.Text.Json.JsonElement e) => e.EnumerateArray().Select(v => (short)v.GetInt32()).ToArray();

    private float[] DenseProduct<TCode, TLayout>(short[] trellis, int m, int n, int l, int k, float[] table, float[] x, out float[] fused)
        where TCode : struct, ITrellisCode where TLayout : struct, ITileLayout
    {
        var acc = Device.Accelerator;
        int tiles = (m / 16) * (n / 16);
        using var w = acc.Allocate1D(trellis);
        using var tb = acc.Allocate1D(table);
        using var mat = acc.Allocate1D<float>(m * n);
        Device.Get<TrellisDecode<TCode, TLayout>>().Apply(w.View, tiles, l, k, 256, DecodeOutput.Matrix, tb.View, mat.View, default, m, n);
        var dense = mat.GetAsArray1D();
        using var xb = acc.Allocate1D(x);
        using var yb = acc.Allocate1D<float>(m);
        Device.Get<TrellisMatVec<TCode, TLayout>>().Apply(w.View, m, n, l, k, tb.View, xb.View, yb.View);
        fused = yb.GetAsArray1D();
        var y = new float[m];
        for (int i = 0; i < m; i++)
        {
            double s = 0;
            for (int j = 0; j < n; j++)
                s += dense[(i * n) + j] * (double)x[j];
            y[i] = (float)s;
        }
        return y;
    }

    [Fact]
    public void HybKernelLayout_MatchesDecodedMatrix_OnGoldenTrellis()
    {
        var lut = TestData.Golden.GetProperty("codes").GetProperty("hyb").GetProperty("lut_fp16").EnumerateArray()
            .SelectMany(TestData.Floats).ToArray();
        foreach (var item in TestData.Golden.GetProperty("kernel_layout").EnumerateArray())
        {
            int k = item.GetProperty("K").GetInt32(), m = item.GetProperty("m").GetInt32(), n = item.GetProperty("n").GetInt32();
            var trellis = item.GetProperty("trellis_int16").EnumerateArray().SelectMany(Shorts).ToArray();
            var x = Rng.Gaussian(n, seed: m + n + k);
            var expected = DenseProduct<HybCode, KernelLayout>(trellis, m, n, 16, k, lut, x, out var got);
            for (int i = 0; i < m; i++)
                Assert.True(Math.Abs(got[i] - expected[i]) < 1e-4 * (1 + Math.Abs(expected[i])), $"K = {k}, {m}×{n}, row {i}: {got[i]} vs {expected[i]}");
        }
    }

    [Theory]
    [InlineData(16, 2, 48, 64)]
    [InlineData(16, 3, 32, 32)]
    [InlineData(12, 4, 16, 48)]
    public void GenericLayout_ComputedCodes_MatchDecodedMatrix(int l, int k, int m, int n)
    {
        var words = new short[(m / 16) * (n / 16) * 16 * k];
        var r = new Random(l * k);
        for (int i = 0; i < words.Length; i++)
            words[i] = (short)r.Next(short.MinValue, short.MaxValue + 1);
        var x = Rng.Gaussian(n, seed: 3);
        var e1 = DenseProduct<OneMadCode, GenericLayout>(words, m, n, l, k, [0f], x, out var g1);
        var e3 = DenseProduct<ThreeInstCode, GenericLayout>(words, m, n, l, k, [0f], x, out var g3);
        for (int i = 0; i < m; i++)
        {
            Assert.True(Math.Abs(g1[i] - e1[i]) < 1e-4 * (1 + Math.Abs(e1[i])), $"1MAD row {i}: {g1[i]} vs {e1[i]}");
            Assert.True(Math.Abs(g3[i] - e3[i]) < 1e-4 * (1 + Math.Abs(e3[i])), $"3INST row {i}: {g3[i]} vs {e3[i]}");
        }
    }

    [Fact]
    public void RejectsWrongTrellisLength()
    {
        var acc = Device.Accelerator;
        using var w = acc.Allocate1D<short>(10);
        using var t = acc.Allocate1D<float>(1);
        using var x = acc.Allocate1D<float>(32);
        using var y = acc.Allocate1D<float>(32);
        var e = Assert.Throws<ArgumentException>(() => Device.Get<TrellisMatVec<OneMadCode, GenericLayout>>().Apply(w.View, 32, 32, 16, 2, t.View, x.View, y.View));
        Assert.Contains("trellis", e.Message, StringComparison.Ordinal);
    }
}

public sealed class TrellisMatVecTestsCpu() : TrellisMatVecTests(BackendKind.Cpu);

[Trait("Category", "Gpu")]
public sealed class TrellisMatVecTestsCuda() : TrellisMatVecTests(BackendKind.Cuda);

[Trait("Category", "Gpu")]
public sealed class TrellisMatVecTestsOpenCL() : TrellisMatVecTests(BackendKind.OpenCL);
