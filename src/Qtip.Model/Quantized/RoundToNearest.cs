namespace Qtip.Model.Quantized;

/// <summary>
/// The round-to-nearest baseline: every output channel (row of W) gets its own asymmetric b-bit grid from its min and
/// max, w ↦ (clamp(round(w/s) + z, 0, 2^b − 1) − z)·s with s = (max − min)/(2^b − 1), z = round(−min/s). Storage would
/// be b bits per weight plus a 16-bit scale and zero point per row.
/// </summary>
public static class RoundToNearest
{
    /// <summary>Ŵ (m×n) for W (m×n) at <paramref name="bits"/> bits per weight.</summary>
    public static float[] Quantize(ReadOnlySpan<float> w, int m, int n, int bits)
    {
        if (bits is < 1 or > 8)
            throw new ArgumentOutOfRangeException(nameof(bits), bits, "RTN bits must be 1…8");
        if (w.Length != (long)m * n)
            throw new ArgumentException($"RTN: W has {w.Length} elements, expected {m}×{n}", nameof(w));
        int levels = (1 << bits) - 1;
        var result = new float[w.Length];
        for (int i = 0; i < m; i++)
        {
            var row = w.Slice(i * n, n);
            float lo = float.PositiveInfinity, hi = float.NegativeInfinity;
            foreach (float v in row)
            {
                lo = MathF.Min(lo, v);
                hi = MathF.Max(hi, v);
            }
            lo = MathF.Min(lo, 0f);
            hi = MathF.Max(hi, 0f);
            float scale = (hi - lo) / levels;
            if (scale == 0)
                continue;
            float zero = MathF.Round(-lo / scale);
            for (int j = 0; j < n; j++)
            {
                float q = Math.Clamp(MathF.Round(row[j] / scale) + zero, 0, levels);
                result[(i * n) + j] = (q - zero) * scale;
            }
        }
        return result;
    }

    /// <summary>Storage bits of a row-wise RTN matrix: b per weight plus 32 per row (fp16 scale and zero point).</summary>
    public static long StorageBits(int m, int n, int bits) => ((long)m * n * bits) + (32L * m);
}
