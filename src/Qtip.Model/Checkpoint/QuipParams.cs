using System.Text.Json;

namespace Qtip.Model.Checkpoint;

/// <summary>
/// The <c>quip_params</c> block a QTIP-quantized checkpoint's config.json carries (written by the reference's hfize
/// and by <c>qtip quantize</c>; docs/FORMAT.md): trellis state bits L, bits per weight K, values per state V, the
/// LUT size, the decode mode and the tile shape.
/// </summary>
public sealed record QuipParams(int L, int K, int V, int TlutBits, string DecodeMode, int TdX, int TdY)
{
    /// <summary>The block of config.json, or null when the checkpoint is not QTIP-quantized.</summary>
    public static QuipParams? Read(string configPath)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(configPath));
        if (!doc.RootElement.TryGetProperty("quip_params", out var q) || q.ValueKind != JsonValueKind.Object)
            return null;
        int Int(string key, int? fallback = null)
        {
            if (q.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i))
                return i;
            return fallback ?? throw new ModelFormatException(configPath, null, $"quip_params.{key} is missing or not an integer");
        }
        string mode = q.TryGetProperty("decode_mode", out var dm) && dm.ValueKind == JsonValueKind.String
            ? dm.GetString()!
            : throw new ModelFormatException(configPath, null, "quip_params.decode_mode is missing");
        if (q.TryGetProperty("codebook", out var cb) && cb.ValueKind == JsonValueKind.String && cb.GetString() != "bitshift")
            throw new ModelFormatException(configPath, null, $"quip_params.codebook '{cb.GetString()}' is not supported (only 'bitshift', QTIP's trellis)");
        var p = new QuipParams(Int("L"), Int("K"), Int("V"), Int("tlut_bits", 0), mode, Int("td_x", 16), Int("td_y", 16));
        if (p.TdX != 16 || p.TdY != 16)
            throw new ModelFormatException(configPath, null, $"quip_params tile {p.TdX}×{p.TdY} is not supported (16×16 only)");
        if (mode is not ("quantlut_sym" or "1mad" or "3inst" or "lut"))
            throw new ModelFormatException(configPath, null, $"quip_params.decode_mode '{mode}' is not supported (quantlut_sym, 1mad, 3inst, lut)");
        return p;
    }

    /// <summary>True when the trellis uses the reference CUDA kernel's layout (HYB at L = 16, Q = 9, V = 2).</summary>
    public bool KernelLayout => DecodeMode == "quantlut_sym" && L == 16 && V == 2 && TlutBits == 9;

    /// <summary>Rows of the per-linear <c>tlut</c> tensor (0 when the code has none).</summary>
    public int TableRows => DecodeMode is "quantlut_sym" or "lut" ? 1 << TlutBits : 0;
}
