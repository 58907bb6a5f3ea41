using System.Diagnostics;
using System.Text.Json;
using Qtip.Model.Checkpoint;
using Qtip.Testing;
using Xunit;

namespace Qtip.Tool.Tests;

/// <summary>
/// <c>qtip quantize</c> as a user runs it, on the bundled llama-nano and the CPU backend, with a tiny trellis (L = 8) and
/// two short calibration windows so each run takes seconds: the output format, evaluation of the result, resume after a
/// kill (byte-identical), and every bad-input case with its exit code and nothing half-written left behind.
/// </summary>
public sealed class QuantizeCliTests : IDisposable
{
    private static readonly string Repo = TestData.RepoRoot();
    private static readonly string Nano = Path.Combine(Repo, "models", "llama-nano");
    private static readonly string Calib = Path.Combine(Repo, "data", "corpus", "calib.txt");
    private readonly string work = Path.Combine(Path.GetTempPath(), $"qtip-quant-{Environment.ProcessId}-{Guid.NewGuid():N}");

    public QuantizeCliTests() => Directory.CreateDirectory(work);

    public void Dispose()
    {
        if (Directory.Exists(work))
            Directory.Delete(work, recursive: true);
    }

    private static string[] Tiny(string outDir, params string[] extra) =>
    [
        "quantize", "--model", Nano, "--out", outDir, "--calib", Calib, "--calib-ctx", "64", "--calib-windows", "2",
        "--code", "1mad", "--bits", "2", "--L", "8", "--backend", "cpu", .. extra,
    ];

    [Fact]
    public void Quantize_WritesTheDocumentedFormat_AndTheResultEvaluates()
    {
        var outDir = Path.Combine(work, "q");
        var json = Path.Combine(work, "q.json");
        // What a run killed during its final rename leaves behind (a process id that cannot be alive): cleaned up.
        var stale = outDir + $".tmp-{int.MaxValue}";
        Directory.CreateDirectory(stale);
        File.WriteAllText(Path.Combine(stale, "config.json"), "{}");
        var r = QtipProcess.Run([.. Tiny(outDir), "--json", json]);
        Assert.True(r.ExitCode == 0, r.Stderr + r.Stdout);
        Assert.False(Directory.Exists(outDir + ".partial"));
        Assert.False(Directory.Exists(stale));

        using (var cfgDoc = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "config.json"))))
        {
            var cfg = cfgDoc.RootElement;
            var quip = cfg.GetProperty("quip_params");
            Assert.Equal("bitshift", quip.GetProperty("codebook").GetString());
            Assert.Equal(8, quip.GetProperty("L").GetInt32());
            Assert.Equal(2, quip.GetProperty("K").GetInt32());
            Assert.Equal(1, quip.GetProperty("V").GetInt32());
            Assert.Equal("1mad", quip.GetProperty("decode_mode").GetString());
            Assert.Equal("qtip", cfg.GetProperty("quantization_config").GetProperty("quant_method").GetString());
        }
        foreach (var f in new[] { "tokenizer.model", "tokenizer.json", "generation_config.json", "qtip-report.json" })
            Assert.True(File.Exists(Path.Combine(outDir, f)), f);

        using (var st = SafeTensorsFile.Open(Path.Combine(outDir, "model.safetensors")))
        {
            var trellis = st["model.layers.1.mlp.down_proj.trellis"];
            Assert.Equal(SafeTensorsDType.I16, trellis.DType);
            Assert.Equal([(128 / 16) * (384 / 16), 16 * 2], trellis.Shape);
            Assert.Equal(SafeTensorsDType.BF16, st["model.layers.1.mlp.down_proj.SU"].DType);
            Assert.Equal([384L], st["model.layers.1.mlp.down_proj.SU"].Shape);
            Assert.Equal(SafeTensorsDType.F32, st["model.layers.1.mlp.down_proj.SV"].DType);
            Assert.Equal([128L], st["model.layers.1.mlp.down_proj.SV"].Shape);
            Assert.False(st.Contains("model.layers.1.mlp.down_proj.weight"));
            Assert.True(st.Contains("lm_head.weight"));
            Assert.True(st.Contains("model.embed_tokens.weight"));
        }

        using (var report = JsonDocument.Parse(File.ReadAllText(json)))
        {
            double bpw = report.RootElement.GetProperty("bits_per_weight").GetDouble();
            Assert.InRange(bpw, 2.0, 2.5);
            foreach (var m in report.RootElement.GetProperty("matrices").EnumerateArray())
                Assert.InRange(m.GetProperty("proxy_error").GetDouble(), 1e-4, 0.5);
        }

        // The quantized model against the full-precision one on the same windows.
        double fp = Perplexity(Nano, "fp");
        double ppl = Perplexity(outDir, "q");
        Assert.InRange(ppl, fp, fp * MaxPerplexityRatio);
    }

    /// <summary>
    /// Largest perplexity of the <see cref="Tiny"/> quantization (1MAD, K = 2, L = 8, 2 calibration windows of 64 tokens)
    /// relative to the full-precision model's, on 2 windows of 64 tokens of valid.txt. Measured on the CPU backend
    /// (2026-12-06): FP 27.63, quantized 106.7 (×3.86); for comparison the same run with H = I gives 61.0 (×2.2: 128
    /// calibration tokens make a poor Hessian for a model this small) and 2-bit round-to-nearest 330.6 (×12). ×4.5 leaves
    /// room for float summation-order differences between machines and still fails a quantizer no better than RTN.
    /// </summary>
    private const double MaxPerplexityRatio = 4.5;

    private double Perplexity(string model, string name)
    {
        var json = Path.Combine(work, $"eval-{name}.json");
        var e = QtipProcess.Run("eval", "--model", model, "--data", Path.Combine(Repo, "data", "corpus", "valid.txt"), "--ctx", "64",
            "--max-windows", "2", "--backend", "cpu", "--json", json);
        Assert.True(e.ExitCode == 0, e.Stderr + e.Stdout);
        using var ev = JsonDocument.Parse(File.ReadAllText(json));
        return ev.RootElement.GetProperty("perplexity").GetDouble();
    }

    [Fact]
    public void Resume_AfterKillingTheProcessMidRun_GivesTheSameBytes()
    {
        var killed = Path.Combine(work, "killed");
        var fresh = Path.Combine(work, "fresh");
        // --sequential quantizes (and saves) one layer at a time; kill the run once layer 0 is on disk.
        var args = Tiny(killed, "--sequential", "--resume");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "qtip.dll"));
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        var layer0 = Path.Combine(killed + ".partial", "layer-000.safetensors");
        bool killedMidRun;
        using (var p = Process.Start(psi)!)
        {
            _ = p.StandardOutput.ReadToEndAsync(TestContext.Current.CancellationToken);
            _ = p.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
            var sw = Stopwatch.StartNew();
            while (!File.Exists(layer0) && !p.HasExited && sw.Elapsed < TimeSpan.FromMinutes(5))
                Thread.Sleep(20);
            killedMidRun = !p.HasExited;
            if (killedMidRun)
                p.Kill(entireProcessTree: true);
            p.WaitForExit();
        }
        Assert.True(killedMidRun, "the run finished before it could be killed after layer 0");
        Assert.True(File.Exists(layer0));
        Assert.False(File.Exists(Path.Combine(killed + ".partial", "layer-001.safetensors")));
        Assert.False(Directory.Exists(killed));

        var resumed = QtipProcess.Run(args);
        Assert.True(resumed.ExitCode == 0, resumed.Stderr + resumed.Stdout);
        Assert.Contains("layers resumed", resumed.Stdout, StringComparison.Ordinal);

        // A separate process with the same seed: the bytes must match (resume identity and same-seed determinism).
        var clean = QtipProcess.Run(Tiny(fresh, "--sequential"));
        Assert.True(clean.ExitCode == 0, clean.Stderr + clean.Stdout);
        Assert.Equal(File.ReadAllBytes(Path.Combine(fresh, "model.safetensors")), File.ReadAllBytes(Path.Combine(killed, "model.safetensors")));
        Assert.Equal(File.ReadAllText(Path.Combine(fresh, "config.json")), File.ReadAllText(Path.Combine(killed, "config.json")));
    }

    /// <summary>True when <paramref name="signal"/> is in this process's ignored set (/proc/self/status SigIgn).</summary>
    private static bool IgnoredByThisProcess(int signal)
    {
        var line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("SigIgn:", StringComparison.Ordinal));
        return line is not null && ((Convert.ToUInt64(line["SigIgn:".Length..].Trim(), 16) >> (signal - 1)) & 1) == 1;
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int SendSignal(int pid, int signal);

    [Theory]
    [InlineData(15)] // SIGTERM
    [InlineData(2)]  // SIGINT (Ctrl-C)
    public async Task Signal_KeepsCompletedLayers_Exits130_AndResumeWithoutAFirstResumeGivesTheSameBytes(int signal)
    {
        Assert.SkipUnless(OperatingSystem.IsLinux(), "POSIX signals");
        // A process started with a signal ignored (a shell's background job: `cmd &` ignores SIGINT) hands that to its
        // children, and the runtime keeps it ignored, as a shell's commands do; then qtip cannot see it.
        Assert.SkipWhen(IgnoredByThisProcess(signal), $"signal {signal} is ignored by the test process (inherited, e.g. a background job), so the qtip child ignores it too");
        var interrupted = Path.Combine(work, "interrupted");
        var fresh = Path.Combine(work, "fresh");
        // One layer per group, so layer 0 is saved while layer 1 is still to do; no --resume on the first run.
        var args = Tiny(interrupted, "--group-layers", "1");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "qtip.dll"));
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        var layer0 = Path.Combine(interrupted + ".partial", "layer-000.safetensors");
        string stderr;
        int exitCode;
        double secondsToExit;
        using (var p = Process.Start(psi)!)
        {
            _ = p.StandardOutput.ReadToEndAsync(TestContext.Current.CancellationToken);
            var err = p.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
            var sw = Stopwatch.StartNew();
            while (!File.Exists(layer0) && !p.HasExited && sw.Elapsed < TimeSpan.FromMinutes(5))
                Thread.Sleep(10);
            Assert.False(p.HasExited, "the run finished before it could be interrupted after layer 0");
            var signalled = Stopwatch.StartNew();
            Assert.Equal(0, SendSignal(p.Id, signal));
            Assert.True(p.WaitForExit(TimeSpan.FromMinutes(1)), "no exit within a minute of the signal");
            secondsToExit = signalled.Elapsed.TotalSeconds;
            exitCode = p.ExitCode;
            stderr = await err;
        }
        Assert.True(exitCode == 130, $"exit {exitCode}: {stderr}");
        Assert.Equal("qtip: interrupted after layer 1/2; rerun with --resume", stderr.Trim());
        Assert.True(secondsToExit < 10, $"{secondsToExit:F1} s from the signal to the exit");
        Assert.True(File.Exists(layer0));
        Assert.True(File.Exists(Path.Combine(interrupted + ".partial", "run.json")));
        Assert.False(Directory.Exists(interrupted));

        var resumed = QtipProcess.Run([.. args, "--resume"]);
        Assert.True(resumed.ExitCode == 0, resumed.Stderr + resumed.Stdout);
        Assert.Matches(@"layers resumed\s+1", resumed.Stdout);
        Assert.False(Directory.Exists(interrupted + ".partial"));

        var clean = QtipProcess.Run(Tiny(fresh));
        Assert.True(clean.ExitCode == 0, clean.Stderr + clean.Stdout);
        Assert.Equal(File.ReadAllBytes(Path.Combine(fresh, "model.safetensors")), File.ReadAllBytes(Path.Combine(interrupted, "model.safetensors")));
    }

    [Fact]
    public void Shards_ThenAssemble_AndSmallBatches_GiveTheSameBytesAsOneRun()
    {
        var whole = Path.Combine(work, "whole");
        var sharded = Path.Combine(work, "sharded");
        var batched = Path.Combine(work, "batched");
        var r = QtipProcess.Run(Tiny(whole));
        Assert.True(r.ExitCode == 0, r.Stderr + r.Stdout);

        // Layer 1's shard runs first: it recomputes the activations through layer 0 itself.
        foreach (var range in new[] { "1-1", "0" })
        {
            var s = QtipProcess.Run(Tiny(sharded, "--layers", range));
            Assert.True(s.ExitCode == 0, s.Stderr + s.Stdout);
            Assert.False(Directory.Exists(sharded), "a shard does not write the checkpoint");
        }
        var a = QtipProcess.Run(Tiny(sharded, "--assemble"));
        Assert.True(a.ExitCode == 0, a.Stderr + a.Stdout);
        Assert.Matches(@"layers resumed\s+2", a.Stdout);
        Assert.Equal(File.ReadAllBytes(Path.Combine(whole, "model.safetensors")), File.ReadAllBytes(Path.Combine(sharded, "model.safetensors")));
        Assert.Equal(File.ReadAllText(Path.Combine(whole, "config.json")), File.ReadAllText(Path.Combine(sharded, "config.json")));
        Assert.False(Directory.Exists(sharded + ".partial"));

        // A 1 MiB batch budget: every matrix in a BlockLDLQ batch of its own, every layer in its own group.
        var b = QtipProcess.Run(Tiny(batched, "--batch-mb", "1", "--group-layers", "1"));
        Assert.True(b.ExitCode == 0, b.Stderr + b.Stdout);
        Assert.Equal(File.ReadAllBytes(Path.Combine(whole, "model.safetensors")), File.ReadAllBytes(Path.Combine(batched, "model.safetensors")));
    }

    [Fact]
    public void BenchQuantize_PeakDeviceMemoryDoesNotGrowWithDepth()
    {
        long Peak(int layers)
        {
            var json = Path.Combine(work, $"bench-{layers}.json");
            var r = QtipProcess.Run("bench", "quantize", "--shape", "llama-nano", "--layers", layers.ToString(System.Globalization.CultureInfo.InvariantCulture),
                "--code", "1mad", "--L", "8", "--calib-windows", "2", "--calib-ctx", "32", "--backend", "cpu", "--json", json);
            Assert.True(r.ExitCode == 0, r.Stderr + r.Stdout);
            using var doc = JsonDocument.Parse(File.ReadAllText(json));
            Assert.Equal(layers, doc.RootElement.GetProperty("layers").GetInt32());
            return doc.RootElement.GetProperty("peak_device_bytes").GetInt64();
        }
        long two = Peak(2), four = Peak(4);
        Assert.InRange(two, 1L << 20, 1L << 30);
        Assert.InRange((double)four / two, 0.9, 1.1);
    }

    [Fact]
    public void ExistingOutput_IsRefusedWithoutForce()
    {
        var outDir = Path.Combine(work, "exists");
        Directory.CreateDirectory(outDir);
        File.WriteAllText(Path.Combine(outDir, "keep.txt"), "mine");
        var r = QtipProcess.Run(Tiny(outDir));
        Assert.Equal(3, r.ExitCode);
        Assert.Contains("--force", r.Stderr, StringComparison.Ordinal);
        Assert.Equal("mine", File.ReadAllText(Path.Combine(outDir, "keep.txt")));
    }

    [Theory]
    [InlineData("")]
    [InlineData("too short.")]
    public void EmptyOrTooShortCalibration_IsExitCode3_AndLeavesNothing(string text)
    {
        var calib = Path.Combine(work, "calib.txt");
        File.WriteAllText(calib, text);
        var outDir = Path.Combine(work, "out");
        var r = QtipProcess.Run("quantize", "--model", Nano, "--out", outDir, "--calib", calib, "--backend", "cpu", "--L", "8");
        Assert.Equal(3, r.ExitCode);
        Assert.Contains("calibration", r.Stderr, StringComparison.Ordinal);
        Assert.Single(r.Stderr.Trim().Split('\n'));
        Assert.DoesNotContain(Directory.GetFileSystemEntries(work), p => p.StartsWith(outDir, StringComparison.Ordinal));
    }

    [Fact]
    public void UnwritableOutput_IsExitCode3_WithOneLine()
    {
        Assert.SkipUnless(OperatingSystem.IsLinux(), "uses /proc, where nothing can be created even as root");
        var r = QtipProcess.Run(Tiny("/proc/qtip-out"));
        Assert.Equal(3, r.ExitCode);
        Assert.Contains("cannot write", r.Stderr, StringComparison.Ordinal);
        Assert.Single(r.Stderr.Trim().Split('\n'));
    }

    [Fact]
    public void MissingCalibrationFile_IsExitCode3()
    {
        var r = QtipProcess.Run("quantize", "--model", Nano, "--out", Path.Combine(work, "o"), "--calib", Path.Combine(work, "nope.txt"), "--backend", "cpu");
        Assert.Equal(3, r.ExitCode);
        Assert.Contains("nope.txt", r.Stderr, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("--bits", "5")]
    [InlineData("--L", "20")]
    [InlineData("--code", "e8p")]
    [InlineData("--method", "gptq")]
    public void BadOptions_AreUsageErrors(string option, string value)
    {
        var r = QtipProcess.Run("quantize", "--model", Nano, "--out", Path.Combine(work, "o"), "--calib", Calib, "--backend", "cpu", option, value);
        Assert.Equal(1, r.ExitCode);
        Assert.Contains(option.TrimStart('-'), r.Stderr, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public void ShapesNotMadeOf16x16Tiles_AreExitCode3_NamingTheTensor()
    {
        // A Llama with hidden size 40: every linear has a dimension that is not a multiple of 16.
        var model = Path.Combine(work, "odd");
        Directory.CreateDirectory(model);
        const int hidden = 40, inter = 64, vocab = 8192;
        var config = File.ReadAllText(Path.Combine(Nano, "config.json"))
            .Replace("\"hidden_size\": 128", $"\"hidden_size\": {hidden}", StringComparison.Ordinal)
            .Replace("\"intermediate_size\": 384", $"\"intermediate_size\": {inter}", StringComparison.Ordinal)
            .Replace("\"head_dim\": 32", "\"head_dim\": 10", StringComparison.Ordinal)
            .Replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1", StringComparison.Ordinal);
        File.WriteAllText(Path.Combine(model, "config.json"), config);
        foreach (var f in new[] { "tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json" })
            File.Copy(Path.Combine(Nano, f), Path.Combine(model, f));
        var w = new SafeTensorsWriter();
        void Add(string name, params int[] shape) =>
            w.AddFloat32(name, Enumerable.Repeat(0.01f, shape.Aggregate(1, (a, b) => a * b)).ToArray(), shape.Select(d => (long)d).ToArray(), SafeTensorsDType.BF16);
        Add("model.embed_tokens.weight", vocab, hidden);
        Add("lm_head.weight", vocab, hidden);
        Add("model.norm.weight", hidden);
        Add("model.layers.0.input_layernorm.weight", hidden);
        Add("model.layers.0.post_attention_layernorm.weight", hidden);
        Add("model.layers.0.self_attn.q_proj.weight", hidden, hidden);
        Add("model.layers.0.self_attn.k_proj.weight", 20, hidden);
        Add("model.layers.0.self_attn.v_proj.weight", 20, hidden);
        Add("model.layers.0.self_attn.o_proj.weight", hidden, hidden);
        Add("model.layers.0.mlp.gate_proj.weight", inter, hidden);
        Add("model.layers.0.mlp.up_proj.weight", inter, hidden);
        Add("model.layers.0.mlp.down_proj.weight", hidden, inter);
        w.Write(Path.Combine(model, "model.safetensors"));

        var outDir = Path.Combine(work, "odd-out");
        var r = QtipProcess.Run("quantize", "--model", model, "--out", outDir, "--calib", Calib, "--backend", "cpu", "--L", "8");
        Assert.Equal(3, r.ExitCode);
        Assert.Contains("multiples of 16", r.Stderr, StringComparison.Ordinal);
        Assert.Contains("proj", r.Stderr, StringComparison.Ordinal);
        Assert.False(Directory.Exists(outDir));
        Assert.False(Directory.Exists(outDir + ".partial"));
    }
}
