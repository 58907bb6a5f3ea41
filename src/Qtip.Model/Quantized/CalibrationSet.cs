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
