using System.Text.Json;
using Qtip.Testing;

namespace Qtip.Model.Tests;

/// <summary>The repository's bundled model and data, and the optional llama-small (env QTIP_LLAMA_SMALL).</summary>
internal static class Fixtures
{
    public const string SmallVariable = "QTIP_LLAMA_SMALL";

    private static readonly Lazy<JsonDocument> ReferenceDoc = new(() => JsonDocument.Parse(File.ReadAllBytes(System.IO.Path.Combine(TestData.RepoRoot(), "data", "reference.json"))));

    public static string Nano => System.IO.Path.Combine(TestData.RepoRoot(), "models", "llama-nano");

    public static string Corpus(string file) => System.IO.Path.Combine(TestData.RepoRoot(), "data", "corpus", file);

    /// <summary>llama-small's folder if the variable names one that exists, else null (the test is skipped).</summary>
    public static string? Small
    {
        get
        {
            var dir = Environment.GetEnvironmentVariable(SmallVariable);
            return dir is not null && Directory.Exists(dir) ? dir : null;
        }
    }

    /// <summary>reference.json's entry for a model ("llama-nano", "llama-small").</summary>
    public static JsonElement Reference(string model) => ReferenceDoc.Value.RootElement.GetProperty("models").GetProperty(model);

    public static ushort[] ValidTokens()
    {
        var bytes = File.ReadAllBytes(Corpus("valid.tokens.u16"));
        var t = new ushort[bytes.Length / 2];
        Buffer.BlockCopy(bytes, 0, t, 0, t.Length * 2);
        return t;
    }

    public static string TempDir(string name)
    {
        var d = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"qtip-{name}-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(d);
        return d;
    }
}
