namespace Qtip.Quant.Trellis;

/// <summary>
/// Rounding a code table to a model's dtype (round to nearest even). The reference casts its codebook to the model
/// dtype before it searches and saves (golden README, disagreement 1): an fp16 model's <c>tlut</c> holds the
/// fp16-rounded k-means LUT, a bf16 model's the bf16-rounded one (stored as fp16, exactly). Quantize with the table
/// the checkpoint will store.
/// </summary>
public static class TableRounding
{
    /// <summary>Each value rounded to the nearest IEEE binary16 value, returned as float32.</summary>
    public static float[] ToHalf(float[] table)
    {
        ArgumentNullException.ThrowIfNull(table);
        return table.Select(v => (float)(Half)v).ToArray();
    }

    /// <summary>Each value rounded to the nearest bfloat16 value (8 significant bits), returned as float32.</summary>
    public static float[] ToBFloat16(float[] table)
    {
        ArgumentNullException.ThrowIfNull(table);
        return table.Select(v =>
        {
            if (!float.IsFinite(v))
                return v;
            uint bits = BitConverter.SingleToUInt32Bits(v);
            bits += 0x7FFFu + ((bits >> 16) & 1u);
            return BitConverter.UInt32BitsToSingle(bits & 0xFFFF0000u);
        }).ToArray();
    }
}
