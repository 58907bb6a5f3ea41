using Qtip.Tool.Cli;
using Xunit;

namespace Qtip.Tool.Tests;

/// <summary>A model given as a Hugging Face name: read from the local cache layout when there, else one clear line.</summary>
public sealed class ModelLocationTests : IDisposable
{
    private readonly string work = Path.Combine(Path.GetTempPath(), $"qtip-hf-{Environment.ProcessId}-{Guid.NewGuid():N}");

    public ModelLocationTests() => Directory.CreateDirectory(work);

    public void Dispose()
    {
        if (Directory.Exists(work))
            Directory.Delete(work, recursive: true);
    }

    /// <summary>A fake hub cache holding llama-nano as models--acme--nano, revision from refs/main (an older snapshot beside it).</summary>
    private string FakeCache()
    {
        var repo = Path.Combine(work, "hub", "models--acme--nano");
        const string rev = "0123456789abcdef0123456789abcdef01234567";
        var snap = Path.Combine(repo, "snapshots", rev);
        Directory.CreateDirectory(snap);
        Directory.CreateDirectory(Path.Combine(repo, "snapshots", "ffffffffffffffffffffffffffffffffffffffff"));
        foreach (var f in Directory.GetFiles(QuantizedNanoFixture.Nano))
            File.Copy(f, Path.Combine(snap, Path.GetFileName(f)));
        Directory.CreateDirectory(Path.Combine(repo, "refs"));
        File.WriteAllText(Path.Combine(repo, "refs", "main"), rev);
        return snap;
    }

    [Fact]
    public void HubName_InTheCache_IsReadFromItsSnapshot_HonoringHfHubCacheAndHfHome()
    {
        var snap = FakeCache();
        var viaHubCache = QtipProcess.RunIn(work, new Dictionary<string, string?> { ["HF_HUB_CACHE"] = Path.Combine(work, "hub"), ["HF_HOME"] = null },
            "inspect", "--model", "acme/nano");
        Assert.True(viaHubCache.ExitCode == 0, viaHubCache.Stderr + viaHubCache.Stdout);
        Assert.Contains("not a folder; using the Hugging Face cache snapshot " + snap, viaHubCache.Stdout, StringComparison.Ordinal);
        Assert.Contains("model " + snap, viaHubCache.Stdout, StringComparison.Ordinal);
        // HF_HOME/hub when HF_HUB_CACHE is unset.
        var viaHome = QtipProcess.RunIn(work, new Dictionary<string, string?> { ["HF_HUB_CACHE"] = null, ["HF_HOME"] = work },
            "inspect", "--model", "acme/nano");
        Assert.True(viaHome.ExitCode == 0, viaHome.Stderr + viaHome.Stdout);
    }

    [Fact]
    public void HubName_NotInTheCache_IsOneLineSayingQtipReadsLocalFolders()
    {
        var r = QtipProcess.RunIn(work, new Dictionary<string, string?> { ["HF_HUB_CACHE"] = Path.Combine(work, "empty"), ["HF_HOME"] = null },
            "eval", "--model", "meta-llama/Llama-3.2-1B", "--backend", "cpu");
        Assert.Equal(3, r.ExitCode);
        Assert.Contains("meta-llama/Llama-3.2-1B: not a folder; Qtip reads local folders (e.g. from `huggingface-cli download", r.Stderr, StringComparison.Ordinal);
        Assert.Single(r.Stderr.Trim().Split('\n'));
    }

    [Theory]
    [InlineData("meta-llama/Llama-3.2-1B", true)]
    [InlineData("models/llama-nano", true)] // looks like one; a folder that exists is taken first
    [InlineData("./models/x", false)]
    [InlineData("/abs/path", false)]
    [InlineData("a/b/c", false)]
    [InlineData("nano", false)]
    public void LooksLikeHubName(string text, bool expected) => Assert.Equal(expected, Locations.LooksLikeHubName(text));
}
