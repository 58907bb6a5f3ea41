using Qtip.Kernels;
using Qtip.Model.Llama;
using Qtip.Model.Tokenization;

namespace Qtip.Model.Quantized;

/// <summary>
/// Calibration windows: the text's documents (split at blank lines) as one BOS + ids + EOS stream, cut into
/// non-overlapping windows of <c>ctx</c> tokens, the first <c>windows</c> of them (all when 0).
/// </summary>
public sealed class CalibrationSet
{
    private CalibrationSet(string file, int context, int[][] windows, long streamTokens)
    {
        File = file;
        Context = context;
        Windows = windows;
        StreamTokens = streamTokens;
    }

    public string File { get; }

    public int Context { get; }

    public IReadOnlyList<int[]> Windows { get; }

    public long StreamTokens { get; }

    public long Tokens => (long)Windows.Count * Context;

    /// <summary>Seeded uniform random ids in [3, vocab) (no text; for <c>qtip bench quantize</c>).</summary>
    public static CalibrationSet Random(int vocab, int context, int windows, ulong seed)
    {
        var rng = new System.Random((int)(seed % int.MaxValue));
        var result = new int[windows][];
        for (int w = 0; w < windows; w++)
        {
            result[w] = new int[context];
            for (int t = 0; t < context; t++)
                result[w][t] = rng.Next(Math.Min(3, vocab - 1), vocab);
        }
        return new CalibrationSet("(random ids)", context, result, (long)windows * context);
    }

    public static CalibrationSet Load(string file, ITextTokenizer tokenizer, int context, int windows)
    {
        if (!System.IO.File.Exists(file))
            throw new InvalidInputException($"calibration file {file} does not exist");
        Checkpoint.InputFiles.RequireRegular(file, "calibration file");
        string text;
        try
        {
            text = System.IO.File.ReadAllText(file, new System.Text.UTF8Encoding(false, throwOnInvalidBytes: true));
        }
        catch (System.Text.DecoderFallbackException e)
        {
            throw new InvalidInputException($"calibration file {file} is not valid UTF-8: {e.Message}");
        }
        if (string.IsNullOrWhiteSpace(text))
            throw new InvalidInputException($"calibration file {file} is empty");
        var stream = Perplexity.BuildStream(text, tokenizer);
        int available = stream.Length / context;
        if (available == 0)
            throw new InvalidInputException($"calibration file {file} has {stream.Length} tokens, fewer than one window of --calib-ctx {context}");
        int take = windows <= 0 ? available : Math.Min(available, windows);
        var result = new int[take][];
        for (int w = 0; w < take; w++)
            result[w] = stream.AsSpan(w * context, context).ToArray();
        return new CalibrationSet(file, context, result, stream.Length);
    }
}
