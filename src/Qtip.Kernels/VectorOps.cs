using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;

namespace Qtip.Kernels;

/// <summary>
/// Small element-wise and reduction ops the quantizer needs between the big kernels: scale in place, float32 ↔ float64,
/// sum of squares (float64 accumulation, per-group partials summed on the host). Grid-stride loops, one launch each.
/// </summary>
public sealed class VectorOps : IKernelSet<VectorOps>
{
    private const int ReduceGroups = 256;

    private readonly QtipDevice device;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, float> scale;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<double>> widen;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<double>, ArrayView<float>> narrow;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<double>> sumSquares;
    private readonly MemoryBuffer1D<double, Stride1D.Dense> partials;
    private readonly Lock reduceLock = new();

    private VectorOps(QtipDevice device)
    {
        this.device = device;
        scale = device.LoadKernel<ArrayView<float>, float>(ScaleKernel);
        widen = device.LoadKernel<ArrayView<float>, ArrayView<double>>(WidenKernel);
        narrow = device.LoadKernel<ArrayView<double>, ArrayView<float>>(NarrowKernel);
        sumSquares = device.LoadKernel<ArrayView<float>, ArrayView<double>>(SumSquaresKernel);
        partials = device.Allocate1D<double>(ReduceGroups);
    }

    public static VectorOps Create(QtipDevice device) => new(device);

    /// <summary>x ← s·x.</summary>
    public void Scale(ArrayView<float> x, float s, AcceleratorStream? stream = null) =>
        scale(stream ?? device.Accelerator.DefaultStream, Config(x.Length), x, s);

    /// <summary>y (float64) ← x (float32); equal lengths.</summary>
    public void Widen(ArrayView<float> x, ArrayView<double> y, AcceleratorStream? stream = null)
    {
        if (x.Length != y.Length)
            throw new ArgumentException($"VectorOps.Widen: lengths {x.Length} and {y.Length} differ", nameof(y));
        widen(stream ?? device.Accelerator.DefaultStream, Config(x.Length), x, y);
    }

    /// <summary>y (float32) ← x (float64); equal lengths.</summary>
    public void Narrow(ArrayView<double> x, ArrayView<float> y, AcceleratorStream? stream = null)
    {
        if (x.Length != y.Length)
            throw new ArgumentException($"VectorOps.Narrow: lengths {x.Length} and {y.Length} differ", nameof(y));
        narrow(stream ?? device.Accelerator.DefaultStream, Config(x.Length), x, y);
    }

    /// <summary>Σ x² accumulated in float64.</summary>
    public double SumOfSquares(ArrayView<float> x, AcceleratorStream? stream = null)
    {
        stream ??= device.Accelerator.DefaultStream;
        lock (reduceLock)
        {
            // One partial per group; on the CPU accelerator one one-thread group per core (LoopConfig).
            var config = device.Capabilities.Simulator ? device.LoopConfig(x.Length) : new KernelConfig(ReduceGroups, GroupSize);
            int groups = Math.Min(config.GridDim.X, ReduceGroups);
            sumSquares(stream, config, x, partials.View);
            var host = new double[groups];
            partials.View.SubView(0, groups).CopyToCPU(stream, host);
            stream.Synchronize();
            return host.Sum();
        }
    }

    private int GroupSize => Math.Min(device.MaxGroupSize, 256);

    private KernelConfig Config(long length) => device.LoopConfig(length, GroupSize);

    internal static void ScaleKernel(ArrayView<float> x, float s)
    {
        for (long i = Grid.GlobalIndex.X; i < x.Length; i += (long)Grid.DimX * Group.DimX)
            x[i] *= s;
    }

    internal static void WidenKernel(ArrayView<float> x, ArrayView<double> y)
    {
        for (long i = Grid.GlobalIndex.X; i < x.Length; i += (long)Grid.DimX * Group.DimX)
            y[i] = x[i];
    }

    internal static void NarrowKernel(ArrayView<double> x, ArrayView<float> y)
    {
        for (long i = Grid.GlobalIndex.X; i < x.Length; i += (long)Grid.DimX * Group.DimX)
            y[i] = (float)x[i];
    }

    internal static void SumSquaresKernel(ArrayView<float> x, ArrayView<double> partials)
    {
        var scratch = SharedMemory.Allocate<double>(1024);
        double acc = 0;
        for (long i = Grid.GlobalIndex.X; i < x.Length; i += (long)Grid.DimX * Group.DimX)
        {
            double v = x[i];
            acc += v * v;
        }
        scratch[Group.IdxX] = acc;
        Group.Barrier();
        if (Group.IdxX == 0)
        {
            double s = 0;
            for (int t = 0; t < Group.DimX; t++)
                s += scratch[t];
            partials[Grid.IdxX] = s;
        }
    }
}
