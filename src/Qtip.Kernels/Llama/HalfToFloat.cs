using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;
using Half = ILGPU.Half;

namespace Qtip.Kernels.Llama;

/// <summary>Elementwise fp16 → fp32 (exact): a dense fp16 weight handed to the quantizer as fp32.</summary>
public sealed class HalfToFloat : IKernelSet<HalfToFloat>
{
    private readonly QtipDevice device;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<Half>, ArrayView<float>> kernel;

    private HalfToFloat(QtipDevice device)
    {
        this.device = device;
        kernel = device.Accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<Half>, ArrayView<float>>(ConvertKernel);
    }

    public static HalfToFloat Create(QtipDevice device) => new(device);

    public void Apply(ArrayView<Half> source, ArrayView<float> destination, AcceleratorStream? stream = null)
    {
        if (destination.Length < source.Length)
            throw new ArgumentException($"HalfToFloat: destination has {destination.Length} elements, source {source.Length}", nameof(destination));
        if (source.Length > int.MaxValue)
            throw new ArgumentException($"HalfToFloat: {source.Length} elements exceed one launch", nameof(source));
        if (source.Length == 0)
            return;
        kernel(stream ?? device.Accelerator.DefaultStream, (int)source.Length, source, destination);
    }

    internal static void ConvertKernel(Index1D i, ArrayView<Half> source, ArrayView<float> destination) => destination[i] = source[i];
}
