using Qtip.Kernels.Trellis;

namespace Qtip.Testing;

/// <summary>The V values of one L-bit state (a code's host decode).</summary>
public delegate void StateDecode(uint state, out float v0, out float v1);

/// <summary>
/// Plain C# reference of a stored trellis: Ŵ (m×n) from the packed words, every state of every tile cut from the stream
/// bytes (found through the layout's byte map, circularly, MSB first), decoded by <paramref name="decode"/> and placed by
/// the layout's position map. The kernels' tests (decode, matvec, a test-only code through the pipeline) compare with it.
/// </summary>
public static class TrellisHostDecode
{
    public static float[] Matrix<TLayout>(short[] words, int m, int n, int l, int k, int v, StateDecode decode)
        where TLayout : struct, ITileLayout
    {
        var layout = default(TLayout);
        var bytes = new byte[words.Length * 2];
        Buffer.BlockCopy(words, 0, bytes, 0, bytes.Length);
        var p = new LayoutParams(k, 256, m, n);
        int tiles = (m / 16) * (n / 16), bitsPerTile = 256 * k;
        var w = new float[m * n];
        for (int tile = 0; tile < tiles; tile++)
        {
            for (int i = 0; i < 256 / v; i++)
            {
                uint state = 0;
                for (int b = 0; b < l; b++)
                {
                    int bit = ((i * k * v) + b) % bitsPerTile;
                    int value = bytes[layout.MemoryByte(tile, bit >> 3, p)];
                    state = (state << 1) | (uint)((value >> (7 - (bit & 7))) & 1);
                }
                decode(state, out float v0, out float v1);
                layout.Position(tile, i * v, p, out int row, out int col);
                w[(row * n) + col] = v0;
                if (v == 2)
                {
                    layout.Position(tile, (i * v) + 1, p, out row, out col);
                    w[(row * n) + col] = v1;
                }
            }
        }
        return w;
    }
}
