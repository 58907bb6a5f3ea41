using Qtip.Model.Checkpoint;
using Qtip.Model.Families;
using Qtip.Model.Llama;

namespace Qtip.Model.Quantized;

/// <summary>
/// The model as the quantize pipeline sees it, in one place, read from the family spec (<see cref="LlamaConfig.Family"/>,
/// <see cref="ModelFamily"/>): the linears of a decoder layer, their tensor names and shapes, the activation (Hessian)
/// that feeds each, and the quantization order. A linear's bias is not quantized: it is not among
/// <see cref="AllNames"/>, so the output folder copies it as it copies the norms.
/// </summary>
internal static class QuantizedLinears
{
    /// <summary>Every quantized linear of a decoder layer.</summary>
    public static IEnumerable<LinearKind> All(LlamaConfig config) => config.Family.Linears.Select(l => l.Kind);

    /// <summary>Quantization order inside a decoder layer (Llama, Mistral, Qwen2: v, q, k, o, up, gate, down, as the reference).</summary>
    public static IReadOnlyList<LinearKind> Order(LlamaConfig config) => config.Family.QuantizationOrder;

    /// <summary>The weight tensor's name ("model.layers.3.self_attn.q_proj.weight").</summary>
    public static string Name(LlamaConfig config, int layer, LinearKind kind) => config.Family.Linear(kind).WeightName(layer);

    /// <summary>The prefix of a quantized linear's tensors (the weight name without ".weight").</summary>
    public static string Prefix(LlamaConfig config, int layer, LinearKind kind) => LlamaNames.QuantizedPrefix(Name(config, layer, kind));

    /// <summary>[out, in] of the linear.</summary>
    public static (int M, int N) Shape(LlamaConfig config, LinearKind kind) => config.Family.Linear(kind).Shape(config);

    /// <summary>The activation whose Hessian the linear is quantized against.</summary>
    public static LinearInput InputOf(LlamaConfig config, LinearKind kind) => config.Family.Linear(kind).Input;

    /// <summary>The weight names of every quantized linear of the model.</summary>
    public static HashSet<string> AllNames(LlamaConfig config)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        for (int l = 0; l < config.NumHiddenLayers; l++)
        {
            foreach (var spec in config.Family.Linears)
                names.Add(spec.WeightName(l));
        }
        return names;
    }
}
