using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;
using Qtip.Kernels;
using Qtip.Model.Checkpoint;

namespace Qtip.Model.Tokenization;

/// <summary>
/// Byte-level BPE from Meta's tiktoken rank file (<c>original/tokenizer.model</c> of Llama 3) through
/// Microsoft.ML.Tokenizers' <see cref="TiktokenTokenizer"/>, with Llama 3's pre-tokenizer regex and the special tokens
/// of <c>tokenizer_config.json</c>. A <c>tokenizer.json</c> is read by <see cref="HuggingFaceBpeTokenizer"/> instead
/// (exact, Hugging Face's algorithm); .NET's regex here does not match letters and digits outside the BMP as
/// Hugging Face does.
/// </summary>
public sealed class ByteLevelBpeTokenizer : ITextTokenizer
{
    /// <summary>Llama 3's pre-tokenizer pattern.</summary>
    public const string Llama3Pattern = Llama3Split.Pattern;

    private readonly TiktokenTokenizer tokenizer;
    private readonly HashSet<int> special;

    private ByteLevelBpeTokenizer(TiktokenTokenizer tokenizer, int bos, int eos, int vocab, HashSet<int> special, string description)
    {
        Description = description;
        this.tokenizer = tokenizer;
        BosId = bos;
        EosId = eos;
        VocabSize = vocab;
        this.special = special;
    }

    public int BosId { get; }

    public int EosId { get; }

    public int VocabSize { get; }

    public string Description { get; }

    /// <summary>A byte-level BPE encodes any text only if each of the 256 bytes is a token of its own.</summary>
    private static void RequireEveryByte(bool[] singles, string path)
    {
        int missing = Array.IndexOf(singles, false);
        if (missing >= 0)
            throw new ModelFormatException(path, null, $"the vocabulary has no token for the single byte 0x{missing:X2} ({singles.Count(x => !x)} of 256 bytes missing); a byte-level BPE must cover every byte");
    }


    /// <summary>Meta's <c>original/tokenizer.model</c> (tiktoken ranks). Special tokens come from
    /// <c>tokenizer_config.json</c>'s <c>added_tokens_decoder</c> when present.</summary>
    public static ByteLevelBpeTokenizer FromTiktoken(string path, string tokenizerConfig, int bosId, int eosId)
    {
        var specials = new Dictionary<string, int>(StringComparer.Ordinal);
        if (File.Exists(tokenizerConfig))
        {
            using var doc = InputFiles.ParseJson(tokenizerConfig);
            try
            {
                if (doc.RootElement.ValueKind == JsonValueKind.Object
                    && doc.RootElement.TryGetProperty("added_tokens_decoder", out var d) && d.ValueKind == JsonValueKind.Object)
                {
                    foreach (var p in d.EnumerateObject())
                    {
                        if (!int.TryParse(p.Name, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int id))
                            throw new ModelFormatException(tokenizerConfig, null, $"added_tokens_decoder key '{p.Name}' is not a token id (a non-negative integer)");
                        if (p.Value.ValueKind != JsonValueKind.Object || !p.Value.TryGetProperty("content", out var content) || content.ValueKind != JsonValueKind.String)
                            throw new ModelFormatException(tokenizerConfig, null, $"added_tokens_decoder entry '{p.Name}' has no string \"content\"");
                        if (content.GetString()!.Length == 0)
                            throw new ModelFormatException(tokenizerConfig, null, $"added_tokens_decoder entry '{p.Name}' has empty content");
                        specials[content.GetString()!] = id;
                    }
                }
            }
            catch (InvalidOperationException e)
            {
                throw new ModelFormatException(tokenizerConfig, null, $"holds a string that is not valid text: {e.Message}", e);
            }
        }
        InputFiles.RequireRegular(path, "tokenizer.model");
        var singles = new bool[256];
        int lines = 0, maxRank = -1;
        foreach (var line in File.ReadLines(path))
        {
            if (line.Length == 0)
                continue;
            lines++;
            var parts = line.Split(' ');
            byte[] token;
            try
            {
                token = parts.Length == 2 ? Convert.FromBase64String(parts[0]) : throw new FormatException("not two fields");
            }
            catch (FormatException)
            {
                throw new ModelFormatException(path, null, $"line {lines} is not \"<base64 token> <rank>\"");
            }
            if (!int.TryParse(parts[1], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int rank) || rank == int.MaxValue)
                throw new ModelFormatException(path, null, $"line {lines}: rank '{parts[1]}' is not a token id");
            maxRank = Math.Max(maxRank, rank);
            if (token.Length == 1)
                singles[token[0]] = true;
        }
        RequireEveryByte(singles, path);
        int max = Math.Max(maxRank, specials.Count == 0 ? 0 : specials.Values.Max());
        if (max == int.MaxValue)
            throw new ModelFormatException(tokenizerConfig, null, $"token id {max} leaves no room for a vocabulary size");
        return Create(File.OpenRead(path), specials, bosId, eosId, max + 1,
            $"byte-level BPE (original/tokenizer.model, tiktoken: {lines:N0} ranks + {specials.Count} special)");
    }

    private static ByteLevelBpeTokenizer Create(Stream ranks, Dictionary<string, int> specials, int bos, int eos, int vocab, string description)
    {
        using (ranks)
        {
            try
            {
                var pre = new RegexPreTokenizer(new Regex(Llama3Pattern, RegexOptions.Compiled), specials);
                var tok = TiktokenTokenizer.Create(ranks, pre, null, specials);
                return new ByteLevelBpeTokenizer(tok, bos, eos, vocab, [.. specials.Values], description);
            }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException)
            {
                throw new ModelFormatException("tokenizer", null, $"Microsoft.ML.Tokenizers cannot build the byte-level BPE: {e.Message}", e);
            }
        }
    }

    public IReadOnlyList<int> Encode(string text, bool addBos = true)
    {
        var ids = new List<int>();
        if (addBos)
            ids.Add(BosId);
        try
        {
            ids.AddRange(tokenizer.EncodeToIds(text));
        }
        catch (KeyNotFoundException e)
        {
            throw new InvalidInputException($"the byte-level BPE tokenizer cannot encode the text: {e.Message}", e);
        }
        return ids;
    }

    public string Decode(IReadOnlyList<int> ids) => tokenizer.Decode(ids.Where(i => !special.Contains(i))) ?? "";
}
