using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels;
using Qtip.Kernels.Llama;
using Qtip.Kernels.Runtime;
using Qtip.Model.Checkpoint;

namespace Qtip.Model.Llama;

/// <summary>
/// One decoder layer's prefill forward over a residual stream x (rows, dim) held by the caller, updated in place:
/// x += attention(rmsnorm(x)), x += mlp(rmsnorm(x)). The layer body is <see cref="RunLayer"/>, the same code
/// <see cref="LlamaModel"/>'s prefill runs (so the same kernels in the same order, the same bits); the difference is
/// that the activations come from outside, so a model can be run (and quantized) one layer at a time with only that
/// layer on the device. Owns the scratch of one layer: normed input, q|k|v, one layer's KV cache,
/// the MLP hidden activations and the RoPE tables, for up to <see cref="MaxRows"/> rows at positions 0..rows−1.
/// </summary>
public sealed class LayerForward : IDisposable
{
    private readonly QtipDevice device;
    private readonly LlamaConfig config;
    private readonly MemoryBuffer1D<float, Stride1D.Dense> xb;       // (rows, max(dim, qDim)) normed input / attention output
    private readonly MemoryBuffer1D<float, Stride1D.Dense> xb2;      // (rows, dim) output of o_proj / down_proj
    private readonly MemoryBuffer1D<float, Stride1D.Dense> hb;       // (rows, hidden) gate, then silu(gate)·up
    private readonly MemoryBuffer1D<float, Stride1D.Dense> hb2;      // (rows, hidden) up
    private readonly MemoryBuffer1D<float, Stride1D.Dense> qkv;      // q (rows, qDim) | k (rows, kvDim) | v (rows, kvDim)
    private readonly MemoryBuffer1D<float, Stride1D.Dense> keyCache;   // (positions, kvDim)
    private readonly MemoryBuffer1D<float, Stride1D.Dense> valueCache; // (positions, kvDim)
    private readonly MemoryBuffer1D<float, Stride1D.Dense> ropeCos;  // (positions, headDim/2)
    private readonly MemoryBuffer1D<float, Stride1D.Dense> ropeSin;  // (positions, headDim/2)

    /// <param name="positions">KV-cache and RoPE-table positions (as <see cref="LlamaModel.MaxContext"/>; ≥ rows).</param>
    public LayerForward(QtipDevice device, LlamaConfig config, int maxRows, int positions)
    {
        if (maxRows < 1 || positions < maxRows)
            throw new ArgumentException($"LayerForward: {maxRows} rows need 1 ≤ rows ≤ positions ({positions})", nameof(maxRows));
        int limit = device.Get<Attention>().MaxPositions;
        if (positions > limit)
            throw new InvalidInputException($"context {positions} exceeds the {limit} positions that attention fits in shared memory on {device.Name}");
        this.device = device;
        this.config = config;
        MaxRows = maxRows;
        int dim = config.HiddenSize, qDim = config.QDim, kvDim = config.KvDim;
        xb = device.Allocate1D<float>((long)maxRows * Math.Max(dim, qDim));
        xb2 = device.Allocate1D<float>((long)maxRows * dim);
        hb = device.Allocate1D<float>((long)maxRows * config.IntermediateSize);
        hb2 = device.Allocate1D<float>((long)maxRows * config.IntermediateSize);
        qkv = device.Allocate1D<float>((long)maxRows * (qDim + (2 * kvDim)));
        keyCache = device.Allocate1D<float>((long)positions * kvDim);
        valueCache = device.Allocate1D<float>((long)positions * kvDim);
        var inv = config.RopeInverseFrequencies();
        var (cos, sin) = RopeTable.Build(inv, positions);
        ropeCos = device.Allocate1D(cos);
        ropeSin = device.Allocate1D(sin);
    }

    public int MaxRows { get; }

    /// <summary>
    /// x (rows, dim) ← layer <paramref name="w"/>(x) at positions 0..rows−1, with the activation taps of
    /// <see cref="LlamaModel.Prefill"/> (the four linear inputs of the layer). Enqueued on the default stream.
    /// </summary>
    public void Run(DecoderLayer w, ArrayView<float> x, int rows, IActivationObserver? observer = null)
    {
        var c = config;
        int dim = c.HiddenSize;
        if (rows < 1 || rows > MaxRows)
            throw new ArgumentOutOfRangeException(nameof(rows), rows, $"LayerForward holds 1..{MaxRows} rows");
        if (x.Length != (long)rows * dim)
            throw new ArgumentException($"LayerForward: x has {x.Length} elements, expected rows×dim = {rows}×{dim}", nameof(x));
        var s = device.Accelerator.DefaultStream;
        RunLayer(device, c, w, new LayerBuffers(x, xb.View, xb2.View, hb.View, hb2.View, qkv.View), keyCache.View, valueCache.View,
            ropeCos.View, ropeSin.View, rows, 0, residualPending: false, observer, s);

        // x += xb2 (down_proj's output). LlamaModel adds it inside the next layer's RMSNorm; the same kernel adds it here
        // (its normed output, into the scratch xb, is not used), so x holds the same bits.
        device.Get<RmsNorm>().Apply(x, xb2.View.SubView(0, (long)rows * dim), w.PostNorm.View, xb.View.SubView(0, (long)rows * dim), rows, dim, (float)c.RmsNormEps, s);
    }

    /// <summary>
    /// The decoder layer's prefill body, the one used by <see cref="LlamaModel"/>'s forward and by <see cref="Run"/>, for
    /// rows tokens at positions pos0.. (dim = hidden size, qDim = heads·headDim, kvDim = kvHeads·headDim, hidden =
    /// intermediate size). On entry x holds the residual stream, plus xb2 when <paramref name="residualPending"/> (the
    /// previous layer's MLP output, added by the first RMSNorm); on exit xb2 holds this layer's MLP output, not yet
    /// added to x. Linears that carry a bias (<see cref="BiasedLinear"/>) add it after their product.
    /// </summary>
    internal static void RunLayer(QtipDevice device, LlamaConfig c, DecoderLayer w, in LayerBuffers b, ArrayView<float> keyCache, ArrayView<float> valueCache,
        ArrayView<float> ropeCos, ArrayView<float> ropeSin, int rows, int pos0, bool residualPending, IActivationObserver? observer, AcceleratorStream s)
    {
        int dim = c.HiddenSize, qDim = c.QDim, kvDim = c.KvDim, hidden = c.IntermediateSize;
        float eps = (float)c.RmsNormEps;
        var norm = device.Get<RmsNorm>();
        int l = w.Index;
        var xv = b.X.SubView(0, (long)rows * dim);
        var xbv = b.Xb.SubView(0, (long)rows * Math.Max(dim, qDim));
        var xb2v = b.Xb2.SubView(0, (long)rows * dim);
        var hbv = b.Hb.SubView(0, (long)rows * hidden);
        var q = b.Qkv.SubView(0, (long)rows * qDim);                            // (rows, qDim)
        var k = b.Qkv.SubView((long)rows * qDim, (long)rows * kvDim);           // (rows, kvDim)
        var v = b.Qkv.SubView((long)rows * (qDim + kvDim), (long)rows * kvDim); // (rows, kvDim)

        // ---- attention block
        // x += xb2 (previous layer's MLP output); xb = rmsnorm(x) ⊙ input_layernorm
        norm.Apply(xv, residualPending ? xb2v : null, w.InputNorm.View, xbv, rows, dim, eps, s);
        if (residualPending)
            observer?.OnHiddenState(l - 1, xv, rows, dim, s);
        observer?.OnLinearInput(l, LinearInput.Attention, xbv.SubView(0, (long)rows * dim), rows, dim, s);

        // q (rows, qDim) = xb·Wqᵀ (+ bq); k, v (rows, kvDim) = xb·Wkᵀ (+ bk), xb·Wvᵀ (+ bv)
        ProjectQkv(device, w, rows, xbv, b.Qkv, q, k, v, s);

        // RoPE on q, k; k, v → cache[pos0 .. pos0+rows)
        device.Get<Rope>().Apply(q, qDim, k, kvDim, v, kvDim, keyCache, valueCache, ropeCos, ropeSin,
            rows, pos0, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, s);

        // xb (rows, qDim) = softmax(q·Kᵀ/√d, causal, within the sliding window if any) · V, per head, GQA
        device.Get<Attention>().Apply(q, qDim, keyCache, valueCache, xbv, rows, pos0,
            c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, s, c.SlidingWindow);
        observer?.OnLinearInput(l, LinearInput.AttentionOutput, xbv.SubView(0, (long)rows * qDim), rows, qDim, s);

        // xb2 (rows, dim) = xb·Woᵀ
        w.O.Forward(xbv, xb2v, rows, s);

        // ---- MLP block
        // x += xb2; xb = rmsnorm(x) ⊙ post_attention_layernorm
        norm.Apply(xv, xb2v, w.PostNorm.View, xbv, rows, dim, eps, s);
        observer?.OnLinearInput(l, LinearInput.Mlp, xbv.SubView(0, (long)rows * dim), rows, dim, s);

        // hb (rows, hidden) = silu(xb·Wgateᵀ) ⊙ (xb·Wupᵀ)
        GateUpSwiGlu(device, w, rows, xbv, hbv, b.Hb2, s);
        observer?.OnLinearInput(l, LinearInput.MlpHidden, hbv, rows, hidden, s);

        // xb2 (rows, dim) = hb·Wdownᵀ   (added to x by the next norm)
        w.Down.Forward(hbv, xb2v, rows, s);
    }

    /// <summary>
    /// q (rows, qDim), k, v (rows, kvDim) = input·Wqᵀ, input·Wkᵀ, input·Wvᵀ: one stacked launch into <paramref name="qkv"/>
    /// for a single row of dense fusable weights (q, k, v consecutive there), else each linear on its own.
    /// </summary>
    internal static void ProjectQkv(QtipDevice device, DecoderLayer w, int rows, ArrayView<float> input, ArrayView<float> qkv,
        ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, AcceleratorStream s)
    {
        if (rows == 1 && w.Q is DenseLinear dq && w.K is DenseLinear dk && w.V is DenseLinear dv && dq.CanFuseWith(dk) && dq.CanFuseWith(dv))
        {
            var mv = device.Get<MatVec>();
            if (dq.Precision == WeightPrecision.Float16)
                mv.Apply(dq.HalfWeights, dq.OutFeatures, dk.HalfWeights, dk.OutFeatures, dv.HalfWeights, dv.OutFeatures, input, qkv, dq.InFeatures, s);
            else
                mv.Apply(dq.FloatWeights, dq.OutFeatures, dk.FloatWeights, dk.OutFeatures, dv.FloatWeights, dv.OutFeatures, input, qkv, dq.InFeatures, s);
            return;
        }
        w.Q.Forward(input, q, rows, s);
        w.K.Forward(input, k, rows, s);
        w.V.Forward(input, v, rows, s);
    }

    /// <summary>
    /// hb (rows, hidden) = silu(input·Wgateᵀ) ⊙ (input·Wupᵀ): one launch for a single row of dense fusable weights, else
    /// gate and up on their own (up into <paramref name="hb2"/>) and the SwiGLU kernel.
    /// </summary>
    internal static void GateUpSwiGlu(QtipDevice device, DecoderLayer w, int rows, ArrayView<float> input, ArrayView<float> hbv, ArrayView<float> hb2, AcceleratorStream s)
    {
        if (rows == 1 && w.Gate is DenseLinear g && w.Up is DenseLinear u && g.CanFuseWith(u) && g.OutFeatures == u.OutFeatures)
        {
            var mv = device.Get<MatVec>();
            if (g.Precision == WeightPrecision.Float16)
                mv.SwiGlu(g.HalfWeights, u.HalfWeights, g.OutFeatures, input, hbv, g.InFeatures, s);
            else
                mv.SwiGlu(g.FloatWeights, u.FloatWeights, g.OutFeatures, input, hbv, g.InFeatures, s);
            return;
        }
        var hb2v = hb2.SubView(0, hbv.Length);
        w.Gate.Forward(input, hbv, rows, s);
        w.Up.Forward(input, hb2v, rows, s);
        device.Get<SwiGlu>().Apply(hbv, hb2v, hbv, hbv.Length, s);
    }

    public void Dispose()
    {
        foreach (var b in new MemoryBuffer[] { xb, xb2, hb, hb2, qkv, keyCache, valueCache, ropeCos, ropeSin })
            b.Dispose();
    }
}

/// <summary>The activation buffers a layer's forward works in, each at least rows × its width: x (dim), xb (max(dim, qDim)),
/// xb2 (dim), hb and hb2 (hidden), qkv (qDim + 2·kvDim).</summary>
internal readonly record struct LayerBuffers(ArrayView<float> X, ArrayView<float> Xb, ArrayView<float> Xb2, ArrayView<float> Hb, ArrayView<float> Hb2, ArrayView<float> Qkv);
