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
/// tokenizer) or a <c>.u16</c> token file.
/// </summary>
public static class EvalCommand
{
    public sealed record Result(string Model, string Data, string Device, string Weights, int Ctx, int Windows, long PredictedTokens,
        long StreamTokens, double MeanNll, double Perplexity, double Seconds, double TokensPerSecond);

    public static Command Create()
    {
        var model = RuntimeCli.ModelOption();
        var data = new Option<string>("--data") { Description = "Evaluation text (documents separated by blank lines) or a .u16 token file.", DefaultValueFactory = _ => "data/corpus/valid.txt", HelpName = "FILE" };
        var ctx = new Option<int>("--ctx") { Description = "Window length in tokens.", DefaultValueFactory = _ => 512 };
        var maxWindows = new Option<int?>("--max-windows") { Description = "Score only the first N windows." };
        var backend = CommonOptions.Backend();
        var device = CommonOptions.Device();
        var weights = RuntimeCli.WeightsOption();
        var json = CommonOptions.Json();
        var command = new Command("eval", "Perplexity of a model on a corpus, by the reference protocol.") { model, data, ctx, maxWindows, backend, device, weights, json };
        command.SetAction(parse => CommandRunner.Run(() => Execute(parse.GetValue(model)!, parse.GetValue(data)!, parse.GetValue(ctx),
            parse.GetValue(maxWindows), CommonOptions.ParseBackend(parse.GetValue(backend)!), parse.GetValue(device),
            RuntimeCli.ParseWeights(parse.GetValue(weights)), parse.GetValue(json))));
        return command;
    }

    private static int Execute(string modelDir, string dataPath, int ctx, int? maxWindows, BackendKind kind, int deviceIndex, WeightPrecision? requestedPrecision, FileInfo? json)
    {
        if (ctx < 2)
            throw new UsageException($"--ctx must be at least 2 (got {ctx})");
        if (maxWindows is < 1)
            throw new UsageException($"--max-windows must be at least 1 (got {maxWindows})");
        using var ckpt = LlamaCheckpoint.Open(modelDir);
        if (ctx > ckpt.Config.MaxPositionEmbeddings)
            throw new UsageException($"--ctx {ctx} exceeds the model's {ckpt.Config.MaxPositionEmbeddings} positions (max_position_embeddings)");
        if (!File.Exists(dataPath))
            throw new Qtip.Kernels.InvalidInputException($"{Path.GetFullPath(dataPath)}: data file not found");
        InputFiles.RequireRegular(dataPath, "--data");
        int[] stream = dataPath.EndsWith(".u16", StringComparison.OrdinalIgnoreCase)
            ? Perplexity.ReadU16(dataPath)
            : Perplexity.BuildStream(File.ReadAllText(dataPath), Tokenizers.Load(ckpt.Folder, ckpt.Config.BosTokenId, ckpt.Config.EosTokenIds[0]));
        Qtip.Kernels.Llama.Embedding.CheckIds(stream, ckpt.Config.VocabSize);
        using var device = Backends.Open(kind, deviceIndex);
        var precision = RuntimeCli.ResolveWeights(device, requestedPrecision);
        using var model = LlamaModel.Load(device, ckpt, new ModelOptions { Precision = precision, MaxContext = ctx, MaxPrefillRows = ctx });
        int windows = Math.Min(stream.Length / ctx, maxWindows ?? int.MaxValue);
        Output.Line($"device: {device}; model {ckpt.Folder}; {stream.Length:N0} tokens, {windows} windows of {ctx}");

        PerplexityResult r;
        if (Output.Plain)
        {
            int lastTenth = 0;
            r = Perplexity.Evaluate(model, stream, ctx, maxWindows, (done, total) =>
            {
                int tenth = done * 10 / total;
                if (tenth > lastTenth && done < total)
                    CliConsole.Error.WriteLine($"  {done}/{total} windows");
                lastTenth = tenth;
            });
        }
        else
        {
            r = null!;
            AnsiConsole.Progress().Start(p =>
            {
                var task = p.AddTask("windows", maxValue: windows);
                r = Perplexity.Evaluate(model, stream, ctx, maxWindows, (done, _) => task.Value = done);
            });
        }
        var result = new Result(ckpt.Folder, Path.GetFullPath(dataPath), device.ToString(), RuntimeCli.WeightsName(precision), ctx, r.Windows,
            r.PredictedTokens, r.StreamTokens, r.MeanNll, r.Perplexity, r.Seconds, r.TokensPerSecond);
        Output.Table("perplexity", ["ppl", "mean nll", "windows", "predicted tokens", "stream tokens", "seconds", "tokens/s"],
        [
            [r.Perplexity.ToString("F4"), r.MeanNll.ToString("F6"), r.Windows.ToString(), r.PredictedTokens.ToString("N0"), r.StreamTokens.ToString("N0"),
                r.Seconds.ToString("F1"), r.TokensPerSecond.ToString("F0")],
        ]);
        Output.WriteJson(json, result);
        return ExitCodes.Ok;
    }
}

/// <summary>Options and helpers shared by the runtime commands (eval, generate, inspect, bench decode).</summary>
internal static class RuntimeCli
{
    public static Option<string> ModelOption() => new("--model", "-m")
    {
        Description = "Hugging Face Llama checkpoint folder (config.json, *.safetensors, tokenizer).",
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

    public static string TokenizerKind(string folder) =>
        File.Exists(Path.Combine(folder, "tokenizer.model")) && SentencePieceBpeTokenizer.LooksLikeSentencePiece(Path.Combine(folder, "tokenizer.model"))
            ? "SentencePiece BPE (tokenizer.model)"
            : File.Exists(Path.Combine(folder, "tokenizer.json")) ? "byte-level BPE (tokenizer.json)" : "none";
}
