using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;

namespace Qtip.Kernels.Trellis;

/// <summary>
/// Generic-layout trellis → kernel layout (a byte permutation: stream byte k of tile t moves from
/// <see cref="GenericLayout"/>'s place to <see cref="KernelLayout"/>'s). The quantizer emits generic words per
/// column block; a kernel checkpoint stores the whole matrix in the kernel layout. One thread per byte.
/// </summary>
public sealed class TrellisRelayout : IKernelSet<TrellisRelayout>
{
    private readonly QtipDevice device;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<byte>, ArrayView<byte>, LayoutParams> kernel;

    private TrellisRelayout(QtipDevice device)
    {
        this.device = device;
        kernel = device.Accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<byte>, ArrayView<byte>, LayoutParams>(Kernel);
    }

    public static TrellisRelayout Create(QtipDevice device) => new(device);

    /// <summary>generic [tiles × 16K] int16 → kernelLayout [tiles × 16K] int16 for an m×n matrix (multiples of 32), T = 256.</summary>
    public void ToKernelLayout(ArrayView<short> generic, int m, int n, int k, ArrayView<short> kernelLayout, AcceleratorStream? stream = null)
    {
        if (k < TrellisShape.MinK || k > TrellisShape.MaxK)
            throw new ArgumentOutOfRangeException(nameof(k), k, $"K must be in [{TrellisShape.MinK}, {TrellisShape.MaxK}]");
        int tiles = (m / 16) * (n / 16);
        var lp = TileLayoutCheck.Check<KernelLayout>(tiles, k, 256, m, n);
        long words = (long)tiles * 16 * k;
        if (generic.Length < words || kernelLayout.Length < words)
            throw new ArgumentException($"TrellisRelayout: both tensors need [{tiles} × {16 * k}] int16", nameof(generic));
        long bytes = 2 * words;
        if (bytes > int.MaxValue)
            throw new ArgumentException($"TrellisRelayout: {bytes} bytes exceed one launch", nameof(m));
        kernel(stream ?? device.Accelerator.DefaultStream, (int)bytes, generic.Cast<byte>(), kernelLayout.Cast<byte>(), lp);
    }

    internal static void Kernel(Index1D index, ArrayView<byte> generic, ArrayView<byte> kernelLayout, LayoutParams p)
    {
        int tile = index.X / p.BytesPerTile;
        int k = index.X - (tile * p.BytesPerTile);
        kernelLayout[default(KernelLayout).MemoryByte(tile, k, p)] = generic[default(GenericLayout).MemoryByte(tile, k, p)];
    }
}
