using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;
using Qtip.Kernels.Trellis;
using Qtip.Quant.Trellis;
using Qtip.Testing;
using Xunit;

namespace Qtip.Quant.Tests.Trellis;

/// <summary>The fused decode-matvec against decode-to-dense followed by a float64 product.</summary>
public abstract class TrellisMatVecTests(BackendKind backend) : BackendTest(backend)
{
    private static short[] Shorts(System.Text.Json.JsonElement e) => e.EnumerateArray().Select(v => (short)v.GetInt32()).ToArray();

    /// <summary>Relative-to-magnitude tolerance of the fp32 fused product against float64 references.</summary>
    private const double Tolerance = 1e-4;

    /// <summary>Plain C# reference, y = Ŵ x in float64, Ŵ decoded on the host by <see cref="TrellisHostDecode"/>.</summary>
    internal static double[] HostMatVec<TLayout>(short[] words, int m, int n, int l, int k, TrellisCodeInfo code, float[]? table, float[] x)
        where TLayout : struct, ITileLayout
    {
        var w = TrellisHostDecode.Matrix<TLayout>(words, m, n, l, k, code.V, (uint s, out float v0, out float v1) => code.Decode(s, table, out v0, out v1));
        var y = new double[m];
        for (int row = 0; row < m; row++)
        {
            for (int col = 0; col < n; col++)
                y[row] += w[(row * n) + col] * (double)x[col];
        }
        return y;
    }

    /// <summary>The fused product of the generic layout for the code struct the registry row dispatches to.</summary>
    private readonly struct FusedOp(TrellisMatVecTests test, short[] trellis, int m, int n, int l, int k, float[] table, float[] x) : ICodeOp<float[]>
    {
        public float[] Run<TCode>() where TCode : struct, ITrellisCode => test.Fused<TCode, GenericLayout>(trellis, m, n, l, k, table, x);
    }

    /// <summary>The fused product on the device (the trellis in <typeparamref name="TLayout"/>, a stream-ordered layout).</summary>
    private float[] Fused<TCode, TLayout>(short[] trellis, int m, int n, int l, int k, float[] table, float[] x)
        where TCode : struct, ITrellisCode where TLayout : struct, IStreamOrderLayout
    {
        var acc = Device.Accelerator;
        using var w = acc.Allocate1D(trellis);
        using var tb = acc.Allocate1D(table.Length > 0 ? table : [0f]);
        using var xb = acc.Allocate1D(x);
        using var yb = acc.Allocate1D(Enumerable.Repeat(float.NaN, m).ToArray()); // poisoned: every row must be written
        Device.Get<TrellisMatVec<TCode, TLayout>>().Apply(w.View, m, n, l, k, tb.View, xb.View, yb.View);
        return yb.GetAsArray1D();
    }

    private static void AssertClose(double[] expected, float[] got, string what)
    {
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(got[i] - expected[i]) < Tolerance * (1 + Math.Abs(expected[i])), $"{what}, row {i}: {got[i]} vs {expected[i]}");
    }

    private static short[] RandomWords(int m, int n, int k, int seed)
    {
        var words = new short[(m / 16) * (n / 16) * 16 * k];
        var r = new Random(seed);
        for (int i = 0; i < words.Length; i++)
            words[i] = (short)r.Next(short.MinValue, short.MaxValue + 1);
        return words;
    }

    [Theory]
    [InlineData(16, 1, 32, 48)]
    [InlineData(16, 2, 48, 64)]
    [InlineData(16, 3, 32, 32)]
    [InlineData(16, 4, 16, 48)]
    [InlineData(12, 4, 32, 16)]
    [InlineData(9, 3, 16, 32)]
    public void EveryCode_GenericLayout_MatchesHostReference(int l, int k, int m, int n)
    {
        var words = RandomWords(m, n, k, seed: (l * 10) + k);
        var x = Rng.Gaussian(n, seed: k);
        // Every code of the registry (a random table for codes with one: shared memory when it fits, global otherwise).
        int tested = 0;
        foreach (var (code, index) in TrellisCodes.All.Select((c, i) => (c, i)))
        {
            if (code.V * k >= l)
                continue;
            var table = code.TableLength(l) > 0 ? Rng.Gaussian(code.TableLength(l), seed: 5 + index) : [];
            var fused = code.Run<FusedOp, float[]>(new FusedOp(this, words, m, n, l, k, table, x));
            AssertClose(HostMatVec<GenericLayout>(words, m, n, l, k, code, table, x), fused, $"{code.Name} V={code.V} L={l} K={k}");
            tested++;
        }
        Assert.True(tested >= 3, $"only {tested} codes fit L = {l}, K = {k}");
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void HybKernelLayout_MovedToStreamOrder_MatchesHostReference(int k)
    {
        const int m = 64, n = 96;
        var words = RandomWords(m, n, k, seed: 40 + k);
        var x = Rng.Gaussian(n, seed: 41);
        var lut = Rng.Gaussian(2 * HybCode.Rows, seed: 42);
        var acc = Device.Accelerator;
        using var stored = acc.Allocate1D(words);
        using var moved = acc.Allocate1D<short>(words.Length);
        Device.Get<TrellisRelayout<KernelLayout, KernelStreamLayout>>().Apply(stored.View, m, n, k, moved.View);
        var streamWords = moved.GetAsArray1D();
        AssertClose(HostMatVec<KernelLayout>(words, m, n, 16, k, TrellisCodes.Hyb, lut, x),
            Fused<HybCode, KernelStreamLayout>(streamWords, m, n, 16, k, lut, x), $"HYB kernel layout K={k}");
    }

    private float[] DenseProduct<TCode, TLayout>(short[] trellis, int m, int n, int l, int k, float[] table, float[] x, out float[] fused)
        where TCode : struct, ITrellisCode where TLayout : struct, IStreamOrderLayout
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
            using var stored = Device.Accelerator.Allocate1D(trellis);
            using var moved = Device.Accelerator.Allocate1D<short>(trellis.Length);
            Device.Get<TrellisRelayout<KernelLayout, KernelStreamLayout>>().Apply(stored.View, m, n, k, moved.View);
            var expected = DenseProduct<HybCode, KernelStreamLayout>(moved.GetAsArray1D(), m, n, 16, k, lut, x, out var got);
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
