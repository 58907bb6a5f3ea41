using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;

namespace Qtip.Kernels.Trellis;

/// <summary>
/// States → the tail-biting bitstream (spec §1 "reference packing"): the L bits of s_0, then the low K·V bits of
/// s_1 … s_{N−1}, MSB first, the final L−K·V bits dropped (they repeat the first ones in a tail-biting walk), K·T
/// bits per tile, placed by the layout <typeparamref name="TLayout"/> into the int16 trellis tensor. One thread per
/// stream byte on GPUs; on the CPU accelerator one group per multiprocessor loops over the bytes (every simulated
/// group ends with an OS-thread barrier). The states must form tail-biting walks (the quantizer's Approx and Exact
/// modes guarantee it).
/// </summary>
public sealed class TrellisPack<TLayout> : IKernelSet<TrellisPack<TLayout>> where TLayout : struct, ITileLayout
{
    private readonly QtipDevice device;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<uint>, ArrayView<byte>, PackParams> kernel;

    private TrellisPack(QtipDevice device)
    {
        this.device = device;
        kernel = device.Accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<uint>, ArrayView<byte>, PackParams>(Kernel);
    }

    public static TrellisPack<TLayout> Create(QtipDevice device) => new(device);

    /// <summary>
    /// states [tiles × T/V] (L-bit states) → trellis [tiles × K·T/16] int16. For the kernel layout, tiles are the
    /// (m/16)·(n/16) tiles of an m×n matrix in row-major tile order and m, n are multiples of 32.
    /// </summary>
    public void Apply(ArrayView<uint> states, int tiles, int l, int k, int v, int t, ArrayView<short> trellis, int m = 0, int n = 0, AcceleratorStream? stream = null)
    {
        TrellisShape.Validate(l, k, v, t);
        var lp = TileLayoutCheck.Check<TLayout>(tiles, k, t, m, n);
        int steps = t / v;
        if (states.Length < (long)tiles * steps)
            throw new ArgumentException($"TrellisPack: states has {states.Length} elements, needs [{tiles} × N = {steps}]", nameof(states));
        long words = (long)tiles * k * t / 16;
        if (trellis.Length < words)
            throw new ArgumentException($"TrellisPack: trellis has {trellis.Length} elements, needs [{tiles} × K·T/16 = {k * t / 16}]", nameof(trellis));
        long threads = (long)tiles * lp.BytesPerTile;
        if (threads > int.MaxValue)
            throw new ArgumentException($"TrellisPack: {tiles} tiles exceed one launch", nameof(tiles));
        if (threads == 0)
            return;
        int launched = device.Capabilities.Simulator ? (int)Math.Min(threads, (long)device.Accelerator.NumMultiprocessors * device.MaxGroupSize) : (int)threads;
        kernel(stream ?? device.Accelerator.DefaultStream, launched, states, trellis.Cast<byte>(), new PackParams(l, k * v, steps, lp, (int)threads, launched));
    }

    public readonly struct PackParams(int l, int kv, int steps, LayoutParams layout, int bytes, int stride)
    {
        public readonly int L = l;
        public readonly int KV = kv;
        public readonly int Steps = steps;
        public readonly LayoutParams Layout = layout;

        /// <summary>Stream bytes of all tiles.</summary>
        public readonly int Bytes = bytes;

        /// <summary>Threads launched (each handles bytes index, index + stride, …).</summary>
        public readonly int Stride = stride;
    }

    internal static void Kernel(Index1D index, ArrayView<uint> states, ArrayView<byte> trellis, PackParams p)
    {
        for (int b = index.X; b < p.Bytes; b += p.Stride)
            PackByte(b, states, trellis, p);
    }

    /// <summary>Stream byte <paramref name="b"/> (of all tiles): 8 bits gathered from the states.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PackByte(int b, ArrayView<uint> states, ArrayView<byte> trellis, PackParams p)
    {
        int bytesPerTile = p.Layout.BytesPerTile;
        int tile = b / bytesPerTile;
        int k = b - (tile * bytesPerTile);
        long row = (long)tile * p.Steps;
        uint value = 0;
        for (int i = 0; i < 8; i++)
        {
            int j = (8 * k) + i;
            uint bit;
            if (j < p.L)
            {
                bit = (states[row] >> (p.L - 1 - j)) & 1u;
            }
            else
            {
                int jj = j - p.L;
                int step = 1 + (jj / p.KV);
                int within = jj - ((step - 1) * p.KV);
                bit = (states[row + step] >> (p.KV - 1 - within)) & 1u;
            }
            value = (value << 1) | bit;
        }
        trellis[default(TLayout).MemoryByte(tile, k, p.Layout)] = (byte)value;
    }
}

/// <summary>Host checks shared by the layout-aware kernels.</summary>
internal static class TileLayoutCheck
{
    public static LayoutParams Check<TLayout>(int tiles, int k, int t, int m, int n) where TLayout : struct, ITileLayout
    {
        ArgumentOutOfRangeException.ThrowIfNegative(tiles);
        if (typeof(TLayout) == typeof(KernelLayout))
        {
            if (t != 256)
                throw new ArgumentOutOfRangeException(nameof(t), t, "the kernel layout packs 16×16 tiles: T must be 256");
            if (m <= 0 || n <= 0 || m % 32 != 0 || n % 32 != 0)
                throw new ArgumentException($"the kernel layout needs m and n positive multiples of 32, got {m}×{n}", nameof(m));
            if ((long)(m / 16) * (n / 16) != tiles)
                throw new ArgumentException($"the kernel layout packs whole matrices: {m}×{n} has {(m / 16) * (n / 16)} tiles, got {tiles}", nameof(tiles));
        }
        else if (m != 0 || n != 0)
        {
            if (m <= 0 || n <= 0 || m % 16 != 0 || n % 16 != 0)
                throw new ArgumentException($"a tiled matrix needs m and n positive multiples of 16, got {m}×{n}", nameof(m));
        }
        return new LayoutParams(k, t, m, Math.Max(n, 16));
    }
}
