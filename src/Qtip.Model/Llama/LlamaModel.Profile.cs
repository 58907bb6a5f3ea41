using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Llama;
using Qtip.Kernels.Runtime;
using Qtip.Model.Checkpoint;

namespace Qtip.Model.Llama;

/// <summary>One op kind of a decode step: how many launches a token makes, and the time of one launch measured alone.</summary>
/// <param name="Op">The op (and its shape).</param>
/// <param name="LaunchesPerToken">Launches of this op per decode step.</param>
/// <param name="MicrosecondsPerLaunch">Median time of one launch, timed over many back-to-back launches of it alone.</param>
/// <param name="BytesPerLaunch">Bytes of weights (or cache) the launch must read, 0 when negligible.</param>
public sealed record DecodeOpTime(string Op, int LaunchesPerToken, double MicrosecondsPerLaunch, long BytesPerLaunch)
{
    public double MicrosecondsPerToken => LaunchesPerToken * MicrosecondsPerLaunch;

    public double GBps => BytesPerLaunch > 0 ? BytesPerLaunch / (MicrosecondsPerLaunch * 1e3) : 0;
}

public sealed partial class LlamaModel
{
    /// <summary>
    /// Times every op kind of a decode step at <paramref name="position"/> alone (layer 0's weights and buffers), for
    /// the "where does the time go" table of <c>qtip bench decode</c>. The ops are those of the decode plan of layer 0
    /// (fused where its linears are dense), counted as if every layer ran like it. Leaves the KV cache of layer 0 at
    /// <paramref name="position"/> overwritten.
    /// </summary>
    public IReadOnlyList<DecodeOpTime> ProfileDecodeOps(int position, int iterations = 50)
    {
        if (position < 0 || position >= MaxContext)
            throw new ArgumentOutOfRangeException(nameof(position), position, $"position outside the KV cache of {MaxContext}");
        var c = Config;
        var s = Stream;
        int dim = c.HiddenSize, qDim = c.QDim, kvDim = c.KvDim, hidden = c.IntermediateSize, layerCount = layers.Length;
        float eps = (float)c.RmsNormEps;
        var w = layers[0];
        var plan = Plan();
        var lp = plan.Layers[0];
        var mv = device.Get<MatVec>();
        ArrayView<float> xv = x.View.SubView(0, dim), xbv = xb.View, xb2v = xb2.View.SubView(0, dim), hbv = hb.View.SubView(0, hidden);
        var q = qkv.View.SubView(0, qDim);
        var k = qkv.View.SubView(qDim, kvDim);
        var v = qkv.View.SubView(qDim + kvDim, kvDim);
        ArrayView<float> kc = keyCache[0].View, vc = valueCache[0].View;
        x.MemSetToZero();
        xb.MemSetToZero();
        xb2.MemSetToZero();
        hb.MemSetToZero();
        qkv.MemSetToZero();
        device.Synchronize();
        long Bytes(ILinearLayer l) => l.WeightBytes;
        double Time(Action op) => DeviceTimer.MedianSeconds(device, op, iterations) * 1e6;
        var ops = new List<DecodeOpTime>();
        void Add(string name, int launches, Action op, long bytes) => ops.Add(new DecodeOpTime(name, launches, Time(op), bytes));
        void Norm(ArrayView<float> weight) => device.Get<RmsNorm>().Apply(xv, xb2v, weight, xbv, 1, dim, eps, s);

        Add("embedding", 1, () => Embed(xv, 1), 0);
        if (lp.QuantizedLaunches > 0)
        {
            // The quantized layer's steps, exactly as the decode step runs them.
            foreach (var step in QuantizedLayerSteps(0, position))
                ops.Add(new DecodeOpTime(step.Op, step.Launches * layerCount, Time(step.Run) / step.Launches, step.Bytes / step.Launches));
            AddHead();
            return ops;
        }
        string qkvShape = $"{qDim + (2 * kvDim)}×{dim}";
        long qkvBytes = Bytes(w.Q) + Bytes(w.K) + Bytes(w.V);
        if (lp.NormQkvRope)
        {
            var (wq, wk, wvw) = ((DenseLinear)w.Q, (DenseLinear)w.K, (DenseLinear)w.V);
            var inputNorm = new InputNorm(w.InputNorm.View, eps);
            Add($"rmsnorm+q|k|v+rope {qkvShape}", layerCount, () =>
            {
                if (wq.Precision == WeightPrecision.Float16)
                    mv.QkvRope(wq.HalfWeights, wk.HalfWeights, wvw.HalfWeights, xv, inputNorm, q, kc, vc, ropeCos.View, ropeSin.View, position, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, dim, s);
                else
                    mv.QkvRope(wq.FloatWeights, wk.FloatWeights, wvw.FloatWeights, xv, inputNorm, q, kc, vc, ropeCos.View, ropeSin.View, position, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, dim, s);
            }, qkvBytes);
        }
        else
        {
            Add($"rmsnorm+residual {dim}", layerCount, () => Norm(w.InputNorm.View), 0);
            Add($"q|k|v {qkvShape}", layerCount, () =>
            {
                ProjectQkv(w, 1, xbv, q, k, v);
            }, qkvBytes);
            Add("rope + kv cache", layerCount, () => device.Get<Rope>().Apply(q, qDim, k, kvDim, v, kvDim, kc, vc,
                ropeCos.View, ropeSin.View, 1, position, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, s), 0);
        }
        Add($"attention @{position + 1} positions", layerCount, () => device.Get<Attention>().Apply(q, qDim, kc, vc, xbv, 1, position,
            c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, s, c.SlidingWindow), 2L * (position + 1) * kvDim * sizeof(float));
        Add(lp.OAdds ? $"o+residual {dim}×{qDim}" : $"o {dim}×{qDim}", layerCount, () => AddInto(w.O, xbv, xv, xb2v), Bytes(w.O));
        string mlpShape = $"2×{hidden}×{dim}";
        if (lp.NormGateUp)
        {
            var (g, u) = ((DenseLinear)w.Gate, (DenseLinear)w.Up);
            var postNorm = new InputNorm(w.PostNorm.View, eps);
            Add($"rmsnorm+gate|up+swiglu {mlpShape}", layerCount, () =>
            {
                if (g.Precision == WeightPrecision.Float16)
                    mv.SwiGluNormed(g.HalfWeights, u.HalfWeights, hidden, xv, postNorm, hbv, dim, s);
                else
                    mv.SwiGluNormed(g.FloatWeights, u.FloatWeights, hidden, xv, postNorm, hbv, dim, s);
            }, Bytes(w.Gate) + Bytes(w.Up));
        }
        else
        {
            Add($"rmsnorm+residual {dim}", layerCount, () => Norm(w.PostNorm.View), 0);
            Add($"gate|up+swiglu {mlpShape}", layerCount, () =>
            {
                GateUpSwiGlu(w, 1, xbv, hbv);
            }, Bytes(w.Gate) + Bytes(w.Up));
        }
        Add(lp.DownAdds ? $"down+residual {dim}×{hidden}" : $"down {dim}×{hidden}", layerCount, () => AddInto(w.Down, hbv, xv, xb2v), Bytes(w.Down));
        AddHead();
        return ops;

        void AddHead()
        {
            if (plan.NormHead)
            {
                var head = (DenseLinear)lmHead;
                var finalNormInput = new InputNorm(finalNorm.View, eps);
                Add($"rmsnorm+lm_head {c.VocabSize}×{dim}", 1, () =>
                {
                    if (head.Precision == WeightPrecision.Float16)
                        mv.ApplyNormed(head.HalfWeights, c.VocabSize, xv, finalNormInput, logits.View, dim, s);
                    else
                        mv.ApplyNormed(head.FloatWeights, c.VocabSize, xv, finalNormInput, logits.View, dim, s);
                }, Bytes(lmHead));
            }
            else
            {
                Add($"rmsnorm+residual {dim}", 1, () => Norm(finalNorm.View), 0);
                Add($"lm_head {c.VocabSize}×{dim}", 1, () => lmHead.Forward(xbv.SubView(0, dim), logits.View, 1, s), Bytes(lmHead));
            }
            Add($"argmax {c.VocabSize}", 1, () => device.Get<Argmax>().Apply(logits.View, c.VocabSize, targets.View, 0, s), 0);
        }
    }

    /// <summary>Kernel launches of one decode step with greedy selection, as <see cref="Decode"/> runs it (a linear that is not dense counted as one launch).</summary>
    public int DecodeLaunchesPerToken => Plan().Launches;

    /// <summary>A config of the given shape for synthetic models (Llama 2 defaults: θ = 10⁴, ε = 10⁻⁵).</summary>
    public static LlamaConfig SyntheticConfig(int layers, int hidden, int intermediate, int heads, int kvHeads, int vocab, bool tied = false) => new()
    {
        ModelType = "llama",
        Architectures = ["LlamaForCausalLM"],
        HiddenSize = hidden,
        IntermediateSize = intermediate,
        NumHiddenLayers = layers,
        NumAttentionHeads = heads,
        NumKeyValueHeads = kvHeads,
        HeadDim = hidden / heads,
        VocabSize = vocab,
        MaxPositionEmbeddings = 4096,
        RmsNormEps = 1e-5,
        RopeTheta = 10000,
        RopeScaling = new RopeScaling("default"),
        TieWordEmbeddings = tied,
        BosTokenId = 1,
        EosTokenIds = [2],
        TorchDtype = "float16",
    };
}
