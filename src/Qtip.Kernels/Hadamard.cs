using System.Numerics;
using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;

namespace Qtip.Kernels;

/// <summary>
/// The randomized-Hadamard building block: y = s_out ⊙ (Had_n (s_in ⊙ x)) or with Had_nᵀ, on every row of a
/// row-major [rows × n] matrix, in place. Had_n = (H_K ⊗ H_P)/√n for n = K·P, P = 2^p, with H_P the natural-order
/// (Sylvester) Walsh–Hadamard matrix on the contiguous index and H_K one of the stored small matrices
/// (<see cref="HadamardMatrices"/>) on the slow index: element i = a·P + r.
///
/// Design. Two kernels, each one pass over global memory:
/// <list type="number">
/// <item><b>FWHT of contiguous chunks</b> (<see cref="FwhtChunksKernel"/>), P ≤ 8192: a group stages one or more
/// whole chunks in shared memory and runs the log2 P butterfly stages as radix-8 rounds (3 stages per round from
/// eight registers, one barrier per round). Stages over different index bits commute, so the first round takes
/// the highest bits straight from global memory (coalesced) and the last round writes straight to global memory.
/// Shared addresses are padded (i + i/8) so the stride-8 round is bank-conflict free.</item>
/// <item><b>Dense ±1 mix along the slow axis</b> (<see cref="SignMixKernel"/>): y[a, r] = Σ_b M[a, b]·x[b, r] for
/// the M×M sign matrix H_K (⊗ H_{P/8192} when P &gt; 8192), with the bits of M in shared memory and a [M × C]
/// tile of x staged per group. This pass is arithmetic-bound for K = 172 (K² sign-adds per column).</item>
/// </list>
/// A power-of-two n ≤ 8192 therefore costs one read and one write of the data. The input sign, the 1/√n scale
/// (a float32 √n, as the reference) and the output sign are folded into the first and last pass.
/// </summary>
public sealed class Hadamard : IKernelSet<Hadamard>
{
    /// <summary>Largest chunk transformed inside one group's shared memory.</summary>
    public const int MaxChunk = 8192;

    /// <summary>Inner-tile width of the mix pass.</summary>
    private const int MixTile = 32;

    /// <summary>Largest mix order: 172 (11008 = 172·64) or 52·… for the largest Llama sizes.</summary>
    public const int MaxMixOrder = 256;

    private const int MaxMixWords = MaxMixOrder / 32;

    private readonly QtipDevice device;
    private readonly bool staticShared;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, FwhtParams> fwht;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<uint>, ArrayView<float>, ArrayView<float>, MixParams> mix;
    private readonly Dictionary<(int K, int Outer, bool Transpose), MemoryBuffer1D<uint, Stride1D.Dense>> mixBits = [];
    private readonly MemoryBuffer1D<float, Stride1D.Dense> noSign;
    private readonly Lock bitsLock = new();

    private Hadamard(QtipDevice device)
    {
        this.device = device;
        staticShared = !device.Capabilities.DynamicSharedMemory;
        if (staticShared)
        {
            fwht = device.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, FwhtParams>(FwhtChunksKernel<StaticSharedFloats>);
            mix = device.LoadKernel<ArrayView<float>, ArrayView<uint>, ArrayView<float>, ArrayView<float>, MixParams>(SignMixKernel<StaticSharedFloats>);
        }
        else
        {
            fwht = device.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, FwhtParams>(FwhtChunksKernel<DynamicSharedFloats>);
            mix = device.LoadKernel<ArrayView<float>, ArrayView<uint>, ArrayView<float>, ArrayView<float>, MixParams>(SignMixKernel<DynamicSharedFloats>);
        }
        noSign = device.Accelerator.Allocate1D<float>(1);
    }

    public static Hadamard Create(QtipDevice device) => new(device);

    /// <summary>
    /// In place, for every row x of data [rows × n]: x ← s_out ⊙ (scale · Had_n (s_in ⊙ x)), or Had_nᵀ when
    /// <paramref name="transpose"/>. Signs are length-n vectors (any real values; ±1 for an orthogonal map) or
    /// null for none. <paramref name="scale"/> multiplies the 1/√n normalisation.
    /// </summary>
    public void Apply(
        ArrayView<float> data, int rows, int n, bool transpose,
        ArrayView<float>? inSign = null, ArrayView<float>? outSign = null, float scale = 1f,
        AcceleratorStream? stream = null)
    {
        var plan = HadamardPlan.For(n);
        if (rows < 0)
            throw new ArgumentOutOfRangeException(nameof(rows), rows, "rows must be non-negative");
        if (data.Length < (long)rows * n)
            throw new ArgumentException($"Hadamard: data has {data.Length} elements, needs rows·n = {rows}·{n} = {(long)rows * n}", nameof(data));
        if (inSign is { } si && si.Length != n)
            throw new ArgumentException($"Hadamard: input sign vector has {si.Length} elements, expected n = {n}", nameof(inSign));
        if (outSign is { } so && so.Length != n)
            throw new ArgumentException($"Hadamard: output sign vector has {so.Length} elements, expected n = {n}", nameof(outSign));
        if (rows == 0)
            return;
        stream ??= device.Accelerator.DefaultStream;

        float norm = scale / MathF.Sqrt(n);
        bool hasMix = plan.MixOrder > 1;
        var s0 = inSign ?? noSign.View;
        var s1 = outSign ?? noSign.View;

        if (plan.Chunk > 1 || !hasMix)
            LaunchFwht(stream, data, rows, n, plan.Chunk, s0, inSign.HasValue, s1, !hasMix && outSign.HasValue, hasMix ? 1f : norm);
        if (hasMix)
        {
            bool firstPass = plan.Chunk == 1;
            var bits = MixBits(plan.SmallFactor, plan.MixOrder / plan.SmallFactor, transpose);
            LaunchMix(stream, data, rows, n, plan.MixOrder, plan.Chunk, bits, s0, firstPass && inSign.HasValue, s1, outSign.HasValue, norm);
        }
    }

    private void LaunchFwht(
        AcceleratorStream stream, ArrayView<float> data, int rows, int n, int chunk,
        ArrayView<float> inSign, bool useIn, ArrayView<float> outSign, bool useOut, float scale)
    {
        int log2 = BitOperations.Log2((uint)chunk);
        int chunksPerRow = n / chunk;
        long totalChunks = (long)rows * chunksPerRow;
        // Batch short chunks so a group holds ~1024 elements. When a row is one chunk, the group covers whole rows
        // (column = i mod n by mask); otherwise it stays within one row length, so it crosses at most one row end.
        int chunksPerGroup = Math.Max(1, 1024 / chunk);
        if (chunksPerRow > 1)
            chunksPerGroup = Math.Min(chunksPerGroup, chunksPerRow);
        int elements = chunksPerGroup * chunk;
        int units = Math.Max(1, elements / 8);
        int groupSize = device.LoopGroupSize(RoundUpPow2(units));
        long groups = (totalChunks + chunksPerGroup - 1) / chunksPerGroup;
        if (groups > int.MaxValue)
            throw new ArgumentException($"Hadamard: {totalChunks} chunks exceed one launch", nameof(rows));
        int paddedElements = elements + (elements >> 3);
        var p = new FwhtParams(log2, n, totalChunks, chunksPerGroup, Rounds(log2), useIn ? 1 : 0, useOut ? 1 : 0, scale,
            chunksPerRow == 1 ? n - 1 : -1);
        fwht(stream, Config((int)groups, groupSize, paddedElements), data, inSign, outSign, p);
    }

    private void LaunchMix(
        AcceleratorStream stream, ArrayView<float> data, int rows, int n, int order, int inner,
        ArrayView<uint> bits, ArrayView<float> inSign, bool useIn, ArrayView<float> outSign, bool useOut, float scale)
    {
        int tile = Math.Min(MixTile, inner);
        int tilesPerRow = inner / tile;
        long groups = (long)rows * tilesPerRow;
        if (groups > int.MaxValue)
            throw new ArgumentException($"Hadamard: {groups} mix tiles exceed one launch", nameof(rows));
        int groupSize = device.LoopGroupSize(Math.Min(256, RoundUpPow2(order * tile)));
        var p = new MixParams(order, inner, tile, n, (order + 31) / 32, useIn ? 1 : 0, useOut ? 1 : 0, scale);
        mix(stream, Config((int)groups, groupSize, order * tile), data, bits, inSign, outSign, p);
    }

    private KernelConfig Config(int groups, int groupSize, int sharedFloats)
    {
        if (!staticShared)
            return new KernelConfig(groups, groupSize, SharedMemoryConfig.RequestDynamic<float>(sharedFloats));
        if (sharedFloats > StaticSharedFloats.Capacity)
            throw new InvalidOperationException($"Hadamard: {sharedFloats} shared floats exceed the static OpenCL buffer of {StaticSharedFloats.Capacity}");
        return new KernelConfig(groups, groupSize);
    }

    /// <summary>Bits of the mix matrix (H_K ⊗ H_outer, transposed if asked), row-major, bit set = −1.</summary>
    private ArrayView<uint> MixBits(int k, int outer, bool transpose)
    {
        lock (bitsLock)
        {
            if (mixBits.TryGetValue((k, outer, transpose), out var cached))
                return cached.View;
            var h = HadamardMatrices.Kronecker(HadamardMatrices.Get(k), HadamardMatrices.Sylvester(outer));
            int m = h.GetLength(0);
            int words = (m + 31) / 32;
            var bits = new uint[m * words];
            for (int a = 0; a < m; a++)
            {
                for (int b = 0; b < m; b++)
                {
                    int v = transpose ? h[b, a] : h[a, b];
                    if (v < 0)
                        bits[(a * words) + (b >> 5)] |= 1u << (b & 31);
                }
            }
            var buffer = device.Accelerator.Allocate1D(bits);
            mixBits[(k, outer, transpose)] = buffer;
            return buffer.View;
        }
    }

    /// <summary>Radix-8 rounds over the bits of a 2^log2 chunk, packed 8 bits per round (start bit, bit count),
    /// highest bits first and the round at bit 0 second, so both global passes touch runs of ≥ 8 floats.</summary>
    internal static long Rounds(int log2)
    {
        var rounds = new List<(int Start, int Count)>();
        for (int b = 0; b < log2; b += 3)
            rounds.Add((b, Math.Min(3, log2 - b)));
        rounds.Reverse();
        if (rounds.Count > 2)
        {
            var zero = rounds[^1];
            rounds.RemoveAt(rounds.Count - 1);
            rounds.Insert(1, zero);
        }
        long packed = 0;
        for (int i = 0; i < rounds.Count; i++)
            packed |= (long)((rounds[i].Start << 2) | rounds[i].Count) << (8 * i);
        return packed | ((long)rounds.Count << 56);
    }

    private static int RoundUpPow2(int v) => v <= 1 ? 1 : (int)BitOperations.RoundUpToPowerOf2((uint)v);

    public readonly struct FwhtParams(int log2Chunk, int rowLength, long totalChunks, int chunksPerGroup, long rounds, int useIn, int useOut, float scale, int columnMask)
    {
        /// <summary>n − 1 when a row is a single chunk (column = index AND mask), else −1 = all bits (column = base + i, minus n past the row end).</summary>
        public readonly int ColumnMask = columnMask;
        public readonly int Log2Chunk = log2Chunk;
        public readonly int RowLength = rowLength;
        public readonly long TotalChunks = totalChunks;
        public readonly int ChunksPerGroup = chunksPerGroup;
        public readonly long Rounds = rounds;
        public readonly int UseIn = useIn;
        public readonly int UseOut = useOut;
        public readonly float Scale = scale;
    }

    public readonly struct MixParams(int order, int inner, int tile, int rowLength, int words, int useIn, int useOut, float scale)
    {
        public readonly int Order = order;
        public readonly int Inner = inner;
        public readonly int Tile = tile;
        public readonly int RowLength = rowLength;
        public readonly int Words = words;
        public readonly int UseIn = useIn;
        public readonly int UseOut = useOut;
        public readonly float Scale = scale;
    }

    /// <summary>Shared-memory address of chunk-local element i: one pad word per 8 keeps stride-8 access conflict-free.</summary>
    private static int Pad(int i) => i + (i >> 3);

    /// <summary>FWHT of contiguous 2^Log2Chunk chunks of a row-major [rows × RowLength] matrix, in place.</summary>
    internal static void FwhtChunksKernel<TShared>(ArrayView<float> data, ArrayView<float> inSign, ArrayView<float> outSign, FwhtParams p)
        where TShared : struct, ISharedFloats
    {
        var shared = default(TShared).Get();
        int tid = Group.IdxX;
        int groupSize = Group.DimX;
        long firstChunk = (long)Grid.IdxX * p.ChunksPerGroup;
        long chunksHere = p.TotalChunks - firstChunk;
        if (chunksHere > p.ChunksPerGroup)
            chunksHere = p.ChunksPerGroup;
        int valid = (int)chunksHere << p.Log2Chunk;
        long baseIndex = firstChunk << p.Log2Chunk;
        int roundCount = (int)(p.Rounds >> 56);
        // Column of group element 0 within its row (signs are per column). One 64-bit modulo per group.
        int colBase = p.ColumnMask != -1 ? 0 : (int)(firstChunk % (p.RowLength >> p.Log2Chunk)) << p.Log2Chunk;
        var g = new GlobalRow(data, inSign, outSign, baseIndex, colBase, p);

        for (int round = 0; round < roundCount; round++)
        {
            int code = (int)((p.Rounds >> (8 * round)) & 0xFF);
            int start = code >> 2;
            int count = code & 3;
            bool first = round == 0;
            bool last = round == roundCount - 1;
            int units = valid >> count;
            int stride = 1 << start;
            int lowMask = stride - 1;
            if (!first)
                Group.Barrier();
            for (int u = tid; u < units; u += groupSize)
            {
                int i0 = (u & lowMask) | ((u >> start) << (start + count));
                int i1 = i0 + stride, i2 = i1 + stride, i3 = i2 + stride;
                float v0, v1, v2, v3, v4, v5, v6, v7;
                if (count == 3)
                {
                    int i4 = i3 + stride, i5 = i4 + stride, i6 = i5 + stride, i7 = i6 + stride;
                    if (first)
                    {
                        // All eight loads first, signs after: keeps the loads in flight together.
                        v0 = g.Raw(i0); v1 = g.Raw(i1); v2 = g.Raw(i2); v3 = g.Raw(i3);
                        v4 = g.Raw(i4); v5 = g.Raw(i5); v6 = g.Raw(i6); v7 = g.Raw(i7);
                        if (p.UseIn != 0)
                        {
                            v0 *= g.InSign(i0); v1 *= g.InSign(i1); v2 *= g.InSign(i2); v3 *= g.InSign(i3);
                            v4 *= g.InSign(i4); v5 *= g.InSign(i5); v6 *= g.InSign(i6); v7 *= g.InSign(i7);
                        }
                    }
                    else
                    {
                        v0 = shared[Pad(i0)]; v1 = shared[Pad(i1)]; v2 = shared[Pad(i2)]; v3 = shared[Pad(i3)];
                        v4 = shared[Pad(i4)]; v5 = shared[Pad(i5)]; v6 = shared[Pad(i6)]; v7 = shared[Pad(i7)];
                    }
                    Butterfly(ref v0, ref v1); Butterfly(ref v2, ref v3); Butterfly(ref v4, ref v5); Butterfly(ref v6, ref v7);
                    Butterfly(ref v0, ref v2); Butterfly(ref v1, ref v3); Butterfly(ref v4, ref v6); Butterfly(ref v5, ref v7);
                    Butterfly(ref v0, ref v4); Butterfly(ref v1, ref v5); Butterfly(ref v2, ref v6); Butterfly(ref v3, ref v7);
                    if (last)
                    {
                        v0 *= p.Scale; v1 *= p.Scale; v2 *= p.Scale; v3 *= p.Scale;
                        v4 *= p.Scale; v5 *= p.Scale; v6 *= p.Scale; v7 *= p.Scale;
                        if (p.UseOut != 0)
                        {
                            v0 *= g.OutSign(i0); v1 *= g.OutSign(i1); v2 *= g.OutSign(i2); v3 *= g.OutSign(i3);
                            v4 *= g.OutSign(i4); v5 *= g.OutSign(i5); v6 *= g.OutSign(i6); v7 *= g.OutSign(i7);
                        }
                        g.Raw(i0, v0); g.Raw(i1, v1); g.Raw(i2, v2); g.Raw(i3, v3);
                        g.Raw(i4, v4); g.Raw(i5, v5); g.Raw(i6, v6); g.Raw(i7, v7);
                    }
                    else
                    {
                        shared[Pad(i0)] = v0; shared[Pad(i1)] = v1; shared[Pad(i2)] = v2; shared[Pad(i3)] = v3;
                        shared[Pad(i4)] = v4; shared[Pad(i5)] = v5; shared[Pad(i6)] = v6; shared[Pad(i7)] = v7;
                    }
                }
                else if (count == 2)
                {
                    if (first)
                    {
                        v0 = g.Load(i0); v1 = g.Load(i1); v2 = g.Load(i2); v3 = g.Load(i3);
                    }
                    else
                    {
                        v0 = shared[Pad(i0)]; v1 = shared[Pad(i1)]; v2 = shared[Pad(i2)]; v3 = shared[Pad(i3)];
                    }
                    Butterfly(ref v0, ref v1); Butterfly(ref v2, ref v3);
                    Butterfly(ref v0, ref v2); Butterfly(ref v1, ref v3);
                    if (last)
                    {
                        g.Store(i0, v0); g.Store(i1, v1); g.Store(i2, v2); g.Store(i3, v3);
                    }
                    else
                    {
                        shared[Pad(i0)] = v0; shared[Pad(i1)] = v1; shared[Pad(i2)] = v2; shared[Pad(i3)] = v3;
                    }
                }
                else
                {
                    if (first)
                    {
                        v0 = g.Load(i0); v1 = g.Load(i1);
                    }
                    else
                    {
                        v0 = shared[Pad(i0)]; v1 = shared[Pad(i1)];
                    }
                    Butterfly(ref v0, ref v1);
                    if (last)
                    {
                        g.Store(i0, v0); g.Store(i1, v1);
                    }
                    else
                    {
                        shared[Pad(i0)] = v0; shared[Pad(i1)] = v1;
                    }
                }
            }
        }

        if (roundCount == 0)
        {
            // Chunks of one element: only signs and scale act.
            for (int i = tid; i < valid; i += groupSize)
                g.Store(i, g.Load(i));
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Butterfly(ref float a, ref float b)
    {
        float s = a + b;
        b = a - b;
        a = s;
    }

    /// <summary>Global-memory side of one group: element i of the group's span, with its input/output sign and scale.</summary>
    private readonly struct GlobalRow(ArrayView<float> data, ArrayView<float> inSign, ArrayView<float> outSign, long baseIndex, int colBase, FwhtParams p)
    {
        /// <summary>Column of element i in its row, branch-free: (colBase + (i AND mask)) − n if that passes the row end.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private int Column(int i)
        {
            int col = colBase + (i & p.ColumnMask);
            return col - (p.RowLength & ((p.RowLength - 1 - col) >> 31));
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public float Raw(int i) => data[baseIndex + i];

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Raw(int i, float v) => data[baseIndex + i] = v;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public float InSign(int i) => inSign[Column(i)];

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public float OutSign(int i) => outSign[Column(i)];

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public float Load(int i)
        {
            float v = data[baseIndex + i];
            return p.UseIn != 0 ? v * inSign[Column(i)] : v;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Store(int i, float v)
        {
            v *= p.Scale;
            if (p.UseOut != 0)
                v *= outSign[Column(i)];
            data[baseIndex + i] = v;
        }
    }

    /// <summary>
    /// y[a·Inner + r] = Σ_b M[a,b]·x[b·Inner + r] per row (M = ±1 bits, set = −1), in place, one [Order × Tile]
    /// tile per group. Written as y = S − 2·Σ_{b: M[a,b] = −1} x_b with S the column sum, iterating only the set bits
    /// of row a: about Order/2 shared loads and adds per output, with no per-element sign arithmetic. A warp's
    /// lanes share one a (Tile = 32), so the bit loop is uniform across the warp.
    /// </summary>
    internal static void SignMixKernel<TShared>(ArrayView<float> data, ArrayView<uint> bits, ArrayView<float> inSign, ArrayView<float> outSign, MixParams p)
        where TShared : struct, ISharedFloats
    {
        var tile = default(TShared).Get();
        var sbits = SharedMemory.Allocate<uint>(MaxMixOrder * MaxMixWords);
        var colSum = SharedMemory.Allocate<float>(MixTile);
        int tid = Group.IdxX;
        int groupSize = Group.DimX;
        int tilesPerRow = p.Inner / p.Tile;
        int row = Grid.IdxX / tilesPerRow;
        int r0 = (Grid.IdxX - (row * tilesPerRow)) * p.Tile;
        long rowBase = (long)row * p.RowLength;
        int count = p.Order * p.Tile;

        for (int e = tid; e < p.Order * p.Words; e += groupSize)
            sbits[e] = bits[e];
        for (int e = tid; e < count; e += groupSize)
        {
            int b = e / p.Tile;
            int r = e - (b * p.Tile);
            int col = (b * p.Inner) + r0 + r;
            float v = data[rowBase + col];
            if (p.UseIn != 0)
                v *= inSign[col];
            tile[e] = v;
        }
        Group.Barrier();
        for (int r = tid; r < p.Tile; r += groupSize)
        {
            float s = 0f;
            for (int b = 0; b < p.Order; b++)
                s += tile[(b * p.Tile) + r];
            colSum[r] = s;
        }
        Group.Barrier();

        for (int e = tid; e < count; e += groupSize)
        {
            int a = e / p.Tile;
            int r = e - (a * p.Tile);
            float negatives = 0f;
            int rowBits = a * p.Words;
            for (int w = 0; w < p.Words; w++)
            {
                uint word = sbits[rowBits + w];
                int wordBase = (w * 32 * p.Tile) + r;
                while (word != 0)
                {
                    int j = IntrinsicMath.BitOperations.TrailingZeroCount(word);
                    negatives += tile[wordBase + (j * p.Tile)];
                    word &= word - 1;
                }
            }
            float acc = (colSum[r] - (2f * negatives)) * p.Scale;
            int col = (a * p.Inner) + r0 + r;
            if (p.UseOut != 0)
                acc *= outSign[col];
            data[rowBase + col] = acc;
        }
    }
}

/// <summary>How a transform of size n is split: n = K · P with P = 2^p; chunks of min(P, 8192) are transformed
/// in shared memory and the remaining (K · P/chunk) × (K · P/chunk) sign matrix is applied as a mix.</summary>
public readonly record struct HadamardPlan(int N, int SmallFactor, int Pow2, int Chunk, int MixOrder)
{
    /// <summary>Kernel launches of one <see cref="Hadamard.Apply"/>: the chunk FWHT and/or the mix.</summary>
    public int Launches => (Chunk > 1 || MixOrder <= 1 ? 1 : 0) + (MixOrder > 1 ? 1 : 0);

    public static HadamardPlan For(int n)
    {
        int k = HadamardMatrices.SmallFactor(n);
        int pow2 = n / k;
        int chunk = Math.Min(pow2, Hadamard.MaxChunk);
        int mixOrder = k * (pow2 / chunk);
        if (mixOrder > Hadamard.MaxMixOrder)
            throw new ArgumentException($"Hadamard size {n} needs a {mixOrder}×{mixOrder} mix, above the supported {Hadamard.MaxMixOrder}", nameof(n));
        return new HadamardPlan(n, k, pow2, chunk, mixOrder);
    }
}
