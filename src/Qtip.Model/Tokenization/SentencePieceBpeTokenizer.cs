using System.Text;
using Google.Protobuf;
using Microsoft.ML.Tokenizers;
using Qtip.Model.Checkpoint;

namespace Qtip.Model.Tokenization;

/// <summary>
/// SentencePiece BPE (Llama 1/2 <c>tokenizer.model</c>). Decoding goes through Microsoft.ML.Tokenizers'
/// <see cref="LlamaTokenizer"/>. Encoding is SentencePiece's own algorithm, written here because
/// Microsoft.ML.Tokenizers 2.0.1 breaks ties between equal-score merges differently from SentencePiece (it gives
/// <c>f ff ff ff</c> for "fffffff" where SentencePiece gives <c>ff ff ff f</c>; 10 of the 145 validation
/// documents differ): repeatedly merge the adjacent pair whose concatenation is a piece with the highest score,
/// the leftmost pair among equal scores; characters left without a piece become their UTF-8 bytes
/// (<c>&lt;0xNN&gt;</c>) when the model has byte fallback, else <c>&lt;unk&gt;</c>. Normalisation: the model's
/// "identity" rule with its dummy-prefix, whitespace-escape and extra-whitespace flags (other normalisers are refused).
/// </summary>
public sealed class SentencePieceBpeTokenizer : ITextTokenizer
{
    private const string Space = "\u2581";

    private readonly Dictionary<string, (int Id, float Score)> pieces;
    private readonly Dictionary<string, (int Id, float Score)>.AlternateLookup<ReadOnlySpan<char>> lookup;
    private readonly int[] byteIds;
    private readonly LlamaTokenizer decoder;
    private readonly bool addDummyPrefix;
    private readonly bool removeExtraWhitespaces;
    private readonly bool escapeWhitespaces;

    private SentencePieceBpeTokenizer(Dictionary<string, (int, float)> pieces, int[] byteIds, int unk, int bos, int eos, int vocab,
        bool addDummyPrefix, bool removeExtra, bool escape, LlamaTokenizer decoder)
    {
        this.pieces = pieces;
        lookup = pieces.GetAlternateLookup<ReadOnlySpan<char>>();
        this.byteIds = byteIds;
        UnkId = unk;
        BosId = bos;
        EosId = eos;
        VocabSize = vocab;
        this.addDummyPrefix = addDummyPrefix;
        removeExtraWhitespaces = removeExtra;
        escapeWhitespaces = escape;
        this.decoder = decoder;
    }

    public int BosId { get; }

    public int EosId { get; }

    public int UnkId { get; }

    public int VocabSize { get; }

    public string Description => $"SentencePiece BPE (tokenizer.model: {VocabSize:N0} pieces)";

    /// <summary>The Microsoft.ML.Tokenizers tokenizer of the same file (used for decoding).</summary>
    public LlamaTokenizer Library => decoder;

    /// <summary>True if the file parses as a SentencePiece ModelProto (a tiktoken file is text and does not).</summary>
    public static bool LooksLikeSentencePiece(string path)
    {
        if (!InputFiles.IsRegular(path))
            return false; // never open a FIFO or device just to look at it
        try
        {
            using var fs = File.OpenRead(path);
            int first = fs.ReadByte();
            return first == 0x0A; // field 1 (pieces), length-delimited
        }
        catch (IOException)
        {
            return false;
        }
    }

    public static SentencePieceBpeTokenizer Load(string path)
    {
        InputFiles.RequireRegular(path, "tokenizer.model");
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (IOException e)
        {
            throw new ModelFormatException(path, null, $"cannot read: {e.Message}", e);
        }
        var list = new List<(string Piece, float Score, int Type)>();
        int modelType = 1;
        bool addDummy = true, removeExtra = true, escape = true;
        string normalizer = "identity";
        try
        {
            var input = new CodedInputStream(bytes);
            uint tag;
            while ((tag = input.ReadTag()) != 0)
            {
                switch (WireFormat.GetTagFieldNumber(tag))
                {
                    case 1:
                        list.Add(ReadPiece(input.ReadBytes()));
                        break;
                    case 2:
                        modelType = ReadTrainerModelType(input.ReadBytes());
                        break;
                    case 3:
                        (normalizer, addDummy, removeExtra, escape) = ReadNormalizer(input.ReadBytes());
                        break;
                    default:
                        input.SkipLastField();
                        break;
                }
            }
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new ModelFormatException(path, null, $"not a SentencePiece model: {e.Message}", e);
        }
        if (list.Count == 0)
            throw new ModelFormatException(path, null, "SentencePiece model has no pieces");
        if (modelType != 2)
            throw new ModelFormatException(path, null, $"SentencePiece model type {modelType} is not BPE (2); only BPE models (Llama 1/2) are supported");
        if (normalizer is not ("identity" or ""))
            throw new ModelFormatException(path, null, $"SentencePiece normaliser '{normalizer}' is not supported (Llama uses 'identity')");

        var map = new Dictionary<string, (int, float)>(StringComparer.Ordinal);
        var byteIds = Enumerable.Repeat(-1, 256).ToArray();
        int unk = 0, bos = -1, eos = -1;
        for (int id = 0; id < list.Count; id++)
        {
            var (piece, score, type) = list[id];
            switch (type)
            {
                case 1 or 4 or 5: // NORMAL, USER_DEFINED, UNUSED
                    map.TryAdd(piece, (id, type == 4 ? float.MaxValue : score));
                    break;
                case 2:
                    unk = id;
                    break;
                case 3 when piece == "<s>":
                    bos = id;
                    break;
                case 3 when piece == "</s>":
                    eos = id;
                    break;
                case 6:
                    if (piece.Length != 6 || !piece.StartsWith("<0x", StringComparison.Ordinal) || piece[5] != '>'
                        || !byte.TryParse(piece.AsSpan(3, 2), System.Globalization.NumberStyles.AllowHexSpecifier, System.Globalization.CultureInfo.InvariantCulture, out byte value))
                        throw new ModelFormatException(path, null, $"byte piece {id} is '{piece}', not <0xNN> with two hex digits");
                    byteIds[value] = id;
                    break;
            }
        }
        LlamaTokenizer library;
        try
        {
            using var ms = new MemoryStream(bytes);
            library = LlamaTokenizer.Create(ms, addBeginOfSentence: false, addEndOfSentence: false);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException or InvalidProtocolBufferException or NotSupportedException)
        {
            throw new ModelFormatException(path, null, $"Microsoft.ML.Tokenizers cannot load this SentencePiece model: {e.Message}", e);
        }
        return new SentencePieceBpeTokenizer(map, byteIds, unk, bos < 0 ? 1 : bos, eos < 0 ? 2 : eos, list.Count, addDummy, removeExtra, escape, library);
    }

    private static (string, float, int) ReadPiece(ByteString message)
    {
        var input = message.CreateCodedInput();
        string piece = "";
        float score = 0;
        int type = 1;
        uint tag;
        while ((tag = input.ReadTag()) != 0)
        {
            switch (WireFormat.GetTagFieldNumber(tag))
            {
                case 1: piece = input.ReadString(); break;
                case 2: score = input.ReadFloat(); break;
                case 3: type = input.ReadEnum(); break;
                default: input.SkipLastField(); break;
            }
        }
        return (piece, score, type);
    }

    private static int ReadTrainerModelType(ByteString message)
    {
        var input = message.CreateCodedInput();
        int modelType = 1;
        uint tag;
        while ((tag = input.ReadTag()) != 0)
        {
            if (WireFormat.GetTagFieldNumber(tag) == 3)
                modelType = input.ReadEnum();
            else
                input.SkipLastField();
        }
        return modelType;
    }

    private static (string, bool, bool, bool) ReadNormalizer(ByteString message)
    {
        var input = message.CreateCodedInput();
        string name = "";
        bool addDummy = true, removeExtra = true, escape = true;
        uint tag;
        while ((tag = input.ReadTag()) != 0)
        {
            switch (WireFormat.GetTagFieldNumber(tag))
            {
                case 1: name = input.ReadString(); break;
                case 3: addDummy = input.ReadBool(); break;
                case 4: removeExtra = input.ReadBool(); break;
                case 5: escape = input.ReadBool(); break;
                default: input.SkipLastField(); break;
            }
        }
        return (name, addDummy, removeExtra, escape);
    }

    public IReadOnlyList<int> Encode(string text, bool addBos = true)
    {
        var ids = new List<int>(text.Length / 3 + 2);
        if (addBos)
            ids.Add(BosId);
        EncodeInto(text, ids);
        return ids;
    }

    /// <summary>Appends the ids of <paramref name="text"/> (no BOS) to <paramref name="ids"/>.</summary>
    public void EncodeInto(string text, List<int> ids)
    {
        string s = Normalize(text);
        if (s.Length == 0)
            return;

        // Symbols: one per Unicode code point, as a doubly linked list over [start, start+len) of s.
        int n = 0;
        var start = new int[s.Length];
        var len = new int[s.Length];
        for (int i = 0; i < s.Length;)
        {
            int l = char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]) ? 2 : 1;
            start[n] = i;
            len[n] = l;
            n++;
            i += l;
        }
        var prev = new int[n];
        var next = new int[n];
        for (int i = 0; i < n; i++)
        {
            prev[i] = i - 1;
            next[i] = i + 1 < n ? i + 1 : -1;
        }

        // Agenda: highest score first, then leftmost (smallest start).
        var agenda = new PriorityQueue<(int Left, int Right, int Size), (float NegScore, int Start)>();
        void TryAdd(int left, int right)
        {
            if (left < 0 || right < 0)
                return;
            int size = len[left] + len[right];
            if (lookup.TryGetValue(s.AsSpan(start[left], size), out var piece))
                agenda.Enqueue((left, right, size), (-piece.Score, start[left]));
        }
        for (int i = 0; i + 1 < n; i++)
            TryAdd(i, i + 1);

        while (agenda.TryDequeue(out var pair, out _))
        {
            var (left, right, size) = pair;
            // Stale entry: one side was merged away since.
            if (len[left] == 0 || len[right] == 0 || len[left] + len[right] != size || next[left] != right)
                continue;
            len[left] = size;
            len[right] = 0;
            next[left] = next[right];
            if (next[right] >= 0)
                prev[next[right]] = left;
            TryAdd(prev[left], left);
            TryAdd(left, next[left]);
        }

        Span<byte> utf8 = stackalloc byte[4];
        for (int i = 0; i >= 0 && i < n; i = next[i])
        {
            var span = s.AsSpan(start[i], len[i]);
            if (lookup.TryGetValue(span, out var piece))
            {
                ids.Add(piece.Id);
                continue;
            }
            // No piece: byte fallback, one id per UTF-8 byte (or <unk>).
            foreach (var rune in span.EnumerateRunes())
            {
                int count = rune.EncodeToUtf8(utf8);
                for (int b = 0; b < count; b++)
                    ids.Add(byteIds[utf8[b]] >= 0 ? byteIds[utf8[b]] : UnkId);
            }
        }
    }

    private string Normalize(string text)
    {
        if (removeExtraWhitespaces)
            text = string.Join(' ', text.Split(' ', StringSplitOptions.RemoveEmptyEntries));
        if (text.Length == 0)
            return text;
        var sb = new StringBuilder(text.Length + 1);
        if (addDummyPrefix)
            sb.Append(escapeWhitespaces ? Space : " ");
        sb.Append(escapeWhitespaces ? text.Replace(" ", Space, StringComparison.Ordinal) : text);
        return sb.ToString();
    }

    public string Decode(IReadOnlyList<int> ids) =>
        decoder.Decode(ids.Where(i => i != BosId && i != EosId)) ?? "";
}
