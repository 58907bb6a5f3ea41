using Qtip.Kernels.Trellis;

namespace Qtip.Quant.Trellis;

/// <summary>How the tail-biting constraint is met (spec §1).</summary>
public enum TailBiting
{
    /// <summary>No constraint: the optimal walk, K·T + L − KV bits; not packable into K·T bits (distortion studies only).</summary>
    None,

    /// <summary>The two-pass Algorithm 4 (what the reference and every checkpoint use).</summary>
    Approx,

    /// <summary>The exact tail-biting optimum: one constrained Viterbi per overlap value (2^(L−KV) of them; small L).</summary>
    Exact,
}

/// <summary>
/// A trellis code plus its data: which decode function (<see cref="TrellisCodeKind"/>) and, for HYB and LUT, the
/// table it reads. The table is plain data, so a checkpoint's stored LUT (fp16 or bf16-rounded) is used as is.
/// </summary>
public sealed class TrellisCodebook
{
    private TrellisCodebook(TrellisCodeKind kind, int v, float[]? table, int? lutL, string name)
    {
        Kind = kind;
        V = v;
        Table = table;
        LutL = lutL;
        Name = name;
    }

    public TrellisCodeKind Kind { get; }

    /// <summary>Values per state.</summary>
    public int V { get; }

    /// <summary>The table (HYB: 512×2 row-major; LUT: 2^L×V), or null.</summary>
    public float[]? Table { get; }

    /// <summary>For the LUT code, the L its table was made for.</summary>
    public int? LutL { get; }

    /// <summary>Short name: 1mad, 3inst, hyb, lut.</summary>
    public string Name { get; }

    public static TrellisCodebook OneMad() => new(TrellisCodeKind.OneMad, 1, null, null, "1mad");

    public static TrellisCodebook ThreeInst() => new(TrellisCodeKind.ThreeInst, 1, null, null, "3inst");

    /// <summary>HYB with the given LUT [512 × 2] (row-major), e.g. a checkpoint's <c>tlut</c> or <see cref="HybLut.GetOrCreate"/>.</summary>
    public static TrellisCodebook Hyb(float[] lut)
    {
        ArgumentNullException.ThrowIfNull(lut);
        if (lut.Length != 2 * HybCode.Rows)
            throw new ArgumentException($"HYB LUT must have {HybCode.Rows}×2 = {2 * HybCode.Rows} values, got {lut.Length}", nameof(lut));
        CheckFinite(lut, nameof(lut));
        return new(TrellisCodeKind.Hyb, 2, (float[])lut.Clone(), null, "hyb");
    }

    /// <summary>A LUT code with the given table [2^L × V] (state s → table[s·V …]).</summary>
    public static TrellisCodebook Lut(float[] table, int l, int v)
    {
        ArgumentNullException.ThrowIfNull(table);
        if (l < TrellisShape.MinL || l > TrellisShape.MaxL)
            throw new ArgumentOutOfRangeException(nameof(l), l, $"L must be in [{TrellisShape.MinL}, {TrellisShape.MaxL}]");
        if (v is not (1 or 2))
            throw new ArgumentOutOfRangeException(nameof(v), v, "V must be 1 or 2");
        if (table.Length != (1 << l) * v)
            throw new ArgumentException($"LUT for L = {l}, V = {v} must have 2^L·V = {(1 << l) * v} values, got {table.Length}", nameof(table));
        CheckFinite(table, nameof(table));
        return new(TrellisCodeKind.Lut, v, (float[])table.Clone(), l, "lut");
    }

    /// <summary>The paper's RPTC baseline: 2^L × V i.i.d. N(0, 1) values from a seeded generator.</summary>
    public static TrellisCodebook RandomLut(int l, int v, int seed)
    {
        if (l < TrellisShape.MinL || l > TrellisShape.MaxL)
            throw new ArgumentOutOfRangeException(nameof(l), l, $"L must be in [{TrellisShape.MinL}, {TrellisShape.MaxL}]");
        return Lut(GaussianSource.Fill((1 << l) * v, seed), l, v);
    }

    /// <summary>Host decode of one state (the same function the kernels run).</summary>
    public void Decode(uint state, out float v0, out float v1) => Codes.DecodeHost(Kind, V, state, Table, out v0, out v1);

    /// <summary>RMS over all 2^L × V decoded values, accumulated in float64 (the "RMS of the code" of Wscale).</summary>
    public double Rms(int l)
    {
        double sum = 0;
        for (uint s = 0; s < 1u << l; s++)
        {
            Decode(s, out float a, out float b);
            sum += (double)a * a;
            if (V == 2)
                sum += (double)b * b;
        }
        return Math.Sqrt(sum / ((1L << l) * V));
    }

    private static void CheckFinite(float[] values, string name)
    {
        for (int i = 0; i < values.Length; i++)
        {
            if (!float.IsFinite(values[i]))
                throw new ArgumentException($"table value {i} is {values[i]}; code tables must be finite", name);
        }
    }
}

/// <summary>Seeded standard normal draws (Box–Muller over <see cref="Random"/>'s seeded sequence).</summary>
public static class GaussianSource
{
    public static float[] Fill(int count, int seed)
    {
        var rng = new Random(seed);
        var x = new float[count];
        for (int i = 0; i < count; i += 2)
        {
            double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble();
            double r = Math.Sqrt(-2.0 * Math.Log(u1));
            x[i] = (float)(r * Math.Cos(2 * Math.PI * u2));
            if (i + 1 < count)
                x[i + 1] = (float)(r * Math.Sin(2 * Math.PI * u2));
        }
        return x;
    }
}
