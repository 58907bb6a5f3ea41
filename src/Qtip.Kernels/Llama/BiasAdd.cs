using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;

namespace Qtip.Kernels.Llama;

/// <summary>
/// The bias of a linear layer: y (rows×m) += b (m), each row. Qwen2's q/k/v projections carry one; it is added after
/// the product (dense or quantized) and before RoPE, in fp32, as transformers adds it. A separate launch, made only by
/// linears that have a bias, so the Llama decode paths keep their launch counts.
/// </summary>
public sealed class BiasAdd : IKernelSet<BiasAdd>
{
    private readonly QtipDevice device;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, BiasAddParams> kernel;

    private BiasAdd(QtipDevice device)
    {
        this.device = device;
        kernel = device.Accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, BiasAddParams>(BiasAddKernel);
    }

    public static BiasAdd Create(QtipDevice device) => new(device);

    /// <summary>y (rows×m) += b (m).</summary>
    public void Apply(ArrayView<float> y, ArrayView<float> bias, int rows, int m, AcceleratorStream? stream = null)
    {
        const string op = "BiasAdd";
        Check.Positive(op, "rows", rows);
        Check.Positive(op, "m", m);
        long count = (long)rows * m;
        Check.Length(op, "y", y, count, $"rows {rows} × m {m}");
        Check.Length(op, "bias", bias, m, $"m = {m}");
        if (count > int.MaxValue)
            throw new ArgumentException($"{op}: {count} elements exceed one launch", nameof(rows));
        int span = Check.Span(device, count);
        kernel(stream ?? device.Accelerator.DefaultStream, Check.Threads(count, span), y, bias, new BiasAddParams((int)count, m, span));
    }

    public readonly struct BiasAddParams(int count, int m, int span)
    {
        public readonly int Count = count;
        public readonly int M = m;
        public readonly int Span = span;
    }

    internal static void BiasAddKernel(Index1D i, ArrayView<float> y, ArrayView<float> bias, BiasAddParams p)
    {
        int end = XMath.Min((i + 1) * p.Span, p.Count);
        for (int e = i * p.Span; e < end; e++)
            y[e] += bias[e % p.M];
    }
}
