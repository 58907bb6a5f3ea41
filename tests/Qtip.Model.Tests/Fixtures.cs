using System.Text.Json;

namespace Qtip.Model.Tests;

/// <summary>The repository's bundled model and data, and the optional llama-small (env QTIP_LLAMA_SMALL).</summary>
internal static class Fixtures
{
    public const string SmallVariable = "QTIP_LLAMA_SMALL";

    public const string RootVariable = "QTIP_ROOT";

    private static readonly Lazy<JsonDocument> ReferenceDoc = new(() => JsonDocument.Parse(File.ReadAllBytes(System.IO.Path.Combine(Root, "data", "reference.json"))));

    private static readonly Lazy<string> RootDir = new(FindRoot);

    /// <summary>The repository root: above the test assembly, else above the current directory (a published test
    /// executable run from a checkout, as on the GPU machine; the runner may change the current directory, so the
    /// shell's $PWD is tried too), else $QTIP_ROOT.</summary>
    public static string Root => RootDir.Value;

    public static string Nano => System.IO.Path.Combine(Root, "models", "llama-nano");

    public static string Corpus(string file) => System.IO.Path.Combine(Root, "data", "corpus", file);

    private static string FindRoot()
    {
        foreach (var start in new[] { AppContext.BaseDirectory, Directory.GetCurrentDirectory(), Environment.GetEnvironmentVariable("PWD"), Environment.GetEnvironmentVariable(RootVariable) })
        {
            for (var dir = start is null ? null : new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                if (File.Exists(System.IO.Path.Combine(dir.FullName, "Qtip.sln")) && Directory.Exists(System.IO.Path.Combine(dir.FullName, "models", "llama-nano")))
                    return dir.FullName;
            }
        }
        throw new DirectoryNotFoundException($"repository root (Qtip.sln + models/llama-nano) not found above {AppContext.BaseDirectory} or the current directory; set {RootVariable}");
    }

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
