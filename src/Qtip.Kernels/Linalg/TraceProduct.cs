using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;

namespace Qtip.Kernels.Linalg;

/// <summary>
/// Σ_{i,j} H[i,j]·G[i,j] for symmetric H, G (n×n, float64) given by their lower triangles: the proxy loss
/// tr(ΔW H ΔWᵀ) = ⟨H, ΔWᵀΔW⟩ once <see cref="Gram"/> has formed G = ΔWᵀΔW. Per-group partial sums come back to
/// the host (no float64 atomics, which OpenCL devices may lack).
/// </summary>
public sealed class TraceProduct : IKernelSet<TraceProduct>
{
    private const int Groups = 256;

    private readonly QtipDevice device;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<double>, ArrayView<double>, ArrayView<double>, int> kernel;
    private readonly MemoryBuffer1D<double, Stride1D.Dense> partials;

    private TraceProduct(QtipDevice device)
    {
        this.device = device;
        kernel = device.LoadKernel<ArrayView<double>, ArrayView<double>, ArrayView<double>, int>(TraceProductKernel);
        partials = device.Allocate1D<double>(Groups);
    }

    public static TraceProduct Create(QtipDevice device) => new(device);

    /// <summary>⟨H, G⟩ over the full symmetric matrices, read from their lower triangles.</summary>
    public double Compute(ArrayView<double> h, ArrayView<double> g, int n, AcceleratorStream? stream = null)
    {
        if (h.Length != (long)n * n || g.Length != (long)n * n)
            throw new ArgumentException($"TraceProduct: H has {h.Length}, G has {g.Length} elements, expected {n}×{n}", nameof(h));
        stream ??= device.Accelerator.DefaultStream;
        int groupSize = Math.Min(device.MaxGroupSize, 256);
        lock (partials)
        {
            kernel(stream, new KernelConfig(Groups, groupSize), h, g, partials.View, n);
            var host = new double[Groups];
            partials.View.CopyToCPU(stream, host);
            stream.Synchronize();
            return host.Sum();
        }
    }

    internal static void TraceProductKernel(ArrayView<double> h, ArrayView<double> g, ArrayView<double> partials, int n)
    {
        var scratch = SharedMemory.Allocate<double>(1024);
        int tid = Group.IdxX, gs = Group.DimX;
        long total = (long)n * n;
        double acc = 0;
        for (long e = Grid.GlobalIndex.X; e < total; e += (long)Grid.DimX * gs)
        {
            long i = e / n;
            long j = e - (i * n);
            if (j > i)
                continue;
            double w = j == i ? 1.0 : 2.0;
            acc += w * h[e] * g[e];
        }
        scratch[tid] = acc;
        Group.Barrier();
        if (tid == 0)
        {
            double s = 0;
            for (int t = 0; t < gs; t++)
                s += scratch[t];
            partials[Grid.IdxX] = s;
        }
    }
}
