using Qtip.Model.Families;

namespace Qtip.Model.Checkpoint;

/// <summary>Which linear of a decoder layer (or the output head).</summary>
public enum LinearKind
{
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
    LmHead,
}

/// <summary>
/// Hugging Face tensor names of the pre-norm decoder checkpoints (the same for every family in
/// <see cref="ModelFamilies.All"/>); the decoder-layer linears come from the family spec.
/// </summary>
public static class LlamaNames
{
    public const string Embedding = "model.embed_tokens.weight";
    public const string FinalNorm = "model.norm.weight";
    public const string LmHead = "lm_head.weight";

    public static string InputNorm(int layer) => $"model.layers.{layer}.input_layernorm.weight";

    public static string PostAttentionNorm(int layer) => $"model.layers.{layer}.post_attention_layernorm.weight";

    /// <summary>The weight name of a linear; <paramref name="layer"/> is ignored for <see cref="LinearKind.LmHead"/>.</summary>
    public static string Linear(int layer, LinearKind kind) =>
        kind == LinearKind.LmHead ? LmHead : LlamaFamily.Spec.Linear(kind).WeightName(layer);

    /// <summary>"model.layers.3.self_attn.q_proj" for "model.layers.3.self_attn.q_proj.weight": the prefix of a quantized linear's tensors.</summary>
    public static string QuantizedPrefix(string weightName) =>
        weightName.EndsWith(".weight", StringComparison.Ordinal) ? weightName[..^".weight".Length] : weightName;

    /// <summary>[out, in] of a linear weight.</summary>
    public static (int Out, int In) LinearShape(LlamaConfig c, LinearKind kind) =>
        kind == LinearKind.LmHead ? (c.VocabSize, c.HiddenSize) : c.Family.Linear(kind).Shape(c);

}

/// <summary>
/// A Hugging Face checkpoint folder of a pre-norm decoder family (Llama, Mistral, Qwen2): <c>config.json</c>, the
/// safetensors weights (single or sharded) and the tokenizer files. Opening checks that every tensor the family spec
/// (<see cref="LlamaConfig.Family"/>) names for this config is present with the right shape and a float dtype (F32,
/// F16, BF16), biases included (unquantized in a QTIP checkpoint too); with tied embeddings (or no <c>lm_head.weight</c> and
/// <c>tie_word_embeddings</c>) the embedding is the output projection.
/// </summary>
public sealed class LlamaCheckpoint : IDisposable
{
    private LlamaCheckpoint(string folder, LlamaConfig config, TensorStore tensors, QuipParams? quip)
    {
        Folder = folder;
        Config = config;
        Tensors = tensors;
        Quip = quip;
    }

    /// <summary>The QTIP quantization of the decoder linears (config.json's quip_params), or null for a dense checkpoint.</summary>
    public QuipParams? Quip { get; }

    public string Folder { get; }

    public LlamaConfig Config { get; }

    /// <summary>The loaded tensors by Hugging Face name.</summary>
    public TensorStore Tensors { get; }

    /// <summary>True when the output projection is the embedding matrix (no <c>lm_head.weight</c> stored).</summary>
    public bool TiedEmbeddings => !Tensors.Contains(LlamaNames.LmHead);

    /// <summary>The tensor name of the output projection: <c>lm_head.weight</c>, or the embedding when tied.</summary>
    public string OutputProjectionName => TiedEmbeddings ? LlamaNames.Embedding : LlamaNames.LmHead;

    /// <summary>Total number of parameters stored.</summary>
    public long ParameterCount => Tensors.Tensors.Sum(t => t.ElementCount);

    public static LlamaCheckpoint Open(string folder)
    {
        folder = Path.GetFullPath(folder);
        if (!Directory.Exists(folder))
            throw new ModelFormatException(folder, null, "model folder not found");
        var config = LlamaConfig.Load(Path.Combine(folder, "config.json"));
        var quip = QuipParams.Read(Path.Combine(folder, "config.json"));
        var store = TensorStore.Open(folder);
        try
        {
            Validate(config, store, quip);
            return new LlamaCheckpoint(folder, config, store, quip);
        }
        catch
        {
            store.Dispose();
            throw;
        }
    }

    private static void Validate(LlamaConfig c, TensorStore store, QuipParams? quip)
    {
        void Expect(string name, params long[] shape) => ExpectTyped(name, null, shape);

        void ExpectTyped(string name, SafeTensorsDType? dtype, params long[] shape)
        {
            if (!store.Contains(name))
                throw new ModelFormatException(store.Files.Count == 1 ? store.Files[0].Path : Path.GetDirectoryName(store.Files[0].Path)!, name,
                    $"missing: a {c.Family.Architecture} with this config.json needs it, shape {TensorInfo.ShapeString(shape)}");
            var t = store.Info(name);
            if (dtype is { } d ? t.DType != d : !t.DType.IsWeightFloat())
                throw new ModelFormatException(t.File, name, $"dtype {t.DType.Name()} {t.ShapeText}: expected {(dtype is { } e ? e.Name() : "F32, F16 or BF16")}");
            if (!t.Shape.SequenceEqual(shape))
                throw new ModelFormatException(t.File, name, $"shape {t.ShapeText}, but config.json implies {TensorInfo.ShapeString(shape)}");
        }

        void ExpectLinear(int layer, LinearSpec spec)
        {
            var (o, i) = spec.Shape(c);
            string name = spec.WeightName(layer);
            if (spec.Bias)
                Expect(spec.BiasName(layer), o);
            if (quip is null)
            {
                Expect(name, o, i);
                return;
            }
            string prefix = LlamaNames.QuantizedPrefix(name);
            if (o % 16 != 0 || i % 16 != 0)
                throw new ModelFormatException(store.Files[0].Path, name, $"quantized linear {o}×{i} is not made of 16×16 tiles");
            foreach (var (suffix, dtype, shape) in Quantized.QtipFormat.LinearTensors(quip, o, i))
                ExpectTyped(prefix + suffix, dtype, shape);
        }

        Expect(LlamaNames.Embedding, c.VocabSize, c.HiddenSize);
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            Expect(LlamaNames.InputNorm(l), c.HiddenSize);
            Expect(LlamaNames.PostAttentionNorm(l), c.HiddenSize);
            foreach (var spec in c.Family.Linears)
                ExpectLinear(l, spec);
        }
        Expect(LlamaNames.FinalNorm, c.HiddenSize);
        if (store.Contains(LlamaNames.LmHead))
            Expect(LlamaNames.LmHead, c.VocabSize, c.HiddenSize);
        else if (!c.TieWordEmbeddings)
            throw new ModelFormatException(store.Files[0].Path, LlamaNames.LmHead,
                $"missing, and config.json does not tie the embeddings (tie_word_embeddings is false); expected shape [{c.VocabSize},{c.HiddenSize}]");
    }

    public void Dispose() => Tensors.Dispose();
}
