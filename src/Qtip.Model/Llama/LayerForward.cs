using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels;
using Qtip.Kernels.Llama;
using Qtip.Kernels.Runtime;
using Qtip.Model.Checkpoint;

namespace Qtip.Model.Llama;

/// <summary>
/// One decoder layer's prefill forward over a residual stream x (rows, dim) held by the caller, updated in place:
/// x += attention(rmsnorm(x)), x += mlp(rmsnorm(x)). The arithmetic is that of <see cref="LlamaModel"/>'s prefill
/// (the same kernels in the same order, so the same bits); the difference is that the layer's weights come from a
/// <see cref="DecoderLayer"/> and the activations from outside, so a model can be run (and quantized) one layer at a
/// time with only that layer on the device. Owns the scratch of one layer: normed input, q|k|v, one layer's KV cache,
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
        int dim = c.HiddenSize, qDim = c.QDim, kvDim = c.KvDim, hidden = c.IntermediateSize;
        if (rows < 1 || rows > MaxRows)
            throw new ArgumentOutOfRangeException(nameof(rows), rows, $"LayerForward holds 1..{MaxRows} rows");
        if (x.Length != (long)rows * dim)
            throw new ArgumentException($"LayerForward: x has {x.Length} elements, expected rows×dim = {rows}×{dim}", nameof(x));
        var s = device.Accelerator.DefaultStream;
        float eps = (float)c.RmsNormEps;
        var norm = device.Get<RmsNorm>();
        int l = w.Index;
        var xbv = xb.View.SubView(0, (long)rows * Math.Max(dim, qDim));
        var xb2v = xb2.View.SubView(0, (long)rows * dim);
        var q = qkv.View.SubView(0, (long)rows * qDim);                            // (rows, qDim)
        var k = qkv.View.SubView((long)rows * qDim, (long)rows * kvDim);           // (rows, kvDim)
        var v = qkv.View.SubView((long)rows * (qDim + kvDim), (long)rows * kvDim); // (rows, kvDim)

        // ---- attention block: xb = rmsnorm(x) ⊙ input_layernorm
        norm.Apply(x, null, w.InputNorm.View, xbv, rows, dim, eps, s);
        observer?.OnLinearInput(l, LinearInput.Attention, xbv.SubView(0, (long)rows * dim), rows, dim, s);

        // q (rows, qDim) = xb·Wqᵀ; k, v (rows, kvDim) = xb·Wkᵀ, xb·Wvᵀ
        w[LinearKind.Q].Forward(xbv, q, rows, s);
        w[LinearKind.K].Forward(xbv, k, rows, s);
        w[LinearKind.V].Forward(xbv, v, rows, s);

        // RoPE on q, k; k, v → cache[0 .. rows)
        device.Get<Rope>().Apply(q, qDim, k, kvDim, v, kvDim, keyCache.View, valueCache.View, ropeCos.View, ropeSin.View,
            rows, 0, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, s);

        // xb (rows, qDim) = softmax(q·Kᵀ/√d, causal) · V, per head, GQA
        device.Get<Attention>().Apply(q, qDim, keyCache.View, valueCache.View, xbv, rows, 0,
            c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, s, c.SlidingWindow);
        observer?.OnLinearInput(l, LinearInput.AttentionOutput, xbv.SubView(0, (long)rows * qDim), rows, qDim, s);

        // xb2 (rows, dim) = xb·Woᵀ
        w[LinearKind.O].Forward(xbv, xb2v, rows, s);

        // ---- MLP block: x += xb2; xb = rmsnorm(x) ⊙ post_attention_layernorm
        norm.Apply(x, xb2v, w.PostNorm.View, xbv, rows, dim, eps, s);
        observer?.OnLinearInput(l, LinearInput.Mlp, xbv.SubView(0, (long)rows * dim), rows, dim, s);

        // hb (rows, hidden) = silu(xb·Wgateᵀ) ⊙ (xb·Wupᵀ)
        var hbv = hb.View.SubView(0, (long)rows * hidden);
        var hb2v = hb2.View.SubView(0, (long)rows * hidden);
        w[LinearKind.Gate].Forward(xbv, hbv, rows, s);
        w[LinearKind.Up].Forward(xbv, hb2v, rows, s);
        device.Get<SwiGlu>().Apply(hbv, hb2v, hbv, hbv.Length, s);
        observer?.OnLinearInput(l, LinearInput.MlpHidden, hbv, rows, hidden, s);

        // xb2 (rows, dim) = hb·Wdownᵀ; x += xb2. LlamaModel adds it inside the next layer's RMSNorm; the same kernel
        // adds it here (its normed output, into the scratch xb, is not used), so x holds the same bits.
        w[LinearKind.Down].Forward(hbv, xb2v, rows, s);
        norm.Apply(x, xb2v, w.PostNorm.View, xbv, rows, dim, eps, s);
    }

    public void Dispose()
    {
        foreach (var b in new MemoryBuffer[] { xb, xb2, hb, hb2, qkv, keyCache, valueCache, ropeCos, ropeSin })
            b.Dispose();
    }
}
