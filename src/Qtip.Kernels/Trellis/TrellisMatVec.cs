using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;

namespace Qtip.Kernels.Trellis;

/// <summary>
/// Fused decode + matrix–vector product for batch 1: y (m) = Ŵ (m×n) · x (n), where Ŵ exists only as packed
/// trellis tiles (16×16, T = 256) in either layout. The decode is the code's one decode function
/// (<see cref="Codes.Decode{TCode, TTable}"/>), so this kernel, the dense decode and the Viterbi agree bit for bit.
///
/// Design. A group owns one band of 16 rows (one row of tiles) and has 16·S threads: thread (ρ, s) handles row ρ of
/// the band in the tiles tc ≡ s (mod S), so its partial sum stays in one register across the whole row; the S
/// partials of a row are added through shared memory at the end. Which states of a tile cover row ρ (and the column
/// of their first value) depends only on the layout, so the host builds that 16 × (16/V) map once and the group
/// keeps it in shared memory. Each state's L-bit window is gathered from three stream bytes through the layout
/// (circularly: the tail-biting stream wraps) and decoded; V values multiply adjacent columns of x.
/// Memory traffic is the packed trellis (K bits per weight) plus x from cache.
/// </summary>
public sealed class TrellisMatVec<TCode, TLayout> : IKernelSet<TrellisMatVec<TCode, TLayout>>
    where TCode : struct, ITrellisCode
    where TLayout : struct, ITileLayout
{
    private const int MaxStatesPerRow = 16;

    private readonly QtipDevice device;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<byte>, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, MatVecParams> kernel;
    private readonly MemoryBuffer1D<int, Stride1D.Dense> rowMap;
    private readonly int statesPerRow;

    private TrellisMatVec(QtipDevice device)
    {
        this.device = device;
        kernel = device.LoadKernel<ArrayView<byte>, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, MatVecParams>(MatVecKernel);
        int v = default(TCode).V;
        statesPerRow = 16 / v;
        rowMap = device.Accelerator.Allocate1D(BuildRowMap(v));
    }

    public static TrellisMatVec<TCode, TLayout> Create(QtipDevice device) => new(device);

    /// <summary>
    /// For each tile row ρ, the states covering it and the column of their first value: entry
    /// [ρ·(16/V) + j] = state | column &lt;&lt; 16 (the layout's position map read backwards, for tile 0).
    /// </summary>
    internal static int[] BuildRowMap(int v)
    {
        var layout = default(TLayout);
        var p = new LayoutParams(2, 256, 32, 32);
        var map = new int[16 * (16 / v)];
        var filled = new int[16];
        for (int state = 0; state < 256 / v; state++)
        {
            layout.Position(0, state * v, p, out int row, out int col);
            if (v == 2)
            {
                layout.Position(0, (state * v) + 1, p, out int row1, out int col1);
                if (row1 != row || col1 != col + 1)
                    throw new InvalidOperationException($"layout {typeof(TLayout).Name} does not put the two values of state {state} side by side");
            }
            map[(row * (16 / v)) + filled[row]++] = state | (col << 16);
        }
        return map;
    }

    /// <summary>y (m) = Ŵ x (n) for the trellis of an m×n matrix (K bits per weight, L-bit states).</summary>
    public void Apply(ArrayView<short> trellis, int m, int n, int l, int k, ArrayView<float> codeTable,
        ArrayView<float> x, ArrayView<float> y, AcceleratorStream? stream = null)
    {
        int v = default(TCode).V;
        TrellisShape.Validate(l, k, v, 256);
        int tiles = (m / 16) * (n / 16);
        var lp = TileLayoutCheck.Check<TLayout>(tiles, k, 256, m, n);
        if (m % 16 != 0 || n % 16 != 0)
            throw new ArgumentException($"TrellisMatVec: {m}×{n} is not made of 16×16 tiles", nameof(m));
        if (trellis.Length != (long)tiles * k * 16)
            throw new ArgumentException($"TrellisMatVec: trellis has {trellis.Length} words, expected [{tiles} × {16 * k}] for {m}×{n} at K = {k}", nameof(trellis));
        if (x.Length < n || y.Length < m)
            throw new ArgumentException($"TrellisMatVec: x has {x.Length} (needs {n}), y has {y.Length} (needs {m})", nameof(x));
        if (codeTable.Length < 1)
            throw new ArgumentException("TrellisMatVec: codeTable must have at least one element", nameof(codeTable));
        int groupSize = device.MaxGroupSize >= 256 ? 256 : 16;
        int splits = Math.Min(groupSize / 16, n / 16);
        groupSize = 16 * Math.Max(1, splits);
        kernel(stream ?? device.Accelerator.DefaultStream, new KernelConfig(m / 16, groupSize),
            trellis.Cast<byte>(), codeTable, rowMap.View, x, y, new MatVecParams(l, k * v, statesPerRow, lp));
    }

    public readonly struct MatVecParams(int l, int kv, int statesPerRow, LayoutParams layout)
    {
        public readonly int L = l;
        public readonly int KV = kv;
        public readonly int StatesPerRow = statesPerRow;
        public readonly LayoutParams Layout = layout;
    }

    internal static void MatVecKernel(ArrayView<byte> trellis, ArrayView<float> codeTable, ArrayView<int> rowMap,
        ArrayView<float> x, ArrayView<float> y, MatVecParams p)
    {
        var map = SharedMemory.Allocate<int>(16 * MaxStatesPerRow);
        var partial = SharedMemory.Allocate<float>(1024);
        var layout = default(TLayout);
        var table = new DeviceTable(codeTable);
        int tid = Group.IdxX;
        int groupSize = Group.DimX;
        int splits = groupSize / 16;
        int band = Grid.IdxX;
        int rho = tid & 15;
        int s = tid >> 4;
        for (int e = tid; e < 16 * p.StatesPerRow; e += groupSize)
            map[e] = rowMap[e];
        Group.Barrier();

        int tilesPerRow = p.Layout.TilesPerRow;
        int bytesPerTile = p.Layout.BytesPerTile;
        uint stateMask = (1u << p.L) - 1u;
        float acc = 0f;
        for (int tc = s; tc < tilesPerRow; tc += splits)
        {
            int tile = (band * tilesPerRow) + tc;
            int col0 = tc * 16;
            for (int j = 0; j < p.StatesPerRow; j++)
            {
                int entry = map[(rho * p.StatesPerRow) + j];
                int state = entry & 0xFFFF;
                int col = col0 + (entry >> 16);
                int bit = state * p.KV;
                int b0 = bit >> 3;
                int b1 = b0 + 1 < bytesPerTile ? b0 + 1 : b0 + 1 - bytesPerTile;
                int b2 = b1 + 1 < bytesPerTile ? b1 + 1 : b1 + 1 - bytesPerTile;
                uint window = ((uint)trellis[layout.MemoryByte(tile, b0, p.Layout)] << 16)
                    | ((uint)trellis[layout.MemoryByte(tile, b1, p.Layout)] << 8)
                    | trellis[layout.MemoryByte(tile, b2, p.Layout)];
                uint st = (window >> (24 - (bit & 7) - p.L)) & stateMask;
                Codes.Decode<TCode, DeviceTable>(st, table, out float v0, out float v1);
                acc += v0 * x[col];
                if (default(TCode).V == 2)
                    acc += v1 * x[col + 1];
            }
        }
        partial[tid] = acc;
        Group.Barrier();
        if (s == 0)
        {
            float sum = 0f;
            for (int t = 0; t < splits; t++)
                sum += partial[(t * 16) + rho];
            y[(band * 16) + rho] = sum;
        }
    }
}
