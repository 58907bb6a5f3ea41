using Qtip.Model.Llama;
using Qtip.Model.Tokenization;
using Xunit;

namespace Qtip.Model.Tests;

public sealed class TokenizerTests
{
    private static readonly Lazy<SentencePieceBpeTokenizer> Nano = new(() => SentencePieceBpeTokenizer.Load(Path.Combine(Fixtures.Nano, "tokenizer.model")));

    [Fact]
    public void ReadmeExamples_MatchReferenceIds()
    {
        Assert.Equal(new[] { 1, 339 }, Nano.Value.Encode("The"));
        Assert.Equal(new[] { 1, 407, 5721, 8114, 8123, 1896, 591, 280, 264, 4999, 296, 280, 264, 5140, 280, 7568, 8136 },
            Nano.Value.Encode("Fellow-Citizens of the Senate and of the House of Representatives:"));
        foreach (var g in Fixtures.Reference("llama-nano").GetProperty("generations").EnumerateArray())
            Assert.Equal(Qtip.Testing.TestData.Ints(g.GetProperty("prompt_ids")), Nano.Value.Encode(g.GetProperty("prompt").GetString()!));
    }

    [Fact]
    public void ValidSplit_ReproducesTheTokenStreamExactly()
    {
        var stream = Perplexity.BuildStream(File.ReadAllText(Fixtures.Corpus("valid.txt")), Nano.Value);
        var reference = Fixtures.ValidTokens();
        Assert.Equal(reference.Length, stream.Length);
        for (int i = 0; i < stream.Length; i++)
        {
            if (stream[i] != reference[i])
                Assert.Fail($"token {i}: {stream[i]}, reference {reference[i]}");
        }
    }

    [Fact]
    public void Decode_RoundTripsTextWithBytesAndNewlines()
    {
        var g = Fixtures.Reference("llama-nano").GetProperty("generations")[0];
        var ids = Qtip.Testing.TestData.Ints(g.GetProperty("generated_ids"));
        Assert.Equal(g.GetProperty("generated_text").GetString(), Nano.Value.Decode(ids));
        const string text = "naïve café ┌──┐ 🦙 x\ny";
        Assert.Equal(text, Nano.Value.Decode(Nano.Value.Encode(text)));
        Assert.Contains(Nano.Value.Encode("🦙"), id => id >= 3 && id <= 258); // byte fallback
    }

    [Fact]
    public void CorruptOrMissingTokenizer_IsOneClearError()
    {
        var dir = Fixtures.TempDir("badtok");
        try
        {
            var e = Assert.Throws<Qtip.Model.Checkpoint.ModelFormatException>(() => Tokenizers.Load(dir, 1, 2));
            Assert.Contains("tokenizer", e.Message, StringComparison.Ordinal);
            File.WriteAllBytes(Path.Combine(dir, "tokenizer.model"), [0x0A, 0x05, 0x0A, 0x03, 0x61]);
            e = Assert.Throws<Qtip.Model.Checkpoint.ModelFormatException>(() => Tokenizers.Load(dir, 1, 2));
            Assert.Contains("tokenizer.model", e.Message, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void LoadPicksSentencePieceForLlama2Folders()
    {
        var t = Tokenizers.Load(Fixtures.Nano, 1, 2);
        Assert.IsType<SentencePieceBpeTokenizer>(t);
        Assert.Equal(8192, t.VocabSize);
    }
}
