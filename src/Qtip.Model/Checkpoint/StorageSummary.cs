using System.Text.Json;

namespace Qtip.Model.Checkpoint;

/// <summary>
/// What a checkpoint stores against what it represents: the parameter count of the model (a quantized linear m×n
/// counts m·n, not its trellis/SU/SV/tlut elements), and the stored bits per weight of the decoder linears alone and
/// of the whole checkpoint (embeddings, output head and norms included). For a dense checkpoint both are its dtype's
/// bits.
/// </summary>
/// <param name="Parameters">Parameters of the model as it was before quantization.</param>
/// <param name="StoredElements">Elements of all stored tensors (what <see cref="LlamaCheckpoint.ParameterCount"/> counts).</param>
/// <param name="DecoderWeights">Weights of the decoder linears (q, k, v, o, gate, up, down of every layer).</param>
/// <param name="DecoderBits">Bits stored for them (trellis + SU + SV + tlut of each quantized linear, as the quantize report counts).</param>
/// <param name="TotalBits">Bits of every tensor of the checkpoint.</param>
/// <param name="Code">The trellis code (hyb, 1mad, 3inst, lut), or null for a dense checkpoint.</param>
public sealed record StorageSummary(long Parameters, long StoredElements, long DecoderWeights, long DecoderBits, long TotalBits, string? Code)
{
    /// <summary>Stored bits per decoder-linear weight.</summary>
    public double DecoderBitsPerWeight => DecoderWeights == 0 ? 0 : (double)DecoderBits / DecoderWeights;

    /// <summary>Stored bits per model parameter, everything included (embeddings, head, norms).</summary>
    public double TotalBitsPerWeight => Parameters == 0 ? 0 : (double)TotalBits / Parameters;

    public static StorageSummary Of(LlamaCheckpoint ckpt)
    {
        var c = ckpt.Config;
        var store = ckpt.Tensors;
        long parameters = 0, decoderWeights = 0, decoderBits = 0, totalBits = 0, stored = 0;
        var counted = new HashSet<string>(StringComparer.Ordinal);
        foreach (var t in store.Tensors)
        {
            totalBits += t.ByteCount * 8;
            stored += t.ElementCount;
        }
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            foreach (var spec in c.Family.Linears)
            {
                var (m, n) = spec.Shape(c);
                string name = spec.WeightName(l);
                decoderWeights += (long)m * n;
                parameters += (long)m * n;
                if (store.Contains(name))
                {
                    decoderBits += store.Info(name).ByteCount * 8;
                    counted.Add(name);
                    continue;
                }
                string prefix = LlamaNames.QuantizedPrefix(name) + ".";
                foreach (var t in store.Tensors.Where(t => t.Name.StartsWith(prefix, StringComparison.Ordinal)))
                {
                    // The reference's tensor-parallel scalars (rcp, tp_rank) are bookkeeping, not weight storage; as the
                    // quantize report, count trellis, SU, SV and tlut (the scalars are in TotalBits).
                    if (!t.Name.EndsWith(".rcp", StringComparison.Ordinal) && !t.Name.EndsWith(".tp_rank", StringComparison.Ordinal))
                        decoderBits += t.ByteCount * 8;
                    counted.Add(t.Name);
                }
            }
        }
        foreach (var t in store.Tensors)
        {
            if (!counted.Contains(t.Name))
                parameters += t.ElementCount;
        }
        string? code = ckpt.Quip?.Code.Name;
        return new StorageSummary(parameters, stored, decoderWeights, decoderBits, totalBits, code);
    }

    /// <summary>config.json's <c>quantization_config</c> (written by <c>qtip quantize</c>), or null.</summary>
    public static JsonElement? QuantizationConfig(string folder)
    {
        var path = Path.Combine(folder, "config.json");
        using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
        return doc.RootElement.TryGetProperty("quantization_config", out var q) && q.ValueKind == JsonValueKind.Object ? q.Clone() : null;
    }
}
