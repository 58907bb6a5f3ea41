using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;

namespace Qtip.Kernels.Trellis;

/// <summary>
/// Fused decode + matrix–vector product for batch 1: y (m) = Ŵ (m×n) · x (n), where Ŵ exists only as packed trellis
/// tiles (16×16, T = 256) in a stream-ordered layout (<see cref="IStreamOrderLayout"/>: the generic layout, or the
/// kernel layout moved to <see cref="KernelStreamLayout"/> at load). The decode is the code's one decode function
/// (<see cref="Codes.Decode{TCode, TTable}"/>), so this kernel, the dense decode and the Viterbi agree bit for bit.
///
/// Design. A group owns one band of 16 rows (one row of tiles) and has H half-groups of 16 threads (H a power of two,
/// more when there are few bands, so the grid fills the device at batch 1). Half-group h decodes the tiles
/// tc ≡ h (mod H) of the band; in each tile, thread σ of the half-group takes segment σ = stream positions
/// 16σ…16σ+15, i.e. words Kσ…Kσ+K−1 of the tile. The 16 threads of a half-group therefore read the tile's 32·K
/// contiguous bytes once, coalesced (every trellis byte is read once from DRAM). A state window that runs past the
/// segment borrows the first word of the next segment (segment 15 wraps to segment 0 — the tail-biting stream is
/// circular); that word was just loaded by the neighbouring thread, so it comes from L1, with no warp shuffle (OpenCL
/// has none in ILGPU). The windows are cut from a 64-bit register (two for K = 4), decoded, and multiplied by x read
/// through the cache; each thread accumulates its segment's one or two tile rows in registers across the whole band.
/// The code table (the HYB LUT, 1024 floats) is staged in shared memory. The half-groups' partial row sums are added
/// by a tree in shared memory in a fixed order (deterministic).
/// </summary>
public sealed class TrellisMatVec<TCode, TLayout> : IKernelSet<TrellisMatVec<TCode, TLayout>>
    where TCode : struct, ITrellisCode
    where TLayout : struct, IStreamOrderLayout
{
    /// <summary>Largest code table staged in shared memory (floats); larger tables (the random LUT codes) are read from global memory.</summary>
    public const int SharedTableFloats = 1024;

    /// <summary>Largest number of half-groups (16 threads each) in one group.</summary>
    public const int MaxHalfGroups = 64;

    private readonly QtipDevice device;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<short>, ArrayView<int>, ArrayView<long>, ArrayView<float>, ArrayView<float>, ArrayView<float>, MatVecParams> kernel;

    private TrellisMatVec(QtipDevice device)
    {
        this.device = device;
        kernel = device.LoadKernel<ArrayView<short>, ArrayView<int>, ArrayView<long>, ArrayView<float>, ArrayView<float>, ArrayView<float>, MatVecParams>(MatVecKernel);
    }

    public static TrellisMatVec<TCode, TLayout> Create(QtipDevice device) => new(device);

    /// <summary>Half-groups per group for a matrix with <paramref name="bands"/> bands of <paramref name="tilesPerRow"/> tiles on this device.</summary>
    public static int HalfGroups(QtipDevice device, int bands, int tilesPerRow)
    {
        int cap = Math.Max(1, Math.Min(MaxHalfGroups, device.MaxGroupSize / 16));
        int h = bands >= 1024 ? 16 : bands >= 256 ? 32 : MaxHalfGroups;
        h = Math.Min(h, cap);
        while (h > 1 && h / 2 >= tilesPerRow)
            h /= 2;
        return h;
    }

    /// <summary>y (m) = Ŵ x (n) for the trellis of an m×n matrix (K bits per weight, L-bit states).</summary>
    public void Apply(ArrayView<short> trellis, int m, int n, int l, int k, ArrayView<float> codeTable,
        ArrayView<float> x, ArrayView<float> y, AcceleratorStream? stream = null)
    {
        int v = default(TCode).V;
        TrellisShape.Validate(l, k, v, 256);
        if (m <= 0 || n <= 0 || m % 16 != 0 || n % 16 != 0)
            throw new ArgumentException($"TrellisMatVec: {m}×{n} is not made of 16×16 tiles", nameof(m));
        int tiles = (m / 16) * (n / 16);
        if (trellis.Length != (long)tiles * k * 16)
            throw new ArgumentException($"TrellisMatVec: trellis has {trellis.Length} words, expected [{tiles} × {16 * k}] for {m}×{n} at K = {k}", nameof(trellis));
        if (x.Length < n || y.Length < m)
            throw new ArgumentException($"TrellisMatVec: x has {x.Length} (needs {n}), y has {y.Length} (needs {m})", nameof(x));
        if (codeTable.Length < 1)
            throw new ArgumentException("TrellisMatVec: codeTable must have at least one element", nameof(codeTable));
        int bands = m / 16, tilesPerRow = n / 16;
        int h = HalfGroups(device, bands, tilesPerRow);
        int tableFloats = (int)Math.Min(codeTable.Length, int.MaxValue);
        kernel(stream ?? device.Accelerator.DefaultStream, new KernelConfig(bands, 16 * h),
            trellis, trellis.Cast<int>(), trellis.Cast<long>(), codeTable, x, y, new MatVecParams(l, k, k * v, tilesPerRow, h, tableFloats <= SharedTableFloats ? tableFloats : 0));
    }

    public readonly struct MatVecParams(int l, int k, int kv, int tilesPerRow, int halfGroups, int sharedTable)
    {
        public readonly int L = l;
        public readonly int K = k;
        public readonly int KV = kv;
        public readonly int TilesPerRow = tilesPerRow;
        public readonly int HalfGroups = halfGroups;

        /// <summary>Floats of the code table to stage in shared memory, 0 to read it from global memory.</summary>
        public readonly int SharedTable = sharedTable;
    }

    /// <summary>
    /// The L-bit window at bit <paramref name="o"/> of a segment's stream, given its first 64 bits <paramref name="a"/>
    /// and the 64 bits from bit 32 on <paramref name="b"/> (only needed when o + 16 &gt; 64, i.e. K = 4).
    /// </summary>
    private static uint Window(ulong a, ulong b, int o, int l)
    {
        uint w16 = o <= 48 ? (uint)(a >> (48 - o)) : (uint)(b >> (80 - o));
        return (w16 & 0xFFFFu) >> (16 - l);
    }

    /// <summary>Thread σ of half-group <paramref name="half"/>: its segment of every tile tc ≡ half (mod H) of the band, decoded and multiplied by x, into its one or two tile-row sums.</summary>
    private static void Band<TTable>(ArrayView<short> trellis, ArrayView<int> trellis32, ArrayView<long> trellis64, TTable table, ArrayView<float> x, MatVecParams p, int band, int sigma, int half,
        out float acc0, out float acc1) where TTable : struct, ICodeTable
    {
        var layout = default(TLayout);
        var code = default(TCode);
        int k = p.K;
        int wordsPerTile = 16 * k;
        int own = sigma * k;                        // first word of this thread's segment
        int next = ((sigma + 1) & 15) * k;          // first word of the next segment (circular)
        int rowStep = code.V == 2 ? 2 * k : k;      // stream bits per state
        acc0 = 0f;
        acc1 = 0f;
        long bandBase = (long)band * p.TilesPerRow * wordsPerTile;
        for (int tc = half; tc < p.TilesPerRow; tc += p.HalfGroups)
        {
            long t0 = bandBase + ((long)tc * wordsPerTile);
            // This segment's K words and the next segment's first, MSB first: a = bits 0…63, b = bits 32…95.
            // K = 2 and 4 read the segment with one 4- or 8-byte load (segments start at multiples of 2K words).
            ulong w0, w1 = 0ul, w2 = 0ul, w3 = 0ul;
            ulong wn = (ushort)trellis[t0 + next];
            if (k == 4)
            {
                ulong u = (ulong)trellis64[(t0 + own) >> 2];
                w0 = u & 0xFFFFul;
                w1 = (u >> 16) & 0xFFFFul;
                w2 = (u >> 32) & 0xFFFFul;
                w3 = u >> 48;
            }
            else if (k == 2)
            {
                uint u = (uint)trellis32[(t0 + own) >> 1];
                w0 = u & 0xFFFFu;
                w1 = u >> 16;
                w2 = wn;
            }
            else
            {
                w0 = (ushort)trellis[t0 + own];
                if (k == 3)
                {
                    w1 = (ushort)trellis[t0 + own + 1];
                    w2 = (ushort)trellis[t0 + own + 2];
                    w3 = wn;
                }
                else
                {
                    w1 = wn;
                }
            }
            ulong a = (w0 << 48) | (w1 << 32) | (w2 << 16) | w3;
            ulong b = (w2 << 48) | (w3 << 32) | (wn << 16);
            int col0 = 16 * tc;
            if (code.V == 2)
            {
                for (int j = 0; j < 8; j++)
                {
                    uint state = Window(a, b, j * rowStep, p.L);
                    Codes.Decode<TCode, TTable>(state, table, out float v0, out float v1);
                    int c = col0 + layout.SegmentColumn(sigma, 2 * j);
                    float t = (v0 * x[c]) + (v1 * x[c + 1]);
                    if (layout.SegmentRowHalf(2 * j) == 0)
                        acc0 += t;
                    else
                        acc1 += t;
                }
            }
            else
            {
                for (int j = 0; j < 16; j++)
                {
                    uint state = Window(a, b, j * rowStep, p.L);
                    Codes.Decode<TCode, TTable>(state, table, out float v0, out _);
                    float t = v0 * x[col0 + layout.SegmentColumn(sigma, j)];
                    if (layout.SegmentRowHalf(j) == 0)
                        acc0 += t;
                    else
                        acc1 += t;
                }
            }
        }
    }

    internal static void MatVecKernel(ArrayView<short> trellis, ArrayView<int> trellis32, ArrayView<long> trellis64, ArrayView<float> codeTable, ArrayView<float> x, ArrayView<float> y, MatVecParams p)
    {
        var sharedTable = SharedMemory.Allocate<float>(SharedTableFloats);
        var partial = SharedMemory.Allocate<float>(MaxHalfGroups * 32);
        var layout = default(TLayout);
        int tid = Group.IdxX;
        int groupSize = Group.DimX;
        int sigma = tid & 15;
        int half = tid >> 4;
        int band = Grid.IdxX;
        for (int e = tid; e < p.SharedTable; e += groupSize)
            sharedTable[e] = codeTable[e];
        Group.Barrier();
        // One branch per table place (no pointer that may be shared or global).
        float acc0, acc1;
        if (p.SharedTable > 0)
            Band(trellis, trellis32, trellis64, new DeviceTable(sharedTable), x, p, band, sigma, half, out acc0, out acc1);
        else
            Band(trellis, trellis32, trellis64, new DeviceTable(codeTable), x, p, band, sigma, half, out acc0, out acc1);

        // Tree over the half-groups: partial[h·32 + 2σ + half] → h = 0, then one thread per tile row adds its slots.
        partial[(half * 32) + (2 * sigma)] = acc0;
        partial[(half * 32) + (2 * sigma) + 1] = acc1;
        Group.Barrier();
        for (int stride = p.HalfGroups / 2; stride > 0; stride /= 2)
        {
            if (half < stride)
            {
                partial[(half * 32) + (2 * sigma)] += partial[((half + stride) * 32) + (2 * sigma)];
                partial[(half * 32) + (2 * sigma) + 1] += partial[((half + stride) * 32) + (2 * sigma) + 1];
            }
            Group.Barrier();
        }
        if (tid < 16)
        {
            // Row `tid` collects every (segment, half) slot that maps to it, in slot order.
            float sum = 0f;
            for (int slot = 0; slot < 32; slot++)
            {
                int h = slot & 1;
                if ((h == 0 || !layout.OneRowPerSegment) && layout.SegmentRow(slot >> 1, h) == tid)
                    sum += partial[slot];
            }
            y[(band * 16) + tid] = sum;
        }
    }
}
