using Qtip.Model.Checkpoint;
using Qtip.Model.Llama;

namespace Qtip.Model.Quantized;

/// <summary>
/// The model as the quantize pipeline sees it, in one place: the linears of a decoder layer, their tensor names and
/// shapes, the activation (Hessian) that feeds each, and the quantization order. Llama's today; a model spec replaces
/// this class.
/// </summary>
internal static class QuantizedLinears
{
    /// <summary>Every quantized linear of a decoder layer.</summary>
    public static IReadOnlyList<LinearKind> All => LlamaNames.LayerLinears;

    /// <summary>Quantization order inside a decoder layer, as the reference: v, q, k, o, up, gate, down.</summary>
    public static readonly LinearKind[] Order = [LinearKind.V, LinearKind.Q, LinearKind.K, LinearKind.O, LinearKind.Up, LinearKind.Gate, LinearKind.Down];

    /// <summary>The weight tensor's name ("model.layers.3.self_attn.q_proj.weight").</summary>
    public static string Name(int layer, LinearKind kind) => LlamaNames.Linear(layer, kind);

    /// <summary>The prefix of a quantized linear's tensors (the weight name without ".weight").</summary>
    public static string Prefix(int layer, LinearKind kind) => LlamaNames.QuantizedPrefix(Name(layer, kind));

    /// <summary>[out, in] of the linear.</summary>
    public static (int M, int N) Shape(LlamaConfig config, LinearKind kind) => LlamaNames.LinearShape(config, kind);

    /// <summary>The activation whose Hessian the linear is quantized against.</summary>
    public static LinearInput InputOf(LinearKind kind) => kind switch
    {
        LinearKind.Q or LinearKind.K or LinearKind.V => LinearInput.Attention,
        LinearKind.O => LinearInput.AttentionOutput,
        LinearKind.Gate or LinearKind.Up => LinearInput.Mlp,
        LinearKind.Down => LinearInput.MlpHidden,
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "not a decoder-layer linear"),
    };

    /// <summary>The weight names of every quantized linear of a model of <paramref name="layers"/> layers.</summary>
    public static HashSet<string> AllNames(int layers)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        for (int l = 0; l < layers; l++)
        {
            foreach (var kind in All)
                names.Add(Name(l, kind));
        }
        return names;
    }
}
