using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;
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

    /// <summary>Meta's <c>original/tokenizer.model</c> (tiktoken ranks). Special tokens come from
    /// <c>tokenizer_config.json</c>'s <c>added_tokens_decoder</c> when present.</summary>
    public static ByteLevelBpeTokenizer FromTiktoken(string path, string tokenizerConfig, int bosId, int eosId)
    {
        var specials = new Dictionary<string, int>(StringComparer.Ordinal);
        if (File.Exists(tokenizerConfig))
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(tokenizerConfig));
            if (doc.RootElement.TryGetProperty("added_tokens_decoder", out var d) && d.ValueKind == JsonValueKind.Object)
            {
                foreach (var p in d.EnumerateObject())
                    specials[p.Value.GetProperty("content").GetString()!] = int.Parse(p.Name);
            }
        }
        int lines = File.ReadLines(path).Count(l => l.Length > 0);
        int max = Math.Max(lines - 1, specials.Count == 0 ? 0 : specials.Values.Max());
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
        ids.AddRange(tokenizer.EncodeToIds(text));
        return ids;
    }

    public string Decode(IReadOnlyList<int> ids) => tokenizer.Decode(ids.Where(i => !special.Contains(i))) ?? "";
}
