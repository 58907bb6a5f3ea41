using System.Text.Json;
using System.Text.Json.Serialization;
using Qtip.Model.Families;

namespace Qtip.Model.Checkpoint;

/// <summary>RoPE frequency scaling. <c>Type</c> is "default" (none), "linear" or "llama3" (Llama 3.1+).</summary>
public sealed record RopeScaling(string Type, double Factor = 1, double LowFreqFactor = 1, double HighFreqFactor = 4, int OriginalMaxPositionEmbeddings = 8192);

/// <summary>
/// The <c>config.json</c> of a pre-norm decoder (Llama 1/2/3, Mistral, Qwen2: <see cref="ModelFamilies.All"/>; transformers 4
/// and 5 spellings), immutable. The keys every family shares are read here; <see cref="Family"/> (chosen by
/// <c>model_type</c>) reads its own (Mistral's sliding_window, Qwen2's use_sliding_window). Classic keys
/// (<c>rope_theta</c>, <c>rope_scaling</c>, <c>torch_dtype</c>) and transformers 5's <c>rope_parameters</c> and
/// <c>dtype</c> are both read; <c>rope_parameters</c> wins when both are present.
/// </summary>
public sealed record LlamaConfig
{
    public required string ModelType { get; init; }
    public required IReadOnlyList<string> Architectures { get; init; }
    public required int HiddenSize { get; init; }
    public required int IntermediateSize { get; init; }
    public required int NumHiddenLayers { get; init; }
    public required int NumAttentionHeads { get; init; }
    public required int NumKeyValueHeads { get; init; }
    public required int HeadDim { get; init; }
    public required int VocabSize { get; init; }
    public required int MaxPositionEmbeddings { get; init; }
    public required double RmsNormEps { get; init; }
    public required double RopeTheta { get; init; }
    public required RopeScaling RopeScaling { get; init; }

    /// <summary>The family spec (by model_type): the linears, their names, biases and quantization order.</summary>
    [JsonIgnore]
    public ModelFamily Family { get; init; } = LlamaFamily.Spec;

    /// <summary>Sliding-window attention: a query at position i sees keys i − w &lt; j ≤ i; 0 = full causal attention.</summary>
    public int SlidingWindow { get; init; }

    /// <summary>RoPE inverse frequencies (head_dim/2) of this config: θ^(−2i/d), then the rope_scaling rule (linear, llama3).</summary>
    public float[] RopeInverseFrequencies()
    {
        var inv = Qtip.Kernels.Llama.RopeTable.DefaultFrequencies(HeadDim, RopeTheta);
        return RopeScaling.Type switch
        {
            "linear" => Qtip.Kernels.Llama.RopeTable.Linear(inv, RopeScaling.Factor),
            "llama3" => Qtip.Kernels.Llama.RopeTable.Llama3(inv, RopeScaling.Factor, RopeScaling.LowFreqFactor, RopeScaling.HighFreqFactor, RopeScaling.OriginalMaxPositionEmbeddings),
            _ => inv,
        };
    }
    public required bool TieWordEmbeddings { get; init; }
    public required int BosTokenId { get; init; }
    public required IReadOnlyList<int> EosTokenIds { get; init; }
    /// <summary>The checkpoint's stated dtype ("bfloat16", "float16", "float32"), or null.</summary>
    public string? TorchDtype { get; init; }

    /// <summary>Query width: heads × head_dim (the input of o_proj).</summary>
    public int QDim => NumAttentionHeads * HeadDim;

    /// <summary>Key/value width: KV heads × head_dim.</summary>
    public int KvDim => NumKeyValueHeads * HeadDim;

    /// <summary>Reads and validates <c>config.json</c>.</summary>
    public static LlamaConfig Load(string path)
    {
        path = Path.GetFullPath(path);
        InputFiles.RequireRegular(path, "config.json");
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (FileNotFoundException)
        {
            throw new ModelFormatException(path, null, "file not found");
        }
        catch (DirectoryNotFoundException)
        {
            throw new ModelFormatException(path, null, "file not found (no such directory)");
        }
        catch (IOException e)
        {
            throw new ModelFormatException(path, null, $"cannot read: {e.Message}", e);
        }
        catch (UnauthorizedAccessException e)
        {
            throw new ModelFormatException(path, null, $"cannot read: {e.Message}", e);
        }
        return Parse(bytes, path);
    }

    public static LlamaConfig Parse(ReadOnlySpan<byte> json, string path = "config.json")
    {
        using var doc = InputFiles.ParseJson(json.ToArray(), path);
        try
        {
            return Read(doc, path);
        }
        catch (InvalidOperationException e)
        {
            // A JSON string that escapes an unpaired surrogate ("\ud800") cannot become a .NET string.
            throw new ModelFormatException(path, null, $"holds a string that is not valid text: {e.Message}", e);
        }
    }

    private static LlamaConfig Read(JsonDocument doc, string path)
    {
        var r = doc.RootElement;
        if (r.ValueKind != JsonValueKind.Object)
            throw new ModelFormatException(path, null, "not a JSON object");
        var p = new ConfigKeys(r, path);
        string modelType = p.String("model_type") ?? throw Bad(path, "has no \"model_type\"");
        var family = ModelFamilies.Find(modelType)
            ?? throw Bad(path, $"unsupported model_type '{modelType}' (supported: {string.Join(", ", ModelFamilies.All.Select(f => $"'{f.ModelType}'"))})");
        var arch = p.StringArray("architectures");
        if (arch.Count > 0 && !arch.Contains(family.Architecture))
            throw Bad(path, $"unsupported architectures [{string.Join(", ", arch)}] (expected {family.Architecture})");
        string act = p.String("hidden_act") ?? "silu";
        if (act != "silu")
            throw Bad(path, $"unsupported hidden_act '{act}' ({family.Architecture} uses silu)");
        var facts = family.ReadFacts(p);

        int hidden = p.RequiredInt("hidden_size");
        int heads = p.RequiredInt("num_attention_heads");
        if (hidden <= 0)
            throw Bad(path, $"hidden_size must be positive (got {hidden})");
        if (heads <= 0)
            throw Bad(path, $"num_attention_heads must be positive (got {heads})");
        int kvHeads = p.Int("num_key_value_heads") ?? heads;
        int? headDimKey = p.Int("head_dim");
        if (headDimKey is null && hidden % heads != 0)
            throw Bad(path, $"hidden_size {hidden} is not divisible by num_attention_heads {heads}");
        int headDim = headDimKey ?? hidden / heads;
        if (headDim <= 0 || headDim % 2 != 0)
            throw Bad(path, $"head_dim {headDim} must be a positive even number (RoPE rotates pairs)");
        if (kvHeads <= 0 || heads % kvHeads != 0)
            throw Bad(path, $"num_attention_heads {heads} is not divisible by num_key_value_heads {kvHeads}");

        var ropeParams = r.TryGetProperty("rope_parameters", out var rp) && rp.ValueKind == JsonValueKind.Object ? rp : (JsonElement?)null;
        double theta = ropeParams is { } rpe && rpe.TryGetProperty("rope_theta", out var t1) && t1.ValueKind == JsonValueKind.Number
            ? new ConfigKeys(rpe, path).Double("rope_theta")!.Value
            : p.Double("rope_theta") ?? 10000.0;
        var scalingElement = ropeParams ?? (r.TryGetProperty("rope_scaling", out var rs) && rs.ValueKind == JsonValueKind.Object ? rs : null);
        var scaling = ParseScaling(scalingElement, path);

        var eos = new List<int>();
        if (r.TryGetProperty("eos_token_id", out var e))
        {
            if (e.ValueKind == JsonValueKind.Array)
                eos.AddRange(e.EnumerateArray().Select(x => TokenId(x, "eos_token_id", path)));
            else if (e.ValueKind != JsonValueKind.Null)
                eos.Add(TokenId(e, "eos_token_id", path));
        }
        var cfg = new LlamaConfig
        {
            ModelType = modelType,
            Family = family,
            SlidingWindow = facts.SlidingWindow,
            Architectures = arch,
            HiddenSize = hidden,
            IntermediateSize = p.RequiredInt("intermediate_size"),
            NumHiddenLayers = p.RequiredInt("num_hidden_layers"),
            NumAttentionHeads = heads,
            NumKeyValueHeads = kvHeads,
            HeadDim = headDim,
            VocabSize = p.RequiredInt("vocab_size"),
            MaxPositionEmbeddings = p.Int("max_position_embeddings") ?? 2048,
            RmsNormEps = p.Double("rms_norm_eps") ?? 1e-6,
            RopeTheta = theta,
            RopeScaling = scaling,
            TieWordEmbeddings = p.Bool("tie_word_embeddings") ?? false,
            BosTokenId = p.Int("bos_token_id") ?? 1,
            EosTokenIds = eos.Count > 0 ? eos : [2],
            TorchDtype = p.String("dtype") ?? p.String("torch_dtype"),
        };
        foreach (var (name, v) in new[] { ("hidden_size", cfg.HiddenSize), ("intermediate_size", cfg.IntermediateSize), ("num_hidden_layers", cfg.NumHiddenLayers), ("num_attention_heads", heads), ("vocab_size", cfg.VocabSize), ("max_position_embeddings", cfg.MaxPositionEmbeddings) })
        {
            if (v <= 0)
                throw Bad(path, $"{name} must be positive (got {v})");
        }
        CheckValues(cfg, path);
        return cfg;
    }

    /// <summary>Values that would make every result NaN or garbage: refused here rather than reported as ppl NaN.</summary>
    private static void CheckValues(LlamaConfig c, string path)
    {
        if (!(c.RopeTheta > 0) || !double.IsFinite(c.RopeTheta))
            throw Bad(path, $"rope_theta must be a positive number (got {c.RopeTheta})");
        if (!(c.RmsNormEps >= 0) || !double.IsFinite(c.RmsNormEps))
            throw Bad(path, $"rms_norm_eps must be ≥ 0 (got {c.RmsNormEps})");
        var s = c.RopeScaling;
        if (s.Type != "default")
        {
            if (!(s.Factor > 0) || !double.IsFinite(s.Factor))
                throw Bad(path, $"rope scaling '{s.Type}': factor must be positive (got {s.Factor})");
            if (s.Type == "llama3")
            {
                if (!(s.LowFreqFactor > 0) || !(s.HighFreqFactor > s.LowFreqFactor) || !double.IsFinite(s.HighFreqFactor))
                    throw Bad(path, $"rope scaling 'llama3': needs 0 < low_freq_factor < high_freq_factor (got {s.LowFreqFactor}, {s.HighFreqFactor})");
                if (s.OriginalMaxPositionEmbeddings <= 0)
                    throw Bad(path, $"rope scaling 'llama3': original_max_position_embeddings must be positive (got {s.OriginalMaxPositionEmbeddings})");
            }
        }
        if (c.BosTokenId < 0 || c.BosTokenId >= c.VocabSize)
            throw Bad(path, $"bos_token_id {c.BosTokenId} is outside the vocabulary [0, {c.VocabSize})");
        foreach (int id in c.EosTokenIds)
        {
            if (id < 0 || id >= c.VocabSize)
                throw Bad(path, $"eos_token_id {id} is outside the vocabulary [0, {c.VocabSize})");
        }
    }

    private static int TokenId(JsonElement e, string key, string path) =>
        e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out int id)
            ? id
            : throw Bad(path, $"\"{key}\" holds {Shorten(e.GetRawText())}, not an integer token id");

    private static RopeScaling ParseScaling(JsonElement? e, string path)
    {
        if (e is not { } s)
            return new RopeScaling("default");
        string type = (s.TryGetProperty("rope_type", out var rt) && rt.ValueKind == JsonValueKind.String ? rt.GetString()
            : s.TryGetProperty("type", out var ty) && ty.ValueKind == JsonValueKind.String ? ty.GetString() : null) ?? "default";
        var p = new ConfigKeys(s, path);
        return type switch
        {
            "default" => new RopeScaling("default"),
            "linear" => new RopeScaling("linear", p.Double("factor") ?? throw Bad(path, "rope scaling 'linear' has no factor")),
            "llama3" => new RopeScaling("llama3",
                p.Double("factor") ?? throw Bad(path, "rope scaling 'llama3' has no factor"),
                p.Double("low_freq_factor") ?? 1,
                p.Double("high_freq_factor") ?? 4,
                p.Int("original_max_position_embeddings") ?? 8192),
            _ => throw Bad(path, $"unsupported rope scaling type '{type}' (supported: default, linear, llama3)"),
        };
    }

    private static ModelFormatException Bad(string path, string problem) => new(path, null, problem);

    internal static string Shorten(string raw) => raw.Length <= 40 ? raw : raw[..40] + "…";
}

/// <summary>Typed reads of a config.json object; a wrong type is a <see cref="ModelFormatException"/> naming the file and the key.</summary>
public readonly struct ConfigKeys(JsonElement root, string path)
{
    public string? String(string key) =>
        root.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    public bool? Bool(string key) =>
        root.TryGetProperty(key, out var v) && v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : null;

    public int? Int(string key)
    {
        if (!root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null)
            return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out int i))
            throw Bad(path, $"\"{key}\" is {Shorten(v.GetRawText())}, not an integer");
        return i;
    }

    public int RequiredInt(string key) => Int(key) ?? throw Bad(path, $"has no \"{key}\"");

    public double? Double(string key)
    {
        if (!root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null)
            return null;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetDouble(out double d) || !double.IsFinite(d))
            throw Bad(path, $"\"{key}\" is {Shorten(v.GetRawText())}, not a finite number");
        return d;
    }

    /// <summary>True when the key is there and not null.</summary>
    public bool Present(string key) => root.TryGetProperty(key, out var v) && v.ValueKind != JsonValueKind.Null;

    /// <summary>A problem with this config file.</summary>
    public ModelFormatException Bad(string problem) => new(path, null, problem);

    private static ModelFormatException Bad(string path, string problem) => new(path, null, problem);

    private static string Shorten(string raw) => LlamaConfig.Shorten(raw);

    public List<string> StringArray(string key) =>
        root.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Array
            ? v.EnumerateArray().Where(x => x.ValueKind == JsonValueKind.String).Select(x => x.GetString()!).ToList()
            : [];
}
