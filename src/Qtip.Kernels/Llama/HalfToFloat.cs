using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;
using Half = ILGPU.Half;

namespace Qtip.Kernels.Llama;

/// <summary>Elementwise fp16 → fp32 (exact): a dense fp16 weight handed to the quantizer as fp32. The kernel is loaded on
/// first use; on a device without fp16 <see cref="Apply"/> throws <see cref="NotSupportedException"/> instead.</summary>
public sealed class HalfToFloat : IKernelSet<HalfToFloat>
{
    private readonly QtipDevice device;
    private readonly Lazy<Action<AcceleratorStream, Index1D, ArrayView<Half>, ArrayView<float>, SpanParams>> kernel;

    private HalfToFloat(QtipDevice device)
    {
        this.device = device;
        kernel = new(() => device.Accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<Half>, ArrayView<float>, SpanParams>(ConvertKernel));
    }

    public static HalfToFloat Create(QtipDevice device) => new(device);

    public void Apply(ArrayView<Half> source, ArrayView<float> destination, AcceleratorStream? stream = null)
    {
        device.RequireFloat16("HalfToFloat");
        if (destination.Length < source.Length)
            throw new ArgumentException($"HalfToFloat: destination has {destination.Length} elements, source {source.Length}", nameof(destination));
        if (source.Length > int.MaxValue)
            throw new ArgumentException($"HalfToFloat: {source.Length} elements exceed one launch", nameof(source));
        if (source.Length == 0)
            return;
        int span = Check.Span(device, source.Length);
        kernel.Value(stream ?? device.Accelerator.DefaultStream, Check.Threads(source.Length, span), source, destination, new SpanParams((int)source.Length, span));
    }

    internal static void ConvertKernel(Index1D i, ArrayView<Half> source, ArrayView<float> destination, SpanParams p)
    {
        int end = (i + 1) * p.Span;
        if (end > p.Count)
            end = p.Count;
        for (int e = i * p.Span; e < end; e++)
            destination[e] = source[e];
    }
}

/// <summary>Elementwise launches: <see cref="Count"/> elements, <see cref="Span"/> per thread.</summary>
public readonly struct SpanParams(int count, int span)
{
    public readonly int Count = count;
    public readonly int Span = span;
}
