using System.Diagnostics;
using Qtip.Kernels;

namespace Qtip.Model.Llama;

/// <summary>How the next token is chosen. Temperature 0: greedy (argmax).</summary>
public sealed record SamplingOptions(float Temperature = 0f, int TopK = 0, float TopP = 1f, int Seed = 0)
{
    public static SamplingOptions Greedy { get; } = new();
}

/// <summary>A generation: ids and timings (prefill = the prompt and the first new token).</summary>
public sealed record GenerationResult(int[] PromptIds, int[] GeneratedIds, double PrefillSeconds, double DecodeSeconds)
{
    /// <summary>Decode speed over the tokens after the first (each one decode step).</summary>
    public double DecodeTokensPerSecond => GeneratedIds.Length > 1 && DecodeSeconds > 0 ? (GeneratedIds.Length - 1) / DecodeSeconds : 0;
}

/// <summary>
/// Autoregressive generation with the KV cache: one prefill over the prompt, then one decode step per token. The
/// next id is chosen on the device (argmax or the sampling kernel) and written where the next step's embedding
/// lookup reads it; the host reads it back only to stream it and to stop at an end id.
/// </summary>
public sealed class Generator(LlamaModel model)
{
    public GenerationResult Generate(IReadOnlyList<int> promptIds, int maxNewTokens, SamplingOptions sampling,
        Action<int>? onToken = null, IReadOnlySet<int>? stopIds = null)
    {
        if (promptIds.Count == 0)
            throw new InvalidInputException("the prompt has no tokens");
        if (maxNewTokens < 1)
            throw new ArgumentOutOfRangeException(nameof(maxNewTokens), maxNewTokens, "at least one new token");
        if (promptIds.Count > model.MaxPrefillRows || promptIds.Count + maxNewTokens - 1 > model.MaxContext)
            throw new InvalidInputException($"prompt of {promptIds.Count} tokens + {maxNewTokens} new tokens exceeds the context of {model.MaxContext}");
        var rng = new Random(sampling.Seed);
        float Uniform() => Math.Min((float)rng.NextDouble(), 0.99999994f);

        var generated = new List<int>(maxNewTokens);
        var sw = Stopwatch.StartNew();
        model.Prefill(promptIds.ToArray(), 0, LogitsMode.Last);
        model.SelectNext(sampling.Temperature, sampling.TopK, sampling.TopP, Uniform());
        int next = model.ReadNextToken();
        CheckLogits(promptIds.Count - 1);
        double prefill = sw.Elapsed.TotalSeconds;
        generated.Add(next);
        onToken?.Invoke(next);
        sw.Restart();
        int position = promptIds.Count;
        while (generated.Count < maxNewTokens && !(stopIds?.Contains(next) ?? false))
        {
            model.DecodeStep(position);
            model.SelectNext(sampling.Temperature, sampling.TopK, sampling.TopP, Uniform());
            next = model.ReadNextToken();
            CheckLogits(position++);
            generated.Add(next);
            onToken?.Invoke(next);
        }
        return new GenerationResult(promptIds.ToArray(), [.. generated], prefill, sw.Elapsed.TotalSeconds);
    }

    /// <summary>A NaN or ∞ logit would be "chosen" as some arbitrary id: an error naming the position instead.</summary>
    private void CheckLogits(int position)
    {
        int bad = model.LastNonFiniteLogits; // counted with the token by SelectNext/ReadNextToken: no extra synchronisation
        if (bad > 0)
            throw new InvalidInputException($"position {position}: {bad} of the {model.Config.VocabSize} logits are NaN or infinite " +
                "(the weights or config.json overflow; with --weights f16 try f32)");
    }
}
