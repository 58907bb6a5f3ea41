using System.Runtime.CompilerServices;
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

    /// <summary>Floats of the per-symbol value table (2^10 symbols × 2 values).</summary>
    public const int SymbolTableFloats = 2048;

    /// <summary>Codes whose symbol has at most this many bits (the code's <see cref="ITrellisCode.SymbolBits"/>: 1MAD's byte
    /// sum, HYB's row and sign, a LUT of L ≤ 10) decode through a table of their symbols' values.</summary>
    public const int MaxTabulatedSymbolBits = 10;

    /// <summary>Largest number of half-groups (16 threads each) in one group.</summary>
    public const int MaxHalfGroups = 64;

    private readonly QtipDevice device;
    private readonly Lazy<Action<AcceleratorStream, KernelConfig, ArrayView<short>, ArrayView<int>, ArrayView<long>, ArrayView<float>, ArrayView<Float4>, ArrayView<float>, MatVecParams>>[] kernels;

    private TrellisMatVec(QtipDevice device)
    {
        this.device = device;
        // One kernel per K and per L = 16 or not (compile-time constants there), loaded on first use.
        kernels =
        [
            Load<Bits1, FullState>(), Load<Bits1, AnyState>(),
            Load<Bits2, FullState>(), Load<Bits2, AnyState>(),
            Load<Bits3, FullState>(), Load<Bits3, AnyState>(),
            Load<Bits4, FullState>(), Load<Bits4, AnyState>(),
        ];
    }

    public static TrellisMatVec<TCode, TLayout> Create(QtipDevice device) => new(device);

    private Lazy<Action<AcceleratorStream, KernelConfig, ArrayView<short>, ArrayView<int>, ArrayView<long>, ArrayView<float>, ArrayView<Float4>, ArrayView<float>, MatVecParams>> Load<TK, TL>()
        where TK : struct, IBitsPerWeight
        where TL : struct, IStateBits =>
        new(() => device.LoadKernel<ArrayView<short>, ArrayView<int>, ArrayView<long>, ArrayView<float>, ArrayView<Float4>, ArrayView<float>, MatVecParams>(MatVecKernel<TK, TL>));

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

    /// <summary>y (m) = Ŵ x (n) for the trellis of an m×n matrix (K bits per weight, L-bit states). x is read with 16-byte
    /// loads: it must start 16-byte aligned (a buffer start, or an offset that is a multiple of 4 floats).</summary>
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
        int symbolBits = default(TCode).SymbolBits(l);
        int symbols = symbolBits <= MaxTabulatedSymbolBits ? 1 << symbolBits : 0;
        kernels[(2 * (k - 1)) + (l == 16 ? 0 : 1)].Value(stream ?? device.Accelerator.DefaultStream, new KernelConfig(bands, 16 * h),
            trellis, trellis.Cast<int>(), trellis.Cast<long>(), codeTable, x.SubView(0, n).Cast<Float4>(), y, new MatVecParams(l, k, k * v, tilesPerRow, h, tableFloats <= SharedTableFloats ? tableFloats : 0, symbols));
    }

    public readonly struct MatVecParams(int l, int k, int kv, int tilesPerRow, int halfGroups, int sharedTable, int tabulate)
    {
        /// <summary>The code's symbol count when the kernel decodes through a shared table of every symbol's values (codes
        /// with ≤ 2^10 symbols); 0 to decode each state directly.</summary>
        public readonly int Tabulate = tabulate;

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
    /// and the 64 bits from bit 32 on <paramref name="b"/> (only needed when o + 16 &gt; 64, i.e. K = 4); <paramref name="drop"/> = 16 − L.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint Window(ulong a, ulong b, int o, int drop)
    {
        uint w16 = o <= 48 ? (uint)(a >> (48 - o)) : (uint)(b >> (80 - o));
        return (w16 & 0xFFFFu) >> drop;
    }

    /// <summary>Thread σ of half-group <paramref name="half"/>: its segment of every tile tc ≡ half (mod H) of the band, decoded and multiplied by x, into its one or two tile-row sums.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Band<TC, TTable, TK, TL>(ArrayView<short> trellis, ArrayView<int> trellis32, ArrayView<long> trellis64, TTable table, ArrayView<Float4> x4,
        MatVecParams p, int band, int sigma, int half, out float acc0, out float acc1)
        where TC : struct, ITrellisCode
        where TTable : struct, ICodeTable
        where TK : struct, IBitsPerWeight
        where TL : struct, IStateBits
    {
        var layout = default(TLayout);
        int k = default(TK).K;                      // a constant in each kernel: every shift below is one instruction
        int drop = default(TL).Drop(p.L);           // 16 − L: a constant 0 for L = 16
        int wordsPerTile = 16 * k;
        int own = sigma * k;                        // first word of this thread's segment
        int next = ((sigma + 1) & 15) * k;          // first word of the next segment (circular)
        acc0 = 0f;
        acc1 = 0f;
        long bandBase = (long)band * p.TilesPerRow * wordsPerTile;
        for (int tc = half; tc < p.TilesPerRow; tc += p.HalfGroups)
        {
            long t0 = bandBase + ((long)tc * wordsPerTile);
            // This segment's K words and the next segment's first, MSB first: a = bits 0…63, b = bits 32…95.
            // K = 2 and 4 read the segment with one 4- or 8-byte load (segments start at multiples of 2K bytes).
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
            else if (k == 3)
            {
                w0 = (ushort)trellis[t0 + own];
                w1 = (ushort)trellis[t0 + own + 1];
                w2 = (ushort)trellis[t0 + own + 2];
                w3 = wn;
            }
            else
            {
                w0 = (ushort)trellis[t0 + own];
                w1 = wn;
            }
            ulong a = (w0 << 48) | (w1 << 32) | (w2 << 16) | w3;
            ulong b = (w2 << 48) | (w3 << 32) | (wn << 16);
            // x of this tile: the segment's 4-float vectors (16-byte loads, the same address across the half-group).
            int xb = 4 * tc;
            var x0 = x4[xb + layout.XVector(sigma, 0)];
            var x1 = x4[xb + layout.XVector(sigma, 1)];
            var x2 = layout.XSlots > 2 ? x4[xb + layout.XVector(sigma, 2)] : default;
            var x3 = layout.XSlots > 3 ? x4[xb + layout.XVector(sigma, 3)] : default;
            // As scalars right away (used by constant index below).
            var xs = new X16(x0, x1, x2, x3);
            float t;
            // The states, unrolled: state j starts at bit j·K·V of the segment, so every window is a constant shift.
            if (default(TC).V == 2)
            {
                t = Pair<TC, TTable>(Window(a, b, 0 * 2 * k, drop), table, xs, layout.XSlot(0), layout.XComponent(0));
                if (layout.SegmentRowHalf(0) == 0) acc0 += t; else acc1 += t;
                t = Pair<TC, TTable>(Window(a, b, 1 * 2 * k, drop), table, xs, layout.XSlot(2), layout.XComponent(2));
                if (layout.SegmentRowHalf(2) == 0) acc0 += t; else acc1 += t;
                t = Pair<TC, TTable>(Window(a, b, 2 * 2 * k, drop), table, xs, layout.XSlot(4), layout.XComponent(4));
                if (layout.SegmentRowHalf(4) == 0) acc0 += t; else acc1 += t;
                t = Pair<TC, TTable>(Window(a, b, 3 * 2 * k, drop), table, xs, layout.XSlot(6), layout.XComponent(6));
                if (layout.SegmentRowHalf(6) == 0) acc0 += t; else acc1 += t;
                t = Pair<TC, TTable>(Window(a, b, 4 * 2 * k, drop), table, xs, layout.XSlot(8), layout.XComponent(8));
                if (layout.SegmentRowHalf(8) == 0) acc0 += t; else acc1 += t;
                t = Pair<TC, TTable>(Window(a, b, 5 * 2 * k, drop), table, xs, layout.XSlot(10), layout.XComponent(10));
                if (layout.SegmentRowHalf(10) == 0) acc0 += t; else acc1 += t;
                t = Pair<TC, TTable>(Window(a, b, 6 * 2 * k, drop), table, xs, layout.XSlot(12), layout.XComponent(12));
                if (layout.SegmentRowHalf(12) == 0) acc0 += t; else acc1 += t;
                t = Pair<TC, TTable>(Window(a, b, 7 * 2 * k, drop), table, xs, layout.XSlot(14), layout.XComponent(14));
                if (layout.SegmentRowHalf(14) == 0) acc0 += t; else acc1 += t;
            }
            else
            {
                t = Single<TC, TTable>(Window(a, b, 0 * k, drop), table, xs, layout.XSlot(0), layout.XComponent(0));
                if (layout.SegmentRowHalf(0) == 0) acc0 += t; else acc1 += t;
                t = Single<TC, TTable>(Window(a, b, 1 * k, drop), table, xs, layout.XSlot(1), layout.XComponent(1));
                if (layout.SegmentRowHalf(1) == 0) acc0 += t; else acc1 += t;
                t = Single<TC, TTable>(Window(a, b, 2 * k, drop), table, xs, layout.XSlot(2), layout.XComponent(2));
                if (layout.SegmentRowHalf(2) == 0) acc0 += t; else acc1 += t;
                t = Single<TC, TTable>(Window(a, b, 3 * k, drop), table, xs, layout.XSlot(3), layout.XComponent(3));
                if (layout.SegmentRowHalf(3) == 0) acc0 += t; else acc1 += t;
                t = Single<TC, TTable>(Window(a, b, 4 * k, drop), table, xs, layout.XSlot(4), layout.XComponent(4));
                if (layout.SegmentRowHalf(4) == 0) acc0 += t; else acc1 += t;
                t = Single<TC, TTable>(Window(a, b, 5 * k, drop), table, xs, layout.XSlot(5), layout.XComponent(5));
                if (layout.SegmentRowHalf(5) == 0) acc0 += t; else acc1 += t;
                t = Single<TC, TTable>(Window(a, b, 6 * k, drop), table, xs, layout.XSlot(6), layout.XComponent(6));
                if (layout.SegmentRowHalf(6) == 0) acc0 += t; else acc1 += t;
                t = Single<TC, TTable>(Window(a, b, 7 * k, drop), table, xs, layout.XSlot(7), layout.XComponent(7));
                if (layout.SegmentRowHalf(7) == 0) acc0 += t; else acc1 += t;
                t = Single<TC, TTable>(Window(a, b, 8 * k, drop), table, xs, layout.XSlot(8), layout.XComponent(8));
                if (layout.SegmentRowHalf(8) == 0) acc0 += t; else acc1 += t;
                t = Single<TC, TTable>(Window(a, b, 9 * k, drop), table, xs, layout.XSlot(9), layout.XComponent(9));
                if (layout.SegmentRowHalf(9) == 0) acc0 += t; else acc1 += t;
                t = Single<TC, TTable>(Window(a, b, 10 * k, drop), table, xs, layout.XSlot(10), layout.XComponent(10));
                if (layout.SegmentRowHalf(10) == 0) acc0 += t; else acc1 += t;
                t = Single<TC, TTable>(Window(a, b, 11 * k, drop), table, xs, layout.XSlot(11), layout.XComponent(11));
                if (layout.SegmentRowHalf(11) == 0) acc0 += t; else acc1 += t;
                t = Single<TC, TTable>(Window(a, b, 12 * k, drop), table, xs, layout.XSlot(12), layout.XComponent(12));
                if (layout.SegmentRowHalf(12) == 0) acc0 += t; else acc1 += t;
                t = Single<TC, TTable>(Window(a, b, 13 * k, drop), table, xs, layout.XSlot(13), layout.XComponent(13));
                if (layout.SegmentRowHalf(13) == 0) acc0 += t; else acc1 += t;
                t = Single<TC, TTable>(Window(a, b, 14 * k, drop), table, xs, layout.XSlot(14), layout.XComponent(14));
                if (layout.SegmentRowHalf(14) == 0) acc0 += t; else acc1 += t;
                t = Single<TC, TTable>(Window(a, b, 15 * k, drop), table, xs, layout.XSlot(15), layout.XComponent(15));
                if (layout.SegmentRowHalf(15) == 0) acc0 += t; else acc1 += t;
            }
        }
    }

    /// <summary>V = 2: both values of the state times x at components c, c + 1.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Pair<TC, TTable>(uint state, TTable table, X16 xs, int slot, int c)
        where TC : struct, ITrellisCode
        where TTable : struct, ICodeTable
    {
        Codes.Decode<TC, TTable>(state, table, out float v0, out float v1);
        return (v0 * xs.At(slot, c)) + (v1 * xs.At(slot, c + 1));
    }

    /// <summary>V = 1: the state's value times x at component c.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Single<TC, TTable>(uint state, TTable table, X16 xs, int slot, int c)
        where TC : struct, ITrellisCode
        where TTable : struct, ICodeTable
    {
        Codes.Decode<TC, TTable>(state, table, out float v0, out _);
        return v0 * xs.At(slot, c);
    }

    internal static void MatVecKernel<TK, TL>(ArrayView<short> trellis, ArrayView<int> trellis32, ArrayView<long> trellis64, ArrayView<float> codeTable,
        ArrayView<Float4> x4, ArrayView<float> y, MatVecParams p)
        where TK : struct, IBitsPerWeight
        where TL : struct, IStateBits
    {
        var sharedTable = SharedMemory.Allocate<float>(SharedTableFloats);
        var symbolTable = SharedMemory.Allocate<Float2>(SymbolTableFloats / 2);
        var partial = SharedMemory.Allocate<float>(MaxHalfGroups * 32);
        var layout = default(TLayout);
        var code = default(TCode);
        int tid = Group.IdxX;
        int groupSize = Group.DimX;
        int sigma = tid & 15;
        int half = tid >> 4;
        int band = Grid.IdxX;
        float acc0, acc1;
        if (p.Tabulate != 0)
        {
            // Codes with at most 2^10 symbols: the values of every symbol, computed once per group by the code's own
            // Value (so bit for bit the same), then a state decodes as Symbol + one shared-memory lookup.
            var source = new DeviceTable(codeTable);
            for (int e = tid; e < p.Tabulate; e += groupSize)
            {
                code.Value((uint)e, source, out float v0, out float v1);
                symbolTable[e] = new Float2(v0, v1);
            }
            Group.Barrier();
            Band<Tabulated<TCode>, DevicePairTable, TK, TL>(trellis, trellis32, trellis64, new DevicePairTable(symbolTable), x4, p, band, sigma, half, out acc0, out acc1);
        }
        else
        {
            for (int e = tid; e < p.SharedTable; e += groupSize)
                sharedTable[e] = codeTable[e];
            Group.Barrier();
            // One branch per table place (no pointer that may be shared or global).
            if (p.SharedTable > 0)
                Band<TCode, DeviceTable, TK, TL>(trellis, trellis32, trellis64, new DeviceTable(sharedTable), x4, p, band, sigma, half, out acc0, out acc1);
            else
                Band<TCode, DeviceTable, TK, TL>(trellis, trellis32, trellis64, new DeviceTable(codeTable), x4, p, band, sigma, half, out acc0, out acc1);
        }

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

/// <summary>
/// A code decoded through a table of its symbols' values: Symbol is the code's own, Value reads entries 2·symbol and
/// 2·symbol + 1 of a table that the code's own Value filled (see <see cref="TrellisMatVec{TCode, TLayout}"/>).
/// </summary>
public readonly struct Tabulated<TCode> : ITrellisCode
    where TCode : struct, ITrellisCode
{
    public int V => default(TCode).V;

    public string Name => default(TCode).Name;

    public string DecodeMode => default(TCode).DecodeMode;

    public int TableBits(int l) => default(TCode).TableBits(l);

    public int SymbolBits(int l) => default(TCode).SymbolBits(l);

    public TileLayoutKind DefaultLayout(int l) => default(TCode).DefaultLayout(l);

    public double ScaleOverride => default(TCode).ScaleOverride;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public uint Symbol(uint state) => default(TCode).Symbol(state);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Value<TTable>(uint symbol, TTable table, out float v0, out float v1) where TTable : struct, ICodeTable
    {
        if (default(TCode).V == 2)
        {
            table.Pair((int)symbol, out v0, out v1);
        }
        else
        {
            table.Pair((int)symbol, out v0, out _);
            v1 = 0f;
        }
    }
}

/// <summary>16 − L as a type: a constant 0 for the L = 16 of every LLM result, the run-time value otherwise.</summary>
public interface IStateBits
{
    int Drop(int l);
}

public readonly struct FullState : IStateBits
{
    public int Drop(int l) => 0;
}

public readonly struct AnyState : IStateBits
{
    public int Drop(int l) => 16 - l;
}

/// <summary>Bits per weight K as a type (a compile-time constant in each matvec kernel).</summary>
public interface IBitsPerWeight
{
    int K { get; }
}

public readonly struct Bits1 : IBitsPerWeight
{
    public int K => 1;
}

public readonly struct Bits2 : IBitsPerWeight
{
    public int K => 2;
}

public readonly struct Bits3 : IBitsPerWeight
{
    public int K => 3;
}

public readonly struct Bits4 : IBitsPerWeight
{
    public int K => 4;
}

/// <summary>The 16 x values of a tile's segment as scalars, picked by constant (slot, component) after inlining.</summary>
public readonly struct X16(Float4 a, Float4 b, Float4 c, Float4 d)
{
    private readonly float a0 = a.X, a1 = a.Y, a2 = a.Z, a3 = a.W;
    private readonly float b0 = b.X, b1 = b.Y, b2 = b.Z, b3 = b.W;
    private readonly float c0 = c.X, c1 = c.Y, c2 = c.Z, c3 = c.W;
    private readonly float d0 = d.X, d1 = d.Y, d2 = d.Z, d3 = d.W;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public float At(int slot, int component) => slot switch
    {
        0 => component == 0 ? a0 : component == 1 ? a1 : component == 2 ? a2 : a3,
        1 => component == 0 ? b0 : component == 1 ? b1 : component == 2 ? b2 : b3,
        2 => component == 0 ? c0 : component == 1 ? c1 : component == 2 ? c2 : c3,
        _ => component == 0 ? d0 : component == 1 ? d1 : component == 2 ? d2 : d3,
    };
}

/// <summary>Four floats, read with one 16-byte load.</summary>
public readonly struct Float4
{
    public readonly float X;
    public readonly float Y;
    public readonly float Z;
    public readonly float W;
}
