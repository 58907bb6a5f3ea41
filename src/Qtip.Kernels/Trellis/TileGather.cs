using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;

namespace Qtip.Kernels.Trellis;

/// <summary>
/// Moves values between an m×n row-major matrix and the 256-long trellis sequences of its 16×16 tiles, using the
/// layout's position map (row-major inside the tile for <see cref="GenericLayout"/>, the m16n8k16 fragment order of
/// spec §5 for <see cref="KernelLayout"/>). Covers the tiles of a band of tile columns [c0, c0 + cols): sequence
/// index tr·cols + (tc − c0), so BlockLDLQ can gather one 16-column block's m/16 tiles for one batched Viterbi call
/// and scatter the reconstruction back. One thread per value.
/// </summary>
public sealed class TileGather<TLayout> : IKernelSet<TileGather<TLayout>> where TLayout : struct, ITileLayout
{
    private readonly QtipDevice device;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, GatherParams> gather;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, GatherParams> scatter;

    private TileGather(QtipDevice device)
    {
        this.device = device;
        gather = device.Accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, GatherParams>(GatherKernel);
        scatter = device.Accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, GatherParams>(ScatterKernel);
    }

    public static TileGather<TLayout> Create(QtipDevice device) => new(device);

    /// <summary>sequences [(m/16)·cols × 256] ← matrix (m×n) tiles in tile columns [c0, c0 + cols).</summary>
    public void Gather(ArrayView<float> matrix, int m, int n, int c0, int cols, ArrayView<float> sequences, AcceleratorStream? stream = null) =>
        Launch(gather, matrix, m, n, c0, cols, sequences, stream);

    /// <summary>matrix (m×n) tiles in tile columns [c0, c0 + cols) ← sequences [(m/16)·cols × 256].</summary>
    public void Scatter(ArrayView<float> sequences, int m, int n, int c0, int cols, ArrayView<float> matrix, AcceleratorStream? stream = null) =>
        Launch(scatter, matrix, m, n, c0, cols, sequences, stream);

    private void Launch(
        Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, GatherParams> kernel,
        ArrayView<float> matrix, int m, int n, int c0, int cols, ArrayView<float> sequences, AcceleratorStream? stream)
    {
        bool kernelLayout = typeof(TLayout) == typeof(KernelLayout);
        int multiple = kernelLayout ? 32 : 16;
        if (m <= 0 || n <= 0 || m % multiple != 0 || n % multiple != 0)
            throw new ArgumentException($"TileGather: m×n = {m}×{n} must be positive multiples of {multiple}", nameof(m));
        if (c0 < 0 || cols < 1 || c0 + cols > n / 16)
            throw new ArgumentOutOfRangeException(nameof(cols), $"TileGather: tile columns [{c0}, {c0 + cols}) outside [0, {n / 16})");
        if (matrix.Length < (long)m * n)
            throw new ArgumentException($"TileGather: matrix has {matrix.Length} elements, needs m·n = {(long)m * n}", nameof(matrix));
        long count = (long)(m / 16) * cols * 256;
        if (sequences.Length < count)
            throw new ArgumentException($"TileGather: sequences has {sequences.Length} elements, needs [{(m / 16) * cols} × 256]", nameof(sequences));
        if (count > int.MaxValue)
            throw new ArgumentException($"TileGather: {count} values exceed one launch", nameof(m));
        kernel(stream ?? device.Accelerator.DefaultStream, (int)count, matrix, sequences, new GatherParams(new LayoutParams(2, 256, m, n), c0, cols));
    }

    public readonly struct GatherParams(LayoutParams layout, int c0, int cols)
    {
        public readonly LayoutParams Layout = layout;
        public readonly int C0 = c0;
        public readonly int Cols = cols;
    }

    private static long MatrixIndex(int index, GatherParams p)
    {
        int seq = index >> 8;
        int pos = index & 255;
        int tr = seq / p.Cols;
        int tc = p.C0 + (seq - (tr * p.Cols));
        default(TLayout).Position((tr * p.Layout.TilesPerRow) + tc, pos, p.Layout, out int row, out int col);
        return ((long)row * p.Layout.N) + col;
    }

    internal static void GatherKernel(Index1D index, ArrayView<float> matrix, ArrayView<float> sequences, GatherParams p) =>
        sequences[index] = matrix[MatrixIndex(index.X, p)];

    internal static void ScatterKernel(Index1D index, ArrayView<float> matrix, ArrayView<float> sequences, GatherParams p) =>
        matrix[MatrixIndex(index.X, p)] = sequences[index];
}
