using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Algorithms.ScanReduceOperations;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;

namespace Qtip.Kernels.Llama;

/// <summary>
/// Causal grouped-query attention over a KV cache, for one decode row or a whole prefill window:
/// out[r, h] = Σ_{t ≤ pos0+r} softmax_t(q[r,h]·K[t,g] / √d) · V[t,g] with g = h / (heads / kvHeads).
/// With a sliding window w > 0 (Mistral) the row at position i sees only the keys i − w &lt; t ≤ i (transformers'
/// rule); w = 0 is full causal attention. The window moves the first position of each row: the prefill kernels start
/// their loops there, the decode kernel is handed caches that start there.
///
/// Design: one group per (row, head). The scores of the row live in dynamic shared memory (so positions are bounded
/// by the group's shared memory: 48 KB on CUDA ≈ 10k positions); each warp takes every W-th position and its lanes
/// split the head dimension (four dimensions per lane per step, so four loads are in flight), reducing with a warp
/// reduce. Max and sum are group all-reduces; in the weighted sum of V each warp again takes every W-th position,
/// its lanes holding four output dimensions each, and the warps' partial sums meet in shared memory.
/// The grouped kernels (warp shuffles, which ILGPU's OpenCL backend cannot emit) are loaded when first launched.
/// All arithmetic is fp32, the softmax subtracts the row maximum, as Hugging Face's eager attention does. Serial
/// style (CPU simulator): one thread per (row, head) does all three passes, with its scores in a global scratch.
///
/// Decode (one row) has its own kernel, split over positions as flash-decoding does. The one-group-per-head design
/// above gives a decode step only `heads` groups (32 of the H100's 132 multiprocessors for Llama-2-7B), and each warp
/// walks its positions one at a time with one load in flight: 14 µs per layer at 81 positions, latency, not bandwidth
/// (the K and V rows read are 2.6 MB, under 1 µs of the H100's bandwidth). The decode kernel gives each head several
/// groups, each a chunk of positions; in a chunk every position's score is computed at once (L lanes per position,
/// each with up to four 16-byte K loads in flight and its quarter of q in registers), every warp takes the chunk's
/// max and sum itself (no group reduction), and the weighted sum of V reads four 16-byte rows per thread at once. The
/// group writes (Σ p·V, max, Σ p) of its chunk; the last group of a head to finish (a device fence, then an atomic
/// counter per head that the last group resets) merges the chunks with the usual rescaling by exp(mᵢ − M).
/// </summary>
public sealed class Attention : IKernelSet<Attention>, IDisposable
{
    /// <summary>Shared floats reserved besides the scores (the warps' partial sums of the V pass: warps × headDim).</summary>
    private const int PartialFloats = 8 * 256;

    private readonly QtipDevice device;
    private readonly Lazy<Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionParams>> kernel;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionParams> serial;
    private readonly Lazy<Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, DecodeParams>> decode;
    private readonly Lock scratchLock = new();
    private MemoryBuffer1D<float, Stride1D.Dense>? scratch;
    private MemoryBuffer1D<float, Stride1D.Dense>? partials;
    private MemoryBuffer1D<int, Stride1D.Dense>? counters;

    private Attention(QtipDevice device)
    {
        this.device = device;
        // OpenCL: a static shared buffer (ILGPU 1.5.3's dynamic local memory is wrong there across work-groups).
        kernel = new(() => !device.Capabilities.DynamicSharedMemory
            ? device.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionParams>(AttentionKernel<StaticSharedFloats>)
            : device.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionParams>(AttentionKernel<DynamicSharedFloats>));
        serial = device.Accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionParams>(AttentionSerialKernel);
        decode = new(() => !device.Capabilities.DynamicSharedMemory
            ? device.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, DecodeParams>(AttentionDecodeKernel<StaticSharedFloats>)
            : device.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, DecodeParams>(AttentionDecodeKernel<DynamicSharedFloats>));
        Style = Check.DefaultStyle(device);
    }

    public KernelStyle Style { get; set; }

    /// <summary>
    /// Most groups per head a decode step is split into; 0 (the default) picks about four groups per multiprocessor in
    /// all, at most 32 per head. Tests set it to force several chunks per group or many groups per head.
    /// </summary>
    public int DecodeSplitLimit { get; set; }

    /// <summary>Groups per head of the last decode launch (1 when the grouped decode kernel did not run).</summary>
    public int LastDecodeSplits { get; private set; }

    public void Dispose()
    {
        scratch?.Dispose();
        partials?.Dispose();
        counters?.Dispose();
    }

    public static Attention Create(QtipDevice device) => new(device);

    /// <summary>Longest context (pos0 + rows) that fits this device's shared memory.</summary>
    public int MaxPositions => Style == KernelStyle.Serial
        ? 1 << 20
        : (!device.Capabilities.DynamicSharedMemory ? StaticSharedFloats.Capacity : device.Accelerator.MaxSharedMemoryPerGroup / sizeof(float)) - PartialFloats - 64;

    /// <summary>
    /// q: rows × qStride (heads·headDim used, already rotated); caches: [positions × kvHeads·headDim] holding
    /// positions 0..pos0+rows−1; out: rows × heads·headDim. <paramref name="window"/> &gt; 0: the row at position i
    /// attends to positions i − window &lt; t ≤ i only (sliding window); 0: to every t ≤ i.
    /// </summary>
    public void Apply(ArrayView<float> q, int qStride, ArrayView<float> kCache, ArrayView<float> vCache, ArrayView<float> output,
        int rows, int pos0, int heads, int kvHeads, int headDim, AcceleratorStream? stream = null, int window = 0)
    {
        const string op = "Attention";
        Check.Positive(op, "rows", rows);
        Check.Positive(op, "heads", heads);
        Check.Positive(op, "kvHeads", kvHeads);
        Check.Positive(op, "headDim", headDim);
        if (heads % kvHeads != 0)
            throw new ArgumentException($"{op}: heads {heads} not divisible by kvHeads {kvHeads}", nameof(kvHeads));
        if (pos0 < 0)
            throw new ArgumentOutOfRangeException(nameof(pos0), pos0, $"{op}: negative position");
        if (window < 0)
            throw new ArgumentOutOfRangeException(nameof(window), window, $"{op}: negative sliding window");
        int qDim = heads * headDim, kvDim = kvHeads * headDim;
        if (qStride < qDim)
            throw new ArgumentException($"{op}: q stride {qStride} below heads×headDim = {qDim}", nameof(qStride));
        long positions = (long)pos0 + rows;
        if (positions > MaxPositions)
            throw new ArgumentException($"{op}: {positions} positions exceed the {MaxPositions} that fit in shared memory on {device.Name}", nameof(rows));
        Check.Length(op, "q", q, ((long)(rows - 1) * qStride) + qDim, $"rows {rows} × stride {qStride}");
        Check.Length(op, "kCache", kCache, positions * kvDim, $"positions {positions} × {kvDim}");
        Check.Length(op, "vCache", vCache, positions * kvDim, $"positions {positions} × {kvDim}");
        Check.Length(op, "output", output, (long)rows * qDim, $"rows {rows} × {qDim}");
        int g = Check.GroupSize(device);
        if (Style == KernelStyle.Grouped && g / device.WarpSize * headDim > PartialFloats)
            throw new ArgumentException($"{op}: headDim {headDim} × {g / device.WarpSize} warps exceeds the {PartialFloats} shared floats reserved for partial sums", nameof(headDim));
        long groups = (long)rows * heads;
        if (groups > int.MaxValue)
            throw new ArgumentException($"{op}: {rows}×{heads} groups exceed one launch", nameof(rows));
        if (rows == 1 && Style == KernelStyle.Grouped)
        {
            // One row sees positions first..pos0: hand the decode kernel the caches from `first` on.
            long first = window > 0 ? Math.Max(0, pos0 - window + 1) : 0;
            if (TryDecode(q, kCache.SubView(first * kvDim), vCache.SubView(first * kvDim), output, (int)(positions - first), heads, kvHeads, headDim, stream))
                return;
        }
        LastDecodeSplits = 1;
        var p = new AttentionParams(qStride, pos0, heads, kvHeads, headDim, 1f / MathF.Sqrt(headDim), (int)positions, window);
        if (Style == KernelStyle.Serial)
        {
            serial(stream ?? device.Accelerator.DefaultStream, (int)groups, q, kCache, vCache, output, Scratch(groups * positions), p);
            return;
        }
        var shared = !device.Capabilities.DynamicSharedMemory
            ? SharedMemoryConfig.Empty
            : SharedMemoryConfig.RequestDynamic<float>((int)positions + (g / device.WarpSize * headDim));
        kernel.Value(stream ?? device.Accelerator.DefaultStream, new KernelConfig((int)groups, g, shared), q, kCache, vCache, output, p);
    }

    /// <summary>
    /// The split decode kernel for one row at positions 0..positions−1, when the head fits its layout (headDim a multiple
    /// of 4, at most 16 per lane, 16-byte aligned views); false otherwise (the caller runs the general kernel).
    /// </summary>
    private bool TryDecode(ArrayView<float> q, ArrayView<float> kCache, ArrayView<float> vCache, ArrayView<float> output,
        int positions, int heads, int kvHeads, int headDim, AcceleratorStream? stream)
    {
        int warp = device.WarpSize;
        int group = Math.Max(warp, Check.GroupSize(device) / warp * warp);
        int quads = headDim / 4;
        if (headDim % 4 != 0 || quads > 4 * warp || quads > group || !Check.Aligned16(q) || !Check.Aligned16(kCache) || !Check.Aligned16(vCache))
            return false;
        int lanes = Math.Min(warp, (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)((quads + 3) / 4)));
        int perPass = group / lanes;
        int subsets = group / quads;
        int limit = DecodeSplitLimit > 0 ? DecodeSplitLimit : Math.Clamp(4 * device.Accelerator.NumMultiprocessors / heads, 1, 32);
        int passesNeeded = (positions + perPass - 1) / perPass;
        int chunk = perPass * ((passesNeeded + limit - 1) / limit);
        int splits = (positions + chunk - 1) / chunk;
        int stride = (headDim + 2 + 31) / 32 * 32; // per (head, split): Σ p·V, max, Σ p, on its own 128-byte lines
        int sharedFloats = chunk + (subsets * headDim) + 1;
        int capacity = !device.Capabilities.DynamicSharedMemory ? StaticSharedFloats.Capacity : device.Accelerator.MaxSharedMemoryPerGroup / sizeof(float);
        if (sharedFloats > capacity)
            return false;
        var (part, count) = DecodeScratch((long)heads * splits * stride, heads);
        var p = new DecodeParams(heads, kvHeads, headDim, 1f / MathF.Sqrt(headDim), positions, lanes, chunk, splits, subsets, stride);
        var shared = !device.Capabilities.DynamicSharedMemory ? SharedMemoryConfig.Empty : SharedMemoryConfig.RequestDynamic<float>(sharedFloats);
        decode.Value(stream ?? device.Accelerator.DefaultStream, new KernelConfig(heads * splits, group, shared), q, kCache, vCache, output, part, count, p);
        LastDecodeSplits = splits;
        return true;
    }

    /// <summary>The decode kernel's per-chunk results and per-head counters (zero between launches), grown when needed.</summary>
    private (ArrayView<float> Partials, ArrayView<int> Counters) DecodeScratch(long floats, int heads)
    {
        lock (scratchLock)
        {
            if (partials is null || partials.Length < floats)
            {
                partials?.Dispose();
                partials = device.Allocate1D<float>(floats);
            }
            if (counters is null || counters.Length < heads)
            {
                counters?.Dispose();
                counters = device.Allocate1D<int>(heads);
                counters.MemSetToZero();
            }
            return (partials.View, counters.View);
        }
    }

    /// <summary>Serial-style score scratch (rows·heads·positions floats), grown when a launch needs more.</summary>
    private ArrayView<float> Scratch(long count)
    {
        lock (scratchLock)
        {
            if (scratch is null || scratch.Length < count)
            {
                scratch?.Dispose();
                scratch = device.Allocate1D<float>(count);
            }
            return scratch.View.SubView(0, count);
        }
    }

    public readonly struct AttentionParams(int qStride, int pos0, int heads, int kvHeads, int headDim, float scale, int positions, int window)
    {
        public readonly int QStride = qStride;
        public readonly int Pos0 = pos0;
        public readonly int Heads = heads;
        public readonly int KvHeads = kvHeads;
        public readonly int HeadDim = headDim;
        public readonly float Scale = scale;
        public readonly int Positions = positions;

        /// <summary>Sliding window (0 = none): row r sees positions max(0, pos0 + r − window + 1) .. pos0 + r.</summary>
        public readonly int Window = window;

        /// <summary>The first position a row whose last visible position is <paramref name="last"/> attends to.</summary>
        public int First(int last) => Window > 0 ? XMath.Max(0, last - Window + 1) : 0;
    }

    public readonly struct DecodeParams(int heads, int kvHeads, int headDim, float scale, int positions, int lanes, int chunk, int splits, int subsets, int stride)
    {
        public readonly int Heads = heads;
        public readonly int KvHeads = kvHeads;
        public readonly int HeadDim = headDim;
        public readonly float Scale = scale;
        public readonly int Positions = positions;

        /// <summary>Lanes per position in the score pass (a power of two up to the warp width).</summary>
        public readonly int Lanes = lanes;

        /// <summary>Positions per group (a multiple of group size / lanes).</summary>
        public readonly int Chunk = chunk;

        /// <summary>Groups per head.</summary>
        public readonly int Splits = splits;

        /// <summary>Position subsets of the V pass: group size / (headDim/4).</summary>
        public readonly int Subsets = subsets;

        /// <summary>Floats per (head, split) in the partials.</summary>
        public readonly int Stride = stride;
    }

    /// <summary>
    /// Decode attention for one row, group = (head, split): positions [split·chunk, min((split+1)·chunk, positions)).
    /// </summary>
    internal static void AttentionDecodeKernel<TShared>(ArrayView<float> q, ArrayView<float> kCache, ArrayView<float> vCache, ArrayView<float> output,
        ArrayView<float> partials, ArrayView<int> counters, DecodeParams p)
        where TShared : struct, ISharedFloats
    {
        var shared = default(TShared).Get();
        int warp = Warp.WarpSize;
        int lane = Warp.LaneIdx;
        int tid = Group.IdxX;
        int g = Group.DimX;
        int h = Grid.IdxX / p.Splits;
        int split = Grid.IdxX - (h * p.Splits);
        int kvh = h / (p.Heads / p.KvHeads);
        int quads = p.HeadDim >> 2;
        long kvQuads = (long)p.KvHeads * quads;
        long headQuad = (long)kvh * quads;
        int t0 = split * p.Chunk;
        int count = XMath.Min(p.Chunk, p.Positions - t0);
        var scores = shared.SubView(0, p.Chunk);
        var partial = shared.SubView(p.Chunk, p.Subsets * p.HeadDim);
        var flag = shared.SubView(p.Chunk + (p.Subsets * p.HeadDim), 1);
        var q4 = q.AsAligned16().Cast<Float4>();
        var k4 = kCache.AsAligned16().Cast<Float4>();
        var v4 = vCache.AsAligned16().Cast<Float4>();

        // Scores: L lanes per position (consecutive lanes of one warp), lane sl holding quads sl, sl+L, sl+2L, sl+3L of
        // q·(1/√d); quads past the head are zero in q, so their K loads (clamped to the last quad) add nothing.
        int lanes = p.Lanes;
        int sl = tid & (lanes - 1);
        int pi = tid / lanes;
        int perPass = g / lanes;
        long qb = (long)h * quads;
        var qa = QuarterOfQ(q4, qb, sl, quads, p.Scale);
        var qbq = QuarterOfQ(q4, qb, sl + lanes, quads, p.Scale);
        var qc = QuarterOfQ(q4, qb, sl + (2 * lanes), quads, p.Scale);
        var qd = QuarterOfQ(q4, qb, sl + (3 * lanes), quads, p.Scale);
        int ka = XMath.Min(sl, quads - 1), kb = XMath.Min(sl + lanes, quads - 1);
        int kc = XMath.Min(sl + (2 * lanes), quads - 1), kd = XMath.Min(sl + (3 * lanes), quads - 1);
        for (int pass = 0; pass < count; pass += perPass)
        {
            int j = pass + pi;
            bool ok = j < count;
            long row = ((t0 + (ok ? j : count - 1)) * kvQuads) + headQuad;
            float dot = Dot(qa, k4[row + ka]) + Dot(qbq, k4[row + kb]) + Dot(qc, k4[row + kc]) + Dot(qd, k4[row + kd]);
            for (int d = lanes >> 1; d >= 1; d >>= 1)
                dot += Warp.ShuffleXor(dot, d);
            if (ok && sl == 0)
                scores[j] = dot;
        }
        Group.Barrier();

        // This chunk's max and Σ exp: every warp computes them for itself.
        float m = float.NegativeInfinity;
        for (int j = lane; j < count; j += warp)
            m = XMath.Max(m, scores[j]);
        for (int d = warp >> 1; d >= 1; d >>= 1)
            m = XMath.Max(m, Warp.ShuffleXor(m, d));
        float l = 0f;
        for (int j = lane; j < count; j += warp)
            l += XMath.Exp(scores[j] - m);
        for (int d = warp >> 1; d >= 1; d >>= 1)
            l += Warp.ShuffleXor(l, d);

        // Σ p·V: thread (subset js, quad qi) takes positions js, js + subsets, …, four rows of V per step; the subsets
        // meet in shared memory.
        int js = tid / quads;
        int qi = tid - (js * quads);
        if (js < p.Subsets)
        {
            var acc = default(Float4);
            int step = p.Subsets;
            for (int j0 = js; j0 < count; j0 += 4 * step)
            {
                int j1 = j0 + step, j2 = j0 + (2 * step), j3 = j0 + (3 * step);
                bool v1 = j1 < count, v2 = j2 < count, v3 = j3 < count;
                j1 = v1 ? j1 : j0;
                j2 = v2 ? j2 : j0;
                j3 = v3 ? j3 : j0;
                var a0 = v4[((t0 + j0) * kvQuads) + headQuad + qi];
                var a1 = v4[((t0 + j1) * kvQuads) + headQuad + qi];
                var a2 = v4[((t0 + j2) * kvQuads) + headQuad + qi];
                var a3 = v4[((t0 + j3) * kvQuads) + headQuad + qi];
                float p0 = XMath.Exp(scores[j0] - m);
                float p1 = v1 ? XMath.Exp(scores[j1] - m) : 0f;
                float p2 = v2 ? XMath.Exp(scores[j2] - m) : 0f;
                float p3 = v3 ? XMath.Exp(scores[j3] - m) : 0f;
                acc.X += (p0 * a0.X) + (p1 * a1.X) + (p2 * a2.X) + (p3 * a3.X);
                acc.Y += (p0 * a0.Y) + (p1 * a1.Y) + (p2 * a2.Y) + (p3 * a3.Y);
                acc.Z += (p0 * a0.Z) + (p1 * a1.Z) + (p2 * a2.Z) + (p3 * a3.Z);
                acc.W += (p0 * a0.W) + (p1 * a1.W) + (p2 * a2.W) + (p3 * a3.W);
            }
            int pb = (js * p.HeadDim) + (qi << 2);
            partial[pb] = acc.X;
            partial[pb + 1] = acc.Y;
            partial[pb + 2] = acc.Z;
            partial[pb + 3] = acc.W;
        }
        Group.Barrier();

        long ob = (long)h * p.HeadDim;
        if (p.Splits == 1)
        {
            float inv = 1f / l;
            for (int d = tid; d < p.HeadDim; d += g)
                output[ob + d] = SumSubsets(partial, p, d) * inv;
            return;
        }

        // Several groups per head: publish this chunk, and let the head's last group merge them.
        long mine = (((long)h * p.Splits) + split) * p.Stride;
        for (int d = tid; d < p.HeadDim; d += g)
            partials[mine + d] = SumSubsets(partial, p, d);
        if (tid == 0)
        {
            partials[mine + p.HeadDim] = m;
            partials[mine + p.HeadDim + 1] = l;
        }
        MemoryFence.DeviceLevel();
        Group.Barrier();
        if (tid == 0)
            flag[0] = Atomic.Add(ref counters[h], 1) == p.Splits - 1 ? 1f : 0f;
        Group.Barrier();
        if (flag[0] == 0f)
            return;
        MemoryFence.DeviceLevel();
        long first = (long)h * p.Splits * p.Stride;
        float mAll = float.NegativeInfinity;
        for (int s = lane; s < p.Splits; s += warp)
            mAll = XMath.Max(mAll, partials[first + (s * p.Stride) + p.HeadDim]);
        for (int d = warp >> 1; d >= 1; d >>= 1)
            mAll = XMath.Max(mAll, Warp.ShuffleXor(mAll, d));
        for (int d = tid; d < p.HeadDim; d += g)
        {
            float num = 0f, den = 0f;
            for (int s = 0; s < p.Splits; s++)
            {
                long b = first + (s * p.Stride);
                float e = XMath.Exp(partials[b + p.HeadDim] - mAll);
                num += e * partials[b + d];
                den += e * partials[b + p.HeadDim + 1];
            }
            output[ob + d] = num / den;
        }
        if (tid == 0)
            counters[h] = 0;
    }

    private static Float4 QuarterOfQ(ArrayView<Float4> q4, long headBase, int quad, int quads, float scale)
    {
        if (quad >= quads)
            return default;
        var v = q4[headBase + quad];
        return new Float4 { X = v.X * scale, Y = v.Y * scale, Z = v.Z * scale, W = v.W * scale };
    }

    private static float Dot(Float4 a, Float4 b) => (a.X * b.X) + (a.Y * b.Y) + (a.Z * b.Z) + (a.W * b.W);

    private static float SumSubsets(ArrayView<float> partial, DecodeParams p, int d)
    {
        float total = 0f;
        for (int s = 0; s < p.Subsets; s++)
            total += partial[(s * p.HeadDim) + d];
        return total;
    }

    internal static void AttentionKernel<TShared>(ArrayView<float> q, ArrayView<float> kCache, ArrayView<float> vCache, ArrayView<float> output, AttentionParams p)
        where TShared : struct, ISharedFloats
    {
        var shared = default(TShared).Get();
        int warp = Warp.WarpSize;
        int warps = Group.DimX / warp;
        var scores = shared.SubView(0, p.Positions);
        var partial = shared.SubView(p.Positions, warps * p.HeadDim);
        int r = Grid.IdxX / p.Heads;
        int h = Grid.IdxX - (r * p.Heads);
        int kvh = h / (p.Heads / p.KvHeads);
        int kvDim = p.KvHeads * p.HeadDim;
        int last = p.Pos0 + r; // attends to positions first..last
        int first = p.First(last);
        long qb = ((long)r * p.QStride) + (h * p.HeadDim);
        int tid = Group.IdxX;
        int g = Group.DimX;
        int lane = Warp.LaneIdx;
        int w = Warp.WarpIdx;

        // Scores: warp w takes positions first + w, first + w + warps, …; its lanes split the head dimension, four
        // dimensions per lane per step (d = d0 + lane + j·warp), so each lane has four independent loads in flight.
        for (int t0 = first; t0 <= last; t0 += warps)
        {
            int t = t0 + w;
            float dot = 0f;
            if (t <= last)
            {
                long kb = ((long)t * kvDim) + (kvh * p.HeadDim);
                for (int d0 = 0; d0 < p.HeadDim; d0 += 4 * warp)
                {
                    int d = d0 + lane;
                    float k0 = d < p.HeadDim ? kCache[kb + d] : 0f;
                    float k1 = d + warp < p.HeadDim ? kCache[kb + d + warp] : 0f;
                    float k2 = d + (2 * warp) < p.HeadDim ? kCache[kb + d + (2 * warp)] : 0f;
                    float k3 = d + (3 * warp) < p.HeadDim ? kCache[kb + d + (3 * warp)] : 0f;
                    float q0 = d < p.HeadDim ? q[qb + d] : 0f;
                    float q1 = d + warp < p.HeadDim ? q[qb + d + warp] : 0f;
                    float q2 = d + (2 * warp) < p.HeadDim ? q[qb + d + (2 * warp)] : 0f;
                    float q3 = d + (3 * warp) < p.HeadDim ? q[qb + d + (3 * warp)] : 0f;
                    dot += (q0 * k0) + (q1 * k1) + (q2 * k2) + (q3 * k3);
                }
            }
            dot = WarpExtensions.Reduce<float, AddFloat>(dot);
            if (lane == 0 && t <= last)
                scores[t] = dot * p.Scale;
        }
        Group.Barrier();

        float m = float.NegativeInfinity;
        for (int t = first + tid; t <= last; t += g)
            m = XMath.Max(m, scores[t]);
        m = GroupExtensions.AllReduce<float, MaxFloat>(m);
        float sum = 0f;
        for (int t = first + tid; t <= last; t += g)
        {
            float e = XMath.Exp(scores[t] - m);
            scores[t] = e;
            sum += e;
        }
        sum = GroupExtensions.AllReduce<float, AddFloat>(sum);
        Group.Barrier();
        float inv = 1f / sum;

        // Weighted sum of V: warp w takes positions w, w + warps, …; its lanes hold four output dimensions each
        // (coalesced rows of V, four independent loads per step); the warps' partial sums meet in shared memory.
        for (int d0 = 0; d0 < p.HeadDim; d0 += 4 * warp)
        {
            int d = d0 + lane;
            float a0 = 0f, a1 = 0f, a2 = 0f, a3 = 0f;
            for (int t = first + w; t <= last; t += warps)
            {
                float pt = scores[t];
                long vb = ((long)t * kvDim) + (kvh * p.HeadDim);
                if (d < p.HeadDim)
                    a0 += pt * vCache[vb + d];
                if (d + warp < p.HeadDim)
                    a1 += pt * vCache[vb + d + warp];
                if (d + (2 * warp) < p.HeadDim)
                    a2 += pt * vCache[vb + d + (2 * warp)];
                if (d + (3 * warp) < p.HeadDim)
                    a3 += pt * vCache[vb + d + (3 * warp)];
            }
            int pb = w * p.HeadDim;
            if (d < p.HeadDim)
                partial[pb + d] = a0;
            if (d + warp < p.HeadDim)
                partial[pb + d + warp] = a1;
            if (d + (2 * warp) < p.HeadDim)
                partial[pb + d + (2 * warp)] = a2;
            if (d + (3 * warp) < p.HeadDim)
                partial[pb + d + (3 * warp)] = a3;
        }
        Group.Barrier();
        long ob = ((long)r * p.Heads * p.HeadDim) + (h * p.HeadDim);
        for (int d = tid; d < p.HeadDim; d += g)
        {
            float total = 0f;
            for (int ww = 0; ww < warps; ww++)
                total += partial[(ww * p.HeadDim) + d];
            output[ob + d] = total * inv;
        }
    }

    /// <summary>Serial style: thread i = (row r, head h) does scores, softmax and the weighted sum of V on its own.</summary>
    internal static void AttentionSerialKernel(Index1D i, ArrayView<float> q, ArrayView<float> kCache, ArrayView<float> vCache, ArrayView<float> output,
        ArrayView<float> scratch, AttentionParams p)
    {
        int r = i / p.Heads;
        int h = i - (r * p.Heads);
        int kvh = h / (p.Heads / p.KvHeads);
        int kvDim = p.KvHeads * p.HeadDim;
        int last = p.Pos0 + r;
        int first = p.First(last);
        long qb = ((long)r * p.QStride) + (h * p.HeadDim);
        long sb = (long)i.X * p.Positions;
        float m = float.NegativeInfinity;
        for (int t = first; t <= last; t++)
        {
            long kb = ((long)t * kvDim) + (kvh * p.HeadDim);
            float dot = 0f;
            for (int d = 0; d < p.HeadDim; d++)
                dot += q[qb + d] * kCache[kb + d];
            dot *= p.Scale;
            scratch[sb + t] = dot;
            m = XMath.Max(m, dot);
        }
        float sum = 0f;
        for (int t = first; t <= last; t++)
        {
            float e = XMath.Exp(scratch[sb + t] - m);
            scratch[sb + t] = e;
            sum += e;
        }
        float inv = 1f / sum;
        long ob = ((long)r * p.Heads * p.HeadDim) + (h * p.HeadDim);
        for (int d = 0; d < p.HeadDim; d++)
            output[ob + d] = 0f;
        for (int t = first; t <= last; t++)
        {
            float pt = scratch[sb + t] * inv;
            long vb = ((long)t * kvDim) + (kvh * p.HeadDim);
            for (int d = 0; d < p.HeadDim; d++)
                output[ob + d] += pt * vCache[vb + d];
        }
    }
}
