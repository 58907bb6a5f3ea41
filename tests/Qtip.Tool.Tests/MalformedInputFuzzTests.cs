using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Qtip.Model.Checkpoint;
using Qtip.Testing;
using Xunit;

namespace Qtip.Tool.Tests;

/// <summary>
/// Malformed inputs built in code from llama-nano and from a synthetic QTIP-quantized nano (random trellis words,
/// 1MAD, L = 8), each in its own temporary folder whose unchanged files are symlinks to the originals. Every case runs
/// the CLI in-process and must end with its documented exit code and one line naming the problem, with nothing
/// written: the folder's listing (names, sizes, link targets) is the same after the run as before. These are the
/// cases of issue 11's fuzz run (stack traces, wrong exit codes, NaN results, hangs, destroyed inputs) and more.
/// </summary>
public sealed class MalformedInputFuzzTests(MalformedInputFuzzTests.Models models) : IClassFixture<MalformedInputFuzzTests.Models>
{
    private const int BadInput = 3;
    private const int Usage = 1;

    /// <summary>The temporary root and the two base models (llama-nano, and the synthetic quantized nano).</summary>
    public sealed class Models : IDisposable
    {
        public Models()
        {
            Root = Path.Combine(Path.GetTempPath(), $"qtip-fuzz-{Environment.ProcessId}-{Guid.NewGuid():N}");
            Directory.CreateDirectory(Root);
            Quantized = Path.Combine(Root, "base-q");
            WriteQuantizedNano(Quantized, lut: false);
            QuantizedLut = Path.Combine(Root, "base-q-lut");
            WriteQuantizedNano(QuantizedLut, lut: true);
        }

        public string Root { get; }

        public string Quantized { get; }

        public string QuantizedLut { get; }

        public void Dispose() => Directory.Delete(Root, recursive: true);
    }

    private static readonly string Repo = TestData.RepoRoot();
    private static readonly string Nano = Path.Combine(Repo, "models", "llama-nano");
    private static readonly string Valid = Path.Combine(Repo, "data", "corpus", "valid.txt");
    private static readonly string Calib = Path.Combine(Repo, "data", "corpus", "calib.txt");

    /// <summary>A QTIP checkpoint of nano's shape: nano's embedding, norms and head; random 1MAD (or LUT) trellis words.</summary>
    private static void WriteQuantizedNano(string dir, bool lut)
    {
        Directory.CreateDirectory(dir);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(Nano, "config.json")))!.AsObject();
        var c = LlamaConfig.Load(Path.Combine(Nano, "config.json"));
        const int k = 2, l = 8;
        config["quip_params"] = new JsonObject
        {
            ["codebook"] = "bitshift", ["L"] = l, ["K"] = k, ["V"] = 1, ["tlut_bits"] = lut ? l : 0,
            ["decode_mode"] = lut ? "lut" : "1mad", ["td_x"] = 16, ["td_y"] = 16,
        };
        config["quantization_config"] = new JsonObject
        {
            ["quant_method"] = "qtip", ["code"] = lut ? "lut" : "1mad", ["K"] = k, ["L"] = l, ["V"] = 1, ["tool"] = "qtip 0.1.0",
        };
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        foreach (var f in new[] { "tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json" })
            File.Copy(Path.Combine(Nano, f), Path.Combine(dir, f));
        using var nano = SafeTensorsFile.Open(Path.Combine(Nano, "model.safetensors"));
        var w = new SafeTensorsWriter();
        w.Metadata["format"] = "pt";
        var linears = new HashSet<string>(StringComparer.Ordinal);
        for (int layer = 0; layer < c.NumHiddenLayers; layer++)
        {
            foreach (var spec in c.Family.Linears)
                linears.Add(spec.WeightName(layer));
        }
        foreach (var t in nano.Tensors.Where(t => !linears.Contains(t.Name)).OrderBy(t => t.Name, StringComparer.Ordinal))
            w.AddFrom(nano, t.Name);
        var rng = new Random(11);
        for (int layer = 0; layer < c.NumHiddenLayers; layer++)
        {
            foreach (var spec in c.Family.Linears)
            {
                var (m, n) = spec.Shape(c);
                string prefix = LlamaNames.QuantizedPrefix(spec.WeightName(layer));
                var words = new short[(m / 16) * (n / 16) * 16 * k];
                for (int i = 0; i < words.Length; i++)
                    words[i] = (short)rng.Next(short.MinValue, short.MaxValue + 1);
                w.AddInt16(prefix + ".trellis", words, [(m / 16) * (n / 16), 16 * k]);
                w.AddFloat32(prefix + ".SU", Enumerable.Range(0, n).Select(_ => rng.Next(2) == 0 ? -1f : 1f).ToArray(), [n], SafeTensorsDType.BF16);
                w.AddFloat32(prefix + ".SV", Enumerable.Repeat(0.02f, m).ToArray(), [m]);
                if (lut)
                    w.AddFloat32(prefix + ".tlut", Enumerable.Range(0, 1 << l).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray(), [1 << l, 1]);
                w.AddInt64(prefix + ".rcp", [0L], []);
                w.AddInt64(prefix + ".tp_rank", [8L], []);
            }
        }
        w.Write(Path.Combine(dir, "model.safetensors"));
    }

    // ------------------------------------------------------------------ the case folder

    /// <summary>One case's folder: <see cref="Model"/> holds symlinks to the base model's files until a case replaces one.</summary>
    private sealed class CaseDir
    {
        public CaseDir(string root, string name, string baseModel)
        {
            Dir = Path.Combine(root, $"{name}-{Guid.NewGuid():N}"[..Math.Min(name.Length + 9, 60)]);
            Model = Path.Combine(Dir, "model");
            Directory.CreateDirectory(Model);
            Base = baseModel;
            foreach (var f in Directory.GetFiles(baseModel))
                File.CreateSymbolicLink(Path.Combine(Model, Path.GetFileName(f)), f);
        }

        public string Dir { get; }

        public string Model { get; }

        public string Base { get; }

        public string Path_(string name) => Path.Combine(Dir, name);

        public string File_(string name) => Path.Combine(Model, name);

        /// <summary>Replaces a model file (a symlink) by <paramref name="bytes"/>.</summary>
        public void Write(string name, byte[] bytes)
        {
            File.Delete(File_(name));
            File.WriteAllBytes(File_(name), bytes);
        }

        public void Write(string name, string text) => Write(name, Encoding.UTF8.GetBytes(text));

        public byte[] Read(string name) => File.ReadAllBytes(File_(name));

        public void Delete(string name) => File.Delete(File_(name));

        public void Config(Action<JsonObject> edit)
        {
            var c = JsonNode.Parse(File.ReadAllText(File_("config.json")))!.AsObject();
            edit(c);
            Write("config.json", c.ToJsonString());
        }

        public void QuipParams(Action<JsonObject> edit) => Config(c => edit(c["quip_params"]!.AsObject()));

        /// <summary>Rewrites model.safetensors with an edited header (the data section unchanged).</summary>
        public void Header(Action<JsonObject> edit)
        {
            var (header, data) = Split(Read("model.safetensors"));
            var h = JsonNode.Parse(header)!.AsObject();
            edit(h);
            Write("model.safetensors", Join(Encoding.UTF8.GetBytes(h.ToJsonString()), data));
        }

        /// <summary>Rewrites model.safetensors with raw header bytes.</summary>
        public void HeaderBytes(Func<byte[], byte[]> edit)
        {
            var (header, data) = Split(Read("model.safetensors"));
            Write("model.safetensors", Join(edit(header), data));
        }

        /// <summary>Sets element <paramref name="index"/> of a BF16/F32 tensor to <paramref name="value"/>.</summary>
        public void Element(string tensor, long index, float value)
        {
            var bytes = Read("model.safetensors");
            var (header, _) = Split(bytes);
            var t = JsonNode.Parse(header)![tensor]!;
            long begin = 8 + header.Length + t["data_offsets"]![0]!.GetValue<long>();
            switch (t["dtype"]!.GetValue<string>())
            {
                case "BF16":
                    BitConverter.TryWriteBytes(bytes.AsSpan((int)(begin + (2 * index)), 2), BFloat16.FromSingle(value));
                    break;
                case "F32":
                    BitConverter.TryWriteBytes(bytes.AsSpan((int)(begin + (4 * index)), 4), value);
                    break;
                default:
                    throw new InvalidOperationException($"{tensor}: dtype {t["dtype"]}");
            }
            Write("model.safetensors", bytes);
        }

        /// <summary>Sets every element of a BF16/F32 tensor to <paramref name="value"/>.</summary>
        public void Fill(string tensor, float value)
        {
            var bytes = Read("model.safetensors");
            var (header, _) = Split(bytes);
            var t = JsonNode.Parse(header)![tensor]!;
            long begin = 8 + header.Length + t["data_offsets"]![0]!.GetValue<long>();
            long end = 8 + header.Length + t["data_offsets"]![1]!.GetValue<long>();
            bool bf16 = t["dtype"]!.GetValue<string>() == "BF16";
            for (long p = begin; p < end; p += bf16 ? 2 : 4)
            {
                if (bf16)
                    BitConverter.TryWriteBytes(bytes.AsSpan((int)p, 2), BFloat16.FromSingle(value));
                else
                    BitConverter.TryWriteBytes(bytes.AsSpan((int)p, 4), value);
            }
            Write("model.safetensors", bytes);
        }

        /// <summary>Replaces a model file by a FIFO (Linux and macOS: <c>mkfifo</c>).</summary>
        public void Fifo(string path)
        {
            if (Path.Exists(path) || new FileInfo(path).LinkTarget is not null)
                File.Delete(path);
            MakeFifo(path);
        }

        private static (byte[] Header, byte[] Data) Split(byte[] file)
        {
            long n = BitConverter.ToInt64(file, 0);
            return (file.AsSpan(8, (int)n).ToArray(), file.AsSpan(8 + (int)n).ToArray());
        }

        private static byte[] Join(byte[] header, byte[] data)
        {
            var result = new byte[8 + header.Length + data.Length];
            BitConverter.TryWriteBytes(result.AsSpan(0, 8), (long)header.Length);
            header.CopyTo(result, 8);
            data.CopyTo(result, 8 + header.Length);
            return result;
        }
    }

    private static void MakeFifo(string path)
    {
        Assert.SkipUnless(OperatingSystem.IsLinux() || OperatingSystem.IsMacOS(), "FIFOs need mkfifo");
        using var p = Process.Start(new ProcessStartInfo("mkfifo", [path]) { UseShellExecute = false })!;
        p.WaitForExit();
        Assert.Equal(0, p.ExitCode);
    }

    /// <summary>Names, kinds, sizes and link targets under <paramref name="dir"/>, sorted: equal listings mean nothing was written.</summary>
    private static List<string> Listing(string dir) =>
        new DirectoryInfo(dir).EnumerateFileSystemInfos("*", SearchOption.AllDirectories)
            .Select(f => $"{Path.GetRelativePath(dir, f.FullName)} {(f.LinkTarget is { } t ? "-> " + t : f is FileInfo fi && IsPlain(fi) ? fi.Length.ToString() : f.Attributes.ToString())}")
            .Order(StringComparer.Ordinal)
            .ToList();

    private static bool IsPlain(FileInfo f) => Qtip.Model.Checkpoint.InputFiles.IsRegular(f.FullName);

    // ------------------------------------------------------------------ commands

    private static string[] Inspect(CaseDir d) => ["inspect", "--model", d.Model];

    private static string[] Eval(CaseDir d) =>
        ["eval", "--model", d.Model, "--data", Valid, "--ctx", "16", "--max-windows", "1", "--backend", "cpu", "--json", d.Path_("eval.json")];

    private static string[] EvalF32(CaseDir d) => [.. Eval(d), "--weights", "f32"];

    private static string[] Generate(CaseDir d) =>
        ["generate", "--model", d.Model, "--prompt", "The", "-n", "2", "--backend", "cpu", "--weights", "f32", "--json", d.Path_("gen.json")];

    private static string[] Quantize(CaseDir d, string? outDir = null, string? calib = null, params string[] extra) =>
        ["quantize", "--model", d.Model, "--out", outDir ?? d.Path_("out"), "--calib", calib ?? Calib, "--calib-windows", "1",
            "--code", "1mad", "--L", "8", "--backend", "cpu", .. extra.Contains("--calib-ctx") ? extra : [.. extra, "--calib-ctx", "16"]];

    public enum Base
    {
        Nano,
        Quantized,
        QuantizedLut,
    }

    private sealed record Case(string Name, Base On, Action<CaseDir> Arrange, Func<CaseDir, string[]> Args, int Exit, string Message);

    private const string L0Q = "model.layers.0.self_attn.q_proj.weight";
    private const string Tiny = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"c\":2}},\"added_tokens\":[]}";

    private static void NoSentencePiece(CaseDir d) => d.Delete("tokenizer.model");

    private static readonly Case[] Cases =
    [
        // config.json: values that crashed with a stack trace or gave NaN with exit 0
        new("heads-zero-no-head-dim", Base.Nano, d => d.Config(c => { c["num_attention_heads"] = 0; c.Remove("head_dim"); }), Inspect, BadInput, "num_attention_heads must be positive"),
        new("eos-fraction", Base.Nano, d => d.Config(c => c["eos_token_id"] = 2.5), Inspect, BadInput, "eos_token_id"),
        new("eos-too-big", Base.Nano, d => d.Config(c => c["eos_token_id"] = 3000000000L), Inspect, BadInput, "eos_token_id"),
        new("eos-string-list", Base.Nano, d => d.Config(c => c["eos_token_id"] = new JsonArray("a")), Inspect, BadInput, "eos_token_id"),
        new("eos-out-of-vocab", Base.Nano, d => d.Config(c => c["eos_token_id"] = 9000), Inspect, BadInput, "eos_token_id 9000 is outside the vocabulary"),
        new("bos-out-of-vocab", Base.Nano, d => d.Config(c => c["bos_token_id"] = 8192), Inspect, BadInput, "bos_token_id 8192 is outside the vocabulary"),
        new("bos-negative", Base.Nano, d => d.Config(c => c["bos_token_id"] = -1), Inspect, BadInput, "bos_token_id -1 is outside"),
        new("config-invalid-utf8-value", Base.Nano, d => d.Write("config.json", Encoding.UTF8.GetBytes(File.ReadAllText(Path.Combine(Nano, "config.json"))).Replace("\"silu\"", [(byte)'"', 0xC3, 0x28, (byte)'"'])), Inspect, BadInput, "not valid UTF-8"),
        new("config-invalid-utf8-key", Base.Nano, d => d.Write("config.json", Encoding.UTF8.GetBytes(File.ReadAllText(Path.Combine(Nano, "config.json"))).Replace("\"use_cache\"", [(byte)'"', 0xFF, 0xFE, (byte)'"'])), Inspect, BadInput, "not valid UTF-8"),
        new("config-lone-surrogate", Base.Nano, d => d.Write("config.json", File.ReadAllText(Path.Combine(Nano, "config.json")).Replace("\"silu\"", "\"\\ud800\"", StringComparison.Ordinal)), Inspect, BadInput, "not valid text"),
        new("rope-theta-zero", Base.Nano, d => d.Config(c => { c["rope_theta"] = 0; c["rope_parameters"]!["rope_theta"] = 0; }), Inspect, BadInput, "rope_theta must be a positive number"),
        new("rope-theta-negative", Base.Nano, d => d.Config(c => { c.Remove("rope_parameters"); c["rope_theta"] = -10000; }), Inspect, BadInput, "rope_theta must be a positive number"),
        new("rope-theta-overflow", Base.Nano, d => d.Write("config.json", File.ReadAllText(Path.Combine(Nano, "config.json")).Replace("\"rope_theta\": 10000.0,\n    \"rope_type\"", "\"rope_theta\": 1e999,\n    \"rope_type\"", StringComparison.Ordinal)), Inspect, BadInput, "not a finite number"),
        new("rope-linear-factor-zero", Base.Nano, d => d.Config(c => c["rope_parameters"] = new JsonObject { ["rope_type"] = "linear", ["rope_theta"] = 10000.0, ["factor"] = 0 }), Inspect, BadInput, "factor must be positive"),
        new("rope-llama3-factor-zero", Base.Nano, d => d.Config(c => c["rope_parameters"] = new JsonObject { ["rope_type"] = "llama3", ["rope_theta"] = 10000.0, ["factor"] = 0 }), Inspect, BadInput, "factor must be positive"),
        new("rope-llama3-equal-freq-factors", Base.Nano, d => d.Config(c => c["rope_parameters"] = new JsonObject { ["rope_type"] = "llama3", ["rope_theta"] = 10000.0, ["factor"] = 8, ["low_freq_factor"] = 4, ["high_freq_factor"] = 4 }), Inspect, BadInput, "low_freq_factor < high_freq_factor"),
        new("rms-eps-negative", Base.Nano, d => d.Config(c => c["rms_norm_eps"] = -1e-5), Inspect, BadInput, "rms_norm_eps must be ≥ 0"),
        new("hidden-size-string", Base.Nano, d => d.Config(c => c["hidden_size"] = "128"), Inspect, BadInput, "\"hidden_size\" is \"128\", not an integer"),
        new("kv-heads-not-divisor", Base.Nano, d => d.Config(c => c["num_key_value_heads"] = 3), Inspect, BadInput, "not divisible by num_key_value_heads 3"),
        new("vocab-zero", Base.Nano, d => d.Config(c => { c["vocab_size"] = 0; c["bos_token_id"] = null; }), Inspect, BadInput, "vocab_size must be positive"),
        new("max-positions-zero", Base.Nano, d => d.Config(c => c["max_position_embeddings"] = 0), Inspect, BadInput, "max_position_embeddings must be positive"),
        new("config-not-json", Base.Nano, d => d.Write("config.json", "{\"model_type\": llama"), Inspect, BadInput, "not valid JSON"),
        new("config-missing", Base.Nano, d => d.Delete("config.json"), Inspect, BadInput, "config.json: file not found"),
        new("config-is-directory", Base.Nano, d => { d.Delete("config.json"); Directory.CreateDirectory(d.File_("config.json")); }, Inspect, BadInput, "config.json is a directory"),
        new("config-is-fifo", Base.Nano, d => d.Fifo(d.File_("config.json")), Inspect, BadInput, "FIFO"),

        // safetensors
        new("st-invalid-utf8-name", Base.Nano, d => d.HeaderBytes(h => h.Replace("\"model.norm.weight\"", [(byte)'"', 0xED, 0xA0, 0x80, (byte)'"'])), Inspect, BadInput, "not valid UTF-8"),
        new("st-lone-surrogate-name", Base.Nano, d => d.HeaderBytes(h => h.Replace("\"model.norm.weight\"", Encoding.ASCII.GetBytes("\"\\udc00\""))), Inspect, BadInput, "not valid text"),
        new("st-offsets-strings", Base.Nano, d => d.Header(h => h["model.norm.weight"]!["data_offsets"] = new JsonArray("0", "256")), Inspect, BadInput, "data_offsets"),
        new("st-offsets-reversed", Base.Nano, d => d.Header(h => h["model.norm.weight"]!["data_offsets"] = new JsonArray(256, 0)), Inspect, BadInput, "data_offsets"),
        new("st-header-length-too-big", Base.Nano, d => { var b = d.Read("model.safetensors"); BitConverter.TryWriteBytes(b.AsSpan(0, 8), (long)b.Length); d.Write("model.safetensors", b); }, Inspect, BadInput, "header length"),
        new("st-truncated", Base.Nano, d => d.Write("model.safetensors", d.Read("model.safetensors")[..100_000]), Inspect, BadInput, "run past the end"),
        new("st-unknown-dtype", Base.Nano, d => d.Header(h => h["model.norm.weight"]!["dtype"] = "F99"), Inspect, BadInput, "unknown dtype 'F99'"),
        new("st-negative-shape", Base.Nano, d => d.Header(h => h["model.norm.weight"]!["shape"] = new JsonArray(-128)), Inspect, BadInput, "not a non-negative integer"),
        new("st-overlap", Base.Nano, d => d.Header(h => h["model.layers.0.input_layernorm.weight"]!["data_offsets"] = h["model.norm.weight"]!["data_offsets"]!.DeepClone()), Inspect, BadInput, "overlap"),
        new("st-wrong-shape", Base.Nano, d => d.Header(h => { var e = h["model.norm.weight"]!; var off = e["data_offsets"]!.AsArray(); e["shape"] = new JsonArray(64); off[1] = off[0]!.GetValue<long>() + 128; }), Inspect, BadInput, "config.json implies [128]"),
        new("st-missing-lm-head", Base.Nano, d => d.Header(h => h.Remove("lm_head.weight")), Inspect, BadInput, "lm_head.weight"),
        new("st-is-fifo", Base.Nano, d => d.Fifo(d.File_("model.safetensors")), Inspect, BadInput, "FIFO"),
        new("st-is-directory", Base.Nano, d => { d.Delete("model.safetensors"); Directory.CreateDirectory(d.File_("model.safetensors")); }, Inspect, BadInput, "no model.safetensors"),
        new("st-empty", Base.Nano, d => d.Write("model.safetensors", []), Inspect, BadInput, "truncated"),

        // sharded index
        new("index-empty-weight-map", Base.Nano, d => d.Write(TensorStore.IndexFile, "{\"weight_map\": {}}"), Inspect, BadInput, "weight_map is empty"),
        new("index-shard-with-nul", Base.Nano, d => d.Write(TensorStore.IndexFile, "{\"weight_map\": {\"lm_head.weight\": \"model\\u0000.safetensors\"}}"), Inspect, BadInput, "not a plain file name"),
        new("index-shard-parent", Base.Nano, d => d.Write(TensorStore.IndexFile, "{\"weight_map\": {\"lm_head.weight\": \"../model.safetensors\"}}"), Inspect, BadInput, "not a plain file name"),
        new("index-shard-dot", Base.Nano, d => d.Write(TensorStore.IndexFile, "{\"weight_map\": {\"lm_head.weight\": \".\"}}"), Inspect, BadInput, "not a plain file name"),
        new("index-shard-number", Base.Nano, d => d.Write(TensorStore.IndexFile, "{\"weight_map\": {\"lm_head.weight\": 3}}"), Inspect, BadInput, "not a file name"),
        new("index-not-json", Base.Nano, d => d.Write(TensorStore.IndexFile, "{\"weight_map\": "), Inspect, BadInput, "not valid JSON"),
        new("index-missing-shard", Base.Nano, d => d.Write(TensorStore.IndexFile, "{\"weight_map\": {\"lm_head.weight\": \"model-00002.safetensors\"}}"), Inspect, BadInput, "file not found"),

        // tokenizers (eval loads the tokenizer before any device work)
        new("tokjson-string-vocab-id", Base.Nano, d => { NoSentencePiece(d); d.Write("tokenizer.json", "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":\"0\"}}}"); }, Eval, BadInput, "vocab entry 'a' has id \"0\""),
        new("tokjson-numeric-type", Base.Nano, d => { NoSentencePiece(d); d.Write("tokenizer.json", "{\"model\":{\"type\":7,\"vocab\":{\"a\":0}}}"); }, Eval, BadInput, "model.type is Number"),
        new("tokjson-string-added-id", Base.Nano, d => { NoSentencePiece(d); d.Write("tokenizer.json", Tiny.Replace("[]", "[{\"id\":\"1\",\"content\":\"<s>\"}]", StringComparison.Ordinal)); }, Eval, BadInput, "added_tokens entry"),
        new("tokjson-invalid-utf8", Base.Nano, d => { NoSentencePiece(d); d.Write("tokenizer.json", Encoding.ASCII.GetBytes(Tiny).Replace("\"a\"", [(byte)'"', 0xC0, 0xAF, (byte)'"'])); }, Eval, BadInput, "not valid UTF-8"),
        new("tokjson-missing-single-bytes", Base.Nano, d => { NoSentencePiece(d); d.Write("tokenizer.json", Tiny.Replace("\"added_tokens\"", "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true},\"added_tokens\"", StringComparison.Ordinal)); }, Eval, BadInput, "no token for the single byte 0x00"),
        new("tokjson-no-fallback", Base.Nano, d => { NoSentencePiece(d); d.Write("tokenizer.json", Tiny); }, Eval, BadInput, "would be dropped silently"),
        new("tokjson-empty-added-content", Base.Nano, d => { NoSentencePiece(d); d.Write("tokenizer.json", Tiny.Replace("[]", "[{\"id\":9,\"content\":\"\"}]", StringComparison.Ordinal)); }, Eval, BadInput, "added_tokens entry 9 has empty content"),
        // (a byte-fallback tokenizer.json without tokenizer.model is read since issue 12: HuggingFaceBpeTokenizer)
        new("spm-byte-piece-zz", Base.Nano, d => d.Write("tokenizer.model", d.Read("tokenizer.model").Replace("<0x41>", Encoding.ASCII.GetBytes("<0xZZ>"))), Eval, BadInput, "byte piece"),
        new("spm-empty-no-json", Base.Nano, d => { d.Write("tokenizer.model", []); d.Delete("tokenizer.json"); }, Eval, BadInput, "tokenizer.model: tokenizer.model is empty"),
        // (beside a valid tokenizer.json a broken tokenizer.model is not needed: tokenizer.json is read, as transformers' fast tokenizer does)
        new("spm-garbage-no-json", Base.Nano, d => { d.Write("tokenizer.model", "this is not a model"); d.Delete("tokenizer.json"); }, Eval, BadInput, "is not a SentencePiece model"),
        new("spm-is-fifo", Base.Nano, d => d.Fifo(d.File_("tokenizer.model")), Eval, BadInput, "FIFO"),
        new("tiktoken-config-key-abc", Base.Nano, d =>
        {
            NoSentencePiece(d);
            d.Delete("tokenizer.json");
            Directory.CreateDirectory(d.File_("original"));
            File.WriteAllText(d.File_(Path.Combine("original", "tokenizer.model")), "IQ== 0\nIg== 1\n");
            d.Write("tokenizer_config.json", "{\"added_tokens_decoder\": {\"abc\": {\"content\": \"<|x|>\"}}}");
        }, Eval, BadInput, "added_tokens_decoder key 'abc'"),

        // quip_params of a quantized checkpoint: checked at load, before any device work
        new("quip-k-zero", Base.Quantized, d => d.QuipParams(q => q["K"] = 0), Inspect, BadInput, "quip_params.K = 0"),
        new("quip-k-five", Base.Quantized, d => d.QuipParams(q => q["K"] = 5), Inspect, BadInput, "quip_params.K = 5"),
        new("quip-l-one", Base.Quantized, d => d.QuipParams(q => q["L"] = 1), Inspect, BadInput, "quip_params.L = 1"),
        new("quip-l-seventeen", Base.Quantized, d => d.QuipParams(q => q["L"] = 17), Inspect, BadInput, "quip_params.L = 17"),
        new("quip-v-three", Base.Quantized, d => d.QuipParams(q => q["V"] = 3), Inspect, BadInput, "quip_params.V = 3"),
        new("quip-v-two-with-1mad", Base.Quantized, d => d.QuipParams(q => q["V"] = 2), Inspect, BadInput, "does not fit decode_mode '1mad'"),
        new("quip-v-one-with-quantlut-sym", Base.Quantized, d => d.Config(c => { c.Remove("quantization_config"); var q = c["quip_params"]!; q["decode_mode"] = "quantlut_sym"; q["tlut_bits"] = 9; }), Inspect, BadInput, "does not fit decode_mode 'quantlut_sym'"),
        new("quip-tlut-bits-negative", Base.Quantized, d => d.Config(c => { c.Remove("quantization_config"); var q = c["quip_params"]!; q["decode_mode"] = "quantlut_sym"; q["V"] = 2; q["tlut_bits"] = -1; }), Inspect, BadInput, "tlut_bits = -1"),
        new("quip-tlut-bits-forty", Base.Quantized, d => d.Config(c => { c.Remove("quantization_config"); var q = c["quip_params"]!; q["decode_mode"] = "quantlut_sym"; q["V"] = 2; q["tlut_bits"] = 40; }), Inspect, BadInput, "tlut_bits = 40"),
        new("quip-lut-bits-not-l", Base.QuantizedLut, d => d.QuipParams(q => q["tlut_bits"] = 6), Inspect, BadInput, "tlut_bits must equal L"),
        new("quip-k-string", Base.Quantized, d => d.QuipParams(q => q["K"] = "2"), Inspect, BadInput, "quip_params.K is \"2\", not an integer"),
        new("quip-unknown-mode", Base.Quantized, d => d.QuipParams(q => q["decode_mode"] = "e8p"), Inspect, BadInput, "decode_mode 'e8p' is not supported"),
        new("quip-tile-8", Base.Quantized, d => d.QuipParams(q => q["td_x"] = 8), Inspect, BadInput, "tile 8×16"),
        new("quip-vs-config-k", Base.Quantized, d => d.Config(c => c["quantization_config"]!["K"] = 3), Inspect, BadInput, "quantization_config.K = 3 disagrees"),
        new("quip-vs-config-code", Base.Quantized, d => d.Config(c => c["quantization_config"]!["code"] = "hyb"), Inspect, BadInput, "quantization_config.code 'hyb' disagrees"),
        new("quip-vs-config-dense", Base.Quantized, d => d.Config(c => c["quantization_config"]!["quant_method"] = "rtn"), Inspect, BadInput, "dense checkpoint"),
        new("quip-trellis-shape", Base.Quantized, d => d.Config(c => { c["quip_params"]!["K"] = 3; c["quantization_config"]!["K"] = 3; }), Inspect, BadInput, "config.json implies"),

        // non-finite weights: refused as they are uploaded, naming the tensor
        new("nan-projection", Base.Nano, d => d.Element(L0Q, 5, float.NaN), EvalF32, BadInput, $"tensor '{L0Q}'"),
        new("nan-projection-f16", Base.Nano, d => d.Element(L0Q, 5, float.NaN), Eval, BadInput, $"tensor '{L0Q}'"),
        new("inf-norm", Base.Nano, d => d.Element("model.layers.1.post_attention_layernorm.weight", 0, float.PositiveInfinity), Eval, BadInput, "post_attention_layernorm.weight': BF16 [128] holds 1 NaN or infinite value"),
        new("nan-lm-head", Base.Nano, d => d.Element("lm_head.weight", 1000, float.NaN), Eval, BadInput, "tensor 'lm_head.weight'"),
        new("nan-embedding-f16", Base.Nano, d => d.Element("model.embed_tokens.weight", 7, float.NaN), Eval, BadInput, "tensor 'model.embed_tokens.weight'"),
        new("nan-final-norm-generate", Base.Nano, d => d.Element("model.norm.weight", 3, float.NaN), Generate, BadInput, "tensor 'model.norm.weight'"),
        new("nan-sv", Base.Quantized, d => d.Element("model.layers.1.mlp.down_proj.SV", 2, float.NaN), Eval, BadInput, "tensor 'model.layers.1.mlp.down_proj.SV'"),
        new("inf-su", Base.Quantized, d => d.Element("model.layers.0.self_attn.k_proj.SU", 2, float.NegativeInfinity), Eval, BadInput, "tensor 'model.layers.0.self_attn.k_proj.SU'"),
        new("nan-lut", Base.QuantizedLut, d => d.Element("model.layers.0.mlp.up_proj.tlut", 17, float.NaN), Eval, BadInput, "tensor 'model.layers.0.mlp.up_proj.tlut'"),
        new("overflow-eval", Base.Nano, d => d.Fill("model.norm.weight", 3e38f), EvalF32, BadInput, "window 0 (tokens 0…15 of the stream): the loss is"),
        new("overflow-generate", Base.Nano, d => d.Fill("model.norm.weight", 3e38f), Generate, BadInput, "logits are NaN or infinite"),
        new("beyond-fp16", Base.Nano, d => d.Fill("lm_head.weight", 3e38f), Eval, BadInput, "beyond the fp16 range"),

        // options checked against the model and the file system
        new("eval-ctx-beyond-positions", Base.Nano, _ => { }, d => ["eval", "--model", d.Model, "--data", Valid, "--ctx", "2048", "--backend", "cpu"], Usage, "--ctx 2048 exceeds the model's 1024 positions"),
        new("eval-data-fifo", Base.Nano, d => d.Fifo(d.Path_("data.txt")), d => ["eval", "--model", d.Model, "--data", d.Path_("data.txt"), "--backend", "cpu"], BadInput, "--data is a FIFO"),
        new("json-target-is-fifo", Base.Nano, d => d.Fifo(d.Path_("e.json")), d => ["inspect", "--model", d.Model, "--json", d.Path_("e.json")], BadInput, "--json is a FIFO"),
        new("json-target-is-directory", Base.Nano, d => Directory.CreateDirectory(d.Path_("e.json")), d => [.. Eval(d)[..^2], "--json", d.Path_("e.json")], BadInput, "is a directory"),
        new("quantize-calib-ctx-beyond-positions", Base.Nano, _ => { }, d => Quantize(d, null, null, "--calib-ctx", "2048"), Usage, "--calib-ctx 2048 exceeds the model's 1024 positions"),
        new("quantize-calib-fifo", Base.Nano, d => d.Fifo(d.Path_("calib.txt")), d => Quantize(d, calib: d.Path_("calib.txt")), BadInput, "--calib is a FIFO"),
        new("quantize-out-is-model", Base.Nano, _ => { }, d => Quantize(d, d.Model, null, "--force"), BadInput, "is the --model folder itself"),
        new("quantize-out-is-model-via-symlink", Base.Nano, d => Directory.CreateSymbolicLink(d.Path_("link"), d.Model), d => Quantize(d, d.Path_("link"), null, "--force"), BadInput, "is the --model folder itself"),
        new("quantize-out-is-parent-of-model", Base.Nano, d => File.WriteAllText(d.Path_("unrelated.txt"), "keep"), d => Quantize(d, d.Dir, null, "--force"), BadInput, "contains the --model folder"),
        new("quantize-out-inside-model", Base.Nano, _ => { }, d => Quantize(d, Path.Combine(d.Model, "q")), BadInput, "lies inside the --model folder"),
        new("quantize-out-is-calib", Base.Nano, d => File.Copy(Calib, d.Path_("calib.txt")), d => Quantize(d, d.Path_("calib.txt"), d.Path_("calib.txt"), "--force"), BadInput, "is the --calib file itself"),
        new("quantize-out-contains-calib", Base.Nano, d => { Directory.CreateDirectory(d.Path_("c")); File.Copy(Calib, d.Path_("c/calib.txt")); }, d => Quantize(d, d.Path_("c"), d.Path_("c/calib.txt"), "--force"), BadInput, "contains the --calib file"),
        new("quantize-out-is-a-file", Base.Nano, d => File.WriteAllText(d.Path_("out"), "not a folder"), d => Quantize(d), BadInput, "is an existing file"),
        new("quantize-out-exists", Base.Nano, d => { Directory.CreateDirectory(d.Path_("out")); File.WriteAllText(d.Path_("out/keep.txt"), "mine"); }, d => Quantize(d), BadInput, "pass --force"),
        new("quantize-force-over-foreign-dir", Base.Nano, d => { Directory.CreateDirectory(d.Path_("out")); File.WriteAllText(d.Path_("out/keep.txt"), "mine"); }, d => Quantize(d, null, null, "--force"), BadInput, "was not written by qtip"),
        new("quantize-nan-weight", Base.Nano, d => d.Element("model.layers.1.mlp.down_proj.weight", 9, float.NaN), d => Quantize(d), BadInput, "tensor 'model.layers.1.mlp.down_proj.weight'"),
        new("quantize-nan-norm", Base.Nano, d => d.Element("model.layers.0.input_layernorm.weight", 9, float.NaN), d => Quantize(d), BadInput, "tensor 'model.layers.0.input_layernorm.weight'"),
        new("quantize-lock-is-fifo", Base.Nano, d => d.Fifo(d.Path_("out.lock")), d => Quantize(d), BadInput, "out.lock exists and is not a regular file"),
        new("demo-out-over-foreign-dir", Base.Nano, d => { Directory.CreateDirectory(d.Path_("out")); File.WriteAllText(d.Path_("out/keep.txt"), "mine"); }, d => ["demo", "--out", d.Path_("out"), "--backend", "cpu"], BadInput, "was not written by qtip"),
        new("quantize-bad-model", Base.Nano, d => d.Config(c => c["rms_norm_eps"] = -1), d => Quantize(d), BadInput, "rms_norm_eps"),
        new("quantize-out-parent-is-file", Base.Nano, d => File.WriteAllText(d.Path_("f"), "x"), d => Quantize(d, d.Path_("f/sub/out")), BadInput, "is a file"),
    ];

    public static TheoryData<string> CaseNames => new(Cases.Select(c => c.Name));

    [Fact]
    public void TheSuite_HasAtLeast60DistinctCases()
    {
        Assert.True(Cases.Length >= 60, $"{Cases.Length} cases");
        Assert.Equal(Cases.Length, Cases.Select(c => c.Name).Distinct().Count());
    }

    [Theory]
    [MemberData(nameof(CaseNames))]
    public async Task MalformedInput_FailsWithOneLine_AndWritesNothing(string name)
    {
        var c = Cases.Single(x => x.Name == name);
        var d = new CaseDir(models.Root, c.Name, c.On switch { Base.Quantized => models.Quantized, Base.QuantizedLut => models.QuantizedLut, _ => Nano });
        c.Arrange(d);
        var before = Listing(d.Dir);
        var args = c.Args(d);

        var run = Task.Run(() => QtipInProcess.Run(args), TestContext.Current.CancellationToken);
        var first = await Task.WhenAny(run, Task.Delay(TimeSpan.FromSeconds(120), TestContext.Current.CancellationToken));
        Assert.True(first == run, $"{name}: no answer in 120 s (a hang)");
        var r = await run;

        Assert.True(c.Exit == r.ExitCode, $"{name}: expected exit {c.Exit}, got {r}");
        // One qtip line, the last (generate reports its device on stderr before it runs).
        Assert.True(r.Lines.Count(l => l.StartsWith("qtip:", StringComparison.Ordinal)) == 1, $"{name}: expected one error line, got {r}");
        var line = r.Lines[^1];
        Assert.StartsWith(c.Exit == Usage ? "qtip: usage: " : "qtip: error: ", line, StringComparison.Ordinal);
        Assert.Contains(c.Message, line, StringComparison.Ordinal);
        Assert.Equal(before, Listing(d.Dir));
    }

    /// <summary>Every key of nano's config.json (and of quip_params on the quantized base) set to each hostile value:
    /// the checkpoint opens (the value is ignored or acceptable) or the run ends with exit code 3 and one line naming
    /// config.json; never a stack trace, an internal error or a usage error.</summary>
    [Theory]
    [InlineData(Base.Nano)]
    [InlineData(Base.Quantized)]
    public void EveryConfigKey_WithHostileValues_OpensOrIsOneLineExit3(Base on)
    {
        var d = new CaseDir(models.Root, $"keys-{on}", on == Base.Quantized ? models.Quantized : Nano);
        var original = JsonNode.Parse(File.ReadAllText(d.File_("config.json")))!.AsObject();
        JsonNode?[] hostile = [null, "x", -1, 0, 1, 2.5, 1e300, 3000000000L, new JsonArray(), new JsonObject(), true, new JsonArray(1, "a"),
            new JsonObject { ["rope_type"] = "llama3", ["factor"] = "x" }];
        var paths = original.Select(p => (p.Key, (string?)null)).ToList();
        foreach (var nested in new[] { "rope_parameters", "quip_params", "quantization_config" })
        {
            if (original[nested] is JsonObject o)
                paths.AddRange(o.Select(p => (nested, (string?)p.Key)));
        }
        int runs = 0, refused = 0;
        foreach (var (key, inner) in paths)
        {
            foreach (var value in hostile)
            {
                var c = original.DeepClone().AsObject();
                if (inner is null)
                    c[key] = value?.DeepClone();
                else
                    c[key]![inner] = value?.DeepClone();
                d.Write("config.json", c.ToJsonString());
                var r = QtipInProcess.Run(Inspect(d));
                runs++;
                string what = $"{key}{(inner is null ? "" : "." + inner)} = {value?.ToJsonString() ?? "null"}";
                Assert.True(r.ExitCode is 0 or BadInput, $"{what}: {r}");
                if (r.ExitCode == BadInput)
                {
                    refused++;
                    Assert.True(r.Lines.Length == 1 && r.Lines[0].StartsWith("qtip: error: ", StringComparison.Ordinal), $"{what}: {r}");
                }
            }
        }
        Assert.True(runs >= 300 && refused > runs / 10, $"{runs} runs, {refused} refused");
    }

    [Fact]
    public async Task Inspect_WithAFifoTokenizerModel_DoesNotHang()
    {
        var d = new CaseDir(models.Root, "inspect-fifo", Nano);
        d.Fifo(d.File_("tokenizer.model"));
        var run = Task.Run(() => QtipInProcess.Run(Inspect(d)), TestContext.Current.CancellationToken);
        var first = await Task.WhenAny(run, Task.Delay(TimeSpan.FromSeconds(60), TestContext.Current.CancellationToken));
        Assert.True(first == run, "inspect hung on the FIFO");
        Assert.Equal(0, (await run).ExitCode);
    }

    [Fact]
    public void ASecondQuantizeIntoTheSameOut_FailsAtOnce_NamingTheFirst()
    {
        var d = new CaseDir(models.Root, "locked", Nano);
        var o = new Qtip.Model.Quantized.QuantizeOptions { ModelDir = d.Model, OutDir = d.Path_("out"), CalibrationFile = Calib, L = 8 };
        using (var ckpt = LlamaCheckpoint.Open(d.Model))
        using (Qtip.Model.Quantized.OutputGuard.Acquire(o, ckpt))
        {
            var before = Listing(d.Dir);
            var sw = Stopwatch.StartNew();
            var r = QtipInProcess.Run(Quantize(d));
            Assert.True(r.ExitCode == BadInput, r.ToString());
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(30), $"took {sw.Elapsed}");
            Assert.Contains($"is being written by pid {Environment.ProcessId}", r.Lines[^1], StringComparison.Ordinal);
            Assert.Equal(before, Listing(d.Dir));
        }
        Assert.False(File.Exists(d.Path_("out.lock")));
    }

    [Theory]
    [InlineData(Base.Quantized)]
    [InlineData(Base.QuantizedLut)]
    public void TheSyntheticQuantizedBase_LoadsAndEvaluates(Base which)
    {
        // The quip_params and non-finite cases above fail because of their one change, not because the base is bad.
        var d = new CaseDir(models.Root, $"control-{which}", which == Base.Quantized ? models.Quantized : models.QuantizedLut);
        var r = QtipInProcess.Run(Eval(d));
        Assert.True(r.ExitCode == 0, r.ToString());
        using var doc = JsonDocument.Parse(File.ReadAllText(d.Path_("eval.json")));
        Assert.True(double.IsFinite(doc.RootElement.GetProperty("perplexity").GetDouble()));
    }

    [Fact]
    public void TheNanoBase_PassesEveryCommandUsedAbove()
    {
        var d = new CaseDir(models.Root, "control-nano", Nano);
        Assert.Equal(0, QtipInProcess.Run(Inspect(d)).ExitCode);
        var e = QtipInProcess.Run(EvalF32(d));
        Assert.True(e.ExitCode == 0, e.ToString());
        var g = QtipInProcess.Run(Generate(d));
        Assert.True(g.ExitCode == 0, g.ToString());
    }
}

internal static class ByteArrayReplace
{
    /// <summary>A copy of <paramref name="bytes"/> with the first occurrence of ASCII <paramref name="find"/> replaced.</summary>
    public static byte[] Replace(this byte[] bytes, string find, byte[] with)
    {
        var needle = Encoding.ASCII.GetBytes(find);
        int at = bytes.AsSpan().IndexOf(needle);
        if (at < 0)
            throw new InvalidOperationException($"'{find}' not found");
        return [.. bytes.AsSpan(0, at), .. with, .. bytes.AsSpan(at + needle.Length)];
    }
}
