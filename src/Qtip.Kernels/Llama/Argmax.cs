using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;

namespace Qtip.Kernels.Llama;

/// <summary>
/// Index of the largest of n values (the first on ties, as torch.argmax), written to result[outIndex] on the device,
/// where the next decode step's embedding lookup reads it. One group: each thread scans a strided slice, then a
/// shared-memory tree keeps (value, index) pairs. NaN never wins. Serial style (CPU simulator and OpenCL): one
/// thread scans all n with the same comparison, no shared memory and no barrier; the grouped kernel loads when first
/// launched.
/// </summary>
public sealed class Argmax : IKernelSet<Argmax>
{
    private readonly QtipDevice device;
    private readonly Lazy<Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<int>, ArgmaxParams>> kernel;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<int>, ArgmaxParams> serial;

    private Argmax(QtipDevice device)
    {
        this.device = device;
        kernel = new(() => device.LoadKernel<ArrayView<float>, ArrayView<int>, ArgmaxParams>(ArgmaxKernel));
        serial = device.Accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<int>, ArgmaxParams>(ArgmaxSerialKernel);
        Style = Check.DefaultStyle(device);
    }

    public KernelStyle Style { get; set; }

    public static Argmax Create(QtipDevice device) => new(device);

    public void Apply(ArrayView<float> values, int n, ArrayView<int> result, int outIndex = 0, AcceleratorStream? stream = null)
    {
        const string op = "Argmax";
        Check.Positive(op, "n", n);
        Check.Length(op, "values", values, n, $"n = {n}");
        if (outIndex < 0)
            throw new ArgumentOutOfRangeException(nameof(outIndex), outIndex, $"{op}: negative output index");
        Check.Length(op, "result", result, outIndex + 1L, $"outIndex = {outIndex}");
        var p = new ArgmaxParams(n, outIndex);
        if (Style == KernelStyle.Serial)
        {
            serial(stream ?? device.Accelerator.DefaultStream, 1, values, result, p);
            return;
        }
        int g = 1 << System.Numerics.BitOperations.Log2((uint)Math.Min(device.MaxGroupSize, 1024)); // power of two for the tree
        kernel.Value(stream ?? device.Accelerator.DefaultStream, new KernelConfig(1, g), values, result, p);
    }

    public readonly struct ArgmaxParams(int n, int outIndex)
    {
        public readonly int N = n;
        public readonly int OutIndex = outIndex;
    }

    internal static void ArgmaxKernel(ArrayView<float> values, ArrayView<int> result, ArgmaxParams p)
    {
        var bestValue = SharedMemory.Allocate<float>(1024);
        var bestIndex = SharedMemory.Allocate<int>(1024);
        int tid = Group.IdxX;
        int g = Group.DimX;
        float bv = float.NegativeInfinity;
        int bi = int.MaxValue;
        Scan(values, tid, p.N, g, ref bv, ref bi);
        bestValue[tid] = bv;
        bestIndex[tid] = bi;
        Group.Barrier();
        for (int stride = g / 2; stride > 0; stride >>= 1)
        {
            if (tid < stride)
            {
                float ov = bestValue[tid + stride];
                int oi = bestIndex[tid + stride];
                float mv = bestValue[tid];
                int mi = bestIndex[tid];
                if (ov > mv || (ov == mv && oi < mi))
                {
                    bestValue[tid] = ov;
                    bestIndex[tid] = oi;
                }
            }
            Group.Barrier();
        }
        if (tid == 0)
            result[p.OutIndex] = bestIndex[0] == int.MaxValue ? 0 : bestIndex[0];
    }

    internal static void ArgmaxSerialKernel(Index1D i, ArrayView<float> values, ArrayView<int> result, ArgmaxParams p)
    {
        float bv = float.NegativeInfinity;
        int bi = int.MaxValue;
        Scan(values, 0, p.N, 1, ref bv, ref bi);
        result[p.OutIndex] = bi == int.MaxValue ? 0 : bi;
    }

    /// <summary>The first largest of values[begin], values[begin + stride], … below n into (bv, bi); NaN never wins.</summary>
    private static void Scan(ArrayView<float> values, int begin, int n, int stride, ref float bv, ref int bi)
    {
        for (int i = begin; i < n; i += stride)
        {
            float v = values[i];
            if (v > bv || (bi == int.MaxValue && v == bv))
            {
                bv = v;
                bi = i;
            }
        }
    }
}
