using System.Numerics;
using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;
using Half = ILGPU.Half;

namespace Qtip.Kernels.Llama;

/// <summary>
/// Matrix–vector products for batch-1 decode: y (m) = W (m×n) · x (n), fp16 or fp32 weights, fp32 accumulation, and
/// the decode step's neighbours fused into them:
/// <list type="bullet">
/// <item><see cref="Apply{T}(ArrayView{T}, int, ArrayView{T}, int, ArrayView{T}, int, ArrayView{float}, ArrayView{float}, int, AcceleratorStream?)"/>:
/// up to three matrices sharing x in one launch, outputs stacked (q | k | v).</item>
/// <item><see cref="AddTo{T}"/>: y += W · x, the residual add of o_proj and down_proj.</item>
/// <item><see cref="SwiGlu{T}"/>: y = silu(W_gate · x) ⊙ (W_up · x).</item>
/// <item>An <see cref="InputNorm"/> (<see cref="ApplyNormed{T}"/>, <see cref="SwiGluNormed{T}"/>, <see cref="QkvRope{T}"/>):
/// x is the residual stream and the product reads rmsnorm(x) ⊙ g, so the RMSNorm before q/k/v, gate/up and the output
/// head needs no launch of its own. Every row computes Σx² itself from the x it reads anyway (each row's lanes read
/// all of x), so no group barrier and no extra pass: y_i = (Σ_j W_ij · x_j · g_j) / √(mean(x²) + ε).</item>
/// <item><see cref="QkvRope{T}"/>: q|k|v with the input norm, RoPE and the KV-cache write: each task computes a
/// rotation pair of rows (j, j + d/2 of one head), rotates it and stores q, or writes k, v straight to the cache.</item>
/// </list>
///
/// Design: decode is bound by reading W once, so the kernel is built for bandwidth. S lanes of a warp own one task (S =
/// the warp width, or fewer for short rows); each lane reads 8 consecutive weights per chunk as one 16-byte load (two
/// for fp32) and the matching x as two 16-byte loads (x is small and stays in L1), then the S partial sums meet through
/// a shuffle-down tree. Each loop step issues several independent 16-byte weight loads per lane (four chunks of one row,
/// or four chunks of each of two rows) before using any: with one load in flight per lane (the first version: 2.2 TB/s on
/// the 4096×11008 down_proj, whose 512 groups leave half the H100's warp slots empty) the kernel is latency-bound, not
/// bandwidth-bound. A step's chunks past the row end re-read a valid chunk and are masked with a select, so the step
/// stays one basic block that the PTX compiler can schedule. Rows whose length is not a multiple of 8 (or views not on
/// 16-byte boundaries) take a scalar path. Groups hold up to 256 threads; the warp width is read from the device.
///
/// Serial style (CPU simulator and OpenCL): <see cref="MatVecSerialKernel{T, TW, TIn}"/>, one thread per task striding
/// over the tasks, the same task code with <see cref="SingleLane"/> in place of the shuffle tree, so it uses no warp
/// function (ILGPU 1.5.3's OpenCL backend cannot emit shuffles). Kernels load on first use per (weight type, input,
/// style), except the serial fp32 pair, loaded up front; fp16 variants are refused with
/// <see cref="NotSupportedException"/> on a device without fp16.
/// </summary>
public sealed class MatVec : IKernelSet<MatVec>, IDisposable
{
    private readonly QtipDevice device;
    /// <summary>Launchers by <see cref="Variant"/>: [grouped plain, grouped normed, serial plain, serial normed].</summary>
    private readonly Lazy<MatVecLauncher<Half>>[] f16;
    private readonly Lazy<MatVecLauncher<float>>[] f32;
    private readonly MemoryBuffer1D<float, Stride1D.Dense> none;
    private readonly long warpSlots; // resident warps the device can hold at once (multiprocessors × threads per one ÷ warp)

    private delegate void MatVecLauncher<T>(AcceleratorStream stream, KernelConfig config, ArrayView<T> w0, ArrayView<T> w1, ArrayView<T> w2,
        ArrayView<float> x, ArrayView<float> g, ArrayView<float> y, ArrayView<float> kCache, ArrayView<float> vCache,
        ArrayView<float> cos, ArrayView<float> sin, MatVecParams p) where T : unmanaged;

    private MatVec(QtipDevice device)
    {
        this.device = device;
        Style = Check.DefaultStyle(device);
        var acc = device.Accelerator;
        warpSlots = (long)acc.NumMultiprocessors * acc.MaxNumThreadsPerMultiprocessor / Math.Max(1, device.WarpSize);
        f16 =
        [
            new(() => Load<Half, F16, PlainInput>(serial: false)), new(() => Load<Half, F16, NormedInput>(serial: false)),
            new(() => Load<Half, F16, PlainInput>(serial: true)), new(() => Load<Half, F16, NormedInput>(serial: true)),
        ];
        f32 =
        [
            new(() => Load<float, F32, PlainInput>(serial: false)), new(() => Load<float, F32, NormedInput>(serial: false)),
            new(() => Load<float, F32, PlainInput>(serial: true)), new(() => Load<float, F32, NormedInput>(serial: true)),
        ];
        _ = f32[Variant(KernelStyle.Serial, normed: false)].Value;
        _ = f32[Variant(KernelStyle.Serial, normed: true)].Value;
        none = device.Accelerator.Allocate1D<float>(4);
    }

    public static MatVec Create(QtipDevice device) => new(device);

    private static int Variant(KernelStyle style, bool normed) => (style == KernelStyle.Serial ? 2 : 0) + (normed ? 1 : 0);

    private MatVecLauncher<T> Load<T, TW, TIn>(bool serial)
        where T : unmanaged
        where TW : struct, IWeightElement<T>
        where TIn : struct, IMatVecInput
    {
        var k = device.LoadKernel<ArrayView<T>, ArrayView<T>, ArrayView<T>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, MatVecParams>(
            serial ? MatVecSerialKernel<T, TW, TIn> : MatVecKernel<T, TW, TIn>);
        return (s, c, a, b, d, x, g, y, kc, vc, co, si, p) => k(s, c, a, b, d, x, g, y, kc, vc, co, si, p);
    }

    /// <summary>Grouped: S lanes per row with a shuffle reduction. Serial (CPU simulator, OpenCL): one thread per row, no shuffle.</summary>
    public KernelStyle Style { get; set; }

    public void Dispose() => none.Dispose();

    /// <summary>y (m0+m1+m2) = [W0;W1;W2] · x (n). Pass m1 = m2 = 0 for a single matrix. fp16 weights.</summary>
    public void Apply(ArrayView<Half> w0, int m0, ArrayView<Half> w1, int m1, ArrayView<Half> w2, int m2,
        ArrayView<float> x, ArrayView<float> y, int n, AcceleratorStream? stream = null) =>
        ApplyCore(w0, m0, w1, m1, w2, m2, x, y, n, stream);

    /// <summary>y (m0+m1+m2) = [W0;W1;W2] · x (n), fp32 weights.</summary>
    public void Apply(ArrayView<float> w0, int m0, ArrayView<float> w1, int m1, ArrayView<float> w2, int m2,
        ArrayView<float> x, ArrayView<float> y, int n, AcceleratorStream? stream = null) =>
        ApplyCore(w0, m0, w1, m1, w2, m2, x, y, n, stream);

    /// <summary>y (m) = W (m×n) · x (n).</summary>
    public void Apply(ArrayView<Half> w, int m, ArrayView<float> x, ArrayView<float> y, int n, AcceleratorStream? stream = null) =>
        ApplyCore(w, m, w, 0, w, 0, x, y, n, stream);

    /// <summary>y (m) = W (m×n) · x (n).</summary>
    public void Apply(ArrayView<float> w, int m, ArrayView<float> x, ArrayView<float> y, int n, AcceleratorStream? stream = null) =>
        ApplyCore(w, m, w, 0, w, 0, x, y, n, stream);

    /// <summary>y (m) = W (m×n) · (rmsnorm(x) ⊙ norm.Weight): the final norm fused into the output head.</summary>
    public void ApplyNormed(ArrayView<Half> w, int m, ArrayView<float> x, InputNorm norm, ArrayView<float> y, int n, AcceleratorStream? stream = null) =>
        ApplyNormedCore(w, m, x, norm, y, n, stream);

    /// <summary>y (m) = W (m×n) · (rmsnorm(x) ⊙ norm.Weight): the final norm fused into the output head.</summary>
    public void ApplyNormed(ArrayView<float> w, int m, ArrayView<float> x, InputNorm norm, ArrayView<float> y, int n, AcceleratorStream? stream = null) =>
        ApplyNormedCore(w, m, x, norm, y, n, stream);

    /// <summary>y (m) += W (m×n) · x (n): a linear whose output is added into the residual stream y (o_proj, down_proj).</summary>
    public void AddTo(ArrayView<Half> w, int m, ArrayView<float> x, ArrayView<float> y, int n, AcceleratorStream? stream = null) =>
        AddToCore(w, m, x, y, n, stream);

    /// <summary>y (m) += W (m×n) · x (n): a linear whose output is added into the residual stream y (o_proj, down_proj).</summary>
    public void AddTo(ArrayView<float> w, int m, ArrayView<float> x, ArrayView<float> y, int n, AcceleratorStream? stream = null) =>
        AddToCore(w, m, x, y, n, stream);

    /// <summary>y (m) = silu(W_gate (m×n) · x) ⊙ (W_up (m×n) · x).</summary>
    public void SwiGlu(ArrayView<Half> gate, ArrayView<Half> up, int m, ArrayView<float> x, ArrayView<float> y, int n, AcceleratorStream? stream = null) =>
        SwiGluCore(gate, up, m, x, y, n, stream);

    /// <summary>y (m) = silu(W_gate (m×n) · x) ⊙ (W_up (m×n) · x).</summary>
    public void SwiGlu(ArrayView<float> gate, ArrayView<float> up, int m, ArrayView<float> x, ArrayView<float> y, int n, AcceleratorStream? stream = null) =>
        SwiGluCore(gate, up, m, x, y, n, stream);

    /// <summary>y (m) = silu(W_gate · x̂) ⊙ (W_up · x̂) with x̂ = rmsnorm(x) ⊙ norm.Weight: the post-attention norm fused in.</summary>
    public void SwiGluNormed(ArrayView<Half> gate, ArrayView<Half> up, int m, ArrayView<float> x, InputNorm norm, ArrayView<float> y, int n, AcceleratorStream? stream = null) =>
        SwiGluNormedCore(gate, up, m, x, norm, y, n, stream);

    /// <summary>y (m) = silu(W_gate · x̂) ⊙ (W_up · x̂) with x̂ = rmsnorm(x) ⊙ norm.Weight: the post-attention norm fused in.</summary>
    public void SwiGluNormed(ArrayView<float> gate, ArrayView<float> up, int m, ArrayView<float> x, InputNorm norm, ArrayView<float> y, int n, AcceleratorStream? stream = null) =>
        SwiGluNormedCore(gate, up, m, x, norm, y, n, stream);

    /// <summary>
    /// The decode attention input in one launch: x̂ = rmsnorm(x) ⊙ norm.Weight; q = RoPE(Wq · x̂) into <paramref name="q"/>
    /// (heads·headDim); RoPE(Wk · x̂) and Wv · x̂ into row <paramref name="position"/> of the caches (positions ×
    /// kvHeads·headDim). cos, sin: the <see cref="RopeTable"/> (positions × headDim/2). Wq: (heads·headDim)×n, Wk, Wv:
    /// (kvHeads·headDim)×n.
    /// </summary>
    public void QkvRope(ArrayView<Half> wq, ArrayView<Half> wk, ArrayView<Half> wv, ArrayView<float> x, InputNorm norm, ArrayView<float> q,
        ArrayView<float> kCache, ArrayView<float> vCache, ArrayView<float> cos, ArrayView<float> sin, int position,
        int heads, int kvHeads, int headDim, int n, AcceleratorStream? stream = null) =>
        QkvRopeCore(wq, wk, wv, x, norm, q, kCache, vCache, cos, sin, position, heads, kvHeads, headDim, n, stream);

    /// <summary>
    /// The decode attention input in one launch: x̂ = rmsnorm(x) ⊙ norm.Weight; q = RoPE(Wq · x̂) into <paramref name="q"/>
    /// (heads·headDim); RoPE(Wk · x̂) and Wv · x̂ into row <paramref name="position"/> of the caches (positions ×
    /// kvHeads·headDim). cos, sin: the <see cref="RopeTable"/> (positions × headDim/2). Wq: (heads·headDim)×n, Wk, Wv:
    /// (kvHeads·headDim)×n.
    /// </summary>
    public void QkvRope(ArrayView<float> wq, ArrayView<float> wk, ArrayView<float> wv, ArrayView<float> x, InputNorm norm, ArrayView<float> q,
        ArrayView<float> kCache, ArrayView<float> vCache, ArrayView<float> cos, ArrayView<float> sin, int position,
        int heads, int kvHeads, int headDim, int n, AcceleratorStream? stream = null) =>
        QkvRopeCore(wq, wk, wv, x, norm, q, kCache, vCache, cos, sin, position, heads, kvHeads, headDim, n, stream);

    private void ApplyCore<T>(ArrayView<T> w0, int m0, ArrayView<T> w1, int m1, ArrayView<T> w2, int m2,
        ArrayView<float> x, ArrayView<float> y, int n, AcceleratorStream? stream) where T : unmanaged
    {
        CheckWeights(w0, m0, n, "w0");
        CheckWeights(w1, m1, n, "w1");
        CheckWeights(w2, m2, n, "w2");
        Check.Length(Op, "y", y, (long)m0 + m1 + m2, $"m0+m1+m2 = {m0}+{m1}+{m2}");
        var p = Plan(MatVecEpilogue.Store, n, m0, m1, m2, (long)m0 + m1 + m2, x, null, 0, 0, 0, [Aligned(w0), Aligned(w1), Aligned(w2)]);
        Launch(p, w0, m1 > 0 ? w1 : w0, m2 > 0 ? w2 : w0, x, null, y, stream);
    }

    private void ApplyNormedCore<T>(ArrayView<T> w, int m, ArrayView<float> x, InputNorm norm, ArrayView<float> y, int n, AcceleratorStream? stream) where T : unmanaged
    {
        CheckWeights(w, m, n, "w");
        Check.Length(Op, "y", y, m, $"m = {m}");
        bool pair = PairRows(m);
        var p = Plan(pair ? MatVecEpilogue.StorePair : MatVecEpilogue.Store, n, m, 0, 0, pair ? m / 2 : m, x, norm, 0, 0, 0, [Aligned(w)]);
        Launch(p, w, w, w, x, norm, y, stream);
    }

    private void AddToCore<T>(ArrayView<T> w, int m, ArrayView<float> x, ArrayView<float> y, int n, AcceleratorStream? stream) where T : unmanaged
    {
        CheckWeights(w, m, n, "w");
        Check.Length(Op, "y", y, m, $"m = {m}");
        bool pair = PairRows(m);
        var p = Plan(pair ? MatVecEpilogue.AddPair : MatVecEpilogue.Add, n, m, 0, 0, pair ? m / 2 : m, x, null, 0, 0, 0, [Aligned(w)]);
        Launch(p, w, w, w, x, null, y, stream);
    }

    private void SwiGluCore<T>(ArrayView<T> gate, ArrayView<T> up, int m, ArrayView<float> x, ArrayView<float> y, int n, AcceleratorStream? stream) where T : unmanaged
    {
        CheckWeights(gate, m, n, "gate");
        CheckWeights(up, m, n, "up");
        Check.Length(Op, "y", y, m, $"m = {m}");
        var p = Plan(MatVecEpilogue.SwiGlu, n, m, m, 0, m, x, null, 0, 0, 0, [Aligned(gate), Aligned(up)]);
        Launch(p, gate, up, gate, x, null, y, stream);
    }

    private void SwiGluNormedCore<T>(ArrayView<T> gate, ArrayView<T> up, int m, ArrayView<float> x, InputNorm norm, ArrayView<float> y, int n, AcceleratorStream? stream)
        where T : unmanaged
    {
        CheckWeights(gate, m, n, "gate");
        CheckWeights(up, m, n, "up");
        Check.Length(Op, "y", y, m, $"m = {m}");
        var p = Plan(MatVecEpilogue.SwiGlu, n, m, m, 0, m, x, norm, 0, 0, 0, [Aligned(gate), Aligned(up)]);
        Launch(p, gate, up, gate, x, norm, y, stream);
    }

    private void QkvRopeCore<T>(ArrayView<T> wq, ArrayView<T> wk, ArrayView<T> wv, ArrayView<float> x, InputNorm norm, ArrayView<float> q,
        ArrayView<float> kCache, ArrayView<float> vCache, ArrayView<float> cos, ArrayView<float> sin, int position,
        int heads, int kvHeads, int headDim, int n, AcceleratorStream? stream) where T : unmanaged
    {
        Check.Positive(Op, "heads", heads);
        Check.Positive(Op, "kvHeads", kvHeads);
        if (headDim <= 0 || headDim % 2 != 0)
            throw new ArgumentException($"{Op}: headDim {headDim} must be positive and even", nameof(headDim));
        if (position < 0)
            throw new ArgumentOutOfRangeException(nameof(position), position, $"{Op}: negative position");
        int qDim = heads * headDim, kvDim = kvHeads * headDim, half = headDim / 2;
        CheckWeights(wq, qDim, n, "wq");
        CheckWeights(wk, kvDim, n, "wk");
        CheckWeights(wv, kvDim, n, "wv");
        Check.Length(Op, "q", q, qDim, $"heads×headDim = {heads}×{headDim}");
        long end = position + 1L;
        Check.Length(Op, "kCache", kCache, end * kvDim, $"positions {end} × {kvDim}");
        Check.Length(Op, "vCache", vCache, end * kvDim, $"positions {end} × {kvDim}");
        Check.Length(Op, "cos", cos, end * half, $"positions {end} × {half}");
        Check.Length(Op, "sin", sin, end * half, $"positions {end} × {half}");
        var p = Plan(MatVecEpilogue.Rope, n, qDim, kvDim, kvDim, (qDim / 2) + kvDim, x, norm, eps: 0, headDim, position, [Aligned(wq), Aligned(wk), Aligned(wv)]);
        Launch(p, wq, wk, wv, x, norm, q, stream, kCache, vCache, cos, sin);
    }

    private const string Op = "MatVec";

    /// <summary>
    /// Whether a single-matrix product runs two consecutive rows per task (the x and norm-weight loads of a step then serve
    /// both rows): m even, and on a GPU only when the pairs still outnumber the device's warp slots. Measured on the H100
    /// (Llama-2-7B shapes): the 32000-row output head 111.6 → 92.3 µs with pairs, but down_proj (4096 rows, 2048 pairs for
    /// 8448 warp slots) 38.0 → 42.9 µs. The serial style always pairs.
    /// </summary>
    private bool PairRows(int m)
    {
        if (m % 2 != 0)
            return false;
        return Style == KernelStyle.Serial || m / 2 >= warpSlots;
    }

    private static void CheckWeights<T>(ArrayView<T> w, int m, int n, string what) where T : unmanaged
    {
        Check.Positive(Op, "n", n);
        if (m < 0)
            throw new ArgumentOutOfRangeException(what, m, $"{Op}: negative row count for {what}");
        if (w.Length < (long)m * n)
            throw new ArgumentException($"{Op}: {what} holds {w.Length} elements, needs {m}×{n}", what);
    }

    private static bool Aligned<T>(ArrayView<T> w) where T : unmanaged => Check.Aligned16(w);

    private MatVecParams Plan(MatVecEpilogue epilogue, int n, int m0, int m1, int m2, long tasks, ArrayView<float> x, InputNorm? norm,
        float eps, int headDim, int position, bool[] weightsAligned)
    {
        Check.Positive(Op, "m0", m0);
        Check.Length(Op, "x", x, n, $"n = {n}");
        if (norm is { } nm)
            Check.Length(Op, "norm weight", nm.Weight, n, $"n = {n}");
        int warp = device.WarpSize;
        bool vec = n % 8 == 0 && Check.Aligned16(x) && (norm is not { } a || Check.Aligned16(a.Weight)) && weightsAligned.All(b => b);
        int chunks = vec ? n / 8 : n;
        int lanes = Style == KernelStyle.Serial ? 1 : Math.Min(warp, (int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(1, chunks)));
        int group = Math.Max(warp, Check.GroupSize(device) / warp * warp);
        int tasksPerGroup = group / lanes;
        long groups = (tasks + tasksPerGroup - 1) / tasksPerGroup;
        // Serial style: a few groups whose threads stride over the tasks (each launched thread costs microseconds there).
        if (Style == KernelStyle.Serial)
            groups = Math.Min(groups, 16);
        if (groups > int.MaxValue || tasks > int.MaxValue)
            throw new ArgumentException($"{Op}: {tasks} rows exceed one launch");
        return new MatVecParams(n, m0, m1, m2, lanes, (int)epilogue, vec ? 1 : 0, (int)groups, group, (int)tasks,
            norm?.Eps ?? eps, headDim, position);
    }

    private void Launch<T>(MatVecParams p, ArrayView<T> w0, ArrayView<T> w1, ArrayView<T> w2, ArrayView<float> x, InputNorm? norm, ArrayView<float> y,
        AcceleratorStream? stream, ArrayView<float>? kCache = null, ArrayView<float>? vCache = null, ArrayView<float>? cos = null, ArrayView<float>? sin = null)
        where T : unmanaged
    {
        var s = stream ?? device.Accelerator.DefaultStream;
        var config = new KernelConfig(p.Groups, p.GroupSize);
        ArrayView<float> unused = none.View;
        var g = norm?.Weight ?? unused;
        int variant = Variant(Style, norm.HasValue);
        if (typeof(T) == typeof(Half))
        {
            device.RequireFloat16(Op);
            f16[variant].Value(s, config, As<T, Half>(w0), As<T, Half>(w1), As<T, Half>(w2), x, g, y,
                kCache ?? unused, vCache ?? unused, cos ?? unused, sin ?? unused, p);
        }
        else if (typeof(T) == typeof(float))
        {
            f32[variant].Value(s, config, As<T, float>(w0), As<T, float>(w1), As<T, float>(w2), x, g, y,
                kCache ?? unused, vCache ?? unused, cos ?? unused, sin ?? unused, p);
        }
        else
        {
            throw new NotSupportedException($"{Op}: weights of type {typeof(T).Name}; fp16 (ILGPU.Half) or fp32 expected");
        }
    }

    /// <summary>The identity reinterpretation ArrayView&lt;T&gt; → ArrayView&lt;TTo&gt; once T is known to be TTo.</summary>
    private static ArrayView<TTo> As<TFrom, TTo>(ArrayView<TFrom> view) where TFrom : unmanaged where TTo : unmanaged =>
        Unsafe.As<ArrayView<TFrom>, ArrayView<TTo>>(ref view);

    /// <summary>What a task writes.</summary>
    public enum MatVecEpilogue
    {
        /// <summary>y[row] = dot (rows of the stacked matrices).</summary>
        Store = 0,

        /// <summary>y[row] += dot (residual add).</summary>
        Add = 1,

        /// <summary>y[row] = silu(gate·x) · (up·x).</summary>
        SwiGlu = 2,

        /// <summary>A rotation pair of q (rotated into y), k (rotated into kCache) or two rows of v (into vCache).</summary>
        Rope = 3,

        /// <summary>y[2t] += dot, y[2t+1] += dot: two consecutive rows per task (one x load serves both), m even.</summary>
        AddPair = 4,

        /// <summary>y[2t] = dot, y[2t+1] = dot: two consecutive rows per task, m even.</summary>
        StorePair = 5,
    }

    public readonly struct MatVecParams(int n, int m0, int m1, int m2, int lanesPerRow, int epilogue, int vectorized, int groups, int groupSize,
        int tasks, float eps, int headDim, int position)
    {
        public readonly int N = n;
        public readonly int M0 = m0;
        public readonly int M1 = m1;
        public readonly int M2 = m2;
        public readonly int LanesPerRow = lanesPerRow;
        public readonly int Epilogue = epilogue;
        public readonly int Vectorized = vectorized;
        public readonly int Groups = groups;
        public readonly int GroupSize = groupSize;
        public readonly int Tasks = tasks;
        public readonly float Eps = eps;
        public readonly int HeadDim = headDim;
        public readonly int Position = position;
    }

    internal static void MatVecKernel<T, TW, TIn>(ArrayView<T> w0, ArrayView<T> w1, ArrayView<T> w2, ArrayView<float> x, ArrayView<float> g,
        ArrayView<float> y, ArrayView<float> kCache, ArrayView<float> vCache, ArrayView<float> cos, ArrayView<float> sin, MatVecParams p)
        where T : unmanaged
        where TW : struct, IWeightElement<T>
        where TIn : struct, IMatVecInput
    {
        int warp = Warp.WarpSize;
        int lane = Warp.LaneIdx;
        int s = p.LanesPerRow;
        int sub = lane / s;
        int sl = lane - (sub * s);
        long firstTask = ((((long)Grid.IdxX * (Group.DimX / warp)) + Warp.WarpIdx) * (warp / s)) + sub;
        long taskStride = (long)p.Groups * (Group.DimX / s);
        // One pass on GPUs (the grid covers every task, and all lanes meet at the shuffles); with one lane per task
        // (rows of at most 8 weights) it strides over the tasks.
        for (long task = firstTask; ; task += taskStride)
        {
            RunTask<T, TW, TIn, ShuffleLanes>(w0, w1, w2, x, g, y, kCache, vCache, cos, sin, p, task, task < p.Tasks, s, sl);
            if (s > 1 || task + taskStride >= p.Tasks)
                break;
        }
    }

    /// <summary>Serial style: thread t of the launch runs tasks t, t + threads, … alone (lanes per row = 1), no warp function.</summary>
    internal static void MatVecSerialKernel<T, TW, TIn>(ArrayView<T> w0, ArrayView<T> w1, ArrayView<T> w2, ArrayView<float> x, ArrayView<float> g,
        ArrayView<float> y, ArrayView<float> kCache, ArrayView<float> vCache, ArrayView<float> cos, ArrayView<float> sin, MatVecParams p)
        where T : unmanaged
        where TW : struct, IWeightElement<T>
        where TIn : struct, IMatVecInput
    {
        long taskStride = (long)p.Groups * Group.DimX;
        for (long task = ((long)Grid.IdxX * Group.DimX) + Group.IdxX; task < p.Tasks; task += taskStride)
            RunTask<T, TW, TIn, SingleLane>(w0, w1, w2, x, g, y, kCache, vCache, cos, sin, p, task, true, 1, 0);
    }

    private static void RunTask<T, TW, TIn, TLanes>(ArrayView<T> w0, ArrayView<T> w1, ArrayView<T> w2, ArrayView<float> x, ArrayView<float> g,
        ArrayView<float> y, ArrayView<float> kCache, ArrayView<float> vCache, ArrayView<float> cos, ArrayView<float> sin, MatVecParams p,
        long task, bool valid, int s, int sl)
        where T : unmanaged
        where TW : struct, IWeightElement<T>
        where TIn : struct, IMatVecInput
        where TLanes : struct, IMatVecLanes
    {
        // The rows the task reads: one row of [W0;W1;W2] (store, add), or two (SwiGLU: the gate and the up row; RoPE: a
        // rotation pair j, j + d/2 of one q or k head, or two consecutive v rows).
        bool two = p.Epilogue >= (int)MatVecEpilogue.SwiGlu;
        var wa = w0;
        var wb = p.Epilogue == (int)MatVecEpilogue.SwiGlu ? w1 : w0;
        long ra = task, rb = task;
        int matrix = 0;
        if (p.Epilogue >= (int)MatVecEpilogue.AddPair)
        {
            ra = 2 * task;
            rb = ra + 1;
        }
        else if (p.Epilogue == (int)MatVecEpilogue.Rope)
        {
            int half = p.HeadDim >> 1;
            long qPairs = p.M0 >> 1, kPairs = p.M1 >> 1;
            long pair = task;
            if (pair >= qPairs)
            {
                pair -= qPairs;
                matrix = pair < kPairs ? 1 : 2;
                if (matrix == 2)
                    pair -= kPairs;
            }
            if (matrix == 2)
            {
                ra = 2 * pair;
                rb = ra + 1;
            }
            else
            {
                long h = pair / half;
                ra = (h * p.HeadDim) + (pair - (h * half));
                rb = ra + half;
            }
            wa = matrix == 0 ? w0 : matrix == 1 ? w1 : w2;
            wb = wa;
        }
        else if (!two && valid && ra >= p.M0)
        {
            ra -= p.M0;
            if (ra < p.M1)
            {
                wa = w1;
            }
            else
            {
                ra -= p.M1;
                wa = w2;
            }
        }

        float accA = 0f, accB = 0f, ss = 0f;
        if (valid)
        {
            long baseA = ra * p.N, baseB = rb * p.N;
            if (p.Vectorized == 0)
                DotScalar<T, TW, TIn>(wa, wb, baseA, baseB, two, x, g, p.N, s, sl, ref accA, ref accB, ref ss);
            else if (two)
                DotTwo<T, TW, TIn>(wa, wb, baseA, baseB, x, g, p.N >> 3, s, sl, ref accA, ref accB, ref ss);
            else
                DotOne<T, TW, TIn>(wa, baseA, x, g, p.N >> 3, s, sl, ref accA, ref ss);
        }
        default(TLanes).Sum(s, two, default(TIn).Normalized, ref accA, ref accB, ref ss);
        if (!valid || sl != 0)
            return;

        float r = default(TIn).Normalized ? XMath.Rsqrt((ss / p.N) + p.Eps) : 1f;
        float ya = accA * r, yb = accB * r;
        switch (p.Epilogue)
        {
            case (int)MatVecEpilogue.Store:
                y[task] = ya;
                break;
            case (int)MatVecEpilogue.Add:
                y[task] += ya;
                break;
            case (int)MatVecEpilogue.SwiGlu:
                y[task] = ya / (1f + XMath.Exp(-ya)) * yb;
                break;
            case (int)MatVecEpilogue.AddPair:
                y[ra] += ya;
                y[rb] += yb;
                break;
            case (int)MatVecEpilogue.StorePair:
                y[ra] = ya;
                y[rb] = yb;
                break;
            default:
                RopeStore(y, kCache, vCache, cos, sin, p, matrix, ra, ya, yb);
                break;
        }
    }

    /// <summary>Writes a RoPE task's pair: q rows a, a + d/2 rotated into y; k rotated into the cache; v rows a, a + 1 into the cache.</summary>
    private static void RopeStore(ArrayView<float> y, ArrayView<float> kCache, ArrayView<float> vCache, ArrayView<float> cos, ArrayView<float> sin,
        MatVecParams p, int matrix, long a, float ya, float yb)
    {
        long cacheRow = (long)p.Position * p.M1;
        if (matrix == 2)
        {
            vCache[cacheRow + a] = ya;
            vCache[cacheRow + a + 1] = yb;
            return;
        }
        int half = p.HeadDim >> 1;
        long j = a - (a / p.HeadDim * p.HeadDim);
        long t = ((long)p.Position * half) + j;
        float c = cos[t], sn = sin[t];
        float ra = (ya * c) - (yb * sn), rb = (yb * c) + (ya * sn);
        if (matrix == 0)
        {
            y[a] = ra;
            y[a + half] = rb;
        }
        else
        {
            kCache[cacheRow + a] = ra;
            kCache[cacheRow + a + half] = rb;
        }
    }

    /// <summary>Chunk c0 + i·s of a step, or c0 when that is past the row end (re-read from cache, then masked).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int StepChunk(int c0, int i, int s, int chunks) => c0 + (i * s) < chunks ? c0 + (i * s) : c0;

    /// <summary><paramref name="value"/> when chunk c0 + i·s lies inside the row, else 0 (the mask of <see cref="StepChunk"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Masked(float value, int c0, int i, int s, int chunks) => c0 + (i * s) < chunks ? value : 0f;

    /// <summary>
    /// One row, four chunks of 8 per lane and step (four 16-byte weight loads in flight). Measured on the H100 (bench
    /// decode, Llama-2-7B shapes): eight chunks per step made down_proj slower (38.0 → 40.3 µs) and the output head too
    /// (107 → 120 µs), while four chunks per row in <see cref="DotTwo"/> sped up q|k|v (47.1 → 42.5 µs).
    /// </summary>
    private static void DotOne<T, TW, TIn>(ArrayView<T> w, long rowBase, ArrayView<float> x, ArrayView<float> g, int chunks, int s, int sl,
        ref float acc, ref float ss)
        where T : unmanaged
        where TW : struct, IWeightElement<T>
        where TIn : struct, IMatVecInput
    {
        var loader = default(TW);
        var input = default(TIn);
        float a = 0f, q = 0f;
        for (int c0 = sl; c0 < chunks; c0 += 4 * s)
        {
            int c1 = StepChunk(c0, 1, s, chunks), c2 = StepChunk(c0, 2, s, chunks), c3 = StepChunk(c0, 3, s, chunks);
            var x0 = input.Load8(x, g, c0);
            var x1 = input.Load8(x, g, c1);
            var x2 = input.Load8(x, g, c2);
            var x3 = input.Load8(x, g, c3);
            float d0 = loader.Dot8(w, rowBase + ((long)c0 << 3), x0.Lo, x0.Hi);
            float d1 = loader.Dot8(w, rowBase + ((long)c1 << 3), x1.Lo, x1.Hi);
            float d2 = loader.Dot8(w, rowBase + ((long)c2 << 3), x2.Lo, x2.Hi);
            float d3 = loader.Dot8(w, rowBase + ((long)c3 << 3), x3.Lo, x3.Hi);
            a += d0 + Masked(d1, c0, 1, s, chunks) + Masked(d2, c0, 2, s, chunks) + Masked(d3, c0, 3, s, chunks);
            if (input.Normalized)
                q += x0.Squares + Masked(x1.Squares, c0, 1, s, chunks) + Masked(x2.Squares, c0, 2, s, chunks) + Masked(x3.Squares, c0, 3, s, chunks);
        }
        acc = a;
        ss = q;
    }

    /// <summary>Two rows over the same x, four chunks of 8 per row, lane and step (eight 16-byte weight loads in flight).</summary>
    private static void DotTwo<T, TW, TIn>(ArrayView<T> wa, ArrayView<T> wb, long baseA, long baseB, ArrayView<float> x, ArrayView<float> g,
        int chunks, int s, int sl, ref float accA, ref float accB, ref float ss)
        where T : unmanaged
        where TW : struct, IWeightElement<T>
        where TIn : struct, IMatVecInput
    {
        var loader = default(TW);
        var input = default(TIn);
        float a = 0f, b = 0f, q = 0f;
        for (int c0 = sl; c0 < chunks; c0 += 4 * s)
        {
            int c1 = StepChunk(c0, 1, s, chunks), c2 = StepChunk(c0, 2, s, chunks), c3 = StepChunk(c0, 3, s, chunks);
            var x0 = input.Load8(x, g, c0);
            var x1 = input.Load8(x, g, c1);
            var x2 = input.Load8(x, g, c2);
            var x3 = input.Load8(x, g, c3);
            float a0 = loader.Dot8(wa, baseA + ((long)c0 << 3), x0.Lo, x0.Hi);
            float a1 = loader.Dot8(wa, baseA + ((long)c1 << 3), x1.Lo, x1.Hi);
            float a2 = loader.Dot8(wa, baseA + ((long)c2 << 3), x2.Lo, x2.Hi);
            float a3 = loader.Dot8(wa, baseA + ((long)c3 << 3), x3.Lo, x3.Hi);
            float b0 = loader.Dot8(wb, baseB + ((long)c0 << 3), x0.Lo, x0.Hi);
            float b1 = loader.Dot8(wb, baseB + ((long)c1 << 3), x1.Lo, x1.Hi);
            float b2 = loader.Dot8(wb, baseB + ((long)c2 << 3), x2.Lo, x2.Hi);
            float b3 = loader.Dot8(wb, baseB + ((long)c3 << 3), x3.Lo, x3.Hi);
            a += a0 + Masked(a1, c0, 1, s, chunks) + Masked(a2, c0, 2, s, chunks) + Masked(a3, c0, 3, s, chunks);
            b += b0 + Masked(b1, c0, 1, s, chunks) + Masked(b2, c0, 2, s, chunks) + Masked(b3, c0, 3, s, chunks);
            if (input.Normalized)
                q += x0.Squares + Masked(x1.Squares, c0, 1, s, chunks) + Masked(x2.Squares, c0, 2, s, chunks) + Masked(x3.Squares, c0, 3, s, chunks);
        }
        accA = a;
        accB = b;
        ss = q;
    }

    /// <summary>Rows of any length (or views off 16-byte boundaries): one element per lane and step.</summary>
    private static void DotScalar<T, TW, TIn>(ArrayView<T> wa, ArrayView<T> wb, long baseA, long baseB, bool two, ArrayView<float> x, ArrayView<float> g,
        int n, int s, int sl, ref float accA, ref float accB, ref float ss)
        where T : unmanaged
        where TW : struct, IWeightElement<T>
        where TIn : struct, IMatVecInput
    {
        var loader = default(TW);
        var input = default(TIn);
        float a = 0f, b = 0f, q = 0f;
        for (int k = sl; k < n; k += s)
        {
            float xv = input.Load(x, g, k);
            a += loader.Load(wa, baseA + k) * xv;
            if (two)
                b += loader.Load(wb, baseB + k) * xv;
            if (input.Normalized)
            {
                float raw = x[k];
                q += raw * raw;
            }
        }
        accA = a;
        accB = b;
        ss = q;
    }
}

/// <summary>How the S lanes of a matrix–vector task add up their partial sums (into lane 0). A struct type parameter.</summary>
public interface IMatVecLanes
{
    /// <summary>Sums a (and b when <paramref name="two"/>, and ss when <paramref name="normalized"/>) over the task's <paramref name="lanes"/> lanes.</summary>
    void Sum(int lanes, bool two, bool normalized, ref float a, ref float b, ref float ss);
}

/// <summary>Grouped style: a shuffle-down tree over the lanes (CUDA and the CPU simulator; not OpenCL).</summary>
public readonly struct ShuffleLanes : IMatVecLanes
{
    public void Sum(int lanes, bool two, bool normalized, ref float a, ref float b, ref float ss)
    {
        for (int d = lanes >> 1; d >= 1; d >>= 1)
        {
            a += Warp.ShuffleDown(a, d);
            if (two)
                b += Warp.ShuffleDown(b, d);
            if (normalized)
                ss += Warp.ShuffleDown(ss, d);
        }
    }
}

/// <summary>Serial style: one lane per task, nothing to add.</summary>
public readonly struct SingleLane : IMatVecLanes
{
    public void Sum(int lanes, bool two, bool normalized, ref float a, ref float b, ref float ss)
    {
    }
}

/// <summary>The RMSNorm a matrix–vector product applies to its input: x̂ = x / √(mean(x²) + ε) ⊙ weight.</summary>
public readonly struct InputNorm(ArrayView<float> weight, float eps)
{
    public ArrayView<float> Weight { get; } = weight;

    public float Eps { get; } = eps;
}

/// <summary>Eight x values as a product reads them, and their Σx² (for the fused RMSNorm).</summary>
public struct Chunk8
{
    public Float4 Lo;
    public Float4 Hi;
    public float Squares;
}

/// <summary>How a matrix–vector kernel reads its input x: as it is, or RMS-normalised on the fly. A struct type parameter.</summary>
public interface IMatVecInput
{
    /// <summary>True if the product is of rmsnorm(x) ⊙ g: the kernel scales each dot product by 1/√(mean(x²) + ε).</summary>
    bool Normalized { get; }

    /// <summary>x[8c .. 8c+8) (⊙ g[8c .. 8c+8) when normalised) and Σ x² over them (0 when not); views 16-byte aligned.</summary>
    Chunk8 Load8(ArrayView<float> x, ArrayView<float> g, long c);

    /// <summary>x[k] (⊙ g[k] when normalised).</summary>
    float Load(ArrayView<float> x, ArrayView<float> g, long k);
}

/// <summary>x as it is.</summary>
public readonly struct PlainInput : IMatVecInput
{
    public bool Normalized => false;

    public Chunk8 Load8(ArrayView<float> x, ArrayView<float> g, long c)
    {
        var xv = x.AsAligned16().Cast<Float4>();
        return new Chunk8 { Lo = xv[c << 1], Hi = xv[(c << 1) + 1], Squares = 0f };
    }

    public float Load(ArrayView<float> x, ArrayView<float> g, long k) => x[k];
}

/// <summary>x ⊙ g, with Σ x² for the scale 1/√(mean(x²) + ε) the kernel applies after the reduction.</summary>
public readonly struct NormedInput : IMatVecInput
{
    public bool Normalized => true;

    public Chunk8 Load8(ArrayView<float> x, ArrayView<float> g, long c)
    {
        var xv = x.AsAligned16().Cast<Float4>();
        var gv = g.AsAligned16().Cast<Float4>();
        var lo = xv[c << 1];
        var hi = xv[(c << 1) + 1];
        var glo = gv[c << 1];
        var ghi = gv[(c << 1) + 1];
        float squares = (lo.X * lo.X) + (lo.Y * lo.Y) + (lo.Z * lo.Z) + (lo.W * lo.W)
            + (hi.X * hi.X) + (hi.Y * hi.Y) + (hi.Z * hi.Z) + (hi.W * hi.W);
        return new Chunk8
        {
            Lo = new Float4 { X = lo.X * glo.X, Y = lo.Y * glo.Y, Z = lo.Z * glo.Z, W = lo.W * glo.W },
            Hi = new Float4 { X = hi.X * ghi.X, Y = hi.Y * ghi.Y, Z = hi.Z * ghi.Z, W = hi.W * ghi.W },
            Squares = squares,
        };
    }

    public float Load(ArrayView<float> x, ArrayView<float> g, long k) => x[k] * g[k];
}
