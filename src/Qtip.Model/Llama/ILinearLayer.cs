using ILGPU;
using ILGPU.Runtime;

namespace Qtip.Model.Llama;

/// <summary>
/// A linear layer without bias, y = x · Wᵀ, on the device: what the Llama forward calls for q, k, v, o, gate, up,
/// down and the output head. The dense fp16/fp32 layer is <see cref="DenseLinear"/>; a quantized layer implements
/// the same interface and is put in place with <see cref="LlamaModel.SetLinear"/>, without touching the model code.
/// </summary>
public interface ILinearLayer : IDisposable
{
    /// <summary>n: the length of an input row.</summary>
    int InFeatures { get; }

    /// <summary>m: the length of an output row.</summary>
    int OutFeatures { get; }

    /// <summary>Bytes of weights one forward row reads (what bounds a decode step); 0 when unknown.</summary>
    long WeightBytes => 0;

    /// <summary>Device operations (kernel launches and copies) of one <see cref="Forward"/> with rows = 1.</summary>
    int DecodeLaunches => 1;

    /// <summary>
    /// y (rows×OutFeatures) = x (rows×InFeatures) · Wᵀ, enqueued on <paramref name="stream"/> (asynchronous). Both
    /// views are row-major and at least as long as the shapes say; rows = 1 is the decode case.
    /// </summary>
    void Forward(ArrayView<float> x, ArrayView<float> y, int rows, AcceleratorStream stream);
}
