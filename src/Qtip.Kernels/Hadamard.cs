using System.Numerics;
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
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, FwhtParams> fwht;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<uint>, ArrayView<float>, ArrayView<float>, MixParams> mix;
    private readonly Dictionary<(int K, int Outer, bool Transpose), MemoryBuffer1D<uint, Stride1D.Dense>> mixBits = [];
    private readonly MemoryBuffer1D<float, Stride1D.Dense> noSign;
    private readonly Lock bitsLock = new();

    private Hadamard(QtipDevice device)
    {
        this.device = device;
        var acc = device.Accelerator;
        fwht = acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, FwhtParams>(FwhtChunksKernel);
        mix = acc.LoadKernel<ArrayView<float>, ArrayView<uint>, ArrayView<float>, ArrayView<float>, MixParams>(SignMixKernel);
        noSign = acc.Allocate1D<float>(1);
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

        if (plan.Chunk > 1)
            LaunchFwht(stream, data, rows, n, plan.Chunk, s0, inSign.HasValue, s1, !hasMix && outSign.HasValue, hasMix ? 1f : norm);
        if (hasMix)
        {
            bool firstPass = plan.Chunk == 1;
            var bits = MixBits(plan.SmallFactor, plan.MixOrder / plan.SmallFactor, transpose);
            LaunchMix(stream, data, rows, n, plan.MixOrder, plan.Chunk, bits, s0, firstPass && inSign.HasValue, s1, outSign.HasValue, norm);
        }
        else if (plan.Chunk == 1)
        {
            // n = 1: Had_1 = [1]; only signs and scale act.
            LaunchFwht(stream, data, rows, n, 1, s0, inSign.HasValue, s1, outSign.HasValue, norm);
        }
    }

    private void LaunchFwht(
        AcceleratorStream stream, ArrayView<float> data, int rows, int n, int chunk,
        ArrayView<float> inSign, bool useIn, ArrayView<float> outSign, bool useOut, float scale)
    {
        int log2 = BitOperations.Log2((uint)chunk);
        long totalChunks = (long)rows * (n / chunk);
        int maxGroup = device.MaxGroupSize;
        // A group holds at least 1024 elements (or one chunk) so small chunks batch together.
        int chunksPerGroup = Math.Max(1, 1024 / chunk);
        int elements = chunksPerGroup * chunk;
        int units = Math.Max(1, elements / 8);
        int groupSize = Math.Min(maxGroup, RoundUpPow2(units));
        long groups = (totalChunks + chunksPerGroup - 1) / chunksPerGroup;
        if (groups > int.MaxValue)
            throw new ArgumentException($"Hadamard: {totalChunks} chunks exceed one launch", nameof(rows));
        int paddedElements = elements + (elements >> 3);
        var p = new FwhtParams(log2, n, totalChunks, chunksPerGroup, Rounds(log2), useIn ? 1 : 0, useOut ? 1 : 0, scale);
        var config = new KernelConfig((int)groups, groupSize, SharedMemoryConfig.RequestDynamic<float>(paddedElements));
        fwht(stream, config, data, inSign, outSign, p);
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
        int groupSize = Math.Min(device.MaxGroupSize, RoundUpPow2(order * tile));
        groupSize = Math.Min(groupSize, 256);
        var p = new MixParams(order, inner, tile, n, (order + 31) / 32, useIn ? 1 : 0, useOut ? 1 : 0, scale);
        var config = new KernelConfig((int)groups, groupSize, SharedMemoryConfig.RequestDynamic<float>(order * tile));
        mix(stream, config, data, bits, inSign, outSign, p);
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

    public readonly struct FwhtParams(int log2Chunk, int rowLength, long totalChunks, int chunksPerGroup, long rounds, int useIn, int useOut, float scale)
    {
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
    internal static void FwhtChunksKernel(ArrayView<float> data, ArrayView<float> inSign, ArrayView<float> outSign, FwhtParams p)
    {
        var shared = SharedMemory.GetDynamic<float>();
        int tid = Group.IdxX;
        int groupSize = Group.DimX;
        long firstChunk = (long)Grid.IdxX * p.ChunksPerGroup;
        long chunksHere = p.TotalChunks - firstChunk;
        if (chunksHere > p.ChunksPerGroup)
            chunksHere = p.ChunksPerGroup;
        int chunk = 1 << p.Log2Chunk;
        int valid = (int)chunksHere * chunk;
        long baseIndex = firstChunk * chunk;
        int roundCount = (int)(p.Rounds >> 56);

        for (int round = 0; round < roundCount; round++)
        {
            int code = (int)((p.Rounds >> (8 * round)) & 0xFF);
            int start = code >> 2;
            int count = code & 3;
            bool first = round == 0;
            bool last = round == roundCount - 1;
            int span = 1 << count;
            int units = valid >> count;
            int stride = 1 << start;
            int lowMask = stride - 1;
            if (!first)
                Group.Barrier();
            for (int u = tid; u < units; u += groupSize)
            {
                int b0 = (u & lowMask) | ((u >> start) << (start + count));
                if (span == 8)
                {
                    float v0 = Load(data, shared, inSign, p, first, baseIndex, b0);
                    float v1 = Load(data, shared, inSign, p, first, baseIndex, b0 + stride);
                    float v2 = Load(data, shared, inSign, p, first, baseIndex, b0 + (2 * stride));
                    float v3 = Load(data, shared, inSign, p, first, baseIndex, b0 + (3 * stride));
                    float v4 = Load(data, shared, inSign, p, first, baseIndex, b0 + (4 * stride));
                    float v5 = Load(data, shared, inSign, p, first, baseIndex, b0 + (5 * stride));
                    float v6 = Load(data, shared, inSign, p, first, baseIndex, b0 + (6 * stride));
                    float v7 = Load(data, shared, inSign, p, first, baseIndex, b0 + (7 * stride));
                    float a0 = v0 + v1, a1 = v0 - v1, a2 = v2 + v3, a3 = v2 - v3;
                    float a4 = v4 + v5, a5 = v4 - v5, a6 = v6 + v7, a7 = v6 - v7;
                    float c0 = a0 + a2, c2 = a0 - a2, c1 = a1 + a3, c3 = a1 - a3;
                    float c4 = a4 + a6, c6 = a4 - a6, c5 = a5 + a7, c7 = a5 - a7;
                    Store(data, shared, outSign, p, last, baseIndex, b0, c0 + c4);
                    Store(data, shared, outSign, p, last, baseIndex, b0 + stride, c1 + c5);
                    Store(data, shared, outSign, p, last, baseIndex, b0 + (2 * stride), c2 + c6);
                    Store(data, shared, outSign, p, last, baseIndex, b0 + (3 * stride), c3 + c7);
                    Store(data, shared, outSign, p, last, baseIndex, b0 + (4 * stride), c0 - c4);
                    Store(data, shared, outSign, p, last, baseIndex, b0 + (5 * stride), c1 - c5);
                    Store(data, shared, outSign, p, last, baseIndex, b0 + (6 * stride), c2 - c6);
                    Store(data, shared, outSign, p, last, baseIndex, b0 + (7 * stride), c3 - c7);
                }
                else if (span == 4)
                {
                    float v0 = Load(data, shared, inSign, p, first, baseIndex, b0);
                    float v1 = Load(data, shared, inSign, p, first, baseIndex, b0 + stride);
                    float v2 = Load(data, shared, inSign, p, first, baseIndex, b0 + (2 * stride));
                    float v3 = Load(data, shared, inSign, p, first, baseIndex, b0 + (3 * stride));
                    float a0 = v0 + v1, a1 = v0 - v1, a2 = v2 + v3, a3 = v2 - v3;
                    Store(data, shared, outSign, p, last, baseIndex, b0, a0 + a2);
                    Store(data, shared, outSign, p, last, baseIndex, b0 + stride, a1 + a3);
                    Store(data, shared, outSign, p, last, baseIndex, b0 + (2 * stride), a0 - a2);
                    Store(data, shared, outSign, p, last, baseIndex, b0 + (3 * stride), a1 - a3);
                }
                else if (span == 2)
                {
                    float v0 = Load(data, shared, inSign, p, first, baseIndex, b0);
                    float v1 = Load(data, shared, inSign, p, first, baseIndex, b0 + stride);
                    Store(data, shared, outSign, p, last, baseIndex, b0, v0 + v1);
                    Store(data, shared, outSign, p, last, baseIndex, b0 + stride, v0 - v1);
                }
            }
        }

        if (roundCount == 0)
        {
            // Chunk of one element: only signs and scale.
            for (int i = tid; i < valid; i += groupSize)
                Store(data, shared, outSign, p, true, baseIndex, i, Load(data, shared, inSign, p, true, baseIndex, i));
        }
    }

    private static float Load(ArrayView<float> data, ArrayView<float> shared, ArrayView<float> inSign, FwhtParams p, bool first, long baseIndex, int i)
    {
        if (!first)
            return shared[Pad(i)];
        long g = baseIndex + i;
        float v = data[g];
        if (p.UseIn != 0)
            v *= inSign[(int)(g % p.RowLength)];
        return v;
    }

    private static void Store(ArrayView<float> data, ArrayView<float> shared, ArrayView<float> outSign, FwhtParams p, bool last, long baseIndex, int i, float v)
    {
        if (!last)
        {
            shared[Pad(i)] = v;
            return;
        }
        long g = baseIndex + i;
        v *= p.Scale;
        if (p.UseOut != 0)
            v *= outSign[(int)(g % p.RowLength)];
        data[g] = v;
    }

    /// <summary>y[a·Inner + r] = Σ_b M[a,b]·x[b·Inner + r] per row (M = ±1 bits), in place, one [Order × Tile] tile per group.</summary>
    internal static void SignMixKernel(ArrayView<float> data, ArrayView<uint> bits, ArrayView<float> inSign, ArrayView<float> outSign, MixParams p)
    {
        var tile = SharedMemory.GetDynamic<float>();
        var sbits = SharedMemory.Allocate<uint>(MaxMixOrder * MaxMixWords);
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

        for (int e = tid; e < count; e += groupSize)
        {
            int a = e / p.Tile;
            int r = e - (a * p.Tile);
            float acc = 0f;
            int rowBits = a * p.Words;
            for (int w = 0; w < p.Words; w++)
            {
                uint word = sbits[rowBits + w];
                int bEnd = p.Order - (w * 32);
                if (bEnd > 32)
                    bEnd = 32;
                int tileBase = (w * 32 * p.Tile) + r;
                for (int j = 0; j < bEnd; j++)
                {
                    float x = tile[tileBase + (j * p.Tile)];
                    // Flip the sign bit of x where M[a,b] = −1.
                    int flip = (int)((word >> j) & 1u) << 31;
                    acc += Interop.IntAsFloat(Interop.FloatAsInt(x) ^ (uint)flip);
                }
            }
            int col = (a * p.Inner) + r0 + r;
            acc *= p.Scale;
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
