using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels;
using Qtip.Kernels.Llama;
using Qtip.Model.Quantized;

namespace Qtip.Model.Llama;

/// <summary>One step of a decode-step plan: what it is, its launches and weight bytes, and the work it enqueues.</summary>
/// <param name="Op">The op and its shape (the profiler's row name).</param>
/// <param name="Launches">Kernel launches it makes.</param>
/// <param name="Bytes">Weight bytes it reads.</param>
/// <param name="Run">Enqueues it on the model's stream.</param>
internal sealed record DecodeStepOp(string Op, int Launches, long Bytes, Action Run);

public sealed partial class LlamaModel
{
    private MemoryBuffer1D<float, Stride1D.Dense>? rhtIn;   // transformed inputs of up to three linears (3 × max(dim, qDim, hidden))
    private MemoryBuffer1D<float, Stride1D.Dense>? rhtOut;  // their matvec outputs before the output transform
    private QuantizedLayer?[] quantizedLayers = [];

    /// <summary>
    /// The device buffers a quantized layer's fused decode needs beyond its linears: the q|k|v and gate|up input signs
    /// and output signs laid end to end, so one <see cref="VectorRht"/> launch serves each group, and the q|k|v biases
    /// end to end (Qwen2; null when the layer has none), so one <see cref="BiasAdd"/> launch adds them.
    /// </summary>
    private sealed class QuantizedLayer(QtipLinear q, QtipLinear k, QtipLinear v, QtipLinear o, QtipLinear gate, QtipLinear up, QtipLinear down,
        MemoryBuffer1D<float, Stride1D.Dense> suQkv, MemoryBuffer1D<float, Stride1D.Dense> svQkv,
        MemoryBuffer1D<float, Stride1D.Dense> suGateUp, MemoryBuffer1D<float, Stride1D.Dense> svGateUp,
        MemoryBuffer1D<float, Stride1D.Dense>? qkvBias) : IDisposable
    {
        public QtipLinear Q { get; } = q;

        public QtipLinear K { get; } = k;

        public QtipLinear V { get; } = v;

        public QtipLinear O { get; } = o;

        public QtipLinear Gate { get; } = gate;

        public QtipLinear Up { get; } = up;

        public QtipLinear Down { get; } = down;

        public MemoryBuffer1D<float, Stride1D.Dense> SuQkv { get; } = suQkv;       // 3 × dim

        public MemoryBuffer1D<float, Stride1D.Dense> SvQkv { get; } = svQkv;       // qDim | kvDim | kvDim

        public MemoryBuffer1D<float, Stride1D.Dense> SuGateUp { get; } = suGateUp; // 2 × dim

        public MemoryBuffer1D<float, Stride1D.Dense> SvGateUp { get; } = svGateUp; // 2 × hidden

        public MemoryBuffer1D<float, Stride1D.Dense>? QkvBias { get; } = qkvBias;  // qDim | kvDim | kvDim, or null

        public void Dispose()
        {
            QkvBias?.Dispose();
            SuQkv.Dispose();
            SvQkv.Dispose();
            SuGateUp.Dispose();
            SvGateUp.Dispose();
        }
    }

    /// <summary>
    /// True when layer <paramref name="l"/> can run the fused quantized decode: its seven linears are QTIP linears (q, k,
    /// v possibly with a bias) and every width has a one-launch vector RHT.
    /// </summary>
    private bool QuantizedFusable(int l)
    {
        var c = Config;
        var w = layers[l];
        return new[] { w.Q, w.K, w.V }.All(li => Unbiased(li) is QtipLinear) && new[] { w.O, w.Gate, w.Up, w.Down }.All(li => li is QtipLinear)
            && VectorRht.Supports(c.HiddenSize) && VectorRht.Supports(c.QDim) && VectorRht.Supports(c.KvDim) && VectorRht.Supports(c.IntermediateSize);
    }

    /// <summary>The product of a linear without its bias (the linear itself when it has none).</summary>
    private static ILinearLayer Unbiased(ILinearLayer linear) => linear is BiasedLinear b ? b.Inner : linear;

    private bool HasQkvBias(int l) => layers[l].Q is BiasedLinear || layers[l].K is BiasedLinear || layers[l].V is BiasedLinear;

    /// <summary>Builds (or returns) the fused-decode buffers of quantized layer <paramref name="l"/>.</summary>
    private QuantizedLayer QuantizedAt(int l)
    {
        if (quantizedLayers.Length != layers.Length)
            quantizedLayers = new QuantizedLayer?[layers.Length];
        if (quantizedLayers[l] is { } cached)
            return cached;
        var w = layers[l];
        var (q, k, v, o, g, u, d) = ((QtipLinear)Unbiased(w.Q), (QtipLinear)Unbiased(w.K), (QtipLinear)Unbiased(w.V), (QtipLinear)w.O, (QtipLinear)w.Gate, (QtipLinear)w.Up, (QtipLinear)w.Down);
        MemoryBuffer1D<float, Stride1D.Dense> Concat(params QtipLinear[] parts) => Join(parts.Select(p => p.InputSigns));
        MemoryBuffer1D<float, Stride1D.Dense> ConcatOut(params QtipLinear[] parts) => Join(parts.Select(p => p.OutputSigns));
        MemoryBuffer1D<float, Stride1D.Dense> Join(IEnumerable<ArrayView<float>> views)
        {
            var list = views.ToList();
            var b = acc.Allocate1D<float>(list.Sum(x => x.Length));
            long at = 0;
            foreach (var view in list)
            {
                view.CopyTo(((ArrayView<float>)b.View).SubView(at, view.Length));
                at += view.Length;
            }
            return b;
        }
        MemoryBuffer1D<float, Stride1D.Dense>? QkvBias()
        {
            if (!HasQkvBias(l))
                return null;
            var b = acc.Allocate1D<float>(Config.QDim + (2L * Config.KvDim));
            b.MemSetToZero();
            long at = 0;
            foreach (var li in new[] { w.Q, w.K, w.V })
            {
                if (li is BiasedLinear bl)
                    bl.Bias.CopyTo(((ArrayView<float>)b.View).SubView(at, li.OutFeatures));
                at += li.OutFeatures;
            }
            return b;
        }
        var layer = new QuantizedLayer(q, k, v, o, g, u, d, Concat(q, k, v), ConcatOut(q, k, v), Concat(g, u), ConcatOut(g, u), QkvBias());
        var c = Config;
        long width = Math.Max(Math.Max(c.HiddenSize, c.QDim), c.IntermediateSize);
        if (rhtIn is null || rhtIn.Length < 3 * width)
        {
            rhtIn?.Dispose();
            rhtOut?.Dispose();
            rhtIn = acc.Allocate1D<float>(3 * width);
            rhtOut = acc.Allocate1D<float>(Math.Max(c.QDim + (2L * c.KvDim), 2L * c.IntermediateSize));
        }
        acc.Synchronize();
        quantizedLayers[l] = layer;
        return layer;
    }

    private void DisposeQuantizedLayers()
    {
        foreach (var q in quantizedLayers)
            q?.Dispose();
        quantizedLayers = [];
    }

    /// <summary>Launches of fused quantized layer <paramref name="l"/> in a decode step (see <see cref="QuantizedLayerSteps"/>): one more with q|k|v biases.</summary>
    private int QuantizedLayerLaunches(int l) => 17 + (Config.QDim == Config.KvDim ? 0 : 2) + (HasQkvBias(l) ? 1 : 0);

    /// <summary>
    /// The fused decode of quantized layer <paramref name="l"/> at <paramref name="position"/>, x complete on entry and
    /// on exit, as a list of steps (the decode step runs them; the profiler times them one by one):
    /// <list type="number">
    /// <item>x̃_{q,k,v} = Had_dimᵀ(SU ⊙ rmsnorm(x) ⊙ w_in) for the three linears, one launch;</item>
    /// <item>the three trellis matvecs;</item>
    /// <item>q|k|v = SV ⊙ Had(ỹ) (one launch when the widths agree), + the q|k|v biases (one launch, only when the layer
    /// has them), then RoPE and the KV-cache write;</item>
    /// <item>attention;</item>
    /// <item>o_proj: input RHT, matvec, output RHT added into x (the residual);</item>
    /// <item>x̃_{gate,up} with the post-attention norm, one launch; the two matvecs; SV ⊙ Had and SwiGLU in one launch;</item>
    /// <item>down_proj: input RHT of the hidden vector, matvec, output RHT added into x.</item>
    /// </list>
    /// </summary>
    private List<DecodeStepOp> QuantizedLayerSteps(int l, int position)
    {
        var c = Config;
        var s = Stream;
        var w = layers[l];
        var ql = QuantizedAt(l);
        var rht = device.Get<VectorRht>();
        int dim = c.HiddenSize, qDim = c.QDim, kvDim = c.KvDim, hidden = c.IntermediateSize;
        float eps = (float)c.RmsNormEps;
        ArrayView<float> xv = x.View.SubView(0, dim), xbv = xb.View.SubView(0, qDim), hbv = hb.View.SubView(0, hidden);
        ArrayView<float> xin = rhtIn!.View, yout = rhtOut!.View;
        var q = qkv.View.SubView(0, qDim);
        var k = qkv.View.SubView(qDim, kvDim);
        var v = qkv.View.SubView(qDim + kvDim, kvDim);
        ArrayView<float> kc = keyCache[l].View, vc = valueCache[l].View;
        long Bytes(params QtipLinear[] ls) => ls.Sum(x => x.WeightBytes);
        var steps = new List<DecodeStepOp>
        {
            new($"rmsnorm+rht q|k|v {dim}", 1, 0, () =>
                rht.Apply(xv, 0, xin, dim, dim, 3, transpose: true, RhtEpilogue.Store, w.InputNorm.View, eps, ql.SuQkv.View, dim, stream: s)),
            new($"trellis q|k|v {qDim}+{kvDim}+{kvDim}×{dim}", 3, Bytes(ql.Q, ql.K, ql.V), () =>
            {
                ql.Q.TransformedMatVec(xin.SubView(0, dim), yout.SubView(0, qDim), s);
                ql.K.TransformedMatVec(xin.SubView(dim, dim), yout.SubView(qDim, kvDim), s);
                ql.V.TransformedMatVec(xin.SubView(2L * dim, dim), yout.SubView(qDim + kvDim, kvDim), s);
            }),
            new($"rht q|k|v out", qDim == kvDim ? 1 : 3, 0, () =>
            {
                if (qDim == kvDim)
                {
                    rht.Apply(yout, qDim, qkv.View, qDim, qDim, 3, transpose: false, RhtEpilogue.Store, outSign: ql.SvQkv.View, outStride: qDim, stream: s);
                    return;
                }
                rht.Apply(yout.SubView(0, qDim), 0, q, 0, qDim, 1, false, RhtEpilogue.Store, outSign: ql.Q.OutputSigns, stream: s);
                rht.Apply(yout.SubView(qDim, kvDim), 0, k, 0, kvDim, 1, false, RhtEpilogue.Store, outSign: ql.K.OutputSigns, stream: s);
                rht.Apply(yout.SubView(qDim + kvDim, kvDim), 0, v, 0, kvDim, 1, false, RhtEpilogue.Store, outSign: ql.V.OutputSigns, stream: s);
            }),
        };
        if (ql.QkvBias is { } qkvBias)
        {
            steps.Add(new($"bias q|k|v {qDim}+{kvDim}+{kvDim}", 1, 0, () =>
                device.Get<BiasAdd>().Apply(qkv.View.SubView(0, qDim + (2L * kvDim)), qkvBias.View, 1, qDim + (2 * kvDim), s)));
        }
        steps.AddRange(
        [
            new("rope + kv cache", 1, 0, () => device.Get<Rope>().Apply(q, qDim, k, kvDim, v, kvDim, kc, vc, ropeCos.View, ropeSin.View, 1, position,
                c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, s)),
            new($"attention @{position + 1} positions", 1, 0, () => device.Get<Attention>().Apply(q, qDim, kc, vc, xbv, 1, position,
                c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, s, c.SlidingWindow)),
            new($"rht o in {qDim}", 1, 0, () =>
                rht.Apply(xbv, 0, xin, 0, qDim, 1, transpose: true, RhtEpilogue.Store, inSign: ql.O.InputSigns, stream: s)),
            new($"trellis o {dim}×{qDim}", 1, Bytes(ql.O), () => ql.O.TransformedMatVec(xin.SubView(0, qDim), yout.SubView(0, dim), s)),
            new($"rht o out+residual {dim}", 1, 0, () =>
                rht.Apply(yout, 0, xv, 0, dim, 1, transpose: false, RhtEpilogue.AddInto, outSign: ql.O.OutputSigns, stream: s)),
            new($"rmsnorm+rht gate|up {dim}", 1, 0, () =>
                rht.Apply(xv, 0, xin, dim, dim, 2, transpose: true, RhtEpilogue.Store, w.PostNorm.View, eps, ql.SuGateUp.View, dim, stream: s)),
            new($"trellis gate|up 2×{hidden}×{dim}", 2, Bytes(ql.Gate, ql.Up), () =>
            {
                ql.Gate.TransformedMatVec(xin.SubView(0, dim), yout.SubView(0, hidden), s);
                ql.Up.TransformedMatVec(xin.SubView(dim, dim), yout.SubView(hidden, hidden), s);
            }),
            new($"rht gate|up out+swiglu {hidden}", 1, 0, () =>
                rht.Apply(yout, hidden, hbv, 0, hidden, 2, transpose: false, RhtEpilogue.SwiGlu, outSign: ql.SvGateUp.View, outStride: hidden, stream: s)),
            new($"rht down in {hidden}", 1, 0, () =>
                rht.Apply(hbv, 0, xin, 0, hidden, 1, transpose: true, RhtEpilogue.Store, inSign: ql.Down.InputSigns, stream: s)),
            new($"trellis down {dim}×{hidden}", 1, Bytes(ql.Down), () => ql.Down.TransformedMatVec(xin.SubView(0, hidden), yout.SubView(0, dim), s)),
            new($"rht down out+residual {dim}", 1, 0, () =>
                rht.Apply(yout, 0, xv, 0, dim, 1, transpose: false, RhtEpilogue.AddInto, outSign: ql.Down.OutputSigns, stream: s)),
        ]);
        return steps;
    }
}
