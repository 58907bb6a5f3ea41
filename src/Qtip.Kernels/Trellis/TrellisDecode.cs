using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;

namespace Qtip.Kernels.Trellis;

/// <summary>What <see cref="TrellisDecode{TCode, TLayout}"/> writes.</summary>
public enum DecodeOutput
{
    /// <summary>values [tiles × T]: each tile's sequence in trellis order.</summary>
    Sequences = 0,

    /// <summary>The m×n matrix, row-major, each value at its layout position.</summary>
    Matrix = 1,

    /// <summary>states [tiles × T/V] (unpacking only).</summary>
    States = 2,
}

/// <summary>
/// Dense decode of packed tiles: state i of a tile is the L-bit window at stream bit i·K·V, read circularly (the
/// tail-biting stream wraps), gathered from at most three stream bytes through the layout; its V values come from
/// the code's one decode function. One thread per state; writes sequences, the matrix, or the bare states.
/// </summary>
public sealed class TrellisDecode<TCode, TLayout> : IKernelSet<TrellisDecode<TCode, TLayout>>
    where TCode : struct, ITrellisCode
    where TLayout : struct, ITileLayout
{
    private readonly QtipDevice device;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<byte>, ArrayView<float>, ArrayView<float>, ArrayView<uint>, DecodeParams> kernel;

    private TrellisDecode(QtipDevice device)
    {
        this.device = device;
        kernel = device.Accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<byte>, ArrayView<float>, ArrayView<float>, ArrayView<uint>, DecodeParams>(Kernel);
    }

    public static TrellisDecode<TCode, TLayout> Create(QtipDevice device) => new(device);

    /// <summary>
    /// trellis [tiles × K·T/16] int16 → <paramref name="values"/> ([tiles × T] or m×n, per <paramref name="output"/>)
    /// or <paramref name="states"/> [tiles × T/V]. <paramref name="codeTable"/>: the code's table (any non-empty view
    /// for codes without one). m, n: the matrix (required for the kernel layout and for Matrix output).
    /// </summary>
    public void Apply(
        ArrayView<short> trellis, int tiles, int l, int k, int t, DecodeOutput output,
        ArrayView<float> codeTable, ArrayView<float> values, ArrayView<uint> states, int m = 0, int n = 0, AcceleratorStream? stream = null)
    {
        int v = default(TCode).V;
        TrellisShape.Validate(l, k, v, t);
        if (output == DecodeOutput.Matrix && (m == 0 || n == 0 || t != 256))
            throw new ArgumentException("TrellisDecode: matrix output needs m, n and T = 256", nameof(output));
        var lp = TileLayoutCheck.Check<TLayout>(tiles, k, t, m, n);
        if (trellis.Length < (long)tiles * k * t / 16)
            throw new ArgumentException($"TrellisDecode: trellis has {trellis.Length} elements, needs [{tiles} × K·T/16 = {k * t / 16}]", nameof(trellis));
        if (codeTable.Length < 1)
            throw new ArgumentException("TrellisDecode: codeTable must have at least one element", nameof(codeTable));
        int steps = t / v;
        switch (output)
        {
            case DecodeOutput.States when states.Length < (long)tiles * steps:
                throw new ArgumentException($"TrellisDecode: states has {states.Length} elements, needs [{tiles} × {steps}]", nameof(states));
            case DecodeOutput.Sequences when values.Length < (long)tiles * t:
                throw new ArgumentException($"TrellisDecode: values has {values.Length} elements, needs [{tiles} × {t}]", nameof(values));
            case DecodeOutput.Matrix when values.Length < (long)m * n:
                throw new ArgumentException($"TrellisDecode: values has {values.Length} elements, needs m·n = {m}·{n}", nameof(values));
        }
        long threads = (long)tiles * steps;
        if (threads > int.MaxValue)
            throw new ArgumentException($"TrellisDecode: {tiles} tiles exceed one launch", nameof(tiles));
        if (threads == 0)
            return;
        kernel(stream ?? device.Accelerator.DefaultStream, (int)threads, trellis.Cast<byte>(), codeTable, values, states,
            new DecodeParams(l, k * v, steps, (int)output, lp));
    }

    public readonly struct DecodeParams(int l, int kv, int steps, int output, LayoutParams layout)
    {
        public readonly int L = l;
        public readonly int KV = kv;
        public readonly int Steps = steps;
        public readonly int Output = output;
        public readonly LayoutParams Layout = layout;
    }

    internal static void Kernel(Index1D index, ArrayView<byte> trellis, ArrayView<float> codeTable, ArrayView<float> values, ArrayView<uint> states, DecodeParams p)
    {
        var layout = default(TLayout);
        int tile = index.X / p.Steps;
        int i = index.X - (tile * p.Steps);
        int bytesPerTile = p.Layout.BytesPerTile;
        int bit = i * p.KV;
        int k0 = bit >> 3;
        uint window = 0;
        for (int j = 0; j < 3; j++)
        {
            int k = (k0 + j) % bytesPerTile;
            window = (window << 8) | trellis[layout.MemoryByte(tile, k, p.Layout)];
        }
        uint s = (window >> (24 - (bit & 7) - p.L)) & ((1u << p.L) - 1u);
        if (p.Output == (int)DecodeOutput.States)
        {
            states[index] = s;
            return;
        }
        Codes.Decode<TCode, DeviceTable>(s, new DeviceTable(codeTable), out float v0, out float v1);
        int v = default(TCode).V;
        int pos = i * v;
        if (p.Output == (int)DecodeOutput.Sequences)
        {
            long o = ((long)tile * p.Layout.T) + pos;
            values[o] = v0;
            if (v == 2)
                values[o + 1] = v1;
            return;
        }
        layout.Position(tile, pos, p.Layout, out int row, out int col);
        values[((long)row * p.Layout.N) + col] = v0;
        if (v == 2)
        {
            layout.Position(tile, pos + 1, p.Layout, out row, out col);
            values[((long)row * p.Layout.N) + col] = v1;
        }
    }
}
