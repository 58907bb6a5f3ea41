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
/// The generic (non-kernel) layout, spec §1 "reference packing": one tile per row of K·T/16 int16 words; word w holds
/// stream bits 16w…16w+15 with the first in bit 15, so stream byte k is memory byte k XOR 1 of the tile's row.
/// Sequence position p is tile element (p div 16, p mod 16).
/// </summary>
public readonly struct GenericLayout : ITileLayout
{
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

/// <summary>Which layout (host-side name of the struct type argument).</summary>
public enum TileLayoutKind
{
    /// <summary><see cref="GenericLayout"/>.</summary>
    Generic,

    /// <summary><see cref="KernelLayout"/>.</summary>
    Kernel,
}
