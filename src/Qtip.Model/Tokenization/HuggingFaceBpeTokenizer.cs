using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Qtip.Model.Checkpoint;

namespace Qtip.Model.Tokenization;

/// <summary>
/// A BPE <c>tokenizer.json</c> of Hugging Face <c>tokenizers</c>, encoded and decoded as that library does, step by
/// step: added tokens are cut out of the text first (leftmost-longest), each remaining segment is normalised,
/// pre-tokenised, and each piece merged by BPE (lowest merge rank first, leftmost among equals; a piece found whole in
/// the vocabulary is one token when <c>ignore_merges</c>; a character outside the vocabulary becomes its UTF-8 bytes
/// <c>&lt;0xNN&gt;</c> with <c>byte_fallback</c>, else the unknown token); the post-processor adds its template's
/// special tokens. This covers Llama 2's file (SentencePiece-style: Prepend/Replace <c>▁</c> normaliser, byte
/// fallback), Llama 3's (byte-level BPE after the split of <see cref="Llama3Split"/>) and Metaspace files (as the
/// bundled nano model's). Components outside this set are refused with a message naming them, rather than
/// approximated. Microsoft.ML.Tokenizers (2.0.1 and 3.0.0) has no tokenizer.json loader for BPE and splits with
/// .NET's UTF-16 regex, so it is not used here.
/// </summary>
public sealed class HuggingFaceBpeTokenizer : ITextTokenizer
{
    private const char Meta = '\u2581';

    private readonly Dictionary<string, int> vocab;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> vocabLookup;
    private readonly string?[] idToToken;
    private readonly Dictionary<long, (int Rank, int NewId)> merges;
    private readonly int[] byteIds;
    private readonly int unkId;
    private readonly bool fuseUnk;
    private readonly bool ignoreMerges;
    private readonly AddedToken[] added;
    private readonly Dictionary<int, AddedToken> addedById;
    private readonly Dictionary<char, AddedToken[]> addedByFirst;
    private readonly Dictionary<char, AddedToken[]> normalizedAddedByFirst;
    private readonly List<Func<string, string>> normalizers;
    private readonly List<PreTokenizer> preTokenizers;
    private int[] templatePrefix;
    private int[] templateSuffix;
    private readonly List<Decoder> decoders;

    private sealed record AddedToken(string Content, int Id, bool Special, bool Normalized);

    private abstract record PreTokenizer;

    private sealed record SplitPre(Regex? Regex, string? Literal, bool Llama3) : PreTokenizer;

    private sealed record ByteLevelPre(bool AddPrefixSpace, Regex? Gpt2) : PreTokenizer;

    private sealed record MetaspacePre(char Replacement, string Scheme, bool Split) : PreTokenizer;

    private abstract record Decoder;

    private sealed record ReplaceDec(string Pattern, string Content) : Decoder;

    private sealed record ByteFallbackDec : Decoder;

    private sealed record FuseDec : Decoder;

    private sealed record StripDec(char Content, int Start, int Stop) : Decoder;

    private sealed record ByteLevelDec : Decoder;

    private sealed record MetaspaceDec(char Replacement, bool DropFirst) : Decoder;

    /// <summary>GPT-2's byte-level pattern (ByteLevel pre-tokenizer with use_regex).</summary>
    private const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private static readonly char[] ByteToChar = BuildByteToChar();
    private static readonly Dictionary<char, byte> CharToByte = ByteToChar.Select((c, b) => (c, b)).ToDictionary(p => p.c, p => (byte)p.b);

    private HuggingFaceBpeTokenizer(string path, JsonElement root, int bosId, int eosId)
    {
        Path = path;
        BosId = bosId;
        EosId = eosId;
        var model = Obj(root, "model", path);
        if (model.TryGetProperty("type", out var typeElement) && typeElement.ValueKind != JsonValueKind.String)
            throw new ModelFormatException(path, null, $"model.type is {typeElement.ValueKind}, not a string");
        string type = Str(model, "type") ?? (model.TryGetProperty("merges", out _) ? "BPE" : "");
        if (type != "BPE")
            throw Refuse(path, $"model type '{type}' (only BPE is read)");
        if (Str(model, "continuing_subword_prefix") is { Length: > 0 } || Str(model, "end_of_word_suffix") is { Length: > 0 })
            throw Refuse(path, "continuing_subword_prefix / end_of_word_suffix");
        if (model.TryGetProperty("dropout", out var dropout) && dropout.ValueKind == JsonValueKind.Number && dropout.GetDouble() > 0)
            throw Refuse(path, "BPE dropout");

        // Vocabulary and added tokens.
        vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        int maxId = -1;
        foreach (var p in Obj(model, "vocab", path).EnumerateObject())
        {
            int id = TokenId(p.Value, $"vocab entry '{p.Name}'", path);
            vocab[p.Name] = id;
            maxId = Math.Max(maxId, id);
        }
        var addedList = new List<AddedToken>();
        if (root.TryGetProperty("added_tokens", out var at) && at.ValueKind == JsonValueKind.Array)
        {
            foreach (var a in at.EnumerateArray())
            {
                if (a.ValueKind != JsonValueKind.Object || !a.TryGetProperty("content", out var contentElement) || contentElement.ValueKind != JsonValueKind.String
                    || !a.TryGetProperty("id", out var idElement))
                    throw new ModelFormatException(path, null, $"added_tokens entry {Shorten(a.GetRawText())} needs an integer \"id\" and a string \"content\"");
                int addedId = TokenId(idElement, $"added_tokens entry {Shorten(a.GetRawText())}", path);
                if (contentElement.GetString()!.Length == 0)
                    throw new ModelFormatException(path, null, $"added_tokens entry {addedId} has empty content");
                string content = contentElement.GetString()!;
                if (Bool(a, "lstrip") || Bool(a, "rstrip") || Bool(a, "single_word"))
                    throw Refuse(path, $"added token '{content}' with lstrip/rstrip/single_word");
                var t = new AddedToken(content, addedId, Bool(a, "special"), Bool(a, "normalized"));
                addedList.Add(t);
                maxId = Math.Max(maxId, t.Id);
            }
        }
        added = [.. addedList];
        addedById = added.GroupBy(a => a.Id).ToDictionary(g => g.Key, g => g.Last());
        addedByFirst = ByFirstChar(added.Where(a => !a.Normalized && a.Content.Length > 0));
        normalizedAddedByFirst = ByFirstChar(added.Where(a => a.Normalized && a.Content.Length > 0));
        VocabSize = maxId + 1;
        idToToken = new string?[VocabSize];
        foreach (var (k, v) in vocab)
            idToToken[v] = k;
        vocabLookup = vocab.GetAlternateLookup<ReadOnlySpan<char>>();

        // BPE options and merges: (left id, right id) → (rank, id of the merged token).
        unkId = Str(model, "unk_token") is { } unk ? (vocab.TryGetValue(unk, out int u) ? u : throw Refuse(path, $"unk_token '{unk}' is not in the vocabulary")) : -1;
        fuseUnk = Bool(model, "fuse_unk");
        ignoreMerges = Bool(model, "ignore_merges");
        byteIds = Enumerable.Repeat(-1, 256).ToArray();
        if (Bool(model, "byte_fallback"))
        {
            for (int b = 0; b < 256; b++)
                byteIds[b] = vocab.TryGetValue($"<0x{b:X2}>", out int id) ? id : -1;
        }
        ByteFallback = byteIds.Any(id => id >= 0);
        merges = [];
        if (model.TryGetProperty("merges", out var ms) && ms.ValueKind == JsonValueKind.Array)
        {
            int rank = 0;
            foreach (var m in ms.EnumerateArray())
            {
                string a, b;
                if (m.ValueKind == JsonValueKind.String)
                {
                    var parts = m.GetString()!.Split(' ');
                    if (parts.Length != 2)
                        throw new ModelFormatException(path, null, $"merge {rank} '{m.GetString()}' is not two tokens separated by one space");
                    (a, b) = (parts[0], parts[1]);
                }
                else if (m.ValueKind == JsonValueKind.Array && m.GetArrayLength() == 2)
                {
                    (a, b) = (m[0].GetString()!, m[1].GetString()!);
                }
                else
                {
                    throw new ModelFormatException(path, null, $"merge {rank} is neither \"a b\" nor [a, b]");
                }
                if (!vocab.TryGetValue(a, out int ia) || !vocab.TryGetValue(b, out int ib) || !vocab.TryGetValue(a + b, out int merged))
                    throw new ModelFormatException(path, null, $"merge {rank} ('{a}' '{b}') names a token outside the vocabulary");
                merges.TryAdd(Key(ia, ib), (rank, merged));
                rank++;
            }
        }
        MergeCount = merges.Count;

        normalizers = [];
        if (root.TryGetProperty("normalizer", out var norm) && norm.ValueKind == JsonValueKind.Object)
            AddNormalizer(norm);
        preTokenizers = [];
        if (root.TryGetProperty("pre_tokenizer", out var pre) && pre.ValueKind == JsonValueKind.Object)
            AddPreTokenizer(pre);
        (templatePrefix, templateSuffix) = ([], []);
        if (root.TryGetProperty("post_processor", out var post) && post.ValueKind == JsonValueKind.Object)
            ReadPostProcessor(post);
        decoders = [];
        if (root.TryGetProperty("decoder", out var dec) && dec.ValueKind == JsonValueKind.Object)
            AddDecoder(dec);

        bool byteLevel = preTokenizers.Any(p => p is ByteLevelPre);
        if (byteLevel && !ByteFallback && unkId < 0)
        {
            // Every byte of the text becomes one of 256 byte characters; one missing from the vocabulary has no id.
            var missing = Enumerable.Range(0, 256).Where(b => !vocab.ContainsKey(ByteToChar[b].ToString())).ToArray();
            if (missing.Length > 0)
                throw new ModelFormatException(path, null, $"the vocabulary has no token for the single byte 0x{missing[0]:X2} ({missing.Length} of 256 bytes missing); a byte-level BPE must cover every byte");
        }
        if (!byteLevel && !ByteFallback && unkId < 0)
            throw new ModelFormatException(path, null, "the BPE has no byte-level pre-tokenizer, no byte_fallback and no unk_token: text outside its vocabulary would be dropped silently");
        Description = byteLevel
            ? $"byte-level BPE (tokenizer.json: {vocab.Count:N0} tokens + {added.Length} added, {MergeCount:N0} merges{(preTokenizers.Any(p => p is SplitPre { Llama3: true }) ? ", Llama 3 split" : "")})"
            : $"BPE{(ByteFallback ? " with byte fallback" : "")} (tokenizer.json: {vocab.Count:N0} tokens + {added.Length} added, {MergeCount:N0} merges{(preTokenizers.Any(p => p is MetaspacePre) || normalizers.Count > 0 ? ", ▁ for spaces" : "")})";
    }

    public string Path { get; }

    public int BosId { get; }

    public int EosId { get; }

    public int VocabSize { get; }

    public int MergeCount { get; }

    /// <summary>The model has &lt;0xNN&gt; tokens for byte fallback.</summary>
    public bool ByteFallback { get; }

    /// <summary>One line for <c>inspect</c>: the kind of BPE, sizes of the vocabulary and merges.</summary>
    public string Description { get; }

    /// <summary>Number of added tokens (special or not).</summary>
    public int AddedTokenCount => added.Length;

    public static HuggingFaceBpeTokenizer Load(string path, int bosId, int eosId)
    {
        // Regular file, valid UTF-8 and JSON (InputFiles): a FIFO or garbage is one ModelFormatException.
        using var doc = InputFiles.ParseJson(path);
        try
        {
            return new HuggingFaceBpeTokenizer(path, doc.RootElement, bosId, eosId);
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(path, null, $"not valid JSON: {e.Message}", e);
        }
        catch (Exception e) when (e is KeyNotFoundException or InvalidOperationException or FormatException or ArgumentException)
        {
            throw new ModelFormatException(path, null, $"malformed tokenizer.json: {e.Message}", e);
        }
    }

    /// <summary>Largest token id accepted (2^24): real vocabularies are below 2^18; a larger id would size the id table
    /// from a typo.</summary>
    private const int MaxTokenId = 1 << 24;

    private static int TokenId(JsonElement e, string what, string path) =>
        e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out int id) && id >= 0 && id < MaxTokenId
            ? id
            : throw new ModelFormatException(path, null, $"{what} has id {Shorten(e.GetRawText())}, not an integer in [0, {MaxTokenId})");

    private static string Shorten(string raw) => raw.Length <= 60 ? raw : raw[..60] + "…";

    /// <summary>True for a special added token (skipped by <see cref="Decode(IReadOnlyList{int})"/>).</summary>
    public bool IsSpecial(int id) => addedById.TryGetValue(id, out var a) && a.Special;

    /// <summary>The token of an id (vocabulary or added token), or null.</summary>
    public string? TokenOf(int id) =>
        addedById.TryGetValue(id, out var a) ? a.Content : id >= 0 && id < idToToken.Length ? idToToken[id] : null;

    /// <summary>Ids of <paramref name="text"/>, preceded by BOS when <paramref name="addBos"/>.</summary>
    public IReadOnlyList<int> Encode(string text, bool addBos = true)
    {
        var ids = new List<int>(text.Length / 3 + 2);
        if (addBos)
            ids.Add(BosId);
        EncodeInto(text, ids);
        return ids;
    }

    /// <summary>As Hugging Face's <c>encode(text, add_special_tokens)</c>: with special tokens, the post-processor's
    /// template adds its tokens (Llama 2's adds &lt;s&gt;; the Llama 3 file read here has a ByteLevel post-processor,
    /// which adds none).</summary>
    public List<int> EncodeLikeHuggingFace(string text, bool addSpecialTokens)
    {
        var ids = new List<int>(text.Length / 3 + 2);
        if (addSpecialTokens)
            ids.AddRange(templatePrefix);
        EncodeInto(text, ids);
        if (addSpecialTokens)
            ids.AddRange(templateSuffix);
        return ids;
    }

    private void EncodeInto(string text, List<int> ids)
    {
        foreach (var (start, length, token) in SplitOnAdded(text, 0, text.Length, addedByFirst))
        {
            if (token is not null)
            {
                ids.Add(token.Id);
                continue;
            }
            string s = text.Substring(start, length);
            foreach (var f in normalizers)
                s = f(s);
            foreach (var (ns, nl, nt) in SplitOnAdded(s, 0, s.Length, normalizedAddedByFirst))
            {
                if (nt is not null)
                    ids.Add(nt.Id);
                else
                    EncodeSegment(s.Substring(ns, nl), start == 0 && ns == 0, ids);
            }
        }
    }

    /// <summary>Segments of s[start, end): added tokens matched leftmost-longest (as aho-corasick's LeftmostLongest),
    /// and the text between them (non-empty only).</summary>
    private static IEnumerable<(int Start, int Length, AddedToken? Token)> SplitOnAdded(string s, int start, int end, Dictionary<char, AddedToken[]> byFirst)
    {
        int last = start;
        for (int i = start; i < end && byFirst.Count > 0;)
        {
            AddedToken? best = null;
            if (byFirst.TryGetValue(s[i], out var candidates))
            {
                foreach (var c in candidates) // longest first
                {
                    if (c.Content.Length <= end - i && string.CompareOrdinal(s, i, c.Content, 0, c.Content.Length) == 0)
                    {
                        best = c;
                        break;
                    }
                }
            }
            if (best is null)
            {
                i++;
                continue;
            }
            if (i > last)
                yield return (last, i - last, null);
            yield return (i, best.Content.Length, best);
            i += best.Content.Length;
            last = i;
        }
        if (end > last)
            yield return (last, end - last, null);
    }

    private void EncodeSegment(string s, bool first, List<int> ids)
    {
        if (s.Length == 0)
            return;
        var words = new List<string> { s };
        foreach (var p in preTokenizers)
        {
            var next = new List<string>(words.Count * 2);
            for (int w = 0; w < words.Count; w++)
                PreTokenize(p, words[w], first && w == 0, next);
            words = next;
        }
        foreach (var w in words)
            Bpe(w, ids);
    }

    private static void PreTokenize(PreTokenizer p, string s, bool first, List<string> output)
    {
        switch (p)
        {
            case SplitPre { Llama3: true }:
                var pieces = new List<(int, int)>();
                Llama3Split.Split(s, pieces);
                foreach (var (a, l) in pieces)
                    output.Add(s.Substring(a, l));
                break;
            case SplitPre { Regex: { } re }:
                AddIsolated(s, re.Matches(s).Select(m => (m.Index, m.Length)), output);
                break;
            case SplitPre { Literal: { } lit }:
                var spans = new List<(int, int)>();
                for (int i = s.IndexOf(lit, StringComparison.Ordinal); i >= 0 && lit.Length > 0; i = s.IndexOf(lit, i + lit.Length, StringComparison.Ordinal))
                    spans.Add((i, lit.Length));
                AddIsolated(s, spans, output);
                break;
            case ByteLevelPre bl:
                if (bl.AddPrefixSpace && !s.StartsWith(' '))
                    s = " " + s;
                var parts = new List<string>();
                if (bl.Gpt2 is { } g)
                    AddIsolated(s, g.Matches(s).Select(m => (m.Index, m.Length)), parts);
                else
                    parts.Add(s);
                foreach (var part in parts)
                    output.Add(ToByteLevel(part));
                break;
            case MetaspacePre ms:
                s = s.Replace(' ', ms.Replacement);
                if (!s.StartsWith(ms.Replacement) && (ms.Scheme == "always" || (ms.Scheme == "first" && first)))
                    s = ms.Replacement + s;
                if (!ms.Split)
                {
                    output.Add(s);
                    break;
                }
                // MergedWithNext: every replacement character starts a piece.
                int from = 0;
                for (int i = 1; i < s.Length; i++)
                {
                    if (s[i] == ms.Replacement)
                    {
                        output.Add(s[from..i]);
                        from = i;
                    }
                }
                output.Add(s[from..]);
                break;
        }
    }

    /// <summary>SplitDelimiterBehavior::Isolated: the matches and the text between them, each a piece.</summary>
    private static void AddIsolated(string s, IEnumerable<(int Index, int Length)> matches, List<string> output)
    {
        int last = 0;
        foreach (var (i, l) in matches)
        {
            if (l == 0)
                continue;
            if (i > last)
                output.Add(s[last..i]);
            output.Add(s.Substring(i, l));
            last = i + l;
        }
        if (last < s.Length)
            output.Add(s[last..]);
    }

    private static string ToByteLevel(string s)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        var chars = new char[bytes.Length];
        for (int i = 0; i < bytes.Length; i++)
            chars[i] = ByteToChar[bytes[i]];
        return new string(chars);
    }

    /// <summary>The BPE model on one piece (Hugging Face's <c>merge_word</c> and <c>Word::merge_all</c>).</summary>
    private void Bpe(string w, List<int> ids)
    {
        if (w.Length == 0)
            return;
        if (ignoreMerges && vocabLookup.TryGetValue(w.AsSpan(), out int whole))
        {
            ids.Add(whole);
            return;
        }

        // Symbols: one per code point (its id), or its UTF-8 bytes, or the (fused) unknown token.
        var sym = new List<int>(w.Length);
        int pendingUnk = 0;
        Span<byte> utf8 = stackalloc byte[4];
        for (int i = 0; i < w.Length;)
        {
            int l = char.IsHighSurrogate(w[i]) && i + 1 < w.Length && char.IsLowSurrogate(w[i + 1]) ? 2 : 1;
            var span = w.AsSpan(i, l);
            i += l;
            if (vocabLookup.TryGetValue(span, out int id))
            {
                if (pendingUnk > 0)
                {
                    sym.Add(unkId);
                    pendingUnk = 0;
                }
                sym.Add(id);
                continue;
            }
            if (ByteFallback)
            {
                int n = Rune.DecodeFromUtf16(span, out var rune, out _) == System.Buffers.OperationStatus.Done ? rune.EncodeToUtf8(utf8) : WriteReplacement(utf8);
                bool all = true;
                for (int b = 0; b < n; b++)
                    all &= byteIds[utf8[b]] >= 0;
                if (all)
                {
                    if (pendingUnk > 0)
                    {
                        sym.Add(unkId);
                        pendingUnk = 0;
                    }
                    for (int b = 0; b < n; b++)
                        sym.Add(byteIds[utf8[b]]);
                    continue;
                }
            }
            if (unkId < 0)
                continue; // as Hugging Face: without an unknown token the character is dropped
            if (pendingUnk > 0 && !fuseUnk)
                sym.Add(unkId);
            pendingUnk = 1;
        }
        if (pendingUnk > 0)
            sym.Add(unkId);

        int count = sym.Count;
        var c = sym.ToArray();
        var prev = new int[count];
        var next = new int[count];
        var alive = new bool[count];
        for (int i = 0; i < count; i++)
        {
            prev[i] = i - 1;
            next[i] = i + 1 < count ? i + 1 : -1;
            alive[i] = true;
        }
        // Min-heap on (rank, position), as Hugging Face's Merge ordering.
        var queue = new PriorityQueue<(int Pos, int NewId), long>();
        for (int i = 0; i + 1 < count; i++)
        {
            if (merges.TryGetValue(Key(c[i], c[i + 1]), out var m))
                queue.Enqueue((i, m.NewId), Priority(m.Rank, i));
        }
        while (queue.TryDequeue(out var top, out _))
        {
            int pos = top.Pos;
            if (!alive[pos] || next[pos] < 0)
                continue;
            int right = next[pos];
            if (!merges.TryGetValue(Key(c[pos], c[right]), out var cur) || cur.NewId != top.NewId)
                continue; // an expired entry
            c[pos] = top.NewId;
            alive[right] = false;
            next[pos] = next[right];
            if (next[right] >= 0)
                prev[next[right]] = pos;
            if (prev[pos] >= 0 && merges.TryGetValue(Key(c[prev[pos]], c[pos]), out var mp))
                queue.Enqueue((prev[pos], mp.NewId), Priority(mp.Rank, prev[pos]));
            if (next[pos] >= 0 && merges.TryGetValue(Key(c[pos], c[next[pos]]), out var mn))
                queue.Enqueue((pos, mn.NewId), Priority(mn.Rank, pos));
        }
        for (int i = 0; i >= 0 && i < count; i = next[i])
            ids.Add(c[i]);
    }

    private static int WriteReplacement(Span<byte> utf8) => new Rune(0xFFFD).EncodeToUtf8(utf8);

    private static long Key(int a, int b) => ((long)a << 32) | (uint)b;

    private static long Priority(int rank, int pos) => ((long)rank << 32) | (uint)pos;

    /// <summary>Text of <paramref name="ids"/>; special added tokens are skipped (Hugging Face's
    /// <c>decode(ids, skip_special_tokens=True)</c>).</summary>
    public string Decode(IReadOnlyList<int> ids) => Decode(ids, skipSpecialTokens: true);

    public string Decode(IReadOnlyList<int> ids, bool skipSpecialTokens)
    {
        var result = new StringBuilder();
        var chunk = new List<string>();
        foreach (int id in ids)
        {
            if (addedById.TryGetValue(id, out var a))
            {
                if (skipSpecialTokens && a.Special)
                    continue;
                result.Append(RunDecoders(chunk));
                chunk.Clear();
                result.Append(a.Content);
            }
            else if (id >= 0 && id < idToToken.Length && idToToken[id] is { } t)
            {
                chunk.Add(t);
            }
        }
        result.Append(RunDecoders(chunk));
        return result.ToString();
    }

    private string RunDecoders(List<string> tokens)
    {
        if (tokens.Count == 0)
            return "";
        if (decoders.Count == 0)
            return string.Join(' ', tokens);
        var t = tokens;
        foreach (var d in decoders)
            t = DecodeChain(d, t);
        return string.Concat(t);
    }

    private static List<string> DecodeChain(Decoder d, List<string> tokens)
    {
        switch (d)
        {
            case ReplaceDec r:
                return tokens.Select(t => t.Replace(r.Pattern, r.Content, StringComparison.Ordinal)).ToList();
            case FuseDec:
                return [string.Concat(tokens)];
            case StripDec s:
                return tokens.Select(t =>
                {
                    int a = 0;
                    while (a < s.Start && a < t.Length && t[a] == s.Content)
                        a++;
                    int b = t.Length;
                    for (int k = 0; k < s.Stop && b > a && t[b - 1] == s.Content; k++)
                        b--;
                    return t[a..b];
                }).ToList();
            case ByteFallbackDec:
            {
                var output = new List<string>(tokens.Count);
                var pending = new List<byte>();
                void Flush()
                {
                    if (pending.Count == 0)
                        return;
                    try
                    {
                        output.Add(new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(pending.ToArray()));
                    }
                    catch (DecoderFallbackException)
                    {
                        for (int k = 0; k < pending.Count; k++)
                            output.Add("\uFFFD");
                    }
                    pending.Clear();
                }
                foreach (var t in tokens)
                {
                    if (t.Length == 6 && t.StartsWith("<0x", StringComparison.Ordinal) && t[5] == '>'
                        && byte.TryParse(t.AsSpan(3, 2), System.Globalization.NumberStyles.HexNumber, null, out byte b))
                    {
                        pending.Add(b);
                        continue;
                    }
                    Flush();
                    output.Add(t);
                }
                Flush();
                return output;
            }
            case ByteLevelDec:
            {
                var bytes = new List<byte>();
                foreach (var t in tokens)
                {
                    if (t.All(CharToByte.ContainsKey))
                        bytes.AddRange(t.Select(ch => CharToByte[ch]));
                    else
                        bytes.AddRange(Encoding.UTF8.GetBytes(t));
                }
                return [Encoding.UTF8.GetString(bytes.ToArray())];
            }
            case MetaspaceDec m:
                return tokens.Select((t, i) =>
                {
                    var sb = new StringBuilder(t.Length);
                    foreach (char ch in t)
                    {
                        if (ch != m.Replacement)
                            sb.Append(ch);
                        else if (!(i == 0 && m.DropFirst))
                            sb.Append(' ');
                    }
                    return sb.ToString();
                }).ToList();
            default:
                return tokens;
        }
    }

    private void AddNormalizer(JsonElement n)
    {
        string type = Str(n, "type") ?? "";
        switch (type)
        {
            case "Sequence":
                foreach (var x in n.GetProperty("normalizers").EnumerateArray())
                    AddNormalizer(x);
                break;
            case "Prepend":
                string prefix = Str(n, "prepend") ?? "";
                normalizers.Add(s => s.Length == 0 ? s : prefix + s);
                break;
            case "Replace":
                var (literal, regex) = Pattern(n, Path);
                string content = Str(n, "content") ?? "";
                normalizers.Add(literal is not null ? s => s.Replace(literal, content, StringComparison.Ordinal) : s => regex!.Replace(s, content));
                break;
            case "NFC":
                normalizers.Add(s => s.Normalize(NormalizationForm.FormC));
                break;
            case "NFD":
                normalizers.Add(s => s.Normalize(NormalizationForm.FormD));
                break;
            case "NFKC":
                normalizers.Add(s => s.Normalize(NormalizationForm.FormKC));
                break;
            case "NFKD":
                normalizers.Add(s => s.Normalize(NormalizationForm.FormKD));
                break;
            default:
                throw Refuse(Path, $"normalizer '{type}'");
        }
    }

    private void AddPreTokenizer(JsonElement p)
    {
        string type = Str(p, "type") ?? "";
        switch (type)
        {
            case "Sequence":
                foreach (var x in p.GetProperty("pretokenizers").EnumerateArray())
                    AddPreTokenizer(x);
                break;
            case "Split":
                if (Str(p, "behavior") != "Isolated" || Bool(p, "invert"))
                    throw Refuse(Path, $"Split pre-tokenizer with behavior '{Str(p, "behavior")}'{(Bool(p, "invert") ? " inverted" : "")} (only Isolated)");
                var (literal, regex) = Pattern(p, Path);
                bool llama3 = regex is not null && regex.ToString() == Llama3Split.Pattern;
                preTokenizers.Add(new SplitPre(llama3 ? null : regex, literal, llama3));
                break;
            case "ByteLevel":
                bool useRegex = !p.TryGetProperty("use_regex", out var ur) || ur.ValueKind != JsonValueKind.False;
                preTokenizers.Add(new ByteLevelPre(Bool(p, "add_prefix_space"), useRegex ? new Regex(Gpt2Pattern, RegexOptions.CultureInvariant) : null));
                break;
            case "Metaspace":
                string scheme = Str(p, "prepend_scheme") ?? (p.TryGetProperty("add_prefix_space", out var aps) && aps.ValueKind == JsonValueKind.False ? "never" : "always");
                if (scheme == "first" && preTokenizers.Count > 0)
                    throw Refuse(Path, "Metaspace prepend_scheme 'first' after another pre-tokenizer");
                preTokenizers.Add(new MetaspacePre(Replacement(p), scheme, !p.TryGetProperty("split", out var sp) || sp.ValueKind != JsonValueKind.False));
                break;
            default:
                throw Refuse(Path, $"pre-tokenizer '{type}'");
        }
    }

    private void ReadPostProcessor(JsonElement p)
    {
        string type = Str(p, "type") ?? "";
        switch (type)
        {
            case "ByteLevel":
                break; // offsets only
            case "Sequence":
                foreach (var x in p.GetProperty("processors").EnumerateArray())
                    ReadPostProcessor(x);
                break;
            case "TemplateProcessing":
                var specials = p.GetProperty("special_tokens");
                var prefix = new List<int>();
                var suffix = new List<int>();
                bool seenSequence = false;
                foreach (var item in p.GetProperty("single").EnumerateArray())
                {
                    if (item.TryGetProperty("Sequence", out _))
                    {
                        seenSequence = true;
                        continue;
                    }
                    string name = item.GetProperty("SpecialToken").GetProperty("id").GetString()!;
                    foreach (var id in specials.GetProperty(name).GetProperty("ids").EnumerateArray())
                        (seenSequence ? suffix : prefix).Add(id.GetInt32());
                }
                (templatePrefix, templateSuffix) = ([.. templatePrefix, .. prefix], [.. templateSuffix, .. suffix]);
                break;
            default:
                throw Refuse(Path, $"post-processor '{type}'");
        }
    }

    private void AddDecoder(JsonElement d)
    {
        string type = Str(d, "type") ?? "";
        switch (type)
        {
            case "Sequence":
                foreach (var x in d.GetProperty("decoders").EnumerateArray())
                    AddDecoder(x);
                break;
            case "Replace":
                var (literal, _) = Pattern(d, Path);
                decoders.Add(new ReplaceDec(literal ?? throw Refuse(Path, "Replace decoder with a regex"), Str(d, "content") ?? ""));
                break;
            case "ByteFallback":
                decoders.Add(new ByteFallbackDec());
                break;
            case "Fuse":
                decoders.Add(new FuseDec());
                break;
            case "Strip":
                string c = Str(d, "content") ?? " ";
                decoders.Add(new StripDec(c.Length == 1 ? c[0] : throw Refuse(Path, "Strip decoder of more than one character"), d.GetProperty("start").GetInt32(), d.GetProperty("stop").GetInt32()));
                break;
            case "ByteLevel":
                decoders.Add(new ByteLevelDec());
                break;
            case "Metaspace":
                string scheme = Str(d, "prepend_scheme") ?? (d.TryGetProperty("add_prefix_space", out var aps) && aps.ValueKind == JsonValueKind.False ? "never" : "always");
                decoders.Add(new MetaspaceDec(Replacement(d), scheme != "never"));
                break;
            default:
                throw Refuse(Path, $"decoder '{type}'");
        }
    }

    private static char Replacement(JsonElement e)
    {
        string r = Str(e, "replacement") ?? Meta.ToString();
        return r.Length == 1 ? r[0] : throw new FormatException($"Metaspace replacement '{r}' is not one character");
    }

    private static (string? Literal, Regex? Regex) Pattern(JsonElement e, string path)
    {
        var p = e.GetProperty("pattern");
        if (p.TryGetProperty("String", out var s))
            return (s.GetString()!, null);
        if (p.TryGetProperty("Regex", out var r))
            return (null, new Regex(r.GetString()!, RegexOptions.CultureInvariant));
        throw new ModelFormatException(path, null, "pattern is neither String nor Regex");
    }

    private static Dictionary<char, AddedToken[]> ByFirstChar(IEnumerable<AddedToken> tokens) =>
        tokens.GroupBy(t => t.Content[0]).ToDictionary(g => g.Key, g => g.OrderByDescending(t => t.Content.Length).ToArray());

    private static JsonElement Obj(JsonElement e, string name, string path) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Object ? v : throw new ModelFormatException(path, null, $"no '{name}' object");

    private static string? Str(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    private static bool Bool(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.True;

    private static ModelFormatException Refuse(string path, string what) =>
        new(path, null, $"{what} is not supported by Qtip's tokenizer.json reader");

    /// <summary>GPT-2's byte → printable-unicode table.</summary>
    private static char[] BuildByteToChar()
    {
        var map = new char[256];
        int n = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            map[b] = printable ? (char)b : (char)(256 + n++);
        }
        return map;
    }
}
