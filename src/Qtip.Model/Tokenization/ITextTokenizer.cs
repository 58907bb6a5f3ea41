namespace Qtip.Model.Tokenization;

/// <summary>Text ↔ token ids for a Llama checkpoint.</summary>
public interface ITextTokenizer
{
    int BosId { get; }

    int EosId { get; }

    int VocabSize { get; }

    /// <summary>What the tokenizer is and which file it came from (one line, for <c>inspect</c> and <c>eval</c>).</summary>
    string Description { get; }

    /// <summary>Ids of <paramref name="text"/>, preceded by BOS when <paramref name="addBos"/>.</summary>
    IReadOnlyList<int> Encode(string text, bool addBos = true);

    /// <summary>Text of <paramref name="ids"/>; special tokens (BOS, EOS) are dropped.</summary>
    string Decode(IReadOnlyList<int> ids);
}

/// <summary>Finds the tokenizer of a checkpoint folder.</summary>
public static class Tokenizers
{
    /// <summary>
    /// <c>tokenizer.model</c> (SentencePiece, Llama 1/2) if present; else <c>tokenizer.json</c> (Hugging Face BPE:
    /// Llama 2's SentencePiece-style file with byte fallback, Llama 3's byte-level one), read by
    /// <see cref="HuggingFaceBpeTokenizer"/>; else <c>original/tokenizer.model</c> in tiktoken format (Llama 3 as Meta
    /// ships it).
    /// </summary>
    public static ITextTokenizer Load(string folder, int bosId, int eosId)
    {
        var sp = Path.Combine(folder, "tokenizer.model");
        var json = Path.Combine(folder, "tokenizer.json");
        var tiktoken = Path.Combine(folder, "original", "tokenizer.model");
        string? spProblem = null;
        if (File.Exists(sp))
        {
            Checkpoint.InputFiles.RequireRegular(sp, "tokenizer.model");
            if (SentencePieceBpeTokenizer.LooksLikeSentencePiece(sp))
                return SentencePieceBpeTokenizer.Load(sp);
            spProblem = new FileInfo(sp).Length == 0
                ? "is empty"
                : "is not a SentencePiece model (it does not start with a protobuf piece list)";
        }
        if (File.Exists(json))
            return HuggingFaceBpeTokenizer.Load(json, bosId, eosId);
        if (File.Exists(tiktoken))
            return ByteLevelBpeTokenizer.FromTiktoken(tiktoken, Path.Combine(folder, "tokenizer_config.json"), bosId, eosId);
        if (spProblem is not null)
            throw new Checkpoint.ModelFormatException(sp, null, $"tokenizer.model {spProblem}");
        throw new Checkpoint.ModelFormatException(folder, null, "no tokenizer.model (SentencePiece), tokenizer.json or original/tokenizer.model in the folder");
    }
}
