using System.CommandLine;
using Qtip.Kernels.Runtime;
using Qtip.Model.Checkpoint;
using Qtip.Model.Llama;
using Qtip.Model.Tokenization;
using Qtip.Tool.Cli;
using Spectre.Console;

namespace Qtip.Tool.Commands;

/// <summary>
/// <c>qtip eval</c>: perplexity by the reference protocol (documents → BOS + ids + EOS, non-overlapping windows of
/// ctx tokens, NLL of positions 1..ctx−1, ppl = exp(mean)). <c>--data</c> is a text file (tokenized with the model's
/// tokenizer) or a <c>.u16</c> token file. With <c>--reference FP</c> both models score the same windows and the
/// result adds the KL divergence of the model's next-token distributions from the reference's (mean, median, p99,
/// max) and their top-1 agreement, as llama.cpp's <c>--kl-divergence</c>. The running perplexity and an ETA show
/// while it runs (a progress bar on a terminal, plain lines on stderr when piped).
/// </summary>
public static class EvalCommand
{
    public sealed record Result(string Model, string Data, string Device, string Weights, int Ctx, int Windows, long PredictedTokens,
        long StreamTokens, double MeanNll, double Perplexity, double Seconds, double TokensPerSecond, string? Tokenizer = null,
        ReferenceResult? Reference = null);

    /// <summary>The comparison with <c>--reference</c>: the reference's perplexity on the same windows, and the KL
    /// divergence KL(P_ref ‖ P_model) per scored token.</summary>
    public sealed record ReferenceResult(string Model, double MeanNll, double Perplexity, double PerplexityRatio, long Tokens,
        double KldMean, double KldMedian, double KldP99, double KldMax, double Top1Agreement);

    public static Command Create()
    {
        var model = RuntimeCli.ModelOption();
        var data = new Option<string>("--data") { Description = "Evaluation text (documents separated by blank lines) or a .u16 token file.", DefaultValueFactory = _ => "data/corpus/valid.txt", HelpName = "FILE" };
        var ctx = new Option<int>("--ctx") { Description = "Window length in tokens.", DefaultValueFactory = _ => 512 };
        var maxWindows = new Option<int?>("--max-windows") { Description = "Score only the first N windows." };
        var reference = new Option<string?>("--reference")
        {
            Description = "Full-precision checkpoint to compare with: adds its perplexity, the KL divergence (mean, median, p99, max) and top-1 agreement.",
            HelpName = "DIR",
        };
        var backend = CommonOptions.Backend();
        var device = CommonOptions.Device();
        var weights = RuntimeCli.WeightsOption();
        var json = CommonOptions.Json();
        var command = new Command("eval", "Perplexity of a model on a corpus, by the reference protocol; with --reference, KL divergence and top-1 agreement against the full-precision model. " + Locations.DefaultsHelp)
        {
            model, data, ctx, maxWindows, reference, backend, device, weights, json,
        };
        command.SetAction(parse => CommandRunner.Run(() => Execute(parse.GetValue(model)!, parse.GetValue(data)!, parse.GetValue(ctx),
            parse.GetValue(maxWindows), CommonOptions.ParseBackend(parse.GetValue(backend)!), parse.GetValue(device),
            RuntimeCli.ParseWeights(parse.GetValue(weights)), parse.GetValue(json), parse.GetValue(reference))));
        return command;
    }

    private static int Execute(string modelDir, string dataPath, int ctx, int? maxWindows, BackendKind kind, int deviceIndex, WeightPrecision? requestedPrecision,
        FileInfo? json, string? referenceDir)
    {
        if (ctx < 2)
            throw new UsageException($"--ctx must be at least 2 (got {ctx})");
        if (maxWindows is < 1)
            throw new UsageException($"--max-windows must be at least 1 (got {maxWindows})");
        modelDir = Locations.ResolveModel(modelDir, Locations.Note);
        referenceDir = referenceDir is null ? null : Locations.ResolveModel(referenceDir, Locations.Note);
        dataPath = Locations.ResolveDefault(dataPath, Locations.ValidText);
        using var ckpt = LlamaCheckpoint.Open(modelDir);
        using var refCkpt = referenceDir is null ? null : LlamaCheckpoint.Open(referenceDir);
        if (ctx > ckpt.Config.MaxPositionEmbeddings)
            throw new UsageException($"--ctx {ctx} exceeds the model's {ckpt.Config.MaxPositionEmbeddings} positions (max_position_embeddings)");
        if (refCkpt is not null && ctx > refCkpt.Config.MaxPositionEmbeddings)
            throw new UsageException($"--ctx {ctx} exceeds the reference's {refCkpt.Config.MaxPositionEmbeddings} positions (max_position_embeddings)");
        if (refCkpt is not null && refCkpt.Config.VocabSize != ckpt.Config.VocabSize)
            throw new Qtip.Kernels.InvalidInputException($"--reference {refCkpt.Folder}: vocabulary {refCkpt.Config.VocabSize}, the model's is {ckpt.Config.VocabSize}; KL divergence needs the same tokens");
        if (!File.Exists(dataPath))
            throw new Qtip.Kernels.InvalidInputException($"{Path.GetFullPath(dataPath)}: data file not found");
        InputFiles.RequireRegular(dataPath, "--data");
        string? tokenizer = null;
        int[] stream;
        if (dataPath.EndsWith(".u16", StringComparison.OrdinalIgnoreCase))
        {
            stream = Perplexity.ReadU16(dataPath);
        }
        else
        {
            var tok = Tokenizers.Load(ckpt.Folder, ckpt.Config.BosTokenId, ckpt.Config.EosTokenIds[0]);
            tokenizer = tok.Description;
            stream = Perplexity.BuildStream(File.ReadAllText(dataPath), tok);
        }
        Qtip.Kernels.Llama.Embedding.CheckIds(stream, ckpt.Config.VocabSize);
        using var device = Backends.Open(kind, deviceIndex);
        Notices.CpuBackend(device);
        var precision = RuntimeCli.ResolveWeights(device, requestedPrecision);
        var options = new ModelOptions { Precision = precision, MaxContext = ctx, MaxPrefillRows = ctx };
        using var model = LlamaModel.Load(device, ckpt, options);
        using var refModel = refCkpt is null ? null : LlamaModel.Load(device, refCkpt, options);
        int windows = Math.Min(stream.Length / ctx, maxWindows ?? int.MaxValue);
        Output.Line($"device: {device}; model {ckpt.Folder}{(refCkpt is null ? "" : $"; reference {refCkpt.Folder}")}; {stream.Length:N0} tokens, {windows} windows of {ctx}");
        if (tokenizer is not null)
            Output.Line($"tokenizer: {tokenizer}");

        PerplexityResult r;
        ComparisonResult? cmp = null;
        if (refModel is null)
            r = RunWithProgress(windows, report => Perplexity.Evaluate(model, stream, ctx, maxWindows, report));
        else
            r = (cmp = RunWithProgress(windows, report => ModelComparison.Evaluate(model, refModel, stream, ctx, maxWindows, report))).Model;

        var result = new Result(ckpt.Folder, Path.GetFullPath(dataPath), device.ToString(), RuntimeCli.WeightsName(precision), ctx, r.Windows,
            r.PredictedTokens, r.StreamTokens, r.MeanNll, r.Perplexity, r.Seconds, r.TokensPerSecond, tokenizer,
            cmp is null ? null : new ReferenceResult(refCkpt!.Folder, cmp.Reference.MeanNll, cmp.Reference.Perplexity, r.Perplexity / cmp.Reference.Perplexity,
                cmp.Tokens, cmp.MeanKld, cmp.MedianKld, cmp.P99Kld, cmp.MaxKld, cmp.Top1Agreement));
        if (cmp is null)
        {
            Output.Table("perplexity", ["ppl", "mean nll", "windows", "predicted tokens", "stream tokens", "seconds", "tokens/s"],
            [
                [r.Perplexity.ToString("F4"), r.MeanNll.ToString("F6"), r.Windows.ToString(), r.PredictedTokens.ToString("N0"), r.StreamTokens.ToString("N0"),
                    r.Seconds.ToString("F1"), r.TokensPerSecond.ToString("F0")],
            ]);
        }
        else
        {
            Output.Table("perplexity", ["of", "ppl", "mean nll", "windows", "predicted tokens", "seconds"],
            [
                ["model", r.Perplexity.ToString("F4"), r.MeanNll.ToString("F6"), r.Windows.ToString(), r.PredictedTokens.ToString("N0"), r.Seconds.ToString("F1")],
                ["reference", cmp.Reference.Perplexity.ToString("F4"), cmp.Reference.MeanNll.ToString("F6"), r.Windows.ToString(), r.PredictedTokens.ToString("N0"),
                    cmp.Reference.Seconds.ToString("F1")],
            ]);
            Output.Table("vs reference (KL divergence of the model's next-token distribution from the reference's, per token)",
                ["ppl ratio", "KLD mean", "KLD median", "KLD p99", "KLD max", "top-1 agreement"],
            [
                [result.Reference!.PerplexityRatio.ToString("F4"), cmp.MeanKld.ToString("F6"), cmp.MedianKld.ToString("F6"), cmp.P99Kld.ToString("F6"),
                    cmp.MaxKld.ToString("F6"), $"{cmp.Top1Agreement * 100:F2} %"],
            ]);
        }
        Output.WriteJson(json, result);
        return ExitCodes.Ok;
    }

    /// <summary>Runs <paramref name="body"/> showing the running perplexity and the ETA: a Spectre progress bar on a
    /// terminal; when stdout is piped, plain lines on stderr (the first window, then at most one a second, and the last),
    /// as <c>[5/20] ppl 21.3456, ETA 0:12</c>.</summary>
    internal static T RunWithProgress<T>(int windows, Func<Action<EvalProgress>, T> body)
    {
        if (Output.Plain)
        {
            double lastPrint = double.NegativeInfinity;
            return body(p =>
            {
                if (p.Done == 1 || p.Done == p.Total || p.Seconds - lastPrint >= 1)
                {
                    CliConsole.Error.WriteLine($"[{p.Done}/{p.Total}] ppl {p.Perplexity:F4}{(p.Done < p.Total ? $", ETA {Eta(p.EtaSeconds)}" : $", {p.Seconds:F1} s")}");
                    lastPrint = p.Seconds;
                }
            });
        }
        T result = default!;
        AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask("windows", maxValue: windows);
                result = body(p =>
                {
                    task.Value = p.Done;
                    task.Description = $"{p.Done}/{p.Total} windows, ppl {p.Perplexity:F4}";
                });
            });
        return result;
    }

    private static string Eta(double seconds) =>
        double.IsNaN(seconds) ? "?" : TimeSpan.FromSeconds(Math.Round(seconds)) is var t && t.TotalHours >= 1 ? $"{(int)t.TotalHours}:{t:mm\\:ss}" : $"{(int)t.TotalMinutes}:{t:ss}";
}

/// <summary>Options and helpers shared by the runtime commands (eval, generate, inspect, bench decode).</summary>
internal static class RuntimeCli
{
    public static Option<string> ModelOption() => new("--model", "-m")
    {
        Description = "Hugging Face checkpoint folder of a Llama, Mistral or Qwen2 model (config.json, *.safetensors, tokenizer).",
        DefaultValueFactory = _ => "models/llama-nano",
        HelpName = "DIR",
    };

    public static Option<string?> WeightsOption() => new("--weights")
    {
        Description = "Storage of dense weights on the device: f16 (half the bytes; bf16 checkpoints are exact down to 6e-5) or f32. " +
            "Default: f16, or f32 on a device without fp16 (e.g. pocl's OpenCL CPU device).",
        HelpName = "f16|f32",
    };

    /// <summary>The requested precision, or null for the device's default (<see cref="ModelOptions.DefaultPrecision"/>).</summary>
    public static WeightPrecision? ParseWeights(string? text) => text is null ? null : text.Trim().ToLowerInvariant() switch
    {
        "f16" or "fp16" or "float16" => WeightPrecision.Float16,
        "f32" or "fp32" or "float32" => WeightPrecision.Float32,
        _ => throw new UsageException($"--weights '{text}': expected f16 or f32"),
    };

    public static string WeightsName(WeightPrecision p) => p == WeightPrecision.Float16 ? "f16" : "f32";

    /// <summary>The precision to load with on <paramref name="device"/>: the request, or the device's default; a usage
    /// error for f16 on a device without fp16.</summary>
    public static WeightPrecision ResolveWeights(QtipDevice device, WeightPrecision? requested)
    {
        if (requested == WeightPrecision.Float16 && !device.SupportsFloat16)
            throw new UsageException($"--weights f16: {device} does not support fp16; use --weights f32");
        return requested ?? ModelOptions.DefaultPrecision(device);
    }

    /// <summary>The tokenizer a folder has, as eval/generate/quantize load it (<see cref="Tokenizers.Load"/>), or
    /// "none: why" when it has none that loads.</summary>
    public static string TokenizerDescription(LlamaCheckpoint ckpt)
    {
        try
        {
            return Tokenizers.Load(ckpt.Folder, ckpt.Config.BosTokenId, ckpt.Config.EosTokenIds[0]).Description;
        }
        catch (ModelFormatException e)
        {
            return $"none: {e.Message}";
        }
    }
}
