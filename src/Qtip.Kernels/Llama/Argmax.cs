using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;

namespace Qtip.Kernels.Llama;

/// <summary>
/// Index of the largest of n values (the first on ties, as torch.argmax), written to result[outIndex] on the device,
/// where the next decode step's embedding lookup reads it. One group: each thread scans a strided slice, then a
/// shared-memory tree keeps (value, index) pairs. NaN never wins.
/// </summary>
public sealed class Argmax : IKernelSet<Argmax>
{
    private readonly QtipDevice device;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<int>, ArgmaxParams> kernel;

    private Argmax(QtipDevice device)
    {
        this.device = device;
        kernel = device.Accelerator.LoadKernel<ArrayView<float>, ArrayView<int>, ArgmaxParams>(ArgmaxKernel);
    }

    public static Argmax Create(QtipDevice device) => new(device);

    public void Apply(ArrayView<float> values, int n, ArrayView<int> result, int outIndex = 0, AcceleratorStream? stream = null)
    {
        const string op = "Argmax";
        Check.Positive(op, "n", n);
        Check.Length(op, "values", values, n, $"n = {n}");
        if (outIndex < 0)
            throw new ArgumentOutOfRangeException(nameof(outIndex), outIndex, $"{op}: negative output index");
        Check.Length(op, "result", result, outIndex + 1L, $"outIndex = {outIndex}");
        int g = 1 << System.Numerics.BitOperations.Log2((uint)Math.Min(device.MaxGroupSize, 1024)); // power of two for the tree
        kernel(stream ?? device.Accelerator.DefaultStream, new KernelConfig(1, g), values, result, new ArgmaxParams(n, outIndex));
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
        for (int i = tid; i < p.N; i += g)
        {
            float v = values[i];
            if (v > bv || (bi == int.MaxValue && v == bv))
            {
                bv = v;
                bi = i;
            }
        }
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
}
