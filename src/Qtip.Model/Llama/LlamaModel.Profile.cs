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
    /// the "where does the time go" table of <c>qtip bench decode</c>. Requires dense linears. Leaves the KV cache
    /// of layer 0 at <paramref name="position"/> overwritten.
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
        ArrayView<float> xv = x.View, xbv = xb.View, xb2v = xb2.View, hbv = hb.View;
        var q = qkv.View.SubView(0, qDim);
        var k = qkv.View.SubView(qDim, kvDim);
        var v = qkv.View.SubView(qDim + kvDim, kvDim);
        x.MemSetToZero();
        xb.MemSetToZero();
        xb2.MemSetToZero();
        hb.MemSetToZero();
        qkv.MemSetToZero();
        device.Synchronize();
        long Bytes(ILinearLayer l) => l is DenseLinear d ? d.WeightBytes : 0;
        double Time(Action op) => DeviceTimer.MedianSeconds(device, op, iterations) * 1e6;

        var ops = new List<DecodeOpTime>
        {
            new("embedding", 1, Time(() =>
            {
                if (embedHalf is not null)
                    device.Get<Embedding>().Apply(embedHalf.View, c.VocabSize, dim, tokens.View, xv, 1, s);
                else
                    device.Get<Embedding>().Apply(embedFloat!.View, c.VocabSize, dim, tokens.View, xv, 1, s);
            }), 0),
            new($"rmsnorm+residual {dim}", (2 * layerCount) + 1, Time(() => device.Get<RmsNorm>().Apply(xv, xb2v, w.InputNorm.View, xbv, 1, dim, eps, s)), 0),
            new($"q|k|v {qDim + (2 * kvDim)}×{dim}", layerCount, Time(() =>
            {
                if (!TryFusedQkv(w, 1, xbv))
                {
                    w.Q.Forward(xbv, q, 1, s);
                    w.K.Forward(xbv, k, 1, s);
                    w.V.Forward(xbv, v, 1, s);
                }
            }), Bytes(w.Q) + Bytes(w.K) + Bytes(w.V)),
            new("rope + kv cache", layerCount, Time(() => device.Get<Rope>().Apply(q, qDim, k, kvDim, v, kvDim, keyCache[0].View, valueCache[0].View,
                ropeCos.View, ropeSin.View, 1, position, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, s)), 0),
            new($"attention @{position + 1} positions", layerCount, Time(() => device.Get<Attention>().Apply(q, qDim, keyCache[0].View, valueCache[0].View, xbv, 1, position,
                c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, s)), 2L * (position + 1) * kvDim * sizeof(float)),
            new($"o {dim}×{qDim}", layerCount, Time(() => w.O.Forward(xbv, xb2v, 1, s)), Bytes(w.O)),
            new($"gate|up+swiglu 2×{hidden}×{dim}", layerCount, Time(() =>
            {
                if (!TryFusedGateUp(w, 1, xbv, hbv))
                {
                    w.Gate.Forward(xbv, hbv, 1, s);
                    w.Up.Forward(xbv, hb2.View, 1, s);
                    device.Get<SwiGlu>().Apply(hbv, hb2.View, hbv, hidden, s);
                }
            }), Bytes(w.Gate) + Bytes(w.Up)),
            new($"down {dim}×{hidden}", layerCount, Time(() => w.Down.Forward(hbv, xb2v, 1, s)), Bytes(w.Down)),
            new($"lm_head {c.VocabSize}×{dim}", 1, Time(() => lmHead.Forward(xbv, logits.View, 1, s)), Bytes(lmHead)),
            new($"argmax {c.VocabSize}", 1, Time(() => device.Get<Argmax>().Apply(logits.View, c.VocabSize, targets.View, 0, s)), 0),
        };
        return ops;
    }

    /// <summary>Kernel launches of one decode step with dense linears (fused q|k|v and gate|up) and greedy selection.</summary>
    public int DecodeLaunchesPerToken
    {
        get
        {
            int perLayer = 0;
            foreach (var w in layers)
            {
                bool qkvFused = w.Q is DenseLinear q && w.K is DenseLinear k && w.V is DenseLinear v && q.CanFuseWith(k) && q.CanFuseWith(v);
                bool mlpFused = w.Gate is DenseLinear g && w.Up is DenseLinear u && g.CanFuseWith(u);
                perLayer += 2 /* norms */ + (qkvFused ? 1 : 3) + 1 /* rope */ + 1 /* attention */ + 1 /* o */ + (mlpFused ? 1 : 3) + 1 /* down */;
            }
            return 1 /* embedding */ + perLayer + 1 /* final norm */ + 1 /* lm_head */ + 1 /* argmax */;
        }
    }

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
