using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;

namespace Qtip.Kernels.Llama;

/// <summary>
/// The SwiGLU activation of the Llama MLP: h = silu(g) ⊙ u with silu(g) = g / (1 + e^(−g)), elementwise over
/// rows×m. Used when gate and up are separate launches (prefill, or substituted layers); the dense decode path fuses
/// it into the gate/up matrix–vector product (<see cref="MatVec.SwiGlu(ILGPU.ArrayView{float}, ILGPU.ArrayView{float}, int, ILGPU.ArrayView{float}, ILGPU.ArrayView{float}, int, ILGPU.Runtime.AcceleratorStream?)"/>).
/// </summary>
public sealed class SwiGlu : IKernelSet<SwiGlu>
{
    private readonly QtipDevice device;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, SwiGluParams> kernel;

    private SwiGlu(QtipDevice device)
    {
        this.device = device;
        kernel = device.Accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, SwiGluParams>(SwiGluKernel);
    }

    public static SwiGlu Create(QtipDevice device) => new(device);

    /// <summary>h (count) = silu(g) ⊙ u. <paramref name="h"/> may be <paramref name="g"/> (in place).</summary>
    public void Apply(ArrayView<float> g, ArrayView<float> u, ArrayView<float> h, long count, AcceleratorStream? stream = null)
    {
        const string op = "SwiGlu";
        Check.Positive(op, "count", count);
        Check.Length(op, "g", g, count, $"count = {count}");
        Check.Length(op, "u", u, count, $"count = {count}");
        Check.Length(op, "h", h, count, $"count = {count}");
        if (count > int.MaxValue)
            throw new ArgumentException($"{op}: {count} elements exceed one launch", nameof(count));
        int span = Check.Span(device, count);
        kernel(stream ?? device.Accelerator.DefaultStream, Check.Threads(count, span), g, u, h, new SwiGluParams((int)count, span));
    }

    public readonly struct SwiGluParams(int count, int span)
    {
        public readonly int Count = count;
        public readonly int Span = span;
    }

    internal static void SwiGluKernel(Index1D i, ArrayView<float> g, ArrayView<float> u, ArrayView<float> h, SwiGluParams p)
    {
        int end = XMath.Min((i + 1) * p.Span, p.Count);
        for (int e = i * p.Span; e < end; e++)
        {
            float v = g[e];
            h[e] = v / (1f + XMath.Exp(-v)) * u[e];
        }
    }
}
