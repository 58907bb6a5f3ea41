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
/// A trellis code plus its data: which code (<see cref="TrellisCodeInfo"/>, a row of <see cref="TrellisCodes"/>) and,
/// for codes with a table, the table it reads. The table is plain data, so a checkpoint's stored LUT (fp16 or
/// bf16-rounded) is used as is.
/// </summary>
public sealed class TrellisCodebook
{
    private TrellisCodebook(TrellisCodeInfo code, float[]? table, int? tableL)
    {
        Code = code;
        Table = table;
        TableL = tableL;
    }

    /// <summary>The code (its row in <see cref="TrellisCodes"/>).</summary>
    public TrellisCodeInfo Code { get; }

    /// <summary>Values per state.</summary>
    public int V => Code.V;

    /// <summary>The table (HYB: 512×2 row-major; LUT: 2^L×V), or null.</summary>
    public float[]? Table { get; }

    /// <summary>For a code whose table size depends on L (the LUT codes), the L its table was made for.</summary>
    public int? TableL { get; }

    /// <summary>The code's name: 1mad, 3inst, hyb, lut, ….</summary>
    public string Name => Code.Name;

    public static TrellisCodebook OneMad() => For(TrellisCodes.OneMad);

    public static TrellisCodebook ThreeInst() => For(TrellisCodes.ThreeInst);

    /// <summary>HYB with the given LUT [512 × 2] (row-major), e.g. a checkpoint's <c>tlut</c> or <see cref="HybLut.GetOrCreate"/>.</summary>
    public static TrellisCodebook Hyb(float[] lut)
    {
        ArgumentNullException.ThrowIfNull(lut);
        if (lut.Length != 2 * HybCode.Rows)
            throw new ArgumentException($"HYB LUT must have {HybCode.Rows}×2 = {2 * HybCode.Rows} values, got {lut.Length}", nameof(lut));
        return For(TrellisCodes.Hyb, lut);
    }

    /// <summary>A LUT code with the given table [2^L × V] (state s → table[s·V …]).</summary>
    public static TrellisCodebook Lut(float[] table, int l, int v)
    {
        ArgumentNullException.ThrowIfNull(table);
        if (v is not (1 or 2))
            throw new ArgumentOutOfRangeException(nameof(v), v, "V must be 1 or 2");
        return For(v == 1 ? TrellisCodes.Lut1 : TrellisCodes.Lut2, table, l);
    }

    /// <summary>
    /// Code <paramref name="code"/> with <paramref name="table"/> (required when the code has one: rows × V floats for an
    /// <paramref name="l"/>-bit trellis; <paramref name="l"/> may be omitted when the table's size does not depend on L).
    /// </summary>
    public static TrellisCodebook For(TrellisCodeInfo code, float[]? table = null, int? l = null)
    {
        ArgumentNullException.ThrowIfNull(code);
        if (l is { } ll && (ll < TrellisShape.MinL || ll > TrellisShape.MaxL))
            throw new ArgumentOutOfRangeException(nameof(l), ll, $"L must be in [{TrellisShape.MinL}, {TrellisShape.MaxL}]");
        bool lDependent = code.TableLength(TrellisShape.MinL) != code.TableLength(TrellisShape.MaxL);
        int want = code.TableLength(l ?? TrellisShape.MaxL);
        if (want == 0)
        {
            if (table is { Length: > 0 })
                throw new ArgumentException($"code {code.Name} has no table, got {table.Length} values", nameof(table));
            return new(code, null, null);
        }
        if (lDependent && l is null)
            throw new ArgumentException($"code {code.Name}: its table depends on L; give L", nameof(l));
        ArgumentNullException.ThrowIfNull(table);
        if (table.Length != want)
            throw new ArgumentException(lDependent
                ? $"LUT for L = {l}, V = {code.V} must have 2^L·V = {want} values, got {table.Length}"
                : $"code {code.Name}'s table must have {code.TableRows(TrellisShape.MaxL)}×{code.V} = {want} values, got {table.Length}", nameof(table));
        CheckFinite(table, nameof(table));
        return new(code, (float[])table.Clone(), lDependent ? l : null);
    }

    /// <summary>The paper's RPTC baseline: 2^L × V i.i.d. N(0, 1) values from a seeded generator.</summary>
    public static TrellisCodebook RandomLut(int l, int v, int seed)
    {
        if (l < TrellisShape.MinL || l > TrellisShape.MaxL)
            throw new ArgumentOutOfRangeException(nameof(l), l, $"L must be in [{TrellisShape.MinL}, {TrellisShape.MaxL}]");
        return Lut(GaussianSource.Fill((1 << l) * v, seed), l, v);
    }

    /// <summary>Host decode of one state (the same function the kernels run).</summary>
    public void Decode(uint state, out float v0, out float v1) => Code.Decode(state, Table, out v0, out v1);

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
