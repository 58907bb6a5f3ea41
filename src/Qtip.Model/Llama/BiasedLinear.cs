using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Llama;
using Qtip.Kernels.Runtime;
using Qtip.Model.Checkpoint;

namespace Qtip.Model.Llama;

/// <summary>
/// A linear with a bias: y (rows×m) = x · Wᵀ + b, any <see cref="ILinearLayer"/> (dense or QTIP) for the product, then
/// the <see cref="BiasAdd"/> launch. The bias is fp32 on the device and never quantized (a QTIP checkpoint stores it
/// as the dense one does, under its original name, e.g. <c>model.layers.0.self_attn.q_proj.bias</c>). Qwen2's q, k, v
/// are these. The model's fused decode paths take a <see cref="DenseLinear"/> only, so a biased linear runs on its
/// own (product launch + bias launch); the fused quantized decode adds the q|k|v biases in one launch before RoPE.
/// Owns both the inner linear and the bias.
/// </summary>
public sealed class BiasedLinear : ILinearLayer
{
    private readonly QtipDevice device;
    private readonly MemoryBuffer1D<float, Stride1D.Dense> bias; // (m)
    private bool ownsBias = true;

    public BiasedLinear(QtipDevice device, ILinearLayer inner, MemoryBuffer1D<float, Stride1D.Dense> bias)
    {
        if (bias.Length != inner.OutFeatures)
            throw new ArgumentException($"bias has {bias.Length} elements, the linear has {inner.OutFeatures} outputs", nameof(bias));
        this.device = device;
        Inner = inner;
        this.bias = bias;
    }

    /// <summary>The product without the bias.</summary>
    public ILinearLayer Inner { get; }

    /// <summary>b (m), fp32.</summary>
    public ArrayView<float> Bias => bias.View;

    public int InFeatures => Inner.InFeatures;

    public int OutFeatures => Inner.OutFeatures;

    public long WeightBytes => Inner.WeightBytes + (bias.Length * sizeof(float));

    public int DecodeLaunches => Inner.DecodeLaunches + 1;

    /// <summary>Wraps <paramref name="inner"/> with the checkpoint's bias tensor <paramref name="biasName"/> (checked finite); disposes <paramref name="inner"/> if that fails.</summary>
    public static BiasedLinear FromCheckpoint(QtipDevice device, ILinearLayer inner, TensorStore store, string biasName)
    {
        try
        {
            return new BiasedLinear(device, inner, FiniteWeights.Upload(device, store, biasName));
        }
        catch
        {
            inner.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The same bias over another product (e.g. a quantized reconstruction of the weight): the new linear takes the bias
    /// over, and this one, left with none, disposes its old product.
    /// </summary>
    public BiasedLinear WithProduct(ILinearLayer product)
    {
        if (!ownsBias)
            throw new InvalidOperationException("the bias was already handed to another linear");
        var moved = new BiasedLinear(device, product, bias);
        ownsBias = false;
        Inner.Dispose();
        return moved;
    }

    public void Forward(ArrayView<float> x, ArrayView<float> y, int rows, AcceleratorStream stream)
    {
        Inner.Forward(x, y, rows, stream);
        device.Get<BiasAdd>().Apply(y, bias.View, rows, OutFeatures, stream);
    }

    public void Dispose()
    {
        if (!ownsBias)
            return; // WithProduct disposed the product and handed the bias on
        Inner.Dispose();
        bias.Dispose();
    }
}
