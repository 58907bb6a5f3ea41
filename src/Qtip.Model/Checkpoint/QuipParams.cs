using System.Text.Json;
using Qtip.Kernels.Trellis;

namespace Qtip.Model.Checkpoint;

/// <summary>
/// The <c>quip_params</c> block a QTIP-quantized checkpoint's config.json carries (written by the reference's hfize
/// and by <c>qtip quantize</c>; docs/FORMAT.md): trellis state bits L, bits per weight K, values per state V, the
/// LUT size, the decode mode and the tile shape. <see cref="Read"/> checks every field against what the kernels
/// support, before any device work: L in [2, 16], K in [1, 4], K·V &lt; L, V = 2 for <c>quantlut_sym</c> (HYB, whose
/// LUT has 2^9 rows: tlut_bits 9), V = 1 for <c>1mad</c> and <c>3inst</c>, tlut_bits = L for <c>lut</c>; and, when
/// config.json also has a <c>quantization_config</c> written by qtip, that the two agree.
/// </summary>
public sealed record QuipParams(int L, int K, int V, int TlutBits, string DecodeMode, int TdX, int TdY)
{
    /// <summary>The block of config.json, or null when the checkpoint is not QTIP-quantized.</summary>
    public static QuipParams? Read(string configPath)
    {
        using var doc = InputFiles.ParseJson(configPath);
        try
        {
            return Read(doc, configPath);
        }
        catch (InvalidOperationException e)
        {
            throw Bad(configPath, $"holds a string that is not valid text: {e.Message}");
        }
    }

    private static QuipParams? Read(JsonDocument doc, string configPath)
    {
        if (doc.RootElement.ValueKind != JsonValueKind.Object
            || !doc.RootElement.TryGetProperty("quip_params", out var q) || q.ValueKind == JsonValueKind.Null)
            return null;
        if (q.ValueKind != JsonValueKind.Object)
            throw Bad(configPath, $"quip_params is a {q.ValueKind}, not an object");
        int Int(string key, int? fallback = null)
        {
            if (!q.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null)
                return fallback ?? throw Bad(configPath, $"quip_params.{key} is missing");
            if (v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i))
                return i;
            throw Bad(configPath, $"quip_params.{key} is {Raw(v)}, not an integer");
        }
        string mode = q.TryGetProperty("decode_mode", out var dm) && dm.ValueKind == JsonValueKind.String
            ? dm.GetString()!
            : throw Bad(configPath, "quip_params.decode_mode is missing or not a string");
        if (q.TryGetProperty("codebook", out var cb) && cb.ValueKind == JsonValueKind.String && cb.GetString() != "bitshift")
            throw Bad(configPath, $"quip_params.codebook '{cb.GetString()}' is not supported (only 'bitshift', QTIP's trellis)");
        var p = new QuipParams(Int("L"), Int("K"), Int("V"), Int("tlut_bits", 0), mode, Int("td_x", 16), Int("td_y", 16));
        p.Validate(configPath);
        if (doc.RootElement.TryGetProperty("quantization_config", out var qc) && qc.ValueKind == JsonValueKind.Object)
            p.CheckAgainst(qc, configPath);
        return p;
    }

    /// <summary>Throws a <see cref="ModelFormatException"/> naming the field unless the kernels support these parameters.</summary>
    public void Validate(string configPath)
    {
        if (TdX != 16 || TdY != 16)
            throw Bad(configPath, $"quip_params tile {TdX}×{TdY} is not supported (16×16 only)");
        if (DecodeMode is not ("quantlut_sym" or "1mad" or "3inst" or "lut"))
            throw Bad(configPath, $"quip_params.decode_mode '{DecodeMode}' is not supported (quantlut_sym, 1mad, 3inst, lut)");
        if (L < TrellisShape.MinL || L > TrellisShape.MaxL)
            throw Bad(configPath, $"quip_params.L = {L} is outside [{TrellisShape.MinL}, {TrellisShape.MaxL}]");
        if (K < TrellisShape.MinK || K > TrellisShape.MaxK)
            throw Bad(configPath, $"quip_params.K = {K} bits per weight is outside [{TrellisShape.MinK}, {TrellisShape.MaxK}]");
        if (V is not (1 or 2))
            throw Bad(configPath, $"quip_params.V = {V} is not supported (1 or 2 values per state)");
        int wantV = DecodeMode switch { "quantlut_sym" => 2, "1mad" or "3inst" => 1, _ => V };
        if (V != wantV)
            throw Bad(configPath, $"quip_params.V = {V} does not fit decode_mode '{DecodeMode}', which decodes {wantV} value{(wantV == 1 ? "" : "s")} per state");
        if (K * V >= L)
            throw Bad(configPath, $"quip_params K·V = {K * V} must be below L = {L}");
        if (TlutBits < 0 || TlutBits > TrellisShape.MaxL)
            throw Bad(configPath, $"quip_params.tlut_bits = {TlutBits} is outside [0, {TrellisShape.MaxL}]");
        if (DecodeMode == "quantlut_sym" && TlutBits != HybCode.Q)
            throw Bad(configPath, $"quip_params.tlut_bits = {TlutBits}: decode_mode 'quantlut_sym' (HYB) is implemented for a {1 << HybCode.Q}-row LUT only (tlut_bits {HybCode.Q})");
        if (DecodeMode == "lut" && TlutBits != L)
            throw Bad(configPath, $"quip_params.tlut_bits = {TlutBits}: decode_mode 'lut' reads one table row per state, so tlut_bits must equal L = {L}");
    }

    /// <summary>Refuses a <c>quantization_config</c> (as qtip writes it) that contradicts these parameters.</summary>
    private void CheckAgainst(JsonElement qc, string configPath)
    {
        string? method = qc.TryGetProperty("quant_method", out var m) && m.ValueKind == JsonValueKind.String ? m.GetString() : null;
        if (method is "rtn" or "qtip-no-rht-dense")
            throw Bad(configPath, $"quantization_config.quant_method '{method}' is a dense checkpoint, but quip_params says the linears are trellis-coded");
        if (method != "qtip")
            return; // another tool's block: nothing of ours to compare
        void Same(string key, int want)
        {
            if (qc.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number && (!v.TryGetInt32(out int got) || got != want))
                throw Bad(configPath, $"quantization_config.{key} = {Raw(v)} disagrees with quip_params ({want})");
        }
        Same("K", K);
        Same("L", L);
        Same("V", V);
        if (DecodeMode == "quantlut_sym")
            Same("Q", TlutBits);
        string code = DecodeMode switch { "quantlut_sym" => "hyb", "lut" => "lut", _ => DecodeMode };
        if (qc.TryGetProperty("code", out var c) && c.ValueKind == JsonValueKind.String && c.GetString() != code)
            throw Bad(configPath, $"quantization_config.code '{c.GetString()}' disagrees with quip_params.decode_mode '{DecodeMode}' (code '{code}')");
    }

    /// <summary>True when the trellis uses the reference CUDA kernel's layout (HYB at L = 16, Q = 9, V = 2).</summary>
    public bool KernelLayout => DecodeMode == "quantlut_sym" && L == 16 && V == 2 && TlutBits == 9;

    /// <summary>Rows of the per-linear <c>tlut</c> tensor (0 when the code has none).</summary>
    public int TableRows => DecodeMode is "quantlut_sym" or "lut" ? 1 << TlutBits : 0;

    private static string Raw(JsonElement v)
    {
        var raw = v.GetRawText();
        return raw.Length <= 40 ? raw : raw[..40] + "…";
    }

    private static ModelFormatException Bad(string path, string problem) => new(path, null, problem);
}
