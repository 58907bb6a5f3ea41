using System.Text.Json;

namespace Qtip.Testing;

/// <summary>Locates files under the repository's tests/data (copied next to the test assembly, or found by walking up).</summary>
public static class TestData
{
    private static readonly Lazy<JsonDocument> GoldenDoc = new(() => JsonDocument.Parse(File.ReadAllBytes(Path("golden/qtip-golden.json"))));

    /// <summary>The reference implementation's golden vectors (tests/data/golden/qtip-golden.json).</summary>
    public static JsonElement Golden => GoldenDoc.Value.RootElement;

    /// <summary>Absolute path of tests/data/<paramref name="relative"/>.</summary>
    public static string Path(string relative)
    {
        var local = System.IO.Path.Combine(AppContext.BaseDirectory, "data", relative);
        if (File.Exists(local) || Directory.Exists(local))
            return local;
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null)
        {
            var candidate = System.IO.Path.Combine(dir.FullName, "tests", "data", relative);
            if (File.Exists(candidate) || Directory.Exists(candidate))
                return candidate;
            dir = dir.Parent;
        }
        throw new FileNotFoundException($"test data file tests/data/{relative} not found from {AppContext.BaseDirectory}");
    }

    /// <summary>Repository root (the folder holding Qtip.sln), found by walking up from the test assembly.</summary>
    public static string RepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(System.IO.Path.Combine(dir.FullName, "Qtip.sln")))
            dir = dir.Parent;
        return dir?.FullName ?? throw new DirectoryNotFoundException("Qtip.sln not found above " + AppContext.BaseDirectory);
    }

    public static float[] Floats(JsonElement array) => array.EnumerateArray().Select(e => (float)e.GetDouble()).ToArray();

    public static double[] Doubles(JsonElement array) => array.EnumerateArray().Select(e => e.GetDouble()).ToArray();

    public static int[] Ints(JsonElement array) => array.EnumerateArray().Select(e => e.GetInt32()).ToArray();
}
