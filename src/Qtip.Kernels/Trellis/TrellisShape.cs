namespace Qtip.Kernels.Trellis;

/// <summary>The supported trellis shapes, checked in one place (every launcher and the quantizer call it).</summary>
public static class TrellisShape
{
    public const int MinL = 2;
    public const int MaxL = 16;
    public const int MinK = 1;

    /// <summary>Largest K today. The kernels store KV ≤ 8 bits per back-pointer, so K = 5…8 at V = 1 only needs this raised.</summary>
    public const int MaxK = 4;
    public const int MinT = 16;
    public const int MaxT = 1024;

    /// <summary>
    /// Throws an <see cref="ArgumentException"/> (naming the parameter and its range) unless L ∈ [2, 16], K ∈ [1, 4],
    /// V ∈ {1, 2}, K·V &lt; L, and T ∈ [16, 1024] a multiple of 16 (so K·T bits fill whole 16-bit words and T/V steps
    /// are whole).
    /// </summary>
    public static void Validate(int l, int k, int v, int t)
    {
        if (l < MinL || l > MaxL)
            throw new ArgumentOutOfRangeException(nameof(l), l, $"L (state bits) must be in [{MinL}, {MaxL}]");
        if (k < MinK || k > MaxK)
            throw new ArgumentOutOfRangeException(nameof(k), k, $"K (bits per weight) must be in [{MinK}, {MaxK}]");
        if (v is not (1 or 2))
            throw new ArgumentOutOfRangeException(nameof(v), v, "V (values per state) must be 1 or 2");
        if (k * v >= l)
            throw new ArgumentOutOfRangeException(nameof(k), k, $"K·V = {k * v} must be below L = {l} (K in [{MinK}, {(l - 1) / v}] for this L and V)");
        if (t < MinT || t > MaxT || t % 16 != 0)
            throw new ArgumentOutOfRangeException(nameof(t), t, $"T (values per sequence) must be a multiple of 16 in [{MinT}, {MaxT}]");
    }
}
