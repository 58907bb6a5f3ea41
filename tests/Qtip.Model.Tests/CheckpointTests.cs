using System.Text.Json.Nodes;
using Qtip.Model.Checkpoint;
using Xunit;

namespace Qtip.Model.Tests;

/// <summary>config.json parsing and checkpoint-folder validation (sharded index, missing tensors, unsupported configs).</summary>
public sealed class CheckpointTests : IDisposable
{
    private readonly string dir = Fixtures.TempDir("ckpt");

    public void Dispose() => Directory.Delete(dir, recursive: true);

    private static JsonObject NanoConfig() => JsonNode.Parse(File.ReadAllText(Path.Combine(Fixtures.Nano, "config.json")))!.AsObject();

    private string WriteConfig(JsonObject config, string? folder = null)
    {
        folder ??= dir;
        Directory.CreateDirectory(folder);
        var path = Path.Combine(folder, "config.json");
        File.WriteAllText(path, config.ToJsonString());
        return path;
    }

    [Fact]
    public void NanoConfig_Parses()
    {
        var c = LlamaConfig.Load(Path.Combine(Fixtures.Nano, "config.json"));
        Assert.Equal((128, 384, 2, 4, 2, 32, 8192), (c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, c.VocabSize));
        Assert.Equal(1e-5, c.RmsNormEps);
        Assert.Equal(10000.0, c.RopeTheta);
        Assert.Equal("default", c.RopeScaling.Type);
        Assert.False(c.TieWordEmbeddings);
        Assert.Equal((1, 2), (c.BosTokenId, c.EosTokenIds[0]));
        Assert.Equal("bfloat16", c.TorchDtype);
    }

    [Fact]
    public void Llama3Config_ReadsRopeScalingEosListAndTie()
    {
        var cfg = NanoConfig();
        cfg.Remove("rope_parameters");
        cfg["rope_theta"] = 500000.0;
        cfg["rope_scaling"] = JsonNode.Parse("{\"rope_type\":\"llama3\",\"factor\":32.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,\"original_max_position_embeddings\":8192}");
        cfg["eos_token_id"] = JsonNode.Parse("[128001, 128008, 128009]");
        cfg["vocab_size"] = 128256; // the ids must lie in the vocabulary
        cfg["tie_word_embeddings"] = true;
        var c = LlamaConfig.Load(WriteConfig(cfg));
        Assert.Equal(new RopeScaling("llama3", 32, 1, 4, 8192), c.RopeScaling);
        Assert.Equal(500000.0, c.RopeTheta);
        Assert.Equal(new[] { 128001, 128008, 128009 }, c.EosTokenIds);
        Assert.True(c.TieWordEmbeddings);
    }

    [Fact]
    public void Transformers5RopeParameters_WinOverClassicKeys()
    {
        var cfg = NanoConfig();
        cfg["rope_theta"] = 1.0;
        cfg["rope_parameters"] = JsonNode.Parse("{\"rope_theta\":250000.0,\"rope_type\":\"linear\",\"factor\":2.0}");
        var c = LlamaConfig.Load(WriteConfig(cfg));
        Assert.Equal(250000.0, c.RopeTheta);
        Assert.Equal(new RopeScaling("linear", 2), c.RopeScaling);
    }

    [Theory]
    [InlineData("model_type", "\"gpt2\"", "unsupported model_type 'gpt2' (supported: 'llama', 'mistral', 'qwen2')")]
    [InlineData("model_type", "\"mistral\"", "expected MistralForCausalLM")]
    [InlineData("architectures", "[\"GPT2LMHeadModel\"]", "GPT2LMHeadModel")]
    [InlineData("num_key_value_heads", "3", "not divisible by num_key_value_heads 3")]
    [InlineData("hidden_act", "\"gelu\"", "gelu")]
    [InlineData("rope_parameters", "{\"rope_type\":\"yarn\",\"factor\":4.0}", "yarn")]
    [InlineData("hidden_size", "\"big\"", "hidden_size")]
    public void UnsupportedConfig_IsOneClearError(string key, string json, string expected)
    {
        var cfg = NanoConfig();
        cfg[key] = JsonNode.Parse(json);
        var path = WriteConfig(cfg);
        var e = Assert.Throws<ModelFormatException>(() => LlamaConfig.Load(path));
        Assert.Contains("config.json", e.Message, StringComparison.Ordinal);
        Assert.Contains(expected, e.Message, StringComparison.Ordinal);
    }

    /// <summary>Each family's own keys: Mistral's sliding_window (null = full attention), Qwen2's use_sliding_window refused.</summary>
    [Theory]
    [InlineData("mistral", "MistralForCausalLM", "\"sliding_window\": 4096", 4096, null)]
    [InlineData("mistral", "MistralForCausalLM", "\"sliding_window\": null", 0, null)]
    [InlineData("mistral", "MistralForCausalLM", "\"sliding_window\": 0", 0, "sliding_window must be positive or null")]
    [InlineData("mistral", "MistralForCausalLM", "\"sliding_window\": \"wide\"", 0, "\"sliding_window\" is \"wide\", not an integer")]
    [InlineData("qwen2", "Qwen2ForCausalLM", "\"use_sliding_window\": false, \"sliding_window\": 4096", 0, null)]
    [InlineData("qwen2", "Qwen2ForCausalLM", "\"use_sliding_window\": true", 0, "use_sliding_window: true is not supported")]
    [InlineData("qwen2", "Qwen2ForCausalLM", "\"layer_types\": [\"full_attention\", \"sliding_attention\"]", 0, "layer_types holds 'sliding_attention'")]
    [InlineData("llama", "LlamaForCausalLM", "\"attention_bias\": true", 0, "attention_bias / mlp_bias are not supported")]
    public void FamilyKeys_ReadOrOneClearError(string modelType, string architecture, string keys, int window, string? error)
    {
        var cfg = NanoConfig();
        cfg["model_type"] = modelType;
        cfg["architectures"] = new JsonArray(architecture);
        foreach (var (key, value) in JsonNode.Parse("{" + keys + "}")!.AsObject())
            cfg[key] = value?.DeepClone();
        var path = WriteConfig(cfg);
        if (error is null)
        {
            var c = LlamaConfig.Load(path);
            Assert.Equal(modelType, c.Family.ModelType);
            Assert.Equal(window, c.SlidingWindow);
            return;
        }
        var e = Assert.Throws<ModelFormatException>(() => LlamaConfig.Load(path));
        Assert.Contains("config.json", e.Message, StringComparison.Ordinal);
        Assert.Contains(error, e.Message, StringComparison.Ordinal);
    }

    /// <summary>A Qwen2 checkpoint must carry its q/k/v biases: a missing one is named, with its shape.</summary>
    [Fact]
    public void Qwen2_MissingBias_IsNamed()
    {
        var folder = FamilyCheckpoints.Write(Path.Combine(dir, "qwen2"), "qwen2");
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "config.json")))!.AsObject();
        cfg["model_type"] = "llama";
        cfg["architectures"] = new JsonArray("LlamaForCausalLM");
        cfg.Remove("use_sliding_window");
        File.WriteAllText(Path.Combine(folder, "config.json"), cfg.ToJsonString());
        using (var asLlama = LlamaCheckpoint.Open(folder))
            Assert.False(asLlama.Config.Family.HasBiases); // the stored biases are not read as Llama's

        var reduced = new SafeTensorsWriter();
        using (var f = SafeTensorsFile.Open(Path.Combine(folder, "model.safetensors")))
        {
            foreach (var t in f.Tensors.Where(t => t.Name != "model.layers.1.self_attn.v_proj.bias"))
                reduced.AddFrom(f, t.Name);
            reduced.Write(Path.Combine(folder, "model2.safetensors"));
        }
        File.Move(Path.Combine(folder, "model2.safetensors"), Path.Combine(folder, "model.safetensors"), overwrite: true);
        cfg["model_type"] = "qwen2";
        cfg["architectures"] = new JsonArray("Qwen2ForCausalLM");
        File.WriteAllText(Path.Combine(folder, "config.json"), cfg.ToJsonString());
        var e = Assert.Throws<ModelFormatException>(() => LlamaCheckpoint.Open(folder));
        Assert.Contains("model.layers.1.self_attn.v_proj.bias", e.Message, StringComparison.Ordinal);
        Assert.Contains("Qwen2ForCausalLM", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void HiddenNotDivisibleByHeads_IsRejected()
    {
        var cfg = NanoConfig();
        cfg.Remove("head_dim");
        cfg["num_attention_heads"] = 3;
        cfg["num_key_value_heads"] = 3;
        var e = Assert.Throws<ModelFormatException>(() => LlamaConfig.Load(WriteConfig(cfg)));
        Assert.Contains("hidden_size 128 is not divisible by num_attention_heads 3", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void MissingConfigAndFolder_NameThePath()
    {
        var e = Assert.Throws<ModelFormatException>(() => LlamaCheckpoint.Open(Path.Combine(dir, "nothing")));
        Assert.Contains("nothing", e.Message, StringComparison.Ordinal);
        e = Assert.Throws<ModelFormatException>(() => LlamaCheckpoint.Open(dir));
        Assert.Contains("config.json", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Nano_OpensWithAllTensors()
    {
        using var ck = LlamaCheckpoint.Open(Fixtures.Nano);
        Assert.Equal(21, ck.Tensors.Tensors.Count());
        Assert.Equal(2_491_008, ck.ParameterCount);
        Assert.False(ck.TiedEmbeddings);
        Assert.Equal(LlamaNames.LmHead, ck.OutputProjectionName);
    }

    /// <summary>Nano re-written as two shards + index with the lm_head dropped and tie_word_embeddings on (llama-small's layout).</summary>
    private string ShardedTiedCopy(Action<Dictionary<string, string>>? editIndex = null, bool tie = true)
    {
        var folder = Path.Combine(dir, "sharded");
        Directory.CreateDirectory(folder);
        var cfg = NanoConfig();
        cfg["tie_word_embeddings"] = tie;
        WriteConfig(cfg, folder);
        using var src = SafeTensorsFile.Open(Path.Combine(Fixtures.Nano, "model.safetensors"));
        var names = src.Tensors.Select(t => t.Name).Where(n => n != LlamaNames.LmHead).Order(StringComparer.Ordinal).ToList();
        var map = new Dictionary<string, string>();
        for (int s = 0; s < 2; s++)
        {
            var w = new SafeTensorsWriter();
            foreach (var n in names.Where((_, i) => i % 2 == s))
            {
                w.AddFrom(src, n);
                map[n] = $"model-0000{s + 1}-of-00002.safetensors";
            }
            w.Write(Path.Combine(folder, $"model-0000{s + 1}-of-00002.safetensors"));
        }
        editIndex?.Invoke(map);
        var index = new JsonObject { ["metadata"] = new JsonObject(), ["weight_map"] = new JsonObject(map.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)kv.Value))) };
        File.WriteAllText(Path.Combine(folder, TensorStore.IndexFile), index.ToJsonString());
        return folder;
    }

    [Fact]
    public void ShardedTied_LoadsThroughTheIndex()
    {
        using var ck = LlamaCheckpoint.Open(ShardedTiedCopy());
        Assert.Equal(2, ck.Tensors.Files.Count);
        Assert.True(ck.TiedEmbeddings);
        Assert.Equal(LlamaNames.Embedding, ck.OutputProjectionName);
        using var nano = LlamaCheckpoint.Open(Fixtures.Nano);
        Assert.Equal(nano.Tensors.ReadFloat32("model.layers.1.mlp.down_proj.weight"), ck.Tensors.ReadFloat32("model.layers.1.mlp.down_proj.weight"));
    }

    [Fact]
    public void IndexNamesATensorMissingFromItsShard()
    {
        var folder = ShardedTiedCopy(map => map["model.layers.0.self_attn.q_proj.weight"] = map["model.layers.0.self_attn.k_proj.weight"] == "model-00001-of-00002.safetensors"
            ? "model-00002-of-00002.safetensors" : "model-00001-of-00002.safetensors");
        var e = Assert.Throws<ModelFormatException>(() => LlamaCheckpoint.Open(folder));
        Assert.Contains("model.layers.0.self_attn.q_proj.weight", e.Message, StringComparison.Ordinal);
        Assert.Contains("missing from this shard", e.Message, StringComparison.Ordinal);
        Assert.Contains("of-00002.safetensors", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void UntiedConfigWithoutLmHead_IsRejected()
    {
        var e = Assert.Throws<ModelFormatException>(() => LlamaCheckpoint.Open(ShardedTiedCopy(tie: false)));
        Assert.Contains("lm_head.weight", e.Message, StringComparison.Ordinal);
        Assert.Contains("[8192,128]", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void MissingLayerTensor_NamesItAndItsShape()
    {
        var e = Assert.Throws<ModelFormatException>(() => LlamaCheckpoint.Open(ShardedTiedCopy(map => map.Remove("model.layers.1.mlp.up_proj.weight"))));
        Assert.Contains("model.layers.1.mlp.up_proj.weight", e.Message, StringComparison.Ordinal);
        Assert.Contains("[384,128]", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void WrongTensorShape_NamesBothShapes()
    {
        var cfg = NanoConfig();
        cfg["intermediate_size"] = 256;
        var folder = Path.Combine(dir, "shape");
        WriteConfig(cfg, folder);
        File.Copy(Path.Combine(Fixtures.Nano, "model.safetensors"), Path.Combine(folder, "model.safetensors"));
        var e = Assert.Throws<ModelFormatException>(() => LlamaCheckpoint.Open(folder));
        Assert.Contains("[384,128]", e.Message, StringComparison.Ordinal);
        Assert.Contains("[256,128]", e.Message, StringComparison.Ordinal);
    }
}
