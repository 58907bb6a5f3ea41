using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels;
using Qtip.Kernels.Llama;
using Qtip.Kernels.Runtime;
using Qtip.Model.Checkpoint;

namespace Qtip.Model.Llama;

/// <summary>
/// A Llama decoder on the device, built from the ops in Qtip.Kernels.Llama. The forward pass
/// (<see cref="Forward"/>) reads top to bottom like the paper's Llama and llama2.c's <c>forward</c>. Every activation
/// buffer and the KV cache are allocated once, for <see cref="MaxPrefillRows"/> rows and <see cref="MaxContext"/>
/// positions. Linears are <see cref="ILinearLayer"/>s and can be replaced one by one (<see cref="SetLinear"/>).
/// A single token without activation taps (a decode step) runs <see cref="Decode"/>, which fuses what one row allows
/// where the linears are dense: the RMSNorms into the products that read them, RoPE and the KV-cache write into q|k|v,
/// the residual adds into o_proj and down_proj (5 launches per layer instead of 8).
/// </summary>
public sealed partial class LlamaModel : IDisposable
{
    private readonly QtipDevice device;
    private readonly Accelerator acc;

    // Weights (shapes in comments; dim = hidden, qDim = heads·headDim, kvDim = kvHeads·headDim).
    private readonly MemoryBuffer1D<ILGPU.Half, Stride1D.Dense>? embedHalf; // (vocab, dim)
    private readonly MemoryBuffer1D<float, Stride1D.Dense>? embedFloat;     // (vocab, dim)
    private readonly DecoderLayer[] layers;
    private readonly MemoryBuffer1D<float, Stride1D.Dense> finalNorm;       // (dim)
    private ILinearLayer lmHead;                                            // (vocab, dim)

    // Activations, rows = up to MaxPrefillRows.
    private readonly MemoryBuffer1D<int, Stride1D.Dense> tokens;   // (rows) input ids; tokens[0] is the decode input
    private readonly MemoryBuffer1D<int, Stride1D.Dense> targets;  // (rows) next ids, for the NLL
    private readonly MemoryBuffer1D<float, Stride1D.Dense> nll;    // (rows)
    private readonly MemoryBuffer1D<float, Stride1D.Dense> x;      // (rows, dim) residual stream
    private readonly MemoryBuffer1D<float, Stride1D.Dense> xb;     // (rows, max(dim, qDim)) normed input / attention output
    private readonly MemoryBuffer1D<float, Stride1D.Dense> xb2;    // (rows, dim) output of o_proj / down_proj
    private readonly MemoryBuffer1D<float, Stride1D.Dense> hb;     // (rows, hidden) gate, then silu(gate)·up
    private readonly MemoryBuffer1D<float, Stride1D.Dense> hb2;    // (rows, hidden) up
    private readonly MemoryBuffer1D<float, Stride1D.Dense> qkv;    // q (rows, qDim) | k (rows, kvDim) | v (rows, kvDim)
    private readonly MemoryBuffer1D<float, Stride1D.Dense> logits; // (rows, vocab)
    private readonly MemoryBuffer1D<float, Stride1D.Dense>[] keyCache;   // per layer (MaxContext, kvDim)
    private readonly MemoryBuffer1D<float, Stride1D.Dense>[] valueCache; // per layer (MaxContext, kvDim)
    private readonly MemoryBuffer1D<float, Stride1D.Dense> ropeCos; // (MaxContext, headDim/2)
    private readonly MemoryBuffer1D<float, Stride1D.Dense> ropeSin; // (MaxContext, headDim/2)
    private readonly int[] hostToken = new int[2]; // [0] the next token, [1] the non-finite logits counted with it
    private DecodePlan? decodePlan; // how a decode step runs each layer; rebuilt after SetLinear

    private LlamaModel(QtipDevice device, LlamaConfig config, ModelOptions options, LlamaCheckpoint? checkpoint,
        MemoryBuffer1D<ILGPU.Half, Stride1D.Dense>? embedHalf, MemoryBuffer1D<float, Stride1D.Dense>? embedFloat,
        DecoderLayer[] layers, MemoryBuffer1D<float, Stride1D.Dense> finalNorm, ILinearLayer lmHead)
    {
        this.device = device;
        acc = device.Accelerator;
        Config = config;
        Checkpoint = checkpoint;
        this.embedHalf = embedHalf;
        this.embedFloat = embedFloat;
        this.layers = layers;
        this.finalNorm = finalNorm;
        this.lmHead = lmHead;
        Precision = options.PrecisionOn(device);

        int attentionLimit = device.Get<Attention>().MaxPositions;
        MaxContext = Math.Min(options.MaxContext ?? Math.Min(config.MaxPositionEmbeddings, 2048), attentionLimit);
        if (options.MaxContext is { } requested && requested > attentionLimit)
            throw new InvalidInputException($"context {requested} exceeds the {attentionLimit} positions that attention fits in shared memory on {device.Name}");
        MaxPrefillRows = Math.Clamp(options.MaxPrefillRows ?? MaxContext, 1, MaxContext);
        int rows = MaxPrefillRows;
        int dim = config.HiddenSize, qDim = config.QDim, kvDim = config.KvDim;
        tokens = acc.Allocate1D<int>(Math.Max(rows, 2)); // decode: [0] the token, [1] the logit check of SelectNext
        targets = acc.Allocate1D<int>(rows);
        nll = acc.Allocate1D<float>(rows);
        x = acc.Allocate1D<float>((long)rows * dim);
        xb = acc.Allocate1D<float>((long)rows * Math.Max(dim, qDim));
        xb2 = acc.Allocate1D<float>((long)rows * dim);
        hb = acc.Allocate1D<float>((long)rows * config.IntermediateSize);
        hb2 = acc.Allocate1D<float>((long)rows * config.IntermediateSize);
        qkv = acc.Allocate1D<float>((long)rows * (qDim + (2 * kvDim)));
        logits = acc.Allocate1D<float>((long)rows * config.VocabSize);
        keyCache = new MemoryBuffer1D<float, Stride1D.Dense>[config.NumHiddenLayers];
        valueCache = new MemoryBuffer1D<float, Stride1D.Dense>[config.NumHiddenLayers];
        for (int l = 0; l < config.NumHiddenLayers; l++)
        {
            keyCache[l] = acc.Allocate1D<float>((long)MaxContext * kvDim);
            valueCache[l] = acc.Allocate1D<float>((long)MaxContext * kvDim);
        }
        var inv = config.RopeInverseFrequencies();
        var (cos, sin) = RopeTable.Build(inv, MaxContext);
        ropeCos = acc.Allocate1D(cos);
        ropeSin = acc.Allocate1D(sin);
    }

    public LlamaConfig Config { get; }

    /// <summary>The checkpoint the weights came from (host access to every tensor by Hugging Face name), or null for a synthetic model.</summary>
    public LlamaCheckpoint? Checkpoint { get; }

    public QtipDevice Device => device;

    public WeightPrecision Precision { get; }

    /// <summary>Positions the KV cache holds.</summary>
    public int MaxContext { get; }

    /// <summary>Rows one prefill call can take.</summary>
    public int MaxPrefillRows { get; }

    /// <summary>The stream all work is enqueued on.</summary>
    public AcceleratorStream Stream => acc.DefaultStream;

    /// <summary>Optional taps on prefill activations (Hessian collection).</summary>
    public IActivationObserver? Observer { get; set; }

    /// <summary>Logits of the last forward: rows×vocab (row 0 only after a decode step or a <see cref="LogitsMode.Last"/> prefill).</summary>
    public ArrayView<float> Logits => logits.View;

    /// <summary>The device token buffer: element 0 is the input of the next decode step (written by argmax/sampling).</summary>
    public ArrayView<int> Tokens => tokens.View;

    /// <summary>Embedding matrix (vocab×dim) on the device in fp16, when <see cref="Precision"/> is Float16.</summary>
    public ArrayView<ILGPU.Half> EmbeddingHalf => embedHalf?.View ?? throw new InvalidOperationException("the embedding is fp32");

    /// <summary>Embedding matrix (vocab×dim) on the device in fp32, when <see cref="Precision"/> is Float32.</summary>
    public ArrayView<float> EmbeddingFloat => embedFloat?.View ?? throw new InvalidOperationException("the embedding is fp16");

    /// <summary>Bytes of weights one decode step reads (linears and the output head; the embedding row is negligible).</summary>
    public long DecodeWeightBytes =>
        layers.Sum(l => l.Linears.Sum(li => li.WeightBytes)) + lmHead.WeightBytes;

    // ---------------------------------------------------------------- loading

    /// <summary>Loads a checkpoint onto the device.</summary>
    public static LlamaModel Load(QtipDevice device, LlamaCheckpoint checkpoint, ModelOptions? options = null)
    {
        options ??= new ModelOptions();
        var c = checkpoint.Config;
        var store = checkpoint.Tensors;
        var p = options.PrecisionOn(device);
        MemoryBuffer1D<ILGPU.Half, Stride1D.Dense>? eh = null;
        MemoryBuffer1D<float, Stride1D.Dense>? ef = null;
        var layerList = new List<DecoderLayer>();
        MemoryBuffer1D<float, Stride1D.Dense>? norm = null;
        ILinearLayer? head = null;
        try
        {
            if (p == WeightPrecision.Float16)
                eh = DenseLinear.UploadHalf(device, DenseLinear.ReadHalfChecked(store, LlamaNames.Embedding));
            else
                ef = FiniteWeights.Upload(device, store, LlamaNames.Embedding);
            for (int l = 0; l < c.NumHiddenLayers; l++)
            {
                var inputNorm = FiniteWeights.Upload(device, store, LlamaNames.InputNorm(l));
                MemoryBuffer1D<float, Stride1D.Dense> postNorm;
                try
                {
                    postNorm = FiniteWeights.Upload(device, store, LlamaNames.PostAttentionNorm(l));
                }
                catch
                {
                    inputNorm.Dispose();
                    throw;
                }
                var lw = new DecoderLayer(l, inputNorm, postNorm);
                layerList.Add(lw);
                foreach (var spec in c.Family.Linears)
                {
                    var (o, i) = spec.Shape(c);
                    ILinearLayer linear = checkpoint.Quip is { } quip
                        ? Quantized.QtipLinear.FromCheckpoint(device, store, quip, spec.WeightName(l), o, i)
                        : DenseLinear.FromCheckpoint(device, store, spec.WeightName(l), p);
                    lw.Linears[(int)spec.Kind] = spec.Bias ? BiasedLinear.FromCheckpoint(device, linear, store, spec.BiasName(l)) : linear;
                }
            }
            norm = FiniteWeights.Upload(device, store, LlamaNames.FinalNorm);
            head = checkpoint.TiedEmbeddings
                ? (eh is not null ? DenseLinear.Wrap(device, eh, c.VocabSize, c.HiddenSize) : DenseLinear.Wrap(device, ef!, c.VocabSize, c.HiddenSize))
                : DenseLinear.FromCheckpoint(device, store, LlamaNames.LmHead, p);
            return new LlamaModel(device, c, options, checkpoint, eh, ef, [.. layerList], norm, head);
        }
        catch
        {
            eh?.Dispose();
            ef?.Dispose();
            foreach (var lw in layerList)
                lw.Dispose();
            norm?.Dispose();
            head?.Dispose();
            throw;
        }
    }

    /// <summary>
    /// A model of <paramref name="config"/>'s shape with seeded random weights generated on the device (no host copy):
    /// linears uniform with variance 1/in, the embedding uniform ±0.5, norms 1, biases (where the family has them)
    /// uniform ±0.5. For speed measurements.
    /// </summary>
    /// <param name="linearFactory">When given, makes each decoder-layer linear (layer, kind, out, in) instead of a dense
    /// random one, e.g. a random quantized linear (the output head stays dense).</param>
    public static LlamaModel CreateRandom(QtipDevice device, LlamaConfig config, ModelOptions options, ulong seed = 1,
        Func<int, LinearKind, int, int, ILinearLayer>? linearFactory = null)
    {
        var fill = device.Get<RandomFill>();
        var a = device.Accelerator;
        var p = options.PrecisionOn(device);
        ulong next = seed;
        MemoryBuffer1D<ILGPU.Half, Stride1D.Dense>? eh = null;
        MemoryBuffer1D<float, Stride1D.Dense>? ef = null;
        long embedCount = (long)config.VocabSize * config.HiddenSize;
        if (p == WeightPrecision.Float16)
        {
            eh = a.Allocate1D<ILGPU.Half>(embedCount);
            fill.Apply(eh.View, next++, 0.5f);
        }
        else
        {
            ef = a.Allocate1D<float>(embedCount);
            fill.Apply(ef.View, next++, 0.5f);
        }
        MemoryBuffer1D<float, Stride1D.Dense> Ones(int n)
        {
            var b = a.Allocate1D<float>(n);
            b.View.CopyFromCPU(Enumerable.Repeat(1f, n).ToArray());
            return b;
        }
        DenseLinear Random(int o, int i)
        {
            float scale = MathF.Sqrt(3f / i);
            if (p == WeightPrecision.Float16)
            {
                var b = a.Allocate1D<ILGPU.Half>((long)o * i);
                fill.Apply(b.View, next++, scale);
                return DenseLinear.Own(device, b, o, i);
            }
            var f = a.Allocate1D<float>((long)o * i);
            fill.Apply(f.View, next++, scale);
            return DenseLinear.Own(device, f, o, i);
        }
        var layerWeights = new DecoderLayer[config.NumHiddenLayers];
        for (int l = 0; l < layerWeights.Length; l++)
        {
            layerWeights[l] = new DecoderLayer(l, Ones(config.HiddenSize), Ones(config.HiddenSize));
            foreach (var spec in config.Family.Linears)
            {
                var (o, i) = spec.Shape(config);
                var linear = linearFactory is not null ? linearFactory(l, spec.Kind, o, i) : Random(o, i);
                if (spec.Bias)
                {
                    var b = a.Allocate1D<float>(o);
                    fill.Apply(b.View, next++, 0.5f);
                    linear = new BiasedLinear(device, linear, b);
                }
                layerWeights[l].Linears[(int)spec.Kind] = linear;
            }
        }
        var head = config.TieWordEmbeddings
            ? (eh is not null ? DenseLinear.Wrap(device, eh, config.VocabSize, config.HiddenSize) : DenseLinear.Wrap(device, ef!, config.VocabSize, config.HiddenSize))
            : Random(config.VocabSize, config.HiddenSize);
        a.Synchronize();
        return new LlamaModel(device, config, options, null, eh, ef, layerWeights, Ones(config.HiddenSize), head);
    }

    // ---------------------------------------------------------------- linears

    /// <summary>The linear <paramref name="kind"/> of decoder layer <paramref name="layer"/> (layer ignored for the output head).</summary>
    public ILinearLayer GetLinear(int layer, LinearKind kind) =>
        kind == LinearKind.LmHead ? lmHead : LayerAt(layer).Linears[(int)kind];

    /// <summary>
    /// Puts <paramref name="replacement"/> in place of a linear (e.g. a quantized layer); its shape must match. The
    /// model owns the replacement from now on; the old layer is disposed unless <paramref name="disposeOld"/> is false.
    /// </summary>
    public void SetLinear(int layer, LinearKind kind, ILinearLayer replacement, bool disposeOld = true)
    {
        var old = GetLinear(layer, kind);
        if (replacement.InFeatures != old.InFeatures || replacement.OutFeatures != old.OutFeatures)
            throw new ArgumentException($"{LlamaNames.Linear(layer, kind)}: replacement is {replacement.OutFeatures}×{replacement.InFeatures}, expected {old.OutFeatures}×{old.InFeatures}", nameof(replacement));
        if (kind == LinearKind.LmHead)
            lmHead = replacement;
        else
            LayerAt(layer).Linears[(int)kind] = replacement;
        decodePlan = null;
        DisposeQuantizedLayers();
        if (disposeOld && !ReferenceEquals(old, replacement))
            old.Dispose();
    }

    /// <summary>Maps a Hugging Face weight name ("model.layers.3.mlp.up_proj.weight", "lm_head.weight") to (layer, kind).</summary>
    public bool TryParseLinearName(string name, out int layer, out LinearKind kind)
    {
        for (layer = 0; layer < layers.Length; layer++)
        {
            foreach (var spec in Config.Family.Linears)
            {
                if (spec.WeightName(layer) == name)
                {
                    kind = spec.Kind;
                    return true;
                }
            }
        }
        layer = 0;
        kind = LinearKind.LmHead;
        return name == LlamaNames.LmHead;
    }

    private DecoderLayer LayerAt(int layer) =>
        (uint)layer < (uint)layers.Length ? layers[layer] : throw new ArgumentOutOfRangeException(nameof(layer), layer, $"the model has {layers.Length} layers");

    // ---------------------------------------------------------------- forward

    /// <summary>
    /// Runs <paramref name="ids"/> at positions pos0.. through the model, filling the KV cache, and computes the logits
    /// <paramref name="mode"/> asks for. With <paramref name="throughLayer"/> ≥ 0 it stops after that decoder layer
    /// (its residual added into x; no logits). Enqueued on <see cref="Stream"/>; read results after it.
    /// </summary>
    public void Prefill(ReadOnlySpan<int> ids, int pos0 = 0, LogitsMode mode = LogitsMode.All, int throughLayer = -1)
    {
        if (ids.Length == 0)
            throw new ArgumentException("no tokens to run", nameof(ids));
        if (ids.Length > MaxPrefillRows)
            throw new ArgumentException($"{ids.Length} tokens exceed the {MaxPrefillRows} rows this model was sized for", nameof(ids));
        if (pos0 < 0 || pos0 + ids.Length > MaxContext)
            throw new ArgumentException($"positions {pos0}..{pos0 + ids.Length - 1} exceed the KV cache of {MaxContext}", nameof(pos0));
        if (throughLayer >= layers.Length)
            throw new ArgumentOutOfRangeException(nameof(throughLayer), throughLayer, $"the model has {layers.Length} layers");
        Embedding.CheckIds(ids, Config.VocabSize);
        ((ArrayView<int>)tokens.View).SubView(0, ids.Length).CopyFromCPU(ids);
        if (ids.Length == 1 && throughLayer < 0 && Observer is null)
            Decode(pos0, mode);
        else
            Forward(ids.Length, pos0, throughLayer >= 0 ? LogitsMode.None : mode, throughLayer, Observer);
    }

    /// <summary>One decode step: the id in <see cref="Tokens"/>[0] at <paramref name="position"/>; logits in row 0.</summary>
    public void DecodeStep(int position)
    {
        if (position < 0 || position >= MaxContext)
            throw new ArgumentOutOfRangeException(nameof(position), position, $"position outside the KV cache of {MaxContext}");
        Decode(position, LogitsMode.Last);
    }

    /// <summary>
    /// The forward pass over rows tokens (in <c>tokens</c>) at positions pos0.., as in the Llama paper / llama2.c: the
    /// embedding, each decoder layer by <see cref="LayerForward.RunLayer"/> (the one layer body, shared with the
    /// layer-streaming quantizer), the final norm and the output head. dim = hidden size, qDim = heads·headDim.
    /// </summary>
    private void Forward(int rows, int pos0, LogitsMode mode, int throughLayer, IActivationObserver? observer)
    {
        var c = Config;
        var s = Stream;
        int dim = c.HiddenSize, qDim = c.QDim;
        float eps = (float)c.RmsNormEps;
        var norm = device.Get<RmsNorm>();
        var view = (MemoryBuffer1D<float, Stride1D.Dense> b, long count) => b.View.SubView(0, count);
        var xv = view(x, (long)rows * dim);
        var xbv = view(xb, (long)rows * Math.Max(dim, qDim));
        var xb2v = view(xb2, (long)rows * dim);

        // x (rows, dim) = embed_tokens[tokens]
        Embed(xv, rows);
        observer?.OnHiddenState(-1, xv, rows, dim, s);

        bool residualPending = false; // xb2 holds the last layer's MLP output, not yet added to x
        var buffers = new LayerBuffers(x.View, xb.View, xb2.View, hb.View, hb2.View, qkv.View);
        for (int l = 0; l < layers.Length; l++)
        {
            // x += xb2 (the previous layer's MLP output) inside the first RMSNorm; attention and MLP; xb2 = this layer's
            // MLP output, added by the next RMSNorm.
            LayerForward.RunLayer(device, c, layers[l], buffers, keyCache[l].View, valueCache[l].View, ropeCos.View, ropeSin.View,
                rows, pos0, residualPending, observer, s);
            residualPending = true;

            if (l == throughLayer)
            {
                // x += xb2, and xb = the next layer's normed input (the input of its q/k/v), then stop.
                var nextNorm = l + 1 < layers.Length ? layers[l + 1].InputNorm : finalNorm;
                norm.Apply(xv, xb2v, nextNorm.View, xbv, rows, dim, eps, s);
                observer?.OnHiddenState(l, xv, rows, dim, s);
                return;
            }
        }

        // x += xb2; xb = rmsnorm(x) ⊙ norm
        norm.Apply(xv, xb2v, finalNorm.View, xbv, rows, dim, eps, s);
        observer?.OnHiddenState(layers.Length - 1, xv, rows, dim, s);
        observer?.OnHiddenState(layers.Length, xbv.SubView(0, (long)rows * dim), rows, dim, s);

        // logits (rows, vocab) = xb·W_headᵀ
        switch (mode)
        {
            case LogitsMode.All:
                lmHead.Forward(xbv, logits.View, rows, s);
                break;
            case LogitsMode.Last:
                lmHead.Forward(xbv.SubView((long)(rows - 1) * dim, dim), logits.View, 1, s);
                break;
        }
    }

    /// <summary>
    /// The forward pass for one token at <paramref name="position"/> (a decode step): the same arithmetic as
    /// <see cref="Forward"/>, with the fusions one row allows where <see cref="Plan"/> finds dense linears. The RMSNorm
    /// before q|k|v, gate|up and the output head runs inside those products (each row computes Σx² of the x it reads);
    /// RoPE and the KV-cache write run inside q|k|v; o_proj and down_proj add their output into x. Where a linear is
    /// not dense (a quantized layer), that step runs as in <see cref="Forward"/>: its output goes to xb2 and the next
    /// RMSNorm kernel adds it into x. No activation taps.
    /// </summary>
    private void Decode(int position, LogitsMode mode)
    {
        var c = Config;
        var s = Stream;
        int dim = c.HiddenSize, qDim = c.QDim, kvDim = c.KvDim, hidden = c.IntermediateSize;
        float eps = (float)c.RmsNormEps;
        var norm = device.Get<RmsNorm>();
        var mv = device.Get<MatVec>();
        var plan = Plan();
        ArrayView<float> xv = x.View.SubView(0, dim), xbv = xb.View.SubView(0, Math.Max(dim, qDim)), xb2v = xb2.View.SubView(0, dim);
        ArrayView<float> hbv = hb.View.SubView(0, hidden);
        var q = qkv.View.SubView(0, qDim);
        var k = qkv.View.SubView(qDim, kvDim);
        var v = qkv.View.SubView(qDim + kvDim, kvDim);

        // x (dim) = embed_tokens[token]
        Embed(xv, 1);

        bool pending = false; // xb2 holds the output of a linear that is not dense, not yet added into x
        for (int l = 0; l < layers.Length; l++)
        {
            var w = layers[l];
            var lp = plan.Layers[l];
            ArrayView<float> kc = keyCache[l].View, vc = valueCache[l].View;
            if (lp.QuantizedLaunches > 0)
            {
                foreach (var step in QuantizedLayerSteps(l, position))
                    step.Run();
                pending = false;
                continue;
            }

            // ---- attention block
            // q = RoPE(x̂·Wqᵀ), cache[position] = (RoPE(x̂·Wkᵀ), x̂·Wvᵀ) with x̂ = rmsnorm(x) ⊙ input_layernorm
            if (lp.NormQkvRope)
            {
                var (wq, wk, wvw) = ((DenseLinear)w.Q, (DenseLinear)w.K, (DenseLinear)w.V);
                var inputNorm = new InputNorm(w.InputNorm.View, eps);
                if (wq.Precision == WeightPrecision.Float16)
                    mv.QkvRope(wq.HalfWeights, wk.HalfWeights, wvw.HalfWeights, xv, inputNorm, q, kc, vc, ropeCos.View, ropeSin.View, position, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, dim, s);
                else
                    mv.QkvRope(wq.FloatWeights, wk.FloatWeights, wvw.FloatWeights, xv, inputNorm, q, kc, vc, ropeCos.View, ropeSin.View, position, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, dim, s);
            }
            else
            {
                norm.Apply(xv, pending ? xb2v : null, w.InputNorm.View, xbv, 1, dim, eps, s);
                ProjectQkv(w, 1, xbv, q, k, v);
                device.Get<Rope>().Apply(q, qDim, k, kvDim, v, kvDim, kc, vc, ropeCos.View, ropeSin.View, 1, position, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, s);
            }

            // xb (qDim) = softmax(q·Kᵀ/√d) · V over positions 0..position (within the sliding window if any)
            device.Get<Attention>().Apply(q, qDim, kc, vc, xbv, 1, position, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, s, c.SlidingWindow);

            // x += xb·Woᵀ
            pending = !AddInto(w.O, xbv, xv, xb2v);

            // ---- MLP block
            // hb (hidden) = silu(x̂·Wgateᵀ) ⊙ (x̂·Wupᵀ) with x̂ = rmsnorm(x) ⊙ post_attention_layernorm
            if (lp.NormGateUp)
            {
                var (g, u) = ((DenseLinear)w.Gate, (DenseLinear)w.Up);
                var postNorm = new InputNorm(w.PostNorm.View, eps);
                if (g.Precision == WeightPrecision.Float16)
                    mv.SwiGluNormed(g.HalfWeights, u.HalfWeights, hidden, xv, postNorm, hbv, dim, s);
                else
                    mv.SwiGluNormed(g.FloatWeights, u.FloatWeights, hidden, xv, postNorm, hbv, dim, s);
            }
            else
            {
                norm.Apply(xv, pending ? xb2v : null, w.PostNorm.View, xbv, 1, dim, eps, s);
                GateUpSwiGlu(w, 1, xbv, hbv);
            }

            // x += hb·Wdownᵀ
            pending = !AddInto(w.Down, hbv, xv, xb2v);
        }

        // logits (vocab) = x̂·W_headᵀ with x̂ = rmsnorm(x) ⊙ norm
        if (plan.NormHead && mode != LogitsMode.None)
        {
            var head = (DenseLinear)lmHead;
            var finalNormInput = new InputNorm(finalNorm.View, eps);
            if (head.Precision == WeightPrecision.Float16)
                mv.ApplyNormed(head.HalfWeights, c.VocabSize, xv, finalNormInput, logits.View, dim, s);
            else
                mv.ApplyNormed(head.FloatWeights, c.VocabSize, xv, finalNormInput, logits.View, dim, s);
        }
        else if (!plan.NormHead)
        {
            norm.Apply(xv, pending ? xb2v : null, finalNorm.View, xbv, 1, dim, eps, s);
            if (mode != LogitsMode.None)
                lmHead.Forward(xbv.SubView(0, dim), logits.View, 1, s);
        }
    }

    /// <summary>x (dim) += input · Wᵀ in one launch when the linear is dense (true); otherwise xb2 = input · Wᵀ, to be added by the next RMSNorm (false).</summary>
    private bool AddInto(ILinearLayer linear, ArrayView<float> input, ArrayView<float> xv, ArrayView<float> xb2v)
    {
        if (linear is not DenseLinear d)
        {
            linear.Forward(input, xb2v, 1, Stream);
            return false;
        }
        var mv = device.Get<MatVec>();
        if (d.Precision == WeightPrecision.Float16)
            mv.AddTo(d.HalfWeights, d.OutFeatures, input.SubView(0, d.InFeatures), xv, d.InFeatures, Stream);
        else
            mv.AddTo(d.FloatWeights, d.OutFeatures, input.SubView(0, d.InFeatures), xv, d.InFeatures, Stream);
        return true;
    }

    private void Embed(ArrayView<float> xv, int rows)
    {
        if (embedHalf is not null)
            device.Get<Embedding>().Apply(embedHalf.View, Config.VocabSize, Config.HiddenSize, tokens.View, xv, rows, Stream);
        else
            device.Get<Embedding>().Apply(embedFloat!.View, Config.VocabSize, Config.HiddenSize, tokens.View, xv, rows, Stream);
    }

    /// <summary>How a decode step runs one decoder layer: which fusions its linears allow.</summary>
    /// <param name="NormQkvRope">q, k, v dense and fusable, and x complete (the previous down_proj added itself): input norm, q|k|v, RoPE and cache write in one launch.</param>
    /// <param name="FusedQkv">Otherwise: q|k|v as one launch (dense, fusable) after an RMSNorm launch, then the RoPE launch.</param>
    /// <param name="OAdds">o_proj dense: it adds its output into x.</param>
    /// <param name="NormGateUp">gate, up dense and fusable, and o_proj added itself: post-attention norm, gate|up and SwiGLU in one launch.</param>
    /// <param name="FusedGateUp">Otherwise: gate|up+SwiGLU as one launch (dense, fusable) after an RMSNorm launch.</param>
    /// <param name="DownAdds">down_proj dense: it adds its output into x.</param>
    /// <param name="ExtraLaunches">Launches beyond one of the linears that run on their own (<see cref="ILinearLayer.DecodeLaunches"/> − 1 each).</param>
    /// <param name="QuantizedLaunches">When &gt; 0, the layer runs the fused quantized decode (<see cref="QuantizedLayerSteps"/>) in this many launches.</param>
    internal readonly record struct LayerDecode(bool NormQkvRope, bool FusedQkv, bool OAdds, bool NormGateUp, bool FusedGateUp, bool DownAdds, int ExtraLaunches = 0,
        int QuantizedLaunches = 0)
    {
        /// <summary>Launches of this layer in a decode step.</summary>
        public int Launches => QuantizedLaunches > 0 ? QuantizedLaunches :
            (NormQkvRope ? 1 : 1 + (FusedQkv ? 1 : 3) + 1) + 1 /* attention */ + 1 /* o */ + (NormGateUp ? 1 : 1 + (FusedGateUp ? 1 : 3)) + 1 /* down */ + ExtraLaunches;
    }

    /// <summary>A decode step's plan: one entry per layer, and whether the final norm runs inside the output head.</summary>
    internal sealed record DecodePlan(LayerDecode[] Layers, bool NormHead)
    {
        /// <summary>Launches of a decode step with greedy selection: embedding, the layers, the head (+ its norm), argmax.</summary>
        public int Launches => 1 + Layers.Sum(l => l.Launches) + (NormHead ? 1 : 2) + 1 + HeadExtraLaunches;

        /// <summary>Launches of the output head beyond one when it is not dense.</summary>
        public int HeadExtraLaunches { get; init; }
    }

    /// <summary>The decode plan of the current linears (cached; <see cref="SetLinear"/> resets it).</summary>
    internal DecodePlan Plan()
    {
        if (decodePlan is { } cached)
            return cached;
        var result = new LayerDecode[layers.Length];
        bool complete = true; // x holds the whole residual stream when the layer starts (the last down_proj added itself)
        for (int l = 0; l < layers.Length; l++)
        {
            var w = layers[l];
            if (complete && QuantizedFusable(l))
            {
                // Quantized layer: input RHTs with the norms, output RHTs with RoPE's input, the residual adds and SwiGLU.
                result[l] = new LayerDecode(false, false, true, false, false, true, QuantizedLaunches: QuantizedLayerLaunches(l));
                continue;
            }
            bool qkvFusable = w.Q is DenseLinear q && w.K is DenseLinear k && w.V is DenseLinear v && q.CanFuseWith(k) && q.CanFuseWith(v);
            bool mlpFusable = w.Gate is DenseLinear g && w.Up is DenseLinear u && g.CanFuseWith(u) && g.OutFeatures == u.OutFeatures;
            bool oAdds = w.O is DenseLinear;
            bool downAdds = w.Down is DenseLinear;
            int extra = (qkvFusable ? 0 : w.Q.DecodeLaunches + w.K.DecodeLaunches + w.V.DecodeLaunches - 3)
                + (oAdds ? 0 : w.O.DecodeLaunches - 1)
                + (mlpFusable ? 0 : w.Gate.DecodeLaunches + w.Up.DecodeLaunches - 2)
                + (downAdds ? 0 : w.Down.DecodeLaunches - 1);
            result[l] = new LayerDecode(complete && qkvFusable, qkvFusable, oAdds, oAdds && mlpFusable, mlpFusable, downAdds, extra);
            complete = downAdds;
        }
        decodePlan = new DecodePlan(result, complete && lmHead is DenseLinear) { HeadExtraLaunches = lmHead is DenseLinear ? 0 : lmHead.DecodeLaunches - 1 };
        return decodePlan;
    }

    private void ProjectQkv(DecoderLayer w, int rows, ArrayView<float> input, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v) =>
        LayerForward.ProjectQkv(device, w, rows, input, qkv.View, q, k, v, Stream);

    private void GateUpSwiGlu(DecoderLayer w, int rows, ArrayView<float> input, ArrayView<float> hbv) =>
        LayerForward.GateUpSwiGlu(device, w, rows, input, hbv, hb2.View, Stream);

    // ---------------------------------------------------------------- scoring and selection

    /// <summary>
    /// Scores one evaluation window: the NLL of window[t] given window[..t] for t = 1..n−1, summed in double.
    /// Returns (sum of NLL, count).
    /// </summary>
    public (double Sum, int Count) WindowNll(ReadOnlySpan<int> window)
    {
        if (window.Length < 2)
            throw new ArgumentException("a window needs at least 2 tokens", nameof(window));
        Prefill(window, 0, LogitsMode.All);
        int n = window.Length - 1;
        ((ArrayView<int>)targets.View).SubView(0, n).CopyFromCPU(window[1..]);
        device.Get<CrossEntropy>().Apply(logits.View, targets.View, nll.View, n, Config.VocabSize, Stream);
        var host = new float[n];
        ((ArrayView<float>)nll.View).SubView(0, n).CopyToCPU(host);
        double sum = 0;
        foreach (float f in host)
            sum += f;
        return (sum, n);
    }

    /// <summary>Picks the next id from logits row 0 into <see cref="Tokens"/>[0] (argmax when temperature is 0, else a
    /// seeded draw with uniform <paramref name="u"/>) and counts that row's NaN/±∞
    /// logits into Tokens[1], both on the stream: <see cref="ReadNextToken"/> reads the two with one copy, so the check
    /// costs a launch per token, not a synchronisation.</summary>
    public void SelectNext(float temperature, int topK, float topP, float u)
    {
        device.Get<Qtip.Kernels.Trellis.FiniteCheck>().EnqueueCount(logits.View.SubView(0, Config.VocabSize), Config.VocabSize,
            tokens.View.SubView(1, 1), Stream);
        if (temperature <= 0)
            device.Get<Argmax>().Apply(logits.View, Config.VocabSize, tokens.View, 0, Stream);
        else
            device.Get<Sample>().Apply(logits.View, Config.VocabSize, temperature, topK, topP, u, tokens.View, 0, Stream);
    }

    /// <summary>Reads <see cref="Tokens"/>[0] to the host (waits for the stream), with the non-finite logit count of the
    /// same <see cref="SelectNext"/> in <see cref="LastNonFiniteLogits"/>.</summary>
    public int ReadNextToken()
    {
        ((ArrayView<int>)tokens.View).SubView(0, 2).CopyToCPU(hostToken);
        return hostToken[0];
    }

    /// <summary>NaN/±∞ logits in the row the last <see cref="SelectNext"/> chose from (read by <see cref="ReadNextToken"/>).</summary>
    public int LastNonFiniteLogits => hostToken[1];

    /// <summary>Copies logits row <paramref name="row"/> to the host.</summary>
    public float[] ReadLogits(int row = 0)
    {
        var host = new float[Config.VocabSize];
        ((ArrayView<float>)logits.View).SubView((long)row * Config.VocabSize, Config.VocabSize).CopyToCPU(host);
        return host;
    }

    public void Dispose()
    {
        DisposeQuantizedLayers();
        rhtIn?.Dispose();
        rhtOut?.Dispose();
        foreach (var l in layers)
            l.Dispose();
        lmHead.Dispose();
        embedHalf?.Dispose();
        embedFloat?.Dispose();
        finalNorm.Dispose();
        foreach (var b in new MemoryBuffer[] { tokens, targets, nll, x, xb, xb2, hb, hb2, qkv, logits, ropeCos, ropeSin })
            b.Dispose();
        foreach (var b in keyCache.Concat(valueCache))
            b.Dispose();
    }
}
