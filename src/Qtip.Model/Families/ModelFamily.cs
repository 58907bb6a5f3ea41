using Qtip.Model.Checkpoint;
using Qtip.Model.Llama;

namespace Qtip.Model.Families;

/// <summary>
/// One linear of a decoder layer, as a family declares it: which one (<see cref="LinearKind"/>), its module path under
/// <c>model.layers.{i}.</c> (the checkpoint names are <c>{module}.weight</c> and, with a bias, <c>{module}.bias</c>), its
/// shape [out, in] from the config, whether it carries a bias, and which activation feeds it (the group whose
/// Hessian its quantization uses).
/// </summary>
/// <param name="Shape">[out, in] of the weight for a config.</param>
/// <param name="Bias">True when the checkpoint stores <c>{module}.bias</c> (out), added after the product (kept
/// unquantized in a QTIP checkpoint, under the same name).</param>
public sealed record LinearSpec(LinearKind Kind, string Module, Func<LlamaConfig, (int Out, int In)> Shape, bool Bias, LinearInput Input)
{
    public string WeightName(int layer) => $"model.layers.{layer}.{Module}.weight";

    public string BiasName(int layer) => $"model.layers.{layer}.{Module}.bias";
}

/// <summary>What a family reads from <c>config.json</c> beyond the keys every family shares.</summary>
/// <param name="SlidingWindow">Keys a query sees (i − w &lt; j ≤ i); 0 = full causal attention.</param>
public sealed record FamilyFacts(int SlidingWindow = 0);

/// <summary>
/// A decoder family as a short declarative spec (exllamav3 declares an architecture as a module list plus the
/// config keys it reads; here a family is a record): its <c>model_type</c> and architecture name, the linears of a
/// decoder layer with their names, shapes, biases and inputs, the order the quantizer visits them in, and the
/// family's own config keys (<see cref="ReadFacts"/>). The forward (<see cref="LlamaModel"/>), the checkpoint loader
/// (<see cref="LlamaCheckpoint"/>) and the quantize pipeline read these; a family that fits the pre-norm decoder
/// (RMSNorm, attention with RoPE, SwiGLU MLP) is a spec, not code. Llama 1/2/3, Mistral and Qwen2 are
/// <see cref="ModelFamilies.All"/>.
/// </summary>
public sealed record ModelFamily
{
    /// <summary>config.json's <c>model_type</c>.</summary>
    public required string ModelType { get; init; }

    /// <summary>The transformers class (config.json's <c>architectures</c>).</summary>
    public required string Architecture { get; init; }

    /// <summary>The decoder-layer linears, one per <see cref="LinearKind"/> Q…Down, in forward order.</summary>
    public required IReadOnlyList<LinearSpec> Linears { get; init; }

    /// <summary>The order the quantizer visits a layer's linears in (each group's Hessian is ready before its first member).</summary>
    public required IReadOnlyList<LinearKind> QuantizationOrder { get; init; }

    /// <summary>Reads and checks the family's own config keys (throwing <see cref="ModelFormatException"/> with the file and the key).</summary>
    public required Func<ConfigKeys, FamilyFacts> ReadFacts { get; init; }

    /// <summary>The spec of linear <paramref name="kind"/> (Q…Down).</summary>
    public LinearSpec Linear(LinearKind kind) =>
        (int)kind < Linears.Count && Linears[(int)kind].Kind == kind ? Linears[(int)kind] : Linears.FirstOrDefault(l => l.Kind == kind)
            ?? throw new ArgumentOutOfRangeException(nameof(kind), kind, $"{ModelType} has no decoder-layer linear {kind}");

    /// <summary>True when some decoder-layer linear carries a bias.</summary>
    public bool HasBiases => Linears.Any(l => l.Bias);

    public override string ToString() => ModelType;
}

/// <summary>The families this build reads, by <c>model_type</c>.</summary>
public static class ModelFamilies
{
    /// <summary>Every family (a property, so the specs' static initialisers never see this list half-built).</summary>
    public static IReadOnlyList<ModelFamily> All => [LlamaFamily.Spec, MistralFamily.Spec, Qwen2Family.Spec];

    /// <summary>The family of <paramref name="modelType"/>, or null.</summary>
    public static ModelFamily? Find(string modelType) => All.FirstOrDefault(f => f.ModelType == modelType);
}

/// <summary>The pre-norm decoder layer the families share.</summary>
internal static class PreNormDecoder
{
    /// <summary>
    /// The pre-norm decoder layer the three families share: q, k, v, o (self_attn), gate, up, down (mlp), shapes from the
    /// config, q/k/v with a bias when <paramref name="qkvBias"/> (Qwen2). Quantization order: v, q, k (attention input),
    /// o, up, gate, down.
    /// </summary>
    internal static LinearSpec[] Linears(bool qkvBias) =>
    [
        new(LinearKind.Q, "self_attn.q_proj", c => (c.QDim, c.HiddenSize), qkvBias, LinearInput.Attention),
        new(LinearKind.K, "self_attn.k_proj", c => (c.KvDim, c.HiddenSize), qkvBias, LinearInput.Attention),
        new(LinearKind.V, "self_attn.v_proj", c => (c.KvDim, c.HiddenSize), qkvBias, LinearInput.Attention),
        new(LinearKind.O, "self_attn.o_proj", c => (c.HiddenSize, c.QDim), false, LinearInput.AttentionOutput),
        new(LinearKind.Gate, "mlp.gate_proj", c => (c.IntermediateSize, c.HiddenSize), false, LinearInput.Mlp),
        new(LinearKind.Up, "mlp.up_proj", c => (c.IntermediateSize, c.HiddenSize), false, LinearInput.Mlp),
        new(LinearKind.Down, "mlp.down_proj", c => (c.HiddenSize, c.IntermediateSize), false, LinearInput.MlpHidden),
    ];

    internal static readonly LinearKind[] QuantizationOrder =
        [LinearKind.V, LinearKind.Q, LinearKind.K, LinearKind.O, LinearKind.Up, LinearKind.Gate, LinearKind.Down];
}
