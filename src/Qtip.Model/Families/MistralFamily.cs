using Qtip.Model.Checkpoint;

namespace Qtip.Model.Families;

/// <summary>
/// Mistral (<c>MistralForCausalLM</c>): Llama's layer and names, plus <c>sliding_window</c>: a query at position i sees
/// the keys i − w &lt; j ≤ i (transformers' rule); null or absent is full attention. The KV cache still holds every
/// position (no rolling buffer), so contexts are bounded as for Llama.
/// </summary>
public static class MistralFamily
{
    public static readonly ModelFamily Spec = new()
    {
        ModelType = "mistral",
        Architecture = "MistralForCausalLM",
        Linears = PreNormDecoder.Linears(qkvBias: false),
        QuantizationOrder = PreNormDecoder.QuantizationOrder,
        ReadFacts = keys =>
        {
            int window = keys.Int("sliding_window") ?? 0;
            if (window < 0 || keys.Present("sliding_window") && window == 0)
                throw keys.Bad($"sliding_window must be positive or null (got {window})");
            return new FamilyFacts(SlidingWindow: window);
        },
    };
}
