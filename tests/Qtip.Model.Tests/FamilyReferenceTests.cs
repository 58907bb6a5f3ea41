using System.Text.Json;
using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;
using Qtip.Model.Checkpoint;
using Qtip.Model.Llama;
using Qtip.Model.Tokenization;
using Qtip.Testing;
using Xunit;

namespace Qtip.Model.Tests;

/// <summary>
/// The tiny random Mistral (sliding window 8 over 40 positions), Qwen2 (q/k/v biases, tied embeddings) and
/// Llama-3-style (8 heads / 2 KV heads, head_dim 16, llama3 RoPE) checkpoints of models/, made with transformers by
/// eng/gpu/make-tiny-families.py (bf16 weights, llama-nano's tokenizer), against transformers' fp32 reference in each
/// folder's reference.json: per-position logits (first 8, top 5, 16 spread ids, logsumexp) and argmax, hidden-state
/// norms, and the greedy ids of three prompts (a plain argmax loop of 32 steps).
/// </summary>
[RunOn(BackendKind.Cpu, BackendKind.Cuda)]
public abstract class FamilyReferenceTests(BackendKind backend) : BackendTest(backend)
{
    /// <summary>Logits vs transformers' fp32 on the same bf16 weights: fp32 sums in another order.</summary>
    private const double LogitTolerance = 2e-4;

    /// <summary>Relative agreement of the hidden-state L2 norms.</summary>
    private const double NormRelative = 1e-4;

    public static readonly TheoryData<string> Models = new("mistral-tiny", "qwen2-tiny", "llama3-tiny");

    internal static string Folder(string model)
    {
        var dir = Path.Combine(Fixtures.Root, "models", model);
        if (!File.Exists(Path.Combine(dir, "reference.json")))
            Assert.Skip($"{dir}/reference.json is not there (made by eng/gpu/make-tiny-families.py on the GPU machine)");
        return dir;
    }

    internal static JsonElement Reference(string dir) => JsonDocument.Parse(File.ReadAllBytes(Path.Combine(dir, "reference.json"))).RootElement;

    [Theory]
    [MemberData(nameof(Models))]
    public void Positions_LogitsArgmaxAndHiddenNormsMatchTransformers(string model)
    {
        var dir = Folder(model);
        var reference = Reference(dir).GetProperty("positions");
        var ids = TestData.Ints(reference.GetProperty("input_ids"));
        using var ckpt = LlamaCheckpoint.Open(dir);
        Assert.Equal(model.Split('-')[0] switch { "llama3" => "llama", var t => t }, ckpt.Config.ModelType);
        using var m = LlamaModel.Load(Device, ckpt, new ModelOptions { Precision = WeightPrecision.Float32, MaxContext = 64 });
        var hidden = new HiddenStateRecorder();
        m.Observer = hidden;
        m.Prefill(ids);
        var positions = reference.GetProperty("positions").EnumerateArray().ToArray();
        Assert.Equal(ids.Length, positions.Length);
        for (int pos = 0; pos < ids.Length; pos++)
        {
            var logits = m.ReadLogits(pos);
            var p = positions[pos];
            void Near(int id, double want, string what) =>
                Assert.True(Math.Abs(logits[id] - want) < LogitTolerance, $"{model} pos {pos} {what} logit {id}: {logits[id]} vs {want}");
            var first8 = TestData.Doubles(p.GetProperty("logits_first8"));
            for (int i = 0; i < 8; i++)
                Near(i, first8[i], "first8");
            foreach (var pair in p.GetProperty("top5").EnumerateArray())
                Near(pair[0].GetInt32(), pair[1].GetDouble(), "top5");
            foreach (var pair in p.GetProperty("spread").EnumerateArray())
                Near(pair[0].GetInt32(), pair[1].GetDouble(), "spread");
            Assert.Equal(p.GetProperty("top5")[0][0].GetInt32(), Array.IndexOf(logits, logits.Max()));
            double mx = logits.Max();
            double lse = mx + Math.Log(logits.Sum(l => Math.Exp(l - mx)));
            Assert.True(Math.Abs(lse - p.GetProperty("logsumexp").GetDouble()) < LogitTolerance, $"{model} pos {pos} logsumexp {lse}");
        }

        // Hidden states as transformers lists them: the embedding output, the residual stream after layers 0..L−2, and
        // the final norm's output.
        var l2 = reference.GetProperty("hidden_l2").EnumerateArray().Select(TestData.Doubles).ToArray();
        int layers = ckpt.Config.NumHiddenLayers, dim = ckpt.Config.HiddenSize;
        Assert.Equal(layers + 1, l2.Length);
        for (int s = 0; s <= layers; s++)
        {
            var h = hidden.States[s == 0 ? -1 : s == layers ? layers : s - 1];
            for (int pos = 0; pos < ids.Length; pos++)
            {
                double n2 = Math.Sqrt(h.Skip(pos * dim).Take(dim).Sum(v => (double)v * v));
                Assert.True(Math.Abs(n2 - l2[s][pos]) <= NormRelative * (1 + l2[s][pos]), $"{model} hidden state {s} pos {pos}: |h| {n2} vs {l2[s][pos]}");
            }
        }

        if (model == "mistral-tiny")
        {
            // The window changes transformers' logits past position 8 (made with the window removed): so the check above sees it.
            var diff = TestData.Doubles(reference.GetProperty("no_window_max_diff"));
            Assert.Equal(8, ckpt.Config.SlidingWindow);
            Assert.All(diff.Take(8), d => Assert.True(d < 1e-4));
            Assert.True(diff.Skip(8).Max() > 0.1, "the window must matter in this fixture");
        }
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void Greedy_MatchesTransformersArgmaxLoop(string model)
    {
        var dir = Folder(model);
        using var ckpt = LlamaCheckpoint.Open(dir);
        var tok = Tokenizers.Load(dir, ckpt.Config.BosTokenId, ckpt.Config.EosTokenIds[0]);
        using var m = LlamaModel.Load(Device, ckpt, new ModelOptions { Precision = WeightPrecision.Float32, MaxContext = 64 });
        foreach (var g in Reference(dir).GetProperty("generations").EnumerateArray())
        {
            var promptIds = tok.Encode(g.GetProperty("prompt").GetString()!);
            Assert.Equal(TestData.Ints(g.GetProperty("prompt_ids")), promptIds);
            var want = TestData.Ints(g.GetProperty("generated_ids"));
            var got = new Generator(m).Generate(promptIds.ToArray(), want.Length, SamplingOptions.Greedy).GeneratedIds;
            Assert.Equal(want, got);
        }
    }
}
