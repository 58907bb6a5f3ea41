using System.Text.Json;
using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;
using Qtip.Kernels.Trellis;
using Qtip.Testing;
using Xunit;

namespace Qtip.Quant.Tests.Trellis;

/// <summary>Pack, unpack, relayout and dense decode kernels against the golden words, trellis tensors and decoded matrices.</summary>
public abstract class PackingTests(BackendKind backend) : BackendTest(backend)
{
    private static uint[] States(JsonElement e) => e.EnumerateArray().Select(v => (uint)v.GetInt32()).ToArray();

    private static short[] Shorts(JsonElement e) => e.EnumerateArray().Select(v => (short)v.GetInt32()).ToArray();

    private short[] Pack<TLayout>(uint[] states, int tiles, int l, int k, int v, int t, int m = 0, int n = 0) where TLayout : struct, ITileLayout
    {
        var acc = Device.Accelerator;
        using var s = acc.Allocate1D(states);
        using var w = acc.Allocate1D<short>((long)tiles * k * t / 16);
        Device.Get<TrellisPack<TLayout>>().Apply(s.View, tiles, l, k, v, t, w.View, m, n);
        return w.GetAsArray1D();
    }

    private uint[] Unpack<TCode, TLayout>(short[] words, int tiles, int l, int k, int t, int m = 0, int n = 0)
        where TCode : struct, ITrellisCode
        where TLayout : struct, ITileLayout
    {
        var acc = Device.Accelerator;
        using var w = acc.Allocate1D(words);
        using var table = acc.Allocate1D<float>(1);
        using var vals = acc.Allocate1D<float>(1);
        using var s = acc.Allocate1D<uint>((long)tiles * t / default(TCode).V);
        Device.Get<TrellisDecode<TCode, TLayout>>().Apply(w.View, tiles, l, k, t, DecodeOutput.States, table.View, vals.View, s.View, m, n);
        return s.GetAsArray1D();
    }

    [Fact]
    public void GenericPacking_MatchesGoldenWords_AndUnpacks()
    {
        foreach (var item in TestData.Golden.GetProperty("packing_generic").EnumerateArray())
        {
            int v = item.GetProperty("V").GetInt32(), k = item.GetProperty("K").GetInt32(), l = item.GetProperty("L").GetInt32();
            var states = States(item.GetProperty("states"));
            var words = Shorts(item.GetProperty("words_int16"));
            Assert.Equal(words, TrellisReference.Pack(states, l, k * v, k, 256));
            Assert.Equal(words, Pack<GenericLayout>(states, 1, l, k, v, 256));
            var back = v == 1 ? Unpack<OneMadCode, GenericLayout>(words, 1, l, k, 256) : Unpack<HybCode, GenericLayout>(words, 1, l, k, 256);
            Assert.Equal(states, back);
        }
    }

    [Fact]
    public void KernelLayout_MatchesGoldenTrellis_Relayout_AndDecodedMatrix()
    {
        var lut = GoldenJson.Flat(TestData.Golden.GetProperty("codes").GetProperty("hyb").GetProperty("lut_fp16"));
        var acc = Device.Accelerator;
        foreach (var item in TestData.Golden.GetProperty("kernel_layout").EnumerateArray())
        {
            int k = item.GetProperty("K").GetInt32(), m = item.GetProperty("m").GetInt32(), n = item.GetProperty("n").GetInt32();
            var tiles = item.GetProperty("tiles").EnumerateArray().ToArray();
            var states = tiles.SelectMany(t => States(t.GetProperty("states"))).ToArray();
            var expected = item.GetProperty("trellis_int16").EnumerateArray().SelectMany(Shorts).ToArray();
            var packed = Pack<KernelLayout>(states, tiles.Length, 16, k, 2, 256, m, n);
            Assert.Equal(expected, packed);

            var generic = tiles.SelectMany(t => Shorts(t.GetProperty("generic_words_int16"))).ToArray();
            Assert.Equal(generic, Pack<GenericLayout>(states, tiles.Length, 16, k, 2, 256));
            using var g = acc.Allocate1D(generic);
            using var kl = acc.Allocate1D<short>(generic.Length);
            Device.Get<TrellisRelayout<GenericLayout, KernelLayout>>().Apply(g.View, m, n, k, kl.View);
            Assert.Equal(expected, kl.GetAsArray1D());

            Assert.Equal(states, Unpack<HybCode, KernelLayout>(expected, tiles.Length, 16, k, 256, m, n));

            var decoded = item.GetProperty("decoded").EnumerateArray().SelectMany(TestData.Floats).ToArray();
            using var w = acc.Allocate1D(expected);
            using var table = acc.Allocate1D(lut);
            using var mat = acc.Allocate1D<float>(m * n);
            Device.Get<TrellisDecode<HybCode, KernelLayout>>().Apply(w.View, tiles.Length, 16, k, 256, DecodeOutput.Matrix, table.View, mat.View, default, m, n);
            Assert.Equal(decoded, mat.GetAsArray1D());
        }
    }

    [Theory]
    [InlineData(16, 256)]
    [InlineData(8, 32)]
    public void RandomWalks_RoundTrip_K1To4_V1And2(int l, int t)
    {
        var rng = new Random(l + t);
        foreach (int v in new[] { 1, 2 })
        {
            for (int k = 1; k <= 4 && k * v < l; k++)
            {
                const int tiles = 3;
                var walks = Enumerable.Range(0, tiles).Select(_ => TrellisReference.RandomWalk(rng, l, k * v, k, t)).ToArray();
                var states = walks.SelectMany(w => w).ToArray();
                var words = Pack<GenericLayout>(states, tiles, l, k, v, t);
                Assert.Equal(walks.SelectMany(w => TrellisReference.Pack(w, l, k * v, k, t)).ToArray(), words);
                var back = v == 1 ? Unpack<OneMadCode, GenericLayout>(words, tiles, l, k, t) : Unpack<HybCode, GenericLayout>(words, tiles, l, k, t);
                Assert.Equal(states, back);
            }
        }
    }

    [Fact]
    public void KernelLayout_RoundTrips_ForEveryK_OnA64x96Matrix()
    {
        var rng = new Random(3);
        const int m = 64, n = 96, tiles = (m / 16) * (n / 16);
        for (int k = 1; k <= 4; k++)
        {
            var states = Enumerable.Range(0, tiles).SelectMany(_ => TrellisReference.RandomWalk(rng, 16, 2 * k, k, 256)).ToArray();
            var packed = Pack<KernelLayout>(states, tiles, 16, k, 2, 256, m, n);
            Assert.Equal(states, Unpack<HybCode, KernelLayout>(packed, tiles, 16, k, 256, m, n));
        }
    }

    [Fact]
    public void Launchers_RejectBadShapes()
    {
        var acc = Device.Accelerator;
        using var s = acc.Allocate1D<uint>(128);
        using var w = acc.Allocate1D<short>(32);
        var pack = Device.Get<TrellisPack<GenericLayout>>();
        Assert.Throws<ArgumentOutOfRangeException>(() => pack.Apply(s.View, 1, 17, 2, 2, 256, w.View));
        Assert.Throws<ArgumentOutOfRangeException>(() => pack.Apply(s.View, 1, 16, 5, 2, 256, w.View));
        Assert.Throws<ArgumentOutOfRangeException>(() => pack.Apply(s.View, 1, 16, 2, 3, 256, w.View));
        Assert.Throws<ArgumentOutOfRangeException>(() => pack.Apply(s.View, 1, 16, 2, 2, 100, w.View));
        Assert.Throws<ArgumentOutOfRangeException>(() => pack.Apply(s.View, 1, 8, 4, 2, 256, w.View));
        var e = Assert.Throws<ArgumentException>(() => pack.Apply(s.View, 2, 16, 2, 2, 256, w.View));
        Assert.Contains("states", e.Message, StringComparison.Ordinal);
        var kpack = Device.Get<TrellisPack<KernelLayout>>();
        Assert.Throws<ArgumentException>(() => kpack.Apply(s.View, 1, 16, 2, 2, 256, w.View, 16, 16));
    }
}
