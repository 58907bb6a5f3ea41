using System.Text.Json;
using Qtip.Kernels.Trellis;
using Qtip.Quant.Trellis;

namespace Qtip.Model.Checkpoint;

/// <summary>
/// The <c>quip_params</c> block a QTIP-quantized checkpoint's config.json carries (written by the reference's hfize
/// and by <c>qtip quantize</c>; docs/FORMAT.md): trellis state bits L, bits per weight K, values per state V, the
/// LUT size, the decode mode and the tile shape. <see cref="Read"/> checks every field against what the kernels
/// support, before any device work: L in [2, 16], K in [1, 4], K·V &lt; L, a decode mode and V of a code in
/// <see cref="TrellisCodes"/> (HYB is <c>quantlut_sym</c>, V = 2; 1mad and 3inst V = 1; lut V = 1 or 2), tlut_bits equal
/// to the code's table bits when it has a table (HYB: 9; lut: L); and, when config.json also has a
/// <c>quantization_config</c> written by qtip, that the two agree. <see cref="Code"/> is the code they name.
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
        if (!TrellisCodes.IsDecodeMode(DecodeMode))
            throw Bad(configPath, $"quip_params.decode_mode '{DecodeMode}' is not supported ({TrellisCodes.DecodeModes})");
        if (L < TrellisShape.MinL || L > TrellisShape.MaxL)
            throw Bad(configPath, $"quip_params.L = {L} is outside [{TrellisShape.MinL}, {TrellisShape.MaxL}]");
        if (K < TrellisShape.MinK || K > TrellisShape.MaxK)
            throw Bad(configPath, $"quip_params.K = {K} bits per weight is outside [{TrellisShape.MinK}, {TrellisShape.MaxK}]");
        if (V is not (1 or 2))
            throw Bad(configPath, $"quip_params.V = {V} is not supported (1 or 2 values per state)");
        if (TrellisCodes.FromDecodeMode(DecodeMode, V) is null)
        {
            int wantV = TrellisCodes.All.First(c => c.DecodeMode == DecodeMode).V;
            throw Bad(configPath, $"quip_params.V = {V} does not fit decode_mode '{DecodeMode}', which decodes {wantV} value{(wantV == 1 ? "" : "s")} per state");
        }
        if (K * V >= L)
            throw Bad(configPath, $"quip_params K·V = {K * V} must be below L = {L}");
        if (TlutBits < 0 || TlutBits > TrellisShape.MaxL)
            throw Bad(configPath, $"quip_params.tlut_bits = {TlutBits} is outside [0, {TrellisShape.MaxL}]");
        int tableBits = Code.TableBits(L);
        if (tableBits > 0 && TlutBits != tableBits)
        {
            throw Bad(configPath, tableBits == L
                ? $"quip_params.tlut_bits = {TlutBits}: decode_mode '{DecodeMode}' reads one table row per state, so tlut_bits must equal L = {L}"
                : $"quip_params.tlut_bits = {TlutBits}: decode_mode '{DecodeMode}' ({Code.Name}) is implemented for a {1 << tableBits}-row table only (tlut_bits {tableBits})");
        }
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
        if (Code.TableBits(L) > 0)
            Same("Q", TlutBits);
        string code = Code.Name;
        if (qc.TryGetProperty("code", out var c) && c.ValueKind == JsonValueKind.String && c.GetString() != code)
            throw Bad(configPath, $"quantization_config.code '{c.GetString()}' disagrees with quip_params.decode_mode '{DecodeMode}' (code '{code}')");
    }

    /// <summary>The code (after <see cref="Validate"/>: a registered decode mode and V).</summary>
    public TrellisCodeInfo Code => TrellisCodes.FromDecodeMode(DecodeMode, V)
        ?? throw new InvalidOperationException($"quip_params: no code has decode_mode '{DecodeMode}' with V = {V}");

    /// <summary>The quip_params of a checkpoint of <paramref name="code"/> at L and K (16×16 tiles).</summary>
    public static QuipParams For(TrellisCodeInfo code, int l, int k) => new(l, k, code.V, code.TableBits(l), code.DecodeMode, 16, 16);

    /// <summary>The stored tile layout: the code's default (the reference CUDA kernel's layout for HYB at L = 16).</summary>
    public TileLayoutKind Layout => Code.DefaultLayout(L);

    /// <summary>Rows of the per-linear <c>tlut</c> tensor (0 when the code has none).</summary>
    public int TableRows => Code.TableRows(L);

    private static string Raw(JsonElement v)
    {
        var raw = v.GetRawText();
        return raw.Length <= 40 ? raw : raw[..40] + "…";
    }

    private static ModelFormatException Bad(string path, string problem) => new(path, null, problem);
}
