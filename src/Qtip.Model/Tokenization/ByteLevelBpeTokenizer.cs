using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;
using Qtip.Kernels;
using Qtip.Model.Checkpoint;

namespace Qtip.Model.Tokenization;

/// <summary>
/// Byte-level BPE (Llama 3) through Microsoft.ML.Tokenizers' <see cref="TiktokenTokenizer"/>. 2.0.1 has no
/// <c>tokenizer.json</c> loader, so the vocabulary is rewritten in memory as a tiktoken rank file (each vocab
/// string mapped back through GPT-2's byte↔unicode table, rank = id), with Llama 3's pre-tokenizer regex and the
/// <c>added_tokens</c> as special tokens. This equals Hugging Face's BPE whenever merge priority follows the id
/// order, as it does for Llama 3 (its merges were derived from tiktoken ranks). Not covered: tokenizer.json files
/// whose merges do not follow id order, normalisers, and pre-tokenizer patterns other than Llama 3's.
/// </summary>
public sealed class ByteLevelBpeTokenizer : ITextTokenizer
{
    /// <summary>Llama 3's pre-tokenizer pattern.</summary>
    public const string Llama3Pattern =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    private readonly TiktokenTokenizer tokenizer;
    private readonly HashSet<int> special;

    private ByteLevelBpeTokenizer(TiktokenTokenizer tokenizer, int bos, int eos, int vocab, HashSet<int> special)
    {
        this.tokenizer = tokenizer;
        BosId = bos;
        EosId = eos;
        VocabSize = vocab;
        this.special = special;
    }

    public int BosId { get; }

    public int EosId { get; }

    public int VocabSize { get; }

    /// <param name="sentencePieceProblem">Why the folder's tokenizer.model could not be used (empty, not SentencePiece),
    /// when there is one: named in the error if this tokenizer.json needs it.</param>
    public static ByteLevelBpeTokenizer FromTokenizerJson(string path, int bosId, int eosId, string? sentencePieceProblem = null)
    {
        try
        {
            using var doc = InputFiles.ParseJson(path);
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object
                || !model.TryGetProperty("vocab", out var vocab) || vocab.ValueKind != JsonValueKind.Object)
                throw new ModelFormatException(path, null, "no model.vocab object");
            string type = !model.TryGetProperty("type", out var t) ? ""
                : t.ValueKind == JsonValueKind.String ? t.GetString()! : throw new ModelFormatException(path, null, $"model.type is {t.ValueKind}, not a string");
            if (type != "BPE")
                throw new ModelFormatException(path, null, $"model type '{type}' is not BPE");
            bool byteFallback = model.TryGetProperty("byte_fallback", out var bf) && bf.ValueKind == JsonValueKind.True;
            if (byteFallback)
                throw new ModelFormatException(path, null, $"a SentencePiece-style BPE (byte_fallback) needs tokenizer.model, {sentencePieceProblem ?? "which is missing"}");
            var decode = UnicodeToByte();
            var ranks = new StringBuilder();
            var singles = new bool[256];
            int maxId = -1;
            foreach (var p in vocab.EnumerateObject())
            {
                var bytes = new List<byte>(p.Name.Length);
                foreach (char c in p.Name)
                {
                    if (!decode.TryGetValue(c, out byte b))
                        throw new ModelFormatException(path, null, $"vocab entry '{p.Name}' is not byte-level (character U+{(int)c:X4})");
                    bytes.Add(b);
                }
                int id = p.Value.ValueKind == JsonValueKind.Number && p.Value.TryGetInt32(out int v) && v >= 0
                    ? v
                    : throw new ModelFormatException(path, null, $"vocab entry '{p.Name}' has id {p.Value.GetRawText()}, not a non-negative integer");
                maxId = Math.Max(maxId, id);
                if (bytes.Count == 1)
                    singles[bytes[0]] = true;
                ranks.Append(Convert.ToBase64String(bytes.ToArray())).Append(' ').Append(id).Append('\n');
            }
            var specials = new Dictionary<string, int>(StringComparer.Ordinal);
            if (root.TryGetProperty("added_tokens", out var added) && added.ValueKind == JsonValueKind.Array)
            {
                foreach (var a in added.EnumerateArray())
                {
                    if (a.ValueKind != JsonValueKind.Object
                        || !a.TryGetProperty("id", out var idElement) || idElement.ValueKind != JsonValueKind.Number || !idElement.TryGetInt32(out int id) || id < 0
                        || !a.TryGetProperty("content", out var content) || content.ValueKind != JsonValueKind.String)
                        throw new ModelFormatException(path, null, $"added_tokens entry {Shorten(a.GetRawText())} needs an integer \"id\" ≥ 0 and a string \"content\"");
                    if (content.GetString()!.Length == 0)
                        throw new ModelFormatException(path, null, $"added_tokens entry {id} has empty content");
                    specials[content.GetString()!] = id;
                    maxId = Math.Max(maxId, id);
                }
            }
            RequireEveryByte(singles, path);
            if (maxId == int.MaxValue)
                throw new ModelFormatException(path, null, $"token id {maxId} leaves no room for a vocabulary size");
            return Create(new MemoryStream(Encoding.UTF8.GetBytes(ranks.ToString())), specials, bosId, eosId, maxId + 1);
        }
        catch (InvalidOperationException e)
        {
            throw new ModelFormatException(path, null, $"holds a string that is not valid text: {e.Message}", e);
        }
    }

    /// <summary>A byte-level BPE encodes any text only if each of the 256 bytes is a token of its own.</summary>
    private static void RequireEveryByte(bool[] singles, string path)
    {
        int missing = Array.IndexOf(singles, false);
        if (missing >= 0)
            throw new ModelFormatException(path, null, $"the vocabulary has no token for the single byte 0x{missing:X2} ({singles.Count(x => !x)} of 256 bytes missing); a byte-level BPE must cover every byte");
    }

    private static string Shorten(string raw) => raw.Length <= 60 ? raw : raw[..60] + "…";

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
        return Create(File.OpenRead(path), specials, bosId, eosId, max + 1);
    }

    private static ByteLevelBpeTokenizer Create(Stream ranks, Dictionary<string, int> specials, int bos, int eos, int vocab)
    {
        using (ranks)
        {
            try
            {
                var pre = new RegexPreTokenizer(new Regex(Llama3Pattern, RegexOptions.Compiled), specials);
                var tok = TiktokenTokenizer.Create(ranks, pre, null, specials);
                return new ByteLevelBpeTokenizer(tok, bos, eos, vocab, [.. specials.Values]);
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

    /// <summary>GPT-2's printable-unicode → byte table.</summary>
    internal static Dictionary<char, byte> UnicodeToByte()
    {
        var bs = new List<int>();
        for (int b = '!'; b <= '~'; b++) bs.Add(b);
        for (int b = 0xA1; b <= 0xAC; b++) bs.Add(b);
        for (int b = 0xAE; b <= 0xFF; b++) bs.Add(b);
        var cs = new List<int>(bs);
        int n = 0;
        for (int b = 0; b < 256; b++)
        {
            if (!bs.Contains(b))
            {
                bs.Add(b);
                cs.Add(256 + n);
                n++;
            }
        }
        var map = new Dictionary<char, byte>();
        for (int i = 0; i < bs.Count; i++)
            map[(char)cs[i]] = (byte)bs[i];
        return map;
    }
}
