using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;

namespace Qtip.Kernels;

/// <summary>
/// B (n×m) = Aᵀ for a row-major A (m×n). A group moves one 32×32 tile through shared memory (padded to 33
/// columns, so both the row-wise read and the column-wise write are bank-conflict free); global reads and writes
/// are both coalesced.
/// </summary>
public sealed class Transpose : IKernelSet<Transpose>
{
    private const int TileSize = 32;

    private readonly QtipDevice device;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, TransposeParams> kernel;

    private Transpose(QtipDevice device)
    {
        this.device = device;
        kernel = device.LoadKernel<ArrayView<float>, ArrayView<float>, TransposeParams>(TransposeKernel);
    }

    public static Transpose Create(QtipDevice device) => new(device);

    /// <summary>output (n×m) = input (m×n)ᵀ. The views must not overlap.</summary>
    public void Apply(ArrayView<float> input, ArrayView<float> output, int m, int n, AcceleratorStream? stream = null)
    {
        if (m < 0 || n < 0)
            throw new ArgumentOutOfRangeException(nameof(m), $"Transpose: negative shape {m}×{n}");
        if (input.Length < (long)m * n)
            throw new ArgumentException($"Transpose: input has {input.Length} elements, needs {m}×{n}", nameof(input));
        if (output.Length < (long)m * n)
            throw new ArgumentException($"Transpose: output has {output.Length} elements, needs {n}×{m}", nameof(output));
        if (m == 0 || n == 0)
            return;
        int tilesX = (n + TileSize - 1) / TileSize;
        int tilesY = (m + TileSize - 1) / TileSize;
        long groups = (long)tilesX * tilesY;
        if (groups > int.MaxValue)
            throw new ArgumentException($"Transpose: {m}×{n} is too large for one launch", nameof(m));
        int groupSize = device.LoopGroupSize(256);
        kernel(stream ?? device.Accelerator.DefaultStream, new KernelConfig((int)groups, groupSize),
            input, output, new TransposeParams(m, n, tilesX));
    }

    public readonly struct TransposeParams(int rows, int cols, int tilesX)
    {
        public readonly int Rows = rows;
        public readonly int Cols = cols;
        public readonly int TilesX = tilesX;
    }

    internal static void TransposeKernel(ArrayView<float> input, ArrayView<float> output, TransposeParams p)
    {
        var tile = SharedMemory.Allocate<float>(TileSize * (TileSize + 1));
        int tid = Group.IdxX;
        int groupSize = Group.DimX;
        int ty = Grid.IdxX / p.TilesX;
        int tx = Grid.IdxX - (ty * p.TilesX);
        int row0 = ty * TileSize;
        int col0 = tx * TileSize;
        for (int e = tid; e < TileSize * TileSize; e += groupSize)
        {
            int r = e / TileSize;
            int c = e - (r * TileSize);
            int row = row0 + r, col = col0 + c;
            if (row < p.Rows && col < p.Cols)
                tile[(r * (TileSize + 1)) + c] = input[((long)row * p.Cols) + col];
        }
        Group.Barrier();
        for (int e = tid; e < TileSize * TileSize; e += groupSize)
        {
            int c = e / TileSize;
            int r = e - (c * TileSize);
            int row = row0 + r, col = col0 + c;
            if (row < p.Rows && col < p.Cols)
                output[((long)col * p.Rows) + row] = tile[(r * (TileSize + 1)) + c];
        }
    }
}
