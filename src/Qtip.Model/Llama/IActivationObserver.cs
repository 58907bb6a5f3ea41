using ILGPU;
using ILGPU.Runtime;

namespace Qtip.Model.Llama;

/// <summary>The input shared by a group of linears of one decoder layer.</summary>
public enum LinearInput
{
    /// <summary>After the input RMSNorm: the input of q_proj, k_proj and v_proj (hidden features).</summary>
    Attention,

    /// <summary>The attention output: the input of o_proj (heads·head_dim features).</summary>
    AttentionOutput,

    /// <summary>After the post-attention RMSNorm: the input of gate_proj and up_proj (hidden features).</summary>
    Mlp,

    /// <summary>silu(gate) ⊙ up: the input of down_proj (intermediate features).</summary>
    MlpHidden,
}

/// <summary>
/// Taps on a prefill forward (<see cref="LlamaModel.Prefill"/>), e.g. to accumulate the Hessians XᵀX of every linear
/// group. Called in forward order on the host thread while the work is enqueued; the view holds the values in the
/// order of <paramref name="stream"/>, so kernels the observer enqueues on that stream see them (the buffer is reused
/// by the next step). Not called by single-token decode steps.
/// </summary>
public interface IActivationObserver
{
    /// <summary>The input rows (rows×features) of the linears of group <paramref name="which"/> in decoder layer <paramref name="layer"/>.</summary>
    void OnLinearInput(int layer, LinearInput which, ArrayView<float> input, int rows, int features, AcceleratorStream stream);

    /// <summary>The residual stream (rows×hidden): index −1 after the embedding, l after decoder layer l, and
    /// index = number of layers for the final RMSNorm output (the input of the output head).</summary>
    void OnHiddenState(int index, ArrayView<float> x, int rows, int features, AcceleratorStream stream)
    {
    }
}
