using System.Runtime.CompilerServices;

namespace Qtip.Kernels.Trellis;

/// <summary>Shape of a packed trellis tensor: K bits per weight, T weights per tile, and for matrices m × n
/// (multiples of 16; 32 for the kernel layout) in 16×16 tiles, row-major over (m/16, n/16).</summary>
public readonly struct LayoutParams(int k, int t, int m, int n)
{
    public readonly int K = k;
    public readonly int T = t;
    public readonly int M = m;
    public readonly int N = n;

    /// <summary>Stream bytes per tile, K·T/8.</summary>
    public int BytesPerTile => K * T / 8;

    /// <summary>Tiles per row of tiles, n/16.</summary>
    public int TilesPerRow => N / 16;
}

/// <summary>
/// Where a packed tile's stream bytes live in the int16 trellis tensor (read as little-endian bytes), and where a
/// tile's sequence positions live in the m×n matrix. Struct type argument of the pack, decode and gather kernels.
/// </summary>
public interface ITileLayout
{
    /// <summary>Byte offset in the tensor's memory of stream byte <paramref name="k"/> (bits 8k…8k+7, MSB first) of tile <paramref name="tile"/>.</summary>
    long MemoryByte(int tile, int k, LayoutParams p);

    /// <summary>Matrix element of sequence position <paramref name="pos"/> of tile <paramref name="tile"/> (T = 256 tiles of 16×16).</summary>
    void Position(int tile, int pos, LayoutParams p, out int row, out int col);
}

/// <summary>
/// A layout whose memory is the tiles in row-major order (tile (tr, tc) is tile tr·(n/16) + tc), each tile's K·T/16
/// int16 words in stream order (word w = stream bits 16w…16w+15, the first in bit 15): what
/// <see cref="TrellisMatVec{TCode, TLayout}"/> reads with contiguous word loads. Layouts of this kind differ only in
/// where a sequence position lands inside its 16×16 tile, which is told per 16-position segment so that a thread
/// that decodes segment σ (positions 16σ…16σ+15) knows its columns and its one or two output rows.
/// </summary>
public interface IStreamOrderLayout : ITileLayout
{
    /// <summary>Tile column (0…15) of position 16·<paramref name="segment"/> + <paramref name="q"/>.</summary>
    int SegmentColumn(int segment, int q);

    /// <summary>Which of the segment's (at most) two rows position 16·segment + <paramref name="q"/> lands in: 0 or 1.</summary>
    int SegmentRowHalf(int q);

    /// <summary>Tile row (0…15) of the segment's row <paramref name="half"/> (0 or 1; both the same when a segment is one row).</summary>
    int SegmentRow(int segment, int half);

    /// <summary>True when every segment lies in one tile row (half 1 never occurs).</summary>
    bool OneRowPerSegment { get; }

    /// <summary>How many of the tile's four 4-float x vectors (columns 4v…4v+3) a segment reads: 4 or 2.</summary>
    int XSlots { get; }

    /// <summary>The tile x vector (0…3) a segment reads in its slot <paramref name="slot"/> (0 … XSlots − 1).</summary>
    int XVector(int segment, int slot);

    /// <summary>The slot of position 16·segment + <paramref name="q"/>'s column (the same for every segment).</summary>
    int XSlot(int q);

    /// <summary>The component (0…3) of that column within its x vector.</summary>
    int XComponent(int q);
}

/// <summary>
/// The generic (non-kernel) layout, spec §1 "reference packing": one tile per row of K·T/16 int16 words; word w holds
/// stream bits 16w…16w+15 with the first in bit 15, so stream byte k is memory byte k XOR 1 of the tile's row.
/// Sequence position p is tile element (p div 16, p mod 16).
/// </summary>
public readonly struct GenericLayout : IStreamOrderLayout
{
    public bool OneRowPerSegment => true;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int SegmentColumn(int segment, int q) => q;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int SegmentRowHalf(int q) => 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int SegmentRow(int segment, int half) => segment;

    public int XSlots => 4;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int XVector(int segment, int slot) => slot;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int XSlot(int q) => q >> 2;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int XComponent(int q) => q & 3;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public long MemoryByte(int tile, int k, LayoutParams p) => ((long)tile * p.BytesPerTile) + (k ^ 1);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Position(int tile, int pos, LayoutParams p, out int row, out int col)
    {
        int tr = tile / p.TilesPerRow;
        int tc = tile - (tr * p.TilesPerRow);
        row = (16 * tr) + (pos >> 4);
        col = (16 * tc) + (pos & 15);
    }
}

/// <summary>
/// The generic per-tile words, with the tiles stored column-major ("band-major": tile (tr, tc) is row tc·(m/16) + tr).
/// This is the order in which BlockLDLQ produces them, one 16-column band (m/16 tiles) per quantizer call, so each
/// call writes one contiguous block; <see cref="TrellisRelayout"/> turns the whole matrix into the stored layout.
/// </summary>
public readonly struct BandMajorLayout : ITileLayout
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public long MemoryByte(int tile, int k, LayoutParams p)
    {
        int tr = tile / p.TilesPerRow;
        int tc = tile - (tr * p.TilesPerRow);
        return ((((long)tc * (p.M / 16)) + tr) * p.BytesPerTile) + (k ^ 1);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Position(int tile, int pos, LayoutParams p, out int row, out int col) =>
        default(GenericLayout).Position(tile, pos, p, out row, out col);
}

/// <summary>
/// The HYB kernel layout (spec §5, §6 and the golden byte rule): tiles in 2×2 blocks ordered row-pair-major; inside
/// a block, lane ℓ &lt; 32 owns stream bytes Kℓ…Kℓ+K−1 of each tile, stored lane-major, then column tile, then row
/// tile, the K bytes reversed. Sequence position p = 32b + 8e + 4d + 2a + f is element (8a + b, 8d + 2e + f) of the
/// tile, so each lane's states land in its m16n8k16 A fragment.
/// </summary>
public readonly struct KernelLayout : ITileLayout
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public long MemoryByte(int tile, int k, LayoutParams p)
    {
        int tr = tile / p.TilesPerRow;
        int tc = tile - (tr * p.TilesPerRow);
        long block = ((long)(tr >> 1) * (p.TilesPerRow >> 1)) + (tc >> 1);
        int lane = k / p.K;
        int q = k - (lane * p.K);
        return (block * 4 * p.BytesPerTile) + (((((lane * 2) + (tc & 1)) * 2) + (tr & 1)) * p.K) + (p.K - 1 - q);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Position(int tile, int pos, LayoutParams p, out int row, out int col)
    {
        int tr = tile / p.TilesPerRow;
        int tc = tile - (tr * p.TilesPerRow);
        int b = pos >> 5, e = (pos >> 3) & 3, d = (pos >> 2) & 1, a = (pos >> 1) & 1, f = pos & 1;
        row = (16 * tr) + (8 * a) + b;
        col = (16 * tc) + (8 * d) + (2 * e) + f;
    }
}

/// <summary>
/// The HYB kernel layout's positions (<see cref="KernelLayout"/>: p = 32b + 8e + 4d + 2a + f is tile element
/// (8a + b, 8d + 2e + f)) with the words in stream order, tile after tile (<see cref="GenericLayout"/>'s memory). A
/// kernel-layout checkpoint is moved into it on the device when it is loaded (<see cref="TrellisRelayout{TFrom, TTo}"/>),
/// so the decode-matvec reads every layout with the same contiguous loads. Segment σ (positions 16σ…16σ+15) covers
/// rows σ/2 and 8 + σ/2, columns 4·(σ mod 2) + {0…3, 8…11}.
/// </summary>
public readonly struct KernelStreamLayout : IStreamOrderLayout
{
    public bool OneRowPerSegment => false;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public long MemoryByte(int tile, int k, LayoutParams p) => default(GenericLayout).MemoryByte(tile, k, p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Position(int tile, int pos, LayoutParams p, out int row, out int col) =>
        default(KernelLayout).Position(tile, pos, p, out row, out col);

    // p = 16σ + q: b = σ >> 1, e = 2(σ & 1) + (q >> 3), d = (q >> 2) & 1, a = (q >> 1) & 1, f = q & 1.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int SegmentColumn(int segment, int q) => (8 * ((q >> 2) & 1)) + (4 * (segment & 1)) + (2 * (q >> 3)) + (q & 1);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int SegmentRowHalf(int q) => (q >> 1) & 1;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int SegmentRow(int segment, int half) => (8 * half) + (segment >> 1);

    // column = 4·(2·((q >> 2) & 1) + (σ & 1)) + (2·(q >> 3) + (q & 1)).
    public int XSlots => 2;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int XVector(int segment, int slot) => (2 * slot) + (segment & 1);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int XSlot(int q) => (q >> 2) & 1;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int XComponent(int q) => (2 * (q >> 3)) + (q & 1);
}

/// <summary>Which layout (host-side name of the struct type argument).</summary>
public enum TileLayoutKind
{
    /// <summary><see cref="GenericLayout"/>.</summary>
    Generic,

    /// <summary><see cref="KernelLayout"/>.</summary>
    Kernel,
}
