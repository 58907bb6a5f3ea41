using System.CommandLine;
using System.Diagnostics;
using Qtip.Quant.Trellis;
using Qtip.Kernels;
using Qtip.Kernels.Runtime;
using Qtip.Kernels.Trellis;
using Qtip.Model.Checkpoint;
using Qtip.Model.Llama;
using Qtip.Model.Quantized;
using Qtip.Model.Tokenization;
using Qtip.Tool.Cli;

namespace Qtip.Tool.Commands;

/// <summary>
/// <c>qtip demo</c>: the README's main job on the bundled llama-nano: quantize it, compare full-precision and quantized
/// perplexity on the validation text, and print a greedy sample from the quantized model.
/// </summary>
public static class DemoCommand
{
    public static Command Create()
    {
        var backend = CommonOptions.Backend();
        var device = CommonOptions.Device();
        var bits = QuantizeCommand.BitsOption();
        var code = new Option<string?>("--code") { Description = "hyb, 3inst or 1mad. Default: hyb on a GPU; 1mad on the CPU simulator (HYB's k-means LUT takes minutes there the first time)." };
        var l = new Option<int?>("--L") { Description = "Trellis state bits, 8…16. Default: auto, 16 on a GPU and 12 on the CPU simulator (16× less search)." };
        var windows = new Option<int?>("--windows") { Description = "Validation windows of 512 tokens to score, ≥ 1. Default: auto, all 761 on a GPU and 8 on the CPU simulator." };
        var calibWindows = new Option<int?>("--calib-windows") { Description = "Calibration windows, ≥ 1, or 0 for all. Default: auto, all on a GPU and 16 on the CPU simulator." };
        var output = new Option<DirectoryInfo?>("--out", "-o") { Description = "Where the quantized model goes (default: out/llama-nano-<code>-<K>bit)." };
        var json = CommonOptions.Json();
        var command = new Command("demo", "The main job on the bundled llama-nano: quantize, compare FP vs quantized perplexity, generate a sample. " +
            "llama-nano and the texts come from the Qtip repository above the working directory, else from the tool's own folder (installed with it); " +
            "the quantized model goes to out/ of the repository, or of the working directory for the installed tool.")
        {
            backend, device, bits, code, l, windows, calibWindows, output, json,
        };
        command.SetAction(parse => CommandRunner.Run(() => Execute(
            CommonOptions.ParseBackend(parse.GetValue(backend)!), parse.GetValue(device), parse.GetValue(bits), parse.GetValue(code),
            parse.GetValue(l), parse.GetValue(windows), parse.GetValue(calibWindows), parse.GetValue(output), parse.GetValue(json))));
        return command;
    }

    /// <summary>The folder holding models/llama-nano and data/corpus: the Qtip repository above the working directory,
    /// else the tool's own folder (the installed tool package carries both; <see cref="Locations"/>).</summary>
    internal static string FindRepository()
    {
        var model = Locations.FindBundled(Locations.NanoModel);
        if (model is not null && File.Exists(Path.Combine(model, "..", "..", Locations.ValidText)))
            return Path.GetFullPath(Path.Combine(model, "..", ".."));
        throw new InvalidInputException($"the bundled llama-nano was not found: neither in a Qtip repository above {Environment.CurrentDirectory} nor next to the tool ({Locations.ToolDirectory})");
    }

    private static int Execute(BackendKind kind, int deviceIndex, int bits, string? codeText, int? lGiven, int? windowsGiven, int? calibWindowsGiven, DirectoryInfo? output, FileInfo? json)
    {
        if (windowsGiven is < 1)
            throw new UsageException($"--windows must be at least 1 (got {windowsGiven}); leave it out for the default");
        if (calibWindowsGiven is < 0)
            throw new UsageException($"--calib-windows must be 0 (all) or positive (got {calibWindowsGiven}); leave it out for the default");
        if (lGiven is { } lCheck && lCheck is < 8 or > 16)
            throw new UsageException($"--L must be 8…16 (got {lCheck})");
        if (bits is < 2 or > 4)
            throw new UsageException($"--bits must be 2, 3 or 4 (got {bits})");
        var repo = FindRepository();
        var modelDir = Path.Combine(repo, "models", "llama-nano");
        var valid = Path.Combine(repo, "data", "corpus", "valid.txt");
        var calib = Path.Combine(repo, "data", "corpus", "calib.txt");
        using var device = Backends.Open(kind, deviceIndex);
        bool cpu = device.Kind == BackendKind.Cpu;
        var code = codeText is null ? (cpu ? TrellisCodes.OneMad : TrellisCodes.Hyb) : QuantizeCommand.ParseCode(codeText);
        int l = lGiven ?? (cpu ? 12 : 16);
        int windows = windowsGiven ?? (cpu ? 8 : int.MaxValue);
        int calibWindows = calibWindowsGiven ?? (cpu ? 16 : 0);
        var codeName = code.Name;
        // In a checkout the output goes under its out/; for the installed tool (model and texts next to it), under the working directory.
        var outRoot = File.Exists(Path.Combine(repo, "Qtip.sln")) ? repo : Environment.CurrentDirectory;
        var outDir = output?.FullName ?? Path.Combine(outRoot, "out", $"llama-nano-{codeName}-{bits}bit");
        Output.Line($"device: {device}");
        Notices.CpuBackend(device);
        Notices.HybTable(device, code);
        Output.Line($"1/4  quantize {modelDir} → {outDir}: QTIP {codeName.ToUpperInvariant()}, K = {bits}, L = {l}, calibration {(calibWindows == 0 ? "all" : calibWindows.ToString())} windows of 512 tokens");
        var wall = Stopwatch.StartNew();
        var options = new QuantizeOptions
        {
            ModelDir = modelDir,
            OutDir = outDir,
            Bits = bits,
            Code = code,
            L = l,
            CalibrationFile = calib,
            CalibrationWindows = calibWindows,
            Force = true,
        };
        try
        {
            options.Validate();
        }
        catch (ArgumentException e)
        {
            throw UsageException.From(e);
        }
        // --force here too replaces only what qtip wrote, never the model or a foreign folder; the lock holds for the run.
        OutputGuard acquired;
        using (var checkpoint = LlamaCheckpoint.Open(modelDir))
            acquired = OutputGuard.Acquire(options, checkpoint);
        using var guard = acquired;
        var report = new QuantizePipeline(device, options).Run();
        Output.Line($"     {report.Matrices.Count} matrices, {report.BitsPerWeight:F3} bits/weight, mean proxy error {report.MeanProxyError:F4}, {wall.Elapsed.TotalSeconds:F1} s");

        Output.Line($"2/4  perplexity of the full-precision model ({(windows == int.MaxValue ? "all" : windows.ToString())} windows of 512 tokens)");
        var fp = Evaluate(device, modelDir, valid, windows);
        Output.Line($"3/4  perplexity of the quantized model");
        var q = Evaluate(device, outDir, valid, windows);
        Output.Line("4/4  greedy sample from the quantized model, prompt \"The\"");
        string sample;
        using (var checkpoint = LlamaCheckpoint.Open(outDir))
        using (var model = LlamaModel.Load(device, checkpoint, new ModelOptions { MaxContext = 128 }))
        {
            var tokenizer = Tokenizers.Load(outDir, checkpoint.Config.BosTokenId, checkpoint.Config.EosTokenIds[0]);
            var result = new Generator(model).Generate(tokenizer.Encode("The"), 40, SamplingOptions.Greedy);
            sample = tokenizer.Decode([.. result.PromptIds, .. result.GeneratedIds]).Replace("\n", " ⏎ ", StringComparison.Ordinal);
        }
        Output.Line("     " + sample);
        Output.Table("qtip demo: llama-nano",
            ["", "value"],
            [
                ["quantization", $"QTIP {codeName.ToUpperInvariant()} K={bits} L={l}, {report.BitsPerWeight:F3} bits/weight"],
                ["model file", $"{Output.Bytes(report.ModelBytes)} (full precision: {Output.Bytes(new FileInfo(Path.Combine(modelDir, "model.safetensors")).Length)})"],
                ["perplexity, full precision", fp.Perplexity.ToString("F4")],
                ["perplexity, quantized", $"{q.Perplexity:F4} ({(q.Perplexity / fp.Perplexity) - 1:+0.0%;-0.0%})"],
                ["windows scored", $"{q.Windows} × 512 tokens"],
                ["wall time", $"{wall.Elapsed.TotalSeconds:F1} s"],
                ["quantized model", outDir],
            ]);
        Output.WriteJson(json, new
        {
            device = device.ToString(),
            code = codeName,
            bits,
            l,
            bits_per_weight = report.BitsPerWeight,
            mean_proxy_error = report.MeanProxyError,
            fp_perplexity = fp.Perplexity,
            quantized_perplexity = q.Perplexity,
            windows = q.Windows,
            sample,
            seconds = wall.Elapsed.TotalSeconds,
        });
        return ExitCodes.Ok;
    }

    private static PerplexityResult Evaluate(QtipDevice device, string modelDir, string data, int windows)
    {
        using var checkpoint = LlamaCheckpoint.Open(modelDir);
        using var model = LlamaModel.Load(device, checkpoint, new ModelOptions { MaxContext = 512, MaxPrefillRows = 512 });
        var tokenizer = Tokenizers.Load(modelDir, checkpoint.Config.BosTokenId, checkpoint.Config.EosTokenIds[0]);
        var stream = Perplexity.BuildStream(File.ReadAllText(data), tokenizer);
        var r = Perplexity.Evaluate(model, stream, 512, windows == int.MaxValue ? null : windows);
        Output.Line($"     ppl {r.Perplexity:F4} over {r.Windows} windows ({r.PredictedTokens:N0} predicted tokens, {r.TokensPerSecond:F0} tokens/s)");
        return r;
    }
}
