using ILGPU;
using ILGPU.Runtime;
using Qtip.Model.Llama;

namespace Qtip.Model.Tests;

/// <summary>Copies every hidden state a prefill reports (<see cref="IActivationObserver.OnHiddenState"/>) to the host, by index.</summary>
internal sealed class HiddenStateRecorder : IActivationObserver
{
    /// <summary>−1: the embedding output; l: the residual stream after layer l; L: the final norm's output.</summary>
    public Dictionary<int, float[]> States { get; } = [];

    public void OnLinearInput(int layer, LinearInput which, ArrayView<float> input, int rows, int features, AcceleratorStream stream)
    {
    }

    public void OnHiddenState(int index, ArrayView<float> x, int rows, int features, AcceleratorStream stream)
    {
        stream.Synchronize();
        var h = new float[rows * features];
        x.SubView(0, h.Length).CopyToCPU(h);
        States[index] = h;
    }
}
