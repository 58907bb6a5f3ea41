using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;
using Qtip.Model.Llama;
using Qtip.Quant;

namespace Qtip.Model.Quantized;

/// <summary>
/// An activation tap that accumulates the four input Hessians (q/k/v, o, gate/up, down) of the chosen decoder layers
/// on the device during prefill forwards.
/// </summary>
public sealed class HessianCollector : IActivationObserver, IDisposable
{
    private readonly QtipDevice device;
    private readonly Dictionary<(int Layer, LinearInput Which), HessianAccumulator> sums = [];
    private readonly HashSet<int> layers;

    public HessianCollector(QtipDevice device, IEnumerable<int> layers)
    {
        this.device = device;
        this.layers = [.. layers];
    }

    public void OnLinearInput(int layer, LinearInput which, ArrayView<float> input, int rows, int features, AcceleratorStream stream)
    {
        if (!layers.Contains(layer))
            return;
        if (!sums.TryGetValue((layer, which), out var acc))
        {
            acc = new HessianAccumulator(device, features);
            sums[(layer, which)] = acc;
        }
        acc.Add(input.SubView(0, (long)rows * features), rows, stream);
    }

    /// <summary>The mean Hessian of one input group (finished on first access).</summary>
    public ArrayView<double> Hessian(int layer, LinearInput which) =>
        sums.TryGetValue((layer, which), out var acc)
            ? acc.Finish()
            : throw new InvalidOperationException($"no Hessian was collected for layer {layer} {which}");

    public long Tokens(int layer, LinearInput which) => sums.TryGetValue((layer, which), out var acc) ? acc.Tokens : 0;

    /// <summary>Frees the Hessians of one layer once it is quantized.</summary>
    public void Release(int layer)
    {
        foreach (var key in sums.Keys.Where(k => k.Layer == layer).ToList())
        {
            sums[key].Dispose();
            sums.Remove(key);
        }
        layers.Remove(layer);
    }

    /// <summary>Frees one Hessian of a layer once every matrix that reads it is prepared.</summary>
    public void Release(int layer, LinearInput which)
    {
        if (sums.Remove((layer, which), out var acc))
            acc.Dispose();
    }

    public void Dispose()
    {
        foreach (var s in sums.Values)
            s.Dispose();
        sums.Clear();
    }
}
