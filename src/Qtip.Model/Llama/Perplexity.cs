using System.Diagnostics;
using Qtip.Kernels;
using Qtip.Model.Tokenization;

namespace Qtip.Model.Llama;

/// <summary>The result of <see cref="Perplexity.Evaluate"/>.</summary>
public sealed record PerplexityResult(int Context, int Windows, long PredictedTokens, long StreamTokens, double MeanNll, double Seconds)
{
    public double Perplexity => Math.Exp(MeanNll);

    /// <summary>Tokens run through the model per second (windows × context / time).</summary>
    public double TokensPerSecond => Seconds > 0 ? (double)Windows * Context / Seconds : 0;
}

/// <summary>Progress of an evaluation after a window: windows done of total, the running mean NLL (so the running
/// perplexity), and the seconds spent, from which an ETA follows.</summary>
public readonly record struct EvalProgress(int Done, int Total, double MeanNll, double Seconds)
{
    public double Perplexity => Math.Exp(MeanNll);

    /// <summary>Seconds left at the pace so far.</summary>
    public double EtaSeconds => Done == 0 ? double.NaN : Seconds / Done * (Total - Done);
}

/// <summary>
/// The evaluation protocol of the reference figures: documents (split on blank lines, as
/// <c>text.rstrip('\n').split('\n\n')</c>) become one stream of BOS + ids + EOS each; the stream is cut into
/// non-overlapping windows of ctx tokens (the tail dropped); each window is scored on its own, without KV carry-over,
/// on positions 1..ctx−1; ppl = exp(mean NLL).
/// </summary>
public static class Perplexity
{
    /// <summary>Documents of a corpus text file, as the reference splits them.</summary>
    public static string[] Documents(string text) => text.TrimEnd('\n').Split("\n\n");

    /// <summary>The token stream: BOS + ids + EOS per document.</summary>
    public static int[] BuildStream(string text, ITextTokenizer tokenizer)
    {
        var stream = new List<int>(text.Length / 3);
        foreach (var doc in Documents(text))
        {
            stream.AddRange(tokenizer.Encode(doc, addBos: true));
            stream.Add(tokenizer.EosId);
        }
        return [.. stream];
    }

    /// <summary>Reads a little-endian uint16 token file (as <c>valid.tokens.u16</c>).</summary>
    public static int[] ReadU16(string path)
    {
        var bytes = File.ReadAllBytes(path);
        if (bytes.Length % 2 != 0)
            throw new InvalidInputException($"{path}: {bytes.Length} bytes is not a whole number of uint16 tokens");
        var ids = new int[bytes.Length / 2];
        for (int i = 0; i < ids.Length; i++)
            ids[i] = bytes[2 * i] | (bytes[(2 * i) + 1] << 8);
        return ids;
    }

    public static PerplexityResult Evaluate(LlamaModel model, int[] stream, int context, int? maxWindows = null, Action<int, int>? progress = null) =>
        Evaluate(model, stream, context, maxWindows, progress is null ? null : (Action<EvalProgress>)(p => progress(p.Done, p.Total)));

    /// <summary>As <see cref="Evaluate(LlamaModel, int[], int, int?, Action{int, int}?)"/>, reporting the running
    /// perplexity after each window.</summary>
    public static PerplexityResult Evaluate(LlamaModel model, int[] stream, int context, int? maxWindows, Action<EvalProgress>? progress)
    {
        int windows = Windows(model, stream, context, maxWindows);
        double sum = 0;
        long count = 0;
        var sw = Stopwatch.StartNew();
        for (int w = 0; w < windows; w++)
        {
            var (s, n) = model.WindowNll(stream.AsSpan(w * context, context));
            RequireFinite(s, w, context);
            sum += s;
            count += n;
            progress?.Invoke(new EvalProgress(w + 1, windows, sum / count, sw.Elapsed.TotalSeconds));
        }
        return new PerplexityResult(context, windows, count, stream.Length, sum / count, sw.Elapsed.TotalSeconds);
    }

    /// <summary>Refuses a window whose summed loss is NaN or ±∞ (a perplexity of NaN is never a result).</summary>
    internal static void RequireFinite(double nll, int window, int context)
    {
        if (!double.IsFinite(nll))
            throw new InvalidInputException($"window {window} (tokens {(long)window * context}…{((long)(window + 1) * context) - 1} of the stream): the loss is {nll}, not finite " +
                "(the weights or config.json overflow; with --weights f16 try f32)");
    }

    /// <summary>The number of whole windows to score; checks the context against the model.</summary>
    internal static int Windows(LlamaModel model, int[] stream, int context, int? maxWindows)
    {
        if (context < 2)
            throw new ArgumentOutOfRangeException(nameof(context), context, "context must be at least 2");
        if (context > model.MaxPrefillRows)
            throw new ArgumentOutOfRangeException(nameof(context), context, $"context exceeds the {model.MaxPrefillRows} rows the model was sized for");
        int windows = stream.Length / context;
        if (maxWindows is { } mw)
            windows = Math.Min(windows, mw);
        if (windows == 0)
            throw new InvalidInputException($"the stream has {stream.Length} tokens, fewer than one window of {context}");
        return windows;
    }
}
