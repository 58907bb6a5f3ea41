using Qtip.Model.Checkpoint;

namespace Qtip.Model.Families;

/// <summary>
/// Llama 1/2/3 (<c>LlamaForCausalLM</c>): the pre-norm decoder with no biases; GQA through num_key_value_heads,
/// Llama 3.1's frequency rule through rope_scaling (read by <see cref="LlamaConfig"/> for every family).
/// transformers' <c>attention_bias</c>/<c>mlp_bias</c> variants are refused: no Llama checkpoint here has them.
/// </summary>
public static class LlamaFamily
{
    public static readonly ModelFamily Spec = new()
    {
        ModelType = "llama",
        Architecture = "LlamaForCausalLM",
        Linears = PreNormDecoder.Linears(qkvBias: false),
        QuantizationOrder = PreNormDecoder.QuantizationOrder,
        ReadFacts = keys =>
        {
            if (keys.Bool("attention_bias") == true || keys.Bool("mlp_bias") == true)
                throw keys.Bad("attention_bias / mlp_bias are not supported (Llama has no biases)");
            return new FamilyFacts();
        },
    };
}
