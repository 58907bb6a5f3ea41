using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;

namespace Qtip.Kernels.Trellis;

/// <summary>
/// One Lloyd assignment pass of 2-D k-means: every sample finds its nearest centroid (squared Euclidean distance in
/// fp32, ties to the smaller index) and adds itself to that centroid's sums. The sums are 64-bit fixed point
/// (coordinates × 2^32, distances × 2^32) added with integer atomics, so the result does not depend on the order in
/// which threads run: the iteration is deterministic on a given backend. Centroids are staged in shared memory; the
/// update (sum / count) is done by the caller from the <see cref="Sums"/> it reads back (K × 3 longs + 1).
/// </summary>
public sealed class KMeans2D : IKernelSet<KMeans2D>
{
    /// <summary>Fixed-point scale of the sums, 2^32.</summary>
    public const double FixedScale = 4294967296.0;

    /// <summary>Largest centroid count (shared memory: 8 bytes each).</summary>
    public const int MaxCentroids = 4096;

    private readonly QtipDevice device;
    private readonly bool staticShared;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<long>, AssignParams> kernel;

    private KMeans2D(QtipDevice device)
    {
        this.device = device;
        staticShared = !device.Capabilities.DynamicSharedMemory;
        kernel = staticShared
            ? device.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<long>, AssignParams>(Kernel<StaticSharedFloats>)
            : device.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<long>, AssignParams>(Kernel<DynamicSharedFloats>);
    }

    public static KMeans2D Create(QtipDevice device) => new(device);

    /// <summary>Layout of the sums buffer: [sumX (K), sumY (K), count (K), total distance (1)].</summary>
    public static long SumsLength(int centroids) => (3L * centroids) + 1;

    /// <summary>
    /// samples [count × 2] and centroids [K × 2] → sums (zeroed here first): per centroid Σx·2^32, Σy·2^32, members;
    /// and Σ‖x − c‖·2^32 over all samples (the distortion scipy's kmeans tests for convergence).
    /// </summary>
    public void Assign(ArrayView<float> samples, int count, ArrayView<float> centroids, int k, ArrayView<long> sums, AcceleratorStream? stream = null)
    {
        if (k < 1 || k > MaxCentroids)
            throw new ArgumentOutOfRangeException(nameof(k), k, $"KMeans2D: centroid count must be in [1, {MaxCentroids}]");
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        if (samples.Length < 2L * count)
            throw new ArgumentException($"KMeans2D: samples has {samples.Length} floats, needs [{count} × 2]", nameof(samples));
        if (centroids.Length < 2L * k)
            throw new ArgumentException($"KMeans2D: centroids has {centroids.Length} floats, needs [{k} × 2]", nameof(centroids));
        if (sums.Length < SumsLength(k))
            throw new ArgumentException($"KMeans2D: sums has {sums.Length} longs, needs {SumsLength(k)}", nameof(sums));
        stream ??= device.Accelerator.DefaultStream;
        sums.SubView(0, SumsLength(k)).MemSetToZero(stream);
        if (count == 0)
            return;
        int group = Math.Min(device.MaxGroupSize, 256);
        // A few groups per multiprocessor, each thread looping over samples: the distance total then costs one atomic
        // per thread instead of one per sample on a single address.
        int groups = (int)Math.Min((count + group - 1) / group, Math.Max(1, 8 * device.Accelerator.NumMultiprocessors));
        var config = staticShared
            ? new KernelConfig(groups, group)
            : new KernelConfig(groups, group, SharedMemoryConfig.RequestDynamic<float>(2 * k));
        kernel(stream, config, samples, centroids, sums, new AssignParams(count, k));
    }

    public readonly struct AssignParams(int count, int k)
    {
        public readonly int Count = count;
        public readonly int K = k;
    }

    internal static void Kernel<TShared>(ArrayView<float> samples, ArrayView<float> centroids, ArrayView<long> sums, AssignParams p)
        where TShared : struct, ISharedFloats
    {
        var c = default(TShared).Get();
        for (int i = Group.IdxX; i < 2 * p.K; i += Group.DimX)
            c[i] = centroids[i];
        Group.Barrier();
        int stride = Grid.DimX * Group.DimX;
        long distance = 0;
        for (int s = (Grid.IdxX * Group.DimX) + Group.IdxX; s < p.Count; s += stride)
        {
            float x = samples[2L * s];
            float y = samples[(2L * s) + 1];
            float best = float.PositiveInfinity;
            int arg = 0;
            for (int j = 0; j < p.K; j++)
            {
                float dx = x - c[2 * j];
                float dy = y - c[(2 * j) + 1];
                float d = (dx * dx) + (dy * dy);
                if (d < best)
                {
                    best = d;
                    arg = j;
                }
            }
            Atomic.Add(ref sums[arg], (long)(x * (float)FixedScale));
            Atomic.Add(ref sums[p.K + arg], (long)(y * (float)FixedScale));
            Atomic.Add(ref sums[(2 * p.K) + arg], 1L);
            distance += (long)(XMath.Sqrt(best) * (float)FixedScale);
        }
        if (distance != 0)
            Atomic.Add(ref sums[3 * p.K], distance);
    }
}
