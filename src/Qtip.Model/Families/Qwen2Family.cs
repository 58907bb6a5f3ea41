using Qtip.Model.Checkpoint;

namespace Qtip.Model.Families;

/// <summary>
/// Qwen2 and Qwen2.5 (<c>Qwen2ForCausalLM</c>): Llama's layer and names, with a bias on q_proj, k_proj and v_proj
/// (none on o_proj or the MLP); embeddings tied or not (tie_word_embeddings). Qwen2's per-layer sliding window
/// (<c>use_sliding_window: true</c>, for layers from max_window_layers on; in transformers 5 also a <c>layer_types</c> entry
/// other than full_attention) is refused: the released checkpoints leave it off.
/// </summary>
public static class Qwen2Family
{
    public static readonly ModelFamily Spec = new()
    {
        ModelType = "qwen2",
        Architecture = "Qwen2ForCausalLM",
        Linears = PreNormDecoder.Linears(qkvBias: true),
        QuantizationOrder = PreNormDecoder.QuantizationOrder,
        ReadFacts = keys =>
        {
            if (keys.Bool("use_sliding_window") == true)
                throw keys.Bad("use_sliding_window: true is not supported (Qwen2's per-layer sliding window; the released Qwen2/2.5 checkpoints leave it off)");
            if (keys.StringArray("layer_types").FirstOrDefault(t => t != "full_attention") is { } other)
                throw keys.Bad($"layer_types holds '{other}': only full_attention layers are supported (transformers 5's spelling of Qwen2's sliding window)");
            return new FamilyFacts();
        },
    };
}
