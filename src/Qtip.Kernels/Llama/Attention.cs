using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Algorithms.ScanReduceOperations;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;

namespace Qtip.Kernels.Llama;

/// <summary>
/// Causal grouped-query attention over a KV cache, for one decode row or a whole prefill window:
/// out[r, h] = Σ_{t ≤ pos0+r} softmax_t(q[r,h]·K[t,g] / √d) · V[t,g] with g = h / (heads / kvHeads).
///
/// Design: one group per (row, head). The scores of the row live in dynamic shared memory (so positions are bounded
/// by the group's shared memory: 48 KB on CUDA ≈ 12k positions); each warp takes every W-th position and its lanes
/// split the head dimension, reducing with a warp all-reduce. Max and sum are group all-reduces; the weighted sum of
/// V gives each thread one output dimension and a slice of the positions, and the slices meet in shared memory.
/// All arithmetic is fp32, the softmax subtracts the row maximum, as Hugging Face's eager attention does. Serial
/// style (CPU simulator): one thread per (row, head) does all three passes, with its scores in a global scratch.
/// </summary>
public sealed class Attention : IKernelSet<Attention>, IDisposable
{
    /// <summary>Shared floats reserved besides the scores (the partial sums of the V pass).</summary>
    private const int PartialFloats = 1024;

    private readonly QtipDevice device;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionParams> kernel;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionParams> serial;
    private readonly Lock scratchLock = new();
    private MemoryBuffer1D<float, Stride1D.Dense>? scratch;

    private Attention(QtipDevice device)
    {
        this.device = device;
        kernel = device.Accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionParams>(AttentionKernel);
        serial = device.Accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionParams>(AttentionSerialKernel);
        Style = Check.DefaultStyle(device);
    }

    public KernelStyle Style { get; set; }

    public void Dispose() => scratch?.Dispose();

    public static Attention Create(QtipDevice device) => new(device);

    /// <summary>Longest context (pos0 + rows) that fits this device's shared memory.</summary>
    public int MaxPositions => Style == KernelStyle.Serial
        ? 1 << 20
        : (device.Accelerator.MaxSharedMemoryPerGroup / sizeof(float)) - PartialFloats - 64;

    /// <summary>
    /// q: rows × qStride (heads·headDim used, already rotated); caches: [positions × kvHeads·headDim] holding
    /// positions 0..pos0+rows−1; out: rows × heads·headDim.
    /// </summary>
    public void Apply(ArrayView<float> q, int qStride, ArrayView<float> kCache, ArrayView<float> vCache, ArrayView<float> output,
        int rows, int pos0, int heads, int kvHeads, int headDim, AcceleratorStream? stream = null)
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
        long groups = (long)rows * heads;
        if (groups > int.MaxValue)
            throw new ArgumentException($"{op}: {rows}×{heads} groups exceed one launch", nameof(rows));
        var p = new AttentionParams(qStride, pos0, heads, kvHeads, headDim, 1f / MathF.Sqrt(headDim), (int)positions);
        if (Style == KernelStyle.Serial)
        {
            serial(stream ?? device.Accelerator.DefaultStream, (int)groups, q, kCache, vCache, output, Scratch(groups * positions), p);
            return;
        }
        var shared = SharedMemoryConfig.RequestDynamic<float>((int)positions + g);
        kernel(stream ?? device.Accelerator.DefaultStream, new KernelConfig((int)groups, g, shared), q, kCache, vCache, output, p);
    }

    /// <summary>Serial-style score scratch (rows·heads·positions floats), grown when a launch needs more.</summary>
    private ArrayView<float> Scratch(long count)
    {
        lock (scratchLock)
        {
            if (scratch is null || scratch.Length < count)
            {
                scratch?.Dispose();
                scratch = device.Accelerator.Allocate1D<float>(count);
            }
            return scratch.View.SubView(0, count);
        }
    }

    public readonly struct AttentionParams(int qStride, int pos0, int heads, int kvHeads, int headDim, float scale, int positions)
    {
        public readonly int QStride = qStride;
        public readonly int Pos0 = pos0;
        public readonly int Heads = heads;
        public readonly int KvHeads = kvHeads;
        public readonly int HeadDim = headDim;
        public readonly float Scale = scale;
        public readonly int Positions = positions;
    }

    internal static void AttentionKernel(ArrayView<float> q, ArrayView<float> kCache, ArrayView<float> vCache, ArrayView<float> output, AttentionParams p)
    {
        var shared = SharedMemory.GetDynamic<float>();
        var scores = shared.SubView(0, p.Positions);
        var partial = shared.SubView(p.Positions, Group.DimX);
        int r = Grid.IdxX / p.Heads;
        int h = Grid.IdxX - (r * p.Heads);
        int kvh = h / (p.Heads / p.KvHeads);
        int kvDim = p.KvHeads * p.HeadDim;
        int last = p.Pos0 + r; // attends to positions 0..last
        long qb = ((long)r * p.QStride) + (h * p.HeadDim);
        int tid = Group.IdxX;
        int g = Group.DimX;
        int warp = Warp.WarpSize;
        int warps = g / warp;
        int lane = Warp.LaneIdx;

        // Scores: warp w takes positions w, w + warps, …; lanes split the head dimension.
        for (int t0 = 0; t0 <= last; t0 += warps)
        {
            int t = t0 + Warp.WarpIdx;
            float dot = 0f;
            if (t <= last)
            {
                long kb = ((long)t * kvDim) + (kvh * p.HeadDim);
                for (int d = lane; d < p.HeadDim; d += warp)
                    dot += q[qb + d] * kCache[kb + d];
            }
            dot = WarpExtensions.Reduce<float, AddFloat>(dot);
            if (lane == 0 && t <= last)
                scores[t] = dot * p.Scale;
        }
        Group.Barrier();

        float m = float.NegativeInfinity;
        for (int t = tid; t <= last; t += g)
            m = XMath.Max(m, scores[t]);
        m = GroupExtensions.AllReduce<float, MaxFloat>(m);
        float sum = 0f;
        for (int t = tid; t <= last; t += g)
        {
            float e = XMath.Exp(scores[t] - m);
            scores[t] = e;
            sum += e;
        }
        sum = GroupExtensions.AllReduce<float, AddFloat>(sum);
        Group.Barrier();
        float inv = 1f / sum;

        long ob = ((long)r * p.Heads * p.HeadDim) + (h * p.HeadDim);
        if (g >= p.HeadDim)
        {
            int slices = g / p.HeadDim;
            int d = tid % p.HeadDim;
            int slice = tid / p.HeadDim;
            float acc = 0f;
            if (slice < slices)
            {
                long vb = (kvh * p.HeadDim) + d;
                for (int t = slice; t <= last; t += slices)
                    acc += scores[t] * vCache[((long)t * kvDim) + vb];
            }
            partial[tid] = acc;
            Group.Barrier();
            if (tid < p.HeadDim)
            {
                float total = 0f;
                for (int s = 0; s < slices; s++)
                    total += partial[tid + (s * p.HeadDim)];
                output[ob + tid] = total * inv;
            }
        }
        else
        {
            for (int d = tid; d < p.HeadDim; d += g)
            {
                long vb = (kvh * p.HeadDim) + d;
                float acc = 0f;
                for (int t = 0; t <= last; t++)
                    acc += scores[t] * vCache[((long)t * kvDim) + vb];
                output[ob + d] = acc * inv;
            }
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
        long qb = ((long)r * p.QStride) + (h * p.HeadDim);
        long sb = (long)i.X * p.Positions;
        float m = float.NegativeInfinity;
        for (int t = 0; t <= last; t++)
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
        for (int t = 0; t <= last; t++)
        {
            float e = XMath.Exp(scratch[sb + t] - m);
            scratch[sb + t] = e;
            sum += e;
        }
        float inv = 1f / sum;
        long ob = ((long)r * p.Heads * p.HeadDim) + (h * p.HeadDim);
        for (int d = 0; d < p.HeadDim; d++)
            output[ob + d] = 0f;
        for (int t = 0; t <= last; t++)
        {
            float pt = scratch[sb + t] * inv;
            long vb = ((long)t * kvDim) + (kvh * p.HeadDim);
            for (int d = 0; d < p.HeadDim; d++)
                output[ob + d] += pt * vCache[vb + d];
        }
    }
}
