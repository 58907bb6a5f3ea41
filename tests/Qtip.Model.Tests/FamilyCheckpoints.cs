using System.Text.Json;
using Qtip.Model.Checkpoint;
using Qtip.Model.Families;
using Qtip.Testing;

namespace Qtip.Model.Tests;

/// <summary>
/// Tiny random checkpoints of each family written here (config.json + fp32 model.safetensors), and a plain
/// double-precision forward of a checkpoint (llama2.c's loops: RMSNorm, q/k/v (+ bias), rotate-half RoPE, causal GQA
/// attention within the sliding window, o, SwiGLU MLP, tied or untied head): the model's forward is checked against it
/// without transformers, at sizes small enough for the CPU.
/// </summary>
internal static class FamilyCheckpoints
{
    /// <summary>The tiny families: Llama-3 style (GQA 4/2, llama3 RoPE), Mistral (window 4), Qwen2 (q/k/v biases, tied).</summary>
    public static readonly string[] Names = ["llama3", "mistral", "qwen2"];

    public const int Vocab = 64;

    /// <summary>
    /// Writes checkpoint <paramref name="name"/> into <paramref name="dir"/>; returns the folder. <paramref name="quantizable"/>:
    /// llama-nano's vocabulary and tokenizer files and widths that are multiples of 32 (hidden 64, MLP 128, q 64, k/v
    /// 32), so the quantize pipeline (calibration text, HYB kernel layout) takes it.
    /// </summary>
    public static string Write(string dir, string name, int seed = 7, bool quantizable = false)
    {
        int vocab = quantizable ? 8192 : Vocab;
        var config = new Dictionary<string, object?>
        {
            ["hidden_size"] = quantizable ? 64 : 32,
            ["intermediate_size"] = quantizable ? 128 : 64,
            ["num_hidden_layers"] = 2,
            ["num_attention_heads"] = 4,
            ["num_key_value_heads"] = 2,
            ["vocab_size"] = vocab,
            ["max_position_embeddings"] = 256,
            ["rms_norm_eps"] = 1e-5,
            ["bos_token_id"] = 1,
            ["eos_token_id"] = 2,
            ["hidden_act"] = "silu",
            ["torch_dtype"] = "float32",
        };
        switch (name)
        {
            case "llama3":
                config["model_type"] = "llama";
                config["architectures"] = new[] { "LlamaForCausalLM" };
                config["rope_theta"] = 500000.0;
                config["rope_scaling"] = new Dictionary<string, object> { ["rope_type"] = "llama3", ["factor"] = 8.0, ["low_freq_factor"] = 1.0, ["high_freq_factor"] = 4.0, ["original_max_position_embeddings"] = 16 };
                config["tie_word_embeddings"] = false;
                break;
            case "mistral":
                config["model_type"] = "mistral";
                config["architectures"] = new[] { "MistralForCausalLM" };
                config["rope_theta"] = 10000.0;
                config["sliding_window"] = 4;
                config["tie_word_embeddings"] = false;
                break;
            case "qwen2":
                config["model_type"] = "qwen2";
                config["architectures"] = new[] { "Qwen2ForCausalLM" };
                config["rope_theta"] = 1000000.0;
                config["use_sliding_window"] = false;
                config["sliding_window"] = 4096;
                config["tie_word_embeddings"] = true;
                break;
            default:
                throw new ArgumentException(name);
        }
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "config.json"), JsonSerializer.Serialize(config));
        var c = LlamaConfig.Load(Path.Combine(dir, "config.json"));
        var w = new SafeTensorsWriter();
        int s = seed;
        float[] Scaled(int count, float scale) => Rng.Gaussian(count, s++).Select(v => v * scale).ToArray();
        w.AddFloat32(LlamaNames.Embedding, Scaled(vocab * c.HiddenSize, 1f), [vocab, c.HiddenSize]);
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            w.AddFloat32(LlamaNames.InputNorm(l), Scaled(c.HiddenSize, 0.1f).Select(v => v + 1).ToArray(), [c.HiddenSize]);
            w.AddFloat32(LlamaNames.PostAttentionNorm(l), Scaled(c.HiddenSize, 0.1f).Select(v => v + 1).ToArray(), [c.HiddenSize]);
            foreach (var spec in c.Family.Linears)
            {
                var (o, i) = spec.Shape(c);
                w.AddFloat32(spec.WeightName(l), Scaled(o * i, 0.3f), [o, i]);
                if (spec.Bias)
                    w.AddFloat32(spec.BiasName(l), Scaled(o, 0.5f), [o]);
            }
        }
        w.AddFloat32(LlamaNames.FinalNorm, Scaled(c.HiddenSize, 0.1f).Select(v => v + 1).ToArray(), [c.HiddenSize]);
        if (!c.TieWordEmbeddings)
            w.AddFloat32(LlamaNames.LmHead, Scaled(vocab * c.HiddenSize, 0.3f), [vocab, c.HiddenSize]);
        w.Write(Path.Combine(dir, TensorStore.SingleFile));
        if (quantizable)
        {
            foreach (var f in new[] { "tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json" })
                File.Copy(Path.Combine(Fixtures.Nano, f), Path.Combine(dir, f));
        }
        return dir;
    }

    /// <summary>Logits (rows × vocab) of <paramref name="ids"/> at positions 0.. by the plain double-precision forward.</summary>
    /// <param name="config">The config to run (default: the checkpoint's), e.g. without its sliding window.</param>
    public static double[][] ReferenceLogits(LlamaCheckpoint ckpt, int[] ids, LlamaConfig? config = null)
    {
        var c = config ?? ckpt.Config;
        var t = ckpt.Tensors;
        int n = ids.Length, dim = c.HiddenSize, hd = c.HeadDim, heads = c.NumAttentionHeads, kvHeads = c.NumKeyValueHeads;
        double[] W(string name) => t.ReadFloat32(name).Select(v => (double)v).ToArray();
        var embed = W(LlamaNames.Embedding);
        var x = new double[n][];
        for (int r = 0; r < n; r++)
            x[r] = embed.AsSpan(ids[r] * dim, dim).ToArray();
        var inv = c.RopeInverseFrequencies();
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            double[] Linear(LinearKind kind, double[] input)
            {
                var spec = c.Family.Linear(kind);
                var (o, i) = spec.Shape(c);
                var wt = W(spec.WeightName(l));
                var b = spec.Bias ? W(spec.BiasName(l)) : new double[o];
                var y = new double[o];
                for (int j = 0; j < o; j++)
                {
                    double sum = b[j];
                    for (int k = 0; k < i; k++)
                        sum += wt[(j * i) + k] * input[k];
                    y[j] = sum;
                }
                return y;
            }
            var inNorm = W(LlamaNames.InputNorm(l));
            var q = new double[n][];
            var k = new double[n][];
            var v = new double[n][];
            for (int r = 0; r < n; r++)
            {
                var xn = RmsNorm(x[r], inNorm, c.RmsNormEps);
                q[r] = Rotate(Linear(LinearKind.Q, xn), heads, hd, inv, r);
                k[r] = Rotate(Linear(LinearKind.K, xn), kvHeads, hd, inv, r);
                v[r] = Linear(LinearKind.V, xn);
            }
            for (int r = 0; r < n; r++)
            {
                var att = new double[heads * hd];
                int first = c.SlidingWindow > 0 ? Math.Max(0, r - c.SlidingWindow + 1) : 0;
                for (int h = 0; h < heads; h++)
                {
                    int g = h / (heads / kvHeads);
                    var s = new double[r + 1];
                    double m = double.NegativeInfinity;
                    for (int j = first; j <= r; j++)
                    {
                        double dot = 0;
                        for (int d = 0; d < hd; d++)
                            dot += q[r][(h * hd) + d] * k[j][(g * hd) + d];
                        s[j] = dot / Math.Sqrt(hd);
                        m = Math.Max(m, s[j]);
                    }
                    double sum = 0;
                    for (int j = first; j <= r; j++)
                        sum += s[j] = Math.Exp(s[j] - m);
                    for (int j = first; j <= r; j++)
                    {
                        for (int d = 0; d < hd; d++)
                            att[(h * hd) + d] += s[j] / sum * v[j][(g * hd) + d];
                    }
                }
                var o = Linear(LinearKind.O, att);
                for (int d = 0; d < dim; d++)
                    x[r][d] += o[d];
            }
            var postNorm = W(LlamaNames.PostAttentionNorm(l));
            for (int r = 0; r < n; r++)
            {
                var xn = RmsNorm(x[r], postNorm, c.RmsNormEps);
                var gate = Linear(LinearKind.Gate, xn);
                var up = Linear(LinearKind.Up, xn);
                var hmid = gate.Select((gv, j) => gv / (1 + Math.Exp(-gv)) * up[j]).ToArray();
                var down = Linear(LinearKind.Down, hmid);
                for (int d = 0; d < dim; d++)
                    x[r][d] += down[d];
            }
        }
        var finalNorm = W(LlamaNames.FinalNorm);
        var head = W(ckpt.OutputProjectionName);
        var logits = new double[n][];
        for (int r = 0; r < n; r++)
        {
            var xn = RmsNorm(x[r], finalNorm, c.RmsNormEps);
            logits[r] = new double[c.VocabSize];
            for (int j = 0; j < c.VocabSize; j++)
            {
                double sum = 0;
                for (int d = 0; d < dim; d++)
                    sum += head[(j * dim) + d] * xn[d];
                logits[r][j] = sum;
            }
        }
        return logits;
    }

    private static double[] RmsNorm(double[] x, double[] w, double eps)
    {
        double ms = x.Sum(v => v * v) / x.Length;
        double s = 1 / Math.Sqrt(ms + eps);
        return x.Select((v, i) => v * s * w[i]).ToArray();
    }

    /// <summary>Rotate-half RoPE at position <paramref name="pos"/>: element j pairs with j + d/2 of each head.</summary>
    private static double[] Rotate(double[] y, int heads, int hd, float[] inv, int pos)
    {
        var r = (double[])y.Clone();
        int half = hd / 2;
        for (int h = 0; h < heads; h++)
        {
            for (int j = 0; j < half; j++)
            {
                double a = pos * (double)inv[j];
                double x1 = y[(h * hd) + j], x2 = y[(h * hd) + j + half];
                r[(h * hd) + j] = (x1 * Math.Cos(a)) - (x2 * Math.Sin(a));
                r[(h * hd) + j + half] = (x2 * Math.Cos(a)) + (x1 * Math.Sin(a));
            }
        }
        return r;
    }
}
