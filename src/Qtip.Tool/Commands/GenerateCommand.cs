using System.CommandLine;
using Qtip.Kernels.Runtime;
using Qtip.Model.Checkpoint;
using Qtip.Model.Llama;
using Qtip.Model.Tokenization;
using Qtip.Tool.Cli;

namespace Qtip.Tool.Commands;

/// <summary>
/// <c>qtip generate</c>: continues a prompt, streaming text to stdout as tokens are produced; greedy at temperature 0,
/// else seeded sampling with top-k / top-p. Timings go to stderr; <c>--json</c> records ids, text and timings.
/// </summary>
public static class GenerateCommand
{
    public sealed record Result(string Model, string Device, string Weights, string Prompt, int[] PromptIds, int[] GeneratedIds, string Text, string FullText,
        float Temperature, int TopK, float TopP, int Seed, double PrefillSeconds, double DecodeSeconds, double DecodeTokensPerSecond);

    public static Command Create()
    {
        var model = RuntimeCli.ModelOption();
        var prompt = new Option<string>("--prompt", "-p") { Description = "Text to continue (BOS is added).", Required = true };
        var maxNew = new Option<int>("--max-new-tokens", "-n") { Description = "Tokens to generate.", DefaultValueFactory = _ => 40 };
        var temperature = new Option<float>("--temperature") { Description = "0: greedy (argmax); > 0: sample.", DefaultValueFactory = _ => 0f };
        var topP = new Option<float>("--top-p") { Description = "Nucleus sampling mass in (0, 1]; 1: off.", DefaultValueFactory = _ => 1f };
        var topK = new Option<int>("--top-k") { Description = "Keep the k most likely tokens; 0: off.", DefaultValueFactory = _ => 0 };
        var seed = new Option<int>("--seed") { Description = "Seed of the sampler.", DefaultValueFactory = _ => 0 };
        var noStop = new Option<bool>("--ignore-eos") { Description = "Keep generating after the end-of-sequence token." };
        var backend = CommonOptions.Backend();
        var device = CommonOptions.Device();
        var weights = RuntimeCli.WeightsOption();
        var json = CommonOptions.Json();
        var command = new Command("generate", "Generate text from a prompt, streaming tokens as they are produced.")
        {
            model, prompt, maxNew, temperature, topP, topK, seed, noStop, backend, device, weights, json,
        };
        command.SetAction(parse => CommandRunner.Run(() => Execute(parse.GetValue(model)!, parse.GetValue(prompt)!, parse.GetValue(maxNew),
            new SamplingOptions(parse.GetValue(temperature), parse.GetValue(topK), parse.GetValue(topP), parse.GetValue(seed)), parse.GetValue(noStop),
            CommonOptions.ParseBackend(parse.GetValue(backend)!), parse.GetValue(device), RuntimeCli.ParseWeights(parse.GetValue(weights)), parse.GetValue(json))));
        return command;
    }

    private static int Execute(string modelDir, string prompt, int maxNew, SamplingOptions sampling, bool ignoreEos, BackendKind kind, int deviceIndex,
        WeightPrecision? requestedPrecision, FileInfo? json)
    {
        if (maxNew < 1)
            throw new UsageException($"--max-new-tokens must be at least 1 (got {maxNew})");
        if (sampling.Temperature < 0 || float.IsNaN(sampling.Temperature) || float.IsInfinity(sampling.Temperature))
            throw new UsageException($"--temperature must be ≥ 0 (got {sampling.Temperature})");
        if (!(sampling.TopP > 0 && sampling.TopP <= 1))
            throw new UsageException($"--top-p must be in (0, 1] (got {sampling.TopP})");
        if (sampling.TopK < 0)
            throw new UsageException($"--top-k must be ≥ 0 (got {sampling.TopK})");
        using var ckpt = LlamaCheckpoint.Open(Locations.ResolveModel(modelDir, note => CliConsole.Error.WriteLine($"qtip: note: {note}")));
        var tokenizer = Tokenizers.Load(ckpt.Folder, ckpt.Config.BosTokenId, ckpt.Config.EosTokenIds[0]);
        var promptIds = tokenizer.Encode(prompt);
        int context = Math.Min(promptIds.Count + maxNew, ckpt.Config.MaxPositionEmbeddings);
        if (promptIds.Count + maxNew - 1 > ckpt.Config.MaxPositionEmbeddings)
            throw new UsageException($"prompt ({promptIds.Count} tokens) + {maxNew} new tokens exceed the model's {ckpt.Config.MaxPositionEmbeddings} positions");
        using var device = Backends.Open(kind, deviceIndex);
        Notices.CpuBackend(device, toStderr: true);
        var precision = RuntimeCli.ResolveWeights(device, requestedPrecision);
        using var model = LlamaModel.Load(device, ckpt, new ModelOptions { Precision = precision, MaxContext = context, MaxPrefillRows = promptIds.Count });
        CliConsole.Error.WriteLine($"device: {device}; prompt {promptIds.Count} tokens");

        // Stream: decode the whole generation each step and print what is new (holding back an unfinished UTF-8 sequence).
        var generated = new List<int>();
        string shown = "";
        CliConsole.Human.Write(prompt);
        void OnToken(int id)
        {
            generated.Add(id);
            var text = tokenizer.Decode(promptIds.Concat(generated).ToList());
            string prefixText = tokenizer.Decode(promptIds);
            var continuation = text.StartsWith(prefixText, StringComparison.Ordinal) ? text[prefixText.Length..] : text;
            if (continuation.EndsWith('\uFFFD'))
                return;
            if (continuation.StartsWith(shown, StringComparison.Ordinal))
            {
                CliConsole.Human.Write(continuation[shown.Length..]);
                CliConsole.Human.Flush();
                shown = continuation;
            }
        }
        var stops = ignoreEos ? null : new HashSet<int>(ckpt.Config.EosTokenIds);
        var r = new Generator(model).Generate(promptIds, maxNew, sampling, OnToken, stops);
        CliConsole.Human.WriteLine();
        CliConsole.Error.WriteLine($"{r.GeneratedIds.Length} tokens; prefill {r.PrefillSeconds * 1e3:F1} ms ({promptIds.Count} tokens + first token), " +
            $"decode {r.DecodeTokensPerSecond:F1} tokens/s");
        var full = tokenizer.Decode(promptIds.Concat(r.GeneratedIds).ToList());
        var generatedText = tokenizer.Decode(r.GeneratedIds);
        Output.WriteJson(json, new Result(ckpt.Folder, device.ToString(), RuntimeCli.WeightsName(precision), prompt, r.PromptIds, r.GeneratedIds,
            generatedText, full, sampling.Temperature, sampling.TopK, sampling.TopP, sampling.Seed, r.PrefillSeconds, r.DecodeSeconds, r.DecodeTokensPerSecond));
        return ExitCodes.Ok;
    }
}
