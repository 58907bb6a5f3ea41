using System.Text.Json;
using Qtip.Kernels.Trellis;
using Qtip.Quant.Trellis;
using Qtip.Testing;
using Xunit;

namespace Qtip.Quant.Tests.Trellis;

/// <summary>The decode functions against the reference's own decoded values and all-state statistics (golden item 1).</summary>
public sealed class CodesTests
{
    private static JsonElement Golden => TestData.Golden.GetProperty("codes");

    private static uint[] States => Golden.GetProperty("states").EnumerateArray().Select(e => (uint)e.GetInt32()).ToArray();

    [Theory]
    [InlineData("1mad")]
    [InlineData("3inst")]
    public void ScalarCodes_MatchGoldenValuesBitForBit(string name)
    {
        var cb = name == "1mad" ? TrellisCodebook.OneMad() : TrellisCodebook.ThreeInst();
        var expected = TestData.Floats(Golden.GetProperty(name).GetProperty("values"));
        var states = States;
        for (int i = 0; i < states.Length; i++)
        {
            cb.Decode(states[i], out float v, out _);
            Assert.Equal(BitConverter.SingleToInt32Bits(expected[i]), BitConverter.SingleToInt32Bits(v));
        }
    }

    [Fact]
    public void Hyb_MatchesGoldenValuesWithTheFp16Lut()
    {
        var hyb = Golden.GetProperty("hyb");
        var cb = TrellisCodebook.Hyb(GoldenJson.Flat(hyb.GetProperty("lut_fp16")));
        var values = hyb.GetProperty("values").EnumerateArray().Select(TestData.Floats).ToArray();
        var states = States;
        for (int i = 0; i < states.Length; i++)
        {
            cb.Decode(states[i], out float v0, out float v1);
            Assert.Equal(values[i][0], v0);
            Assert.Equal(values[i][1], v1);
        }
    }

    [Theory]
    [InlineData("1mad")]
    [InlineData("3inst")]
    public void ScalarCodes_AllStateStatistics(string name)
    {
        var cb = name == "1mad" ? TrellisCodebook.OneMad() : TrellisCodebook.ThreeInst();
        var stats = Golden.GetProperty(name).GetProperty("stats_all_states");
        var all = new float[1 << 16];
        for (uint s = 0; s < all.Length; s++)
            cb.Decode(s, out all[s], out _);
        double mean = all.Average(v => (double)v);
        double rms = Math.Sqrt(all.Average(v => (double)v * v));
        Assert.Equal(stats.GetProperty("mean").GetDouble(), mean, 1e-12);
        Assert.Equal(stats.GetProperty("rms").GetDouble(), rms, 1e-12);
        Assert.Equal(stats.GetProperty("min").GetDouble(), all.Min());
        Assert.Equal(stats.GetProperty("max").GetDouble(), all.Max());
        Assert.Equal(stats.GetProperty("distinct").GetInt32(), all.Distinct().Count());
        Assert.Equal(name == "1mad" ? 908 : 10598, all.Distinct().Count());
        Assert.Equal(stats.GetProperty("rms").GetDouble(), cb.Rms(16), 1e-12);
        if (name == "3inst")
        {
            Assert.Equal(-3.95703125f, all.Min());
            Assert.Equal(3.97265625f, all.Max());
            Assert.Equal(1.2437, rms, 4);
        }
        else
        {
            Assert.Equal(1.0001, rms, 4);
        }
    }

    [Fact]
    public void Hyb_EveryRowHitBy128States_HalfSignFlipped()
    {
        var hits = new int[HybCode.Rows];
        var flips = new int[HybCode.Rows];
        var code = default(HybCode);
        for (uint s = 0; s < 1 << 16; s++)
        {
            uint y = code.Symbol(s);
            hits[y & (HybCode.Rows - 1)]++;
            flips[y & (HybCode.Rows - 1)] += (int)(y >> HybCode.Q);
        }
        Assert.All(hits, h => Assert.Equal(128, h));
        Assert.All(flips, f => Assert.Equal(64, f));
        var hyb = Golden.GetProperty("hyb");
        var cb = TrellisCodebook.Hyb(GoldenJson.Flat(hyb.GetProperty("lut_fp16")));
        Assert.Equal(hyb.GetProperty("stats_all_states").GetProperty("rms").GetDouble(), cb.Rms(16), 1e-12);
    }

    [Fact]
    public void Codebooks_RejectBadTables()
    {
        Assert.Throws<ArgumentException>(() => TrellisCodebook.Hyb(new float[1000]));
        var lut = new float[1024];
        lut[3] = float.NaN;
        Assert.Throws<ArgumentException>(() => TrellisCodebook.Hyb(lut));
        Assert.Throws<ArgumentException>(() => TrellisCodebook.Lut(new float[100], 8, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => TrellisCodebook.RandomLut(17, 1, 0));
    }

    [Fact]
    public void RandomLut_IsSeededAndStandardNormal()
    {
        var a = TrellisCodebook.RandomLut(12, 1, 7).Table!;
        var b = TrellisCodebook.RandomLut(12, 1, 7).Table!;
        var c = TrellisCodebook.RandomLut(12, 1, 8).Table!;
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
        Assert.Equal(0, a.Average(v => (double)v), 0.1);
        Assert.Equal(1, Math.Sqrt(a.Average(v => (double)v * v)), 0.05);
    }
}
