using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;

namespace Qtip.Kernels.Trellis;

/// <summary>
/// Moves a packed m×n trellis from one tile layout to another (a byte permutation: stream byte k of tile t moves from
/// <typeparamref name="TFrom"/>'s place to <typeparamref name="TTo"/>'s). Typical uses: the band-major words the
/// quantizer emits per 16-column block → the generic row-major tensor, or → the HYB kernel layout of a kernel
/// checkpoint. One thread per byte; T = 256 (16×16 tiles).
/// </summary>
public sealed class TrellisRelayout<TFrom, TTo> : IKernelSet<TrellisRelayout<TFrom, TTo>>
    where TFrom : struct, ITileLayout
    where TTo : struct, ITileLayout
{
    private readonly QtipDevice device;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<byte>, ArrayView<byte>, LayoutParams> kernel;

    private TrellisRelayout(QtipDevice device)
    {
        this.device = device;
        kernel = device.Accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<byte>, ArrayView<byte>, LayoutParams>(Kernel);
    }

    public static TrellisRelayout<TFrom, TTo> Create(QtipDevice device) => new(device);

    /// <summary>source [tiles × 16K] int16 in <typeparamref name="TFrom"/> → destination [tiles × 16K] int16 in
    /// <typeparamref name="TTo"/>, for an m×n matrix (multiples of 16; of 32 when either layout is the kernel layout).</summary>
    public void Apply(ArrayView<short> source, int m, int n, int k, ArrayView<short> destination, AcceleratorStream? stream = null)
    {
        if (k < TrellisShape.MinK || k > TrellisShape.MaxK)
            throw new ArgumentOutOfRangeException(nameof(k), k, $"K must be in [{TrellisShape.MinK}, {TrellisShape.MaxK}]");
        if (m <= 0 || n <= 0 || m % 16 != 0 || n % 16 != 0)
            throw new ArgumentException($"TrellisRelayout: m×n = {m}×{n} must be positive multiples of 16", nameof(m));
        int tiles = (m / 16) * (n / 16);
        var lp = TileLayoutCheck.Check<TFrom>(tiles, k, 256, m, n);
        TileLayoutCheck.Check<TTo>(tiles, k, 256, m, n);
        long words = (long)tiles * 16 * k;
        if (source.Length < words || destination.Length < words)
            throw new ArgumentException($"TrellisRelayout: both tensors need [{tiles} × {16 * k}] int16", nameof(source));
        long bytes = 2 * words;
        if (bytes > int.MaxValue)
            throw new ArgumentException($"TrellisRelayout: {bytes} bytes exceed one launch", nameof(m));
        kernel(stream ?? device.Accelerator.DefaultStream, (int)bytes, source.Cast<byte>(), destination.Cast<byte>(), lp);
    }

    internal static void Kernel(Index1D index, ArrayView<byte> source, ArrayView<byte> destination, LayoutParams p)
    {
        int tile = index.X / p.BytesPerTile;
        int k = index.X - (tile * p.BytesPerTile);
        destination[default(TTo).MemoryByte(tile, k, p)] = source[default(TFrom).MemoryByte(tile, k, p)];
    }
}
