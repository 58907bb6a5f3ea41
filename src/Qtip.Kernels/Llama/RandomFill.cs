using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;
using Half = ILGPU.Half;

namespace Qtip.Kernels.Llama;

/// <summary>
/// Fills a buffer with seeded uniform values in [−scale, scale) from a hash of (seed, index), on the device: the
/// synthetic models of <c>qtip bench decode</c> (13 GB of fp16 for a 7B shape) are generated where they live
/// instead of being copied over PCIe. Deterministic for a seed, independent of the launch shape. The fp16 kernel is
/// loaded on first use (a device without fp16 refuses it with <see cref="NotSupportedException"/>).
/// </summary>
public sealed class RandomFill : IKernelSet<RandomFill>
{
    private readonly QtipDevice device;
    private readonly Lazy<Action<AcceleratorStream, Index1D, ArrayView<Half>, RandomFillParams>> f16;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, RandomFillParams> f32;
    private readonly Lazy<Action<AcceleratorStream, Index1D, ArrayView<int>, RandomFillParams>> bits;

    private RandomFill(QtipDevice device)
    {
        this.device = device;
        f16 = new(() => device.Accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<Half>, RandomFillParams>(FillF16Kernel));
        f32 = device.Accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, RandomFillParams>(FillF32Kernel);
        bits = new(() => device.Accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<int>, RandomFillParams>(FillBitsKernel));
    }

    public static RandomFill Create(QtipDevice device) => new(device);

    public void Apply(ArrayView<Half> data, ulong seed, float scale, AcceleratorStream? stream = null)
    {
        device.RequireFloat16("RandomFill");
        if (data.Length > int.MaxValue)
            throw new ArgumentException($"RandomFill: {data.Length} elements exceed one launch", nameof(data));
        int span = Check.Span(device, data.Length);
        f16.Value(stream ?? device.Accelerator.DefaultStream, Check.Threads(data.Length, span), data, new RandomFillParams(seed, scale, (int)data.Length, span));
    }

    public void Apply(ArrayView<float> data, ulong seed, float scale, AcceleratorStream? stream = null)
    {
        if (data.Length > int.MaxValue)
            throw new ArgumentException($"RandomFill: {data.Length} elements exceed one launch", nameof(data));
        int span = Check.Span(device, data.Length);
        f32(stream ?? device.Accelerator.DefaultStream, Check.Threads(data.Length, span), data, new RandomFillParams(seed, scale, (int)data.Length, span));
    }

    /// <summary>Fills <paramref name="data"/> with seeded uniformly random 32-bit words (e.g. synthetic packed trellis words).</summary>
    public void ApplyBits(ArrayView<int> data, ulong seed, AcceleratorStream? stream = null)
    {
        if (data.Length > int.MaxValue)
            throw new ArgumentException($"RandomFill: {data.Length} words exceed one launch", nameof(data));
        int span = Check.Span(device, data.Length);
        bits.Value(stream ?? device.Accelerator.DefaultStream, Check.Threads(data.Length, span), data, new RandomFillParams(seed, 1f, (int)data.Length, span));
    }

    public readonly struct RandomFillParams(ulong seed, float scale, int count, int span)
    {
        public readonly int Count = count;
        public readonly int Span = span;
        public readonly ulong Seed = seed;
        public readonly float Scale = scale;
    }

    /// <summary>splitmix64 of seed + index, mapped to [−1, 1).</summary>
    public static float Uniform(ulong seed, long index) => ((Mix(seed, index) >> 40) * (1f / (1 << 23))) - 1f;

    /// <summary>splitmix64 of seed + index: 32 uniformly random bits (the high half).</summary>
    public static int Bits(ulong seed, long index) => (int)(Mix(seed, index) >> 32);

    private static ulong Mix(ulong seed, long index)
    {
        ulong z = seed + ((ulong)index * 0x9E3779B97F4A7C15UL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    internal static void FillF16Kernel(Index1D i, ArrayView<Half> data, RandomFillParams p)
    {
        long end = System.Math.Min((long)(i.X + 1) * p.Span, p.Count);
        for (long e = (long)i.X * p.Span; e < end; e++)
            data[e] = (Half)(Uniform(p.Seed, e) * p.Scale);
    }

    internal static void FillF32Kernel(Index1D i, ArrayView<float> data, RandomFillParams p)
    {
        long end = System.Math.Min((long)(i.X + 1) * p.Span, p.Count);
        for (long e = (long)i.X * p.Span; e < end; e++)
            data[e] = Uniform(p.Seed, e) * p.Scale;
    }

    internal static void FillBitsKernel(Index1D i, ArrayView<int> data, RandomFillParams p)
    {
        long end = System.Math.Min((long)(i.X + 1) * p.Span, p.Count);
        for (long e = (long)i.X * p.Span; e < end; e++)
            data[e] = Bits(p.Seed, e);
    }
}
