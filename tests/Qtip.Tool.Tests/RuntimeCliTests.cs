using System.Text.Json;
using System.Text.Json.Nodes;
using Qtip.Testing;
using Xunit;

namespace Qtip.Tool.Tests;

/// <summary>The runtime commands end to end on the bundled llama-nano, on the CPU backend, as a user runs them.</summary>
public sealed class RuntimeCliTests : IDisposable
{
    private readonly string temp = Path.Combine(Path.GetTempPath(), $"qtip-cli-{Environment.ProcessId}-{Guid.NewGuid():N}");

    public RuntimeCliTests() => Directory.CreateDirectory(temp);

    public void Dispose() => Directory.Delete(temp, recursive: true);

    private static string Root => TestData.RepoRoot();

    private static string Nano => Path.Combine(Root, "models", "llama-nano");

    private static JsonElement Reference => JsonDocument.Parse(File.ReadAllText(Path.Combine(Root, "data", "reference.json"))).RootElement.GetProperty("models").GetProperty("llama-nano");

    private string Json(string name) => Path.Combine(temp, name);

    /// <summary>Relative tolerance for a figure the CLI derives from two others it also reports (ppl = e^NLL, tokens/s =
    /// tokens / seconds, bound = bandwidth / bytes): both sides come from the same doubles, so only rounding separates them.</summary>
    private const double DerivedRelTol = 1e-9;

    /// <summary>A figure and the one it must equal, within <see cref="DerivedRelTol"/>.</summary>
    private static void AssertDerived(double expected, double actual, string what) =>
        Assert.True(Math.Abs(actual - expected) <= DerivedRelTol * Math.Abs(expected), $"{what}: {actual}, expected {expected}");

    /// <summary>A timing or rate: a finite positive number.</summary>
    private static double Positive(JsonElement e, string name)
    {
        double v = e.GetProperty(name).GetDouble();
        Assert.True(double.IsFinite(v) && v > 0, $"{name} = {v}: expected a finite positive number");
        return v;
    }

    /// <summary>Checks the figures of a bench decode report against each other: ms/token and tokens/s, the bandwidth
    /// bound (copy rate / weight bytes per token) and its ratio, the op breakdown's launches and time against the totals.</summary>
    private static void AssertBenchConsistent(JsonElement e)
    {
        double tps = Positive(e, "tokens_per_second");
        AssertDerived(1e3 / tps, Positive(e, "milliseconds_per_token"), "milliseconds_per_token");
        double bound = Positive(e, "bound_tokens_per_second");
        AssertDerived(Positive(e, "copy_g_bps") * 1e9 / e.GetProperty("weight_bytes_per_token").GetInt64(), bound, "bound_tokens_per_second");
        AssertDerived(tps / bound, e.GetProperty("ratio_to_bound").GetDouble(), "ratio_to_bound");
        Positive(e, "prefill_tokens_per_second");
        Positive(e, "host_launch_microseconds_per_token");
        var ops = e.GetProperty("ops").EnumerateArray().ToList();
        Assert.Equal(e.GetProperty("launches_per_token").GetInt32(), ops.Sum(o => o.GetProperty("launches_per_token").GetInt32()));
        foreach (var o in ops)
        {
            string op = o.GetProperty("op").GetString()!;
            double perLaunch = Positive(o, "microseconds_per_launch");
            AssertDerived(perLaunch * o.GetProperty("launches_per_token").GetInt32(), Positive(o, "microseconds_per_token"), $"{op}: microseconds_per_token");
        }
        AssertDerived(ops.Sum(o => o.GetProperty("microseconds_per_token").GetDouble()), Positive(e, "sum_of_ops_microseconds_per_token"), "sum_of_ops_microseconds_per_token");
    }

    [Fact]
    public void Inspect_ShowsConfigTensorsAndParameters()
    {
        var r = QtipProcess.Run("inspect", "--model", Nano, "--json", Json("inspect.json"));
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("2,491,008", r.Stdout, StringComparison.Ordinal);
        Assert.Contains("model.layers.1.mlp.down_proj.weight", r.Stdout, StringComparison.Ordinal);
        Assert.Contains("[8192,128]", r.Stdout, StringComparison.Ordinal);
        using var doc = JsonDocument.Parse(File.ReadAllText(Json("inspect.json")));
        Assert.Equal(21, doc.RootElement.GetProperty("tensors").GetArrayLength());
        Assert.Equal(2491008, doc.RootElement.GetProperty("parameters").GetInt64());
    }

    [Fact]
    public void Eval_TwoWindows_MatchesReferenceNll()
    {
        var r = QtipProcess.Run("eval", "--model", Nano, "--data", Path.Combine(Root, "data", "corpus", "valid.txt"), "--ctx", "512",
            "--max-windows", "2", "--backend", "cpu", "--json", Json("eval.json"));
        Assert.True(r.ExitCode == 0, r.Stderr);
        using var doc = JsonDocument.Parse(File.ReadAllText(Json("eval.json")));
        var e = doc.RootElement;
        Assert.Equal(2, e.GetProperty("windows").GetInt32());
        Assert.Equal(1022, e.GetProperty("predicted_tokens").GetInt64());
        Assert.Equal(389961, e.GetProperty("stream_tokens").GetInt64());
        var w = Reference.GetProperty("valid").GetProperty("first_windows_mean_nll");
        double want = (w[0].GetDouble() + w[1].GetDouble()) / 2;
        Assert.True(Math.Abs(e.GetProperty("mean_nll").GetDouble() - want) < 1e-4 * want, $"mean NLL {e.GetProperty("mean_nll").GetDouble()} vs {want}");
        Assert.Contains("ppl", r.Stdout, StringComparison.Ordinal);
        Assert.Contains(e.GetProperty("perplexity").GetDouble().ToString("F4"), r.Stdout, StringComparison.Ordinal);
        // ppl = e^(mean NLL); tokens/s = windows · ctx / seconds.
        AssertDerived(Math.Exp(e.GetProperty("mean_nll").GetDouble()), e.GetProperty("perplexity").GetDouble(), "perplexity");
        AssertDerived(2.0 * 512 / Positive(e, "seconds"), Positive(e, "tokens_per_second"), "tokens_per_second");
    }

    [Fact]
    public void Generate_Greedy_StreamsTheReferenceTokens()
    {
        var r = QtipProcess.Run("generate", "--model", Nano, "--prompt", "The", "--max-new-tokens", "8", "--backend", "cpu", "--json", Json("gen.json"));
        Assert.True(r.ExitCode == 0, r.Stderr);
        Assert.StartsWith("Thesema’s sake of", r.Stdout, StringComparison.Ordinal);
        Assert.Contains("tokens/s", r.Stderr, StringComparison.Ordinal);
        using var doc = JsonDocument.Parse(File.ReadAllText(Json("gen.json")));
        var want = Reference.GetProperty("generations")[0].GetProperty("generated_ids").EnumerateArray().Take(8).Select(x => x.GetInt32());
        Assert.Equal(want, doc.RootElement.GetProperty("generated_ids").EnumerateArray().Select(x => x.GetInt32()));
        Assert.Equal(new[] { 1, 339 }, doc.RootElement.GetProperty("prompt_ids").EnumerateArray().Select(x => x.GetInt32()));
        // Exactly the tokens asked for, and the text is the prompt's continuation.
        var g = doc.RootElement;
        Assert.Equal(8, g.GetProperty("generated_ids").GetArrayLength());
        Assert.Contains("8 tokens;", r.Stderr, StringComparison.Ordinal);
        Assert.Equal("The" + g.GetProperty("text").GetString(), g.GetProperty("full_text").GetString());
        // The first token comes with the prefill; the other 7 are the decode rate's.
        Positive(g, "prefill_seconds");
        AssertDerived(7 / Positive(g, "decode_seconds"), Positive(g, "decode_tokens_per_second"), "decode_tokens_per_second");
    }

    [Fact]
    public void Generate_Sampling_IsReproducibleForASeed()
    {
        int[] Run(string seed, string file)
        {
            var r = QtipProcess.Run("generate", "--model", Nano, "--prompt", "It is a truth", "-n", "6", "--temperature", "0.9", "--top-p", "0.9",
                "--top-k", "40", "--seed", seed, "--backend", "cpu", "--json", Json(file));
            Assert.True(r.ExitCode == 0, r.Stderr);
            using var doc = JsonDocument.Parse(File.ReadAllText(Json(file)));
            return doc.RootElement.GetProperty("generated_ids").EnumerateArray().Select(x => x.GetInt32()).ToArray();
        }
        var a = Run("5", "a.json");
        var b = Run("5", "b.json");
        Assert.Equal(a, b);
        Assert.Equal(6, a.Length);
        Assert.All(a, id => Assert.InRange(id, 0, 8191));
        // The seed is used: another seed draws another sequence (fixed seeds, so this holds or fails every run).
        Assert.NotEqual(a, Run("6", "c.json"));
    }

    [Fact]
    public void BenchDecode_SmallShapeOnCpu_ReportsBreakdown()
    {
        var r = QtipProcess.Run("bench", "decode", "--shape", "llama-nano", "--tokens", "3", "--prefill-ctx", "16", "--iterations", "1", "--backend", "cpu",
            "--json", Json("bench.json"));
        Assert.True(r.ExitCode == 0, r.Stderr);
        using var doc = JsonDocument.Parse(File.ReadAllText(Json("bench.json")));
        var e = doc.RootElement;
        AssertBenchConsistent(e);
        Assert.Equal(3, e.GetProperty("decode_tokens").GetInt32());
        Assert.Equal(16, e.GetProperty("prompt_tokens").GetInt32());
        // fp16 weights read per token: every linear of the 2 layers (q 128×128, k and v 64×128, o 128×128, gate and up
        // 384×128, down 128×384) and the lm_head 8192×128; the embedding reads one row.
        Assert.Equal(2L * ((2 * ((128 * 128) + (2 * 64 * 128) + (128 * 128) + (3 * 384 * 128))) + (8192 * 128)),
            e.GetProperty("weight_bytes_per_token").GetInt64());
        // The fused decode step: embedding, 5 per layer (norm+q|k|v+RoPE, attention, o+residual, norm+gate|up+SwiGLU,
        // down+residual) for nano's 2 layers, norm+head, argmax; one breakdown row per op kind.
        Assert.Equal(1 + (5 * 2) + 2, e.GetProperty("launches_per_token").GetInt32());
        Assert.Equal(8, e.GetProperty("ops").GetArrayLength());
        Assert.Contains("where the time goes", r.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void BenchDecode_QuantizedNanoOnCpu_ReportsBoundAndBreakdown()
    {
        var r = QtipProcess.Run("bench", "decode", "--shape", "llama-nano", "--code", "hyb", "--bits", "2", "--tokens", "4", "--prefill-ctx", "16",
            "--iterations", "1", "--backend", "cpu", "--json", Json("bench-q.json"));
        Assert.True(r.ExitCode == 0, r.Stderr);
        using var doc = JsonDocument.Parse(File.ReadAllText(Json("bench-q.json")));
        var e = doc.RootElement;
        AssertBenchConsistent(e);
        Assert.Equal(4, e.GetProperty("decode_tokens").GetInt32());
        Assert.Contains("HYB 2-bit", e.GetProperty("weights").GetString(), StringComparison.Ordinal);
        // The fp16 lm_head (8192×128×2 bytes) and the 2 layers' 393,216 linear weights: at least their 2-bit trellis
        // payload, and with SU/SV and the LUT less than ~4 bits per weight (fp16 would be 786,432 bytes).
        const long head = 8192L * 128 * 2, linearWeights = 2L * ((128 * 128) + (2 * 64 * 128) + (128 * 128) + (3 * 384 * 128));
        long bytes = e.GetProperty("weight_bytes_per_token").GetInt64();
        Assert.InRange(bytes, head + (linearWeights * 2 / 8), head + 200_000);
        Assert.True(e.GetProperty("ops").GetArrayLength() >= 8);
    }

    [Fact]
    public void BenchDecode_UnknownCode_ExitsOne()
    {
        var r = QtipProcess.Run("bench", "decode", "--shape", "llama-nano", "--code", "e8p", "--backend", "cpu");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("--code", r.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void TruncatedCheckpoint_ExitsThreeWithOneLineNamingTheFile()
    {
        var dir = Path.Combine(temp, "cut");
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(Nano))
            File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        using (var fs = new FileStream(Path.Combine(dir, "model.safetensors"), FileMode.Open))
            fs.SetLength(fs.Length - 1000);
        var r = QtipProcess.Run("inspect", "--model", dir);
        Assert.Equal(3, r.ExitCode);
        Assert.Single(r.Stderr.Trim().Split('\n'));
        Assert.Contains("model.safetensors", r.Stderr, StringComparison.Ordinal);
        Assert.Contains("tensor '", r.Stderr, StringComparison.Ordinal);
        Assert.Contains("truncated", r.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void IndivisibleHeads_ExitsThree()
    {
        var dir = Path.Combine(temp, "heads");
        Directory.CreateDirectory(dir);
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(Nano, "config.json")))!.AsObject();
        cfg["num_key_value_heads"] = 3;
        File.WriteAllText(Path.Combine(dir, "config.json"), cfg.ToJsonString());
        var r = QtipProcess.Run("eval", "--model", dir, "--backend", "cpu");
        Assert.Equal(3, r.ExitCode);
        Assert.Contains("num_key_value_heads 3", r.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void MissingModel_ExitsThree_BadOption_ExitsOne()
    {
        var r = QtipProcess.Run("generate", "--model", Path.Combine(temp, "none"), "--prompt", "x");
        Assert.Equal(3, r.ExitCode);
        Assert.Contains("none", r.Stderr, StringComparison.Ordinal);
        r = QtipProcess.Run("eval", "--model", Nano, "--ctx", "1");
        Assert.Equal(1, r.ExitCode);
        r = QtipProcess.Run("generate", "--model", Nano, "--prompt", "x", "--top-p", "0");
        Assert.Equal(1, r.ExitCode);
    }

    [Fact]
    public void CudaUnavailable_ExitsTwo()
    {
        var r = QtipProcess.Run("generate", "--model", Nano, "--prompt", "The", "-n", "2", "--backend", "cuda");
        if (r.ExitCode == 0)
            return; // this machine has a GPU
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("backend 'cuda' is not available", r.Stderr, StringComparison.Ordinal);
    }
}
