using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;

namespace Qtip.Kernels.Trellis;

/// <summary>Counts NaN/±Inf values of a device view (grid-stride, one atomic per offending value), so the quantizer
/// can reject bad targets before its kernels run. Costs one launch and a 4-byte read-back.</summary>
public sealed class FiniteCheck : IKernelSet<FiniteCheck>, IDisposable
{
    private readonly QtipDevice device;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<int>, FiniteParams> kernel;
    private readonly MemoryBuffer1D<int, Stride1D.Dense> counter;
    private readonly Lock gate = new();

    private FiniteCheck(QtipDevice device)
    {
        this.device = device;
        kernel = device.Accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<int>, FiniteParams>(Kernel);
        counter = device.Allocate1D<int>(1);
    }

    public static FiniteCheck Create(QtipDevice device) => new(device);

    /// <summary>Number of non-finite values among the first <paramref name="length"/> of <paramref name="values"/> (synchronises).</summary>
    public int CountNonFinite(ArrayView<float> values, long length, AcceleratorStream? stream = null)
    {
        stream ??= device.Accelerator.DefaultStream;
        lock (gate)
        {
            EnqueueCount(values, length, counter.View, stream);
            stream.Synchronize();
            return counter.GetAsArray1D()[0];
        }
    }

    /// <summary>Enqueues count[0] = the number of non-finite values among the first <paramref name="length"/> of
    /// <paramref name="values"/> (zeroed first), without waiting: the caller reads it with its next synchronising copy.</summary>
    public void EnqueueCount(ArrayView<float> values, long length, ArrayView<int> count, AcceleratorStream stream)
    {
        if (length < 0 || length > values.Length)
            throw new ArgumentOutOfRangeException(nameof(length), length, $"FiniteCheck: length must be in [0, {values.Length}]");
        if (count.Length < 1)
            throw new ArgumentException("FiniteCheck: the count view is empty", nameof(count));
        count.SubView(0, 1).MemSetToZero(stream);
        if (length == 0)
            return;
        // On the CPU accelerator every simulated group ends with an OS-thread barrier: one group per multiprocessor
        // (65,536 values: 120 ms with a thread per value, measured on 2 cores).
        long cap = device.Capabilities.Simulator ? (long)device.Accelerator.NumMultiprocessors * device.MaxGroupSize : 1L << 20;
        int threads = (int)Math.Min(length, cap);
        kernel(stream, threads, values, count, new FiniteParams(length, threads));
    }

    /// <summary>Values to check and the launch's thread count (the grid stride).</summary>
    public readonly struct FiniteParams(long length, long threads)
    {
        public readonly long Length = length;
        public readonly long Threads = threads;
    }

    /// <summary>counter[0] += number of NaN/±Inf among values[0..Length), each thread striding by Threads.</summary>
    internal static void Kernel(Index1D index, ArrayView<float> values, ArrayView<int> counter, FiniteParams p)
    {
        // One atomic per offending value and no other loop-carried value: a per-thread count carried through this
        // loop hung on CUDA (H100, ILGPU 1.5.3) once a value was non-finite, while the CPU accelerator was right.
        for (long i = index.X; i < p.Length; i += p.Threads)
        {
            float v = values[i];
            if (float.IsNaN(v) || float.IsInfinity(v))
                Atomic.Add(ref counter[0], 1);
        }
    }

    public void Dispose() => counter.Dispose();
}
