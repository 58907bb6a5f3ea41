using System.Text.Json;
using Qtip.Testing;
using Xunit;

namespace Qtip.Tool.Tests;

public sealed class CliTests
{
    [Fact]
    public void Devices_ListsCpuAndExitsZero()
    {
        var r = QtipProcess.Run("devices");
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("cpu", r.Stdout, StringComparison.Ordinal);
        Assert.Contains("CPU accelerator", r.Stdout, StringComparison.Ordinal);
        Assert.Contains("yes", r.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void Devices_WritesJson()
    {
        var file = Path.Combine(Path.GetTempPath(), $"qtip-devices-{Environment.ProcessId}.json");
        var r = QtipProcess.Run("devices", "--json", file);
        Assert.Equal(0, r.ExitCode);
        using var doc = JsonDocument.Parse(File.ReadAllText(file));
        Assert.Contains(doc.RootElement.EnumerateArray(), b => b.GetProperty("backend").GetString() == "cpu");
        File.Delete(file);
    }

    [Fact]
    public void Version_And_Help()
    {
        var v = QtipProcess.Run("--version");
        Assert.Equal(0, v.ExitCode);
        Assert.Matches(@"^\d+\.\d+\.\d+", v.Stdout.Trim());
        var h = QtipProcess.Run("bench", "hadamard", "--help");
        Assert.Equal(0, h.ExitCode);
        Assert.Contains("--sizes", h.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void UnknownBackend_IsUsageError()
    {
        var r = QtipProcess.Run("bench", "hadamard", "--backend", "vulkan");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("vulkan", r.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void UnavailableBackend_ExitsTwoWithOneLine()
    {
        var r = QtipProcess.Run("bench", "hadamard", "--backend", "cuda", "--sizes", "64", "--rows", "2");
        if (r.ExitCode == 0)
            return; // this machine has a GPU
        Assert.Equal(2, r.ExitCode);
        Assert.Single(r.Stderr.Trim().Split('\n'));
        Assert.Contains("backend 'cuda' is not available", r.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void BenchHadamard_RunsOnCpu()
    {
        var file = Path.Combine(Path.GetTempPath(), $"qtip-bench-{Environment.ProcessId}.json");
        var r = QtipProcess.Run("bench", "hadamard", "--backend", "cpu", "--sizes", "256,384", "--rows", "4", "--iterations", "1", "--json", file);
        Assert.Equal(0, r.ExitCode);
        using var doc = JsonDocument.Parse(File.ReadAllText(file));
        var results = doc.RootElement.GetProperty("results");
        Assert.Equal(2, results.GetArrayLength());
        foreach (var res in results.EnumerateArray())
            Assert.True(res.GetProperty("max_abs_error").GetDouble() < 1e-5);
        File.Delete(file);
    }

    [Fact]
    public void BenchHadamard_RejectsUnsupportedSize()
    {
        var r = QtipProcess.Run("bench", "hadamard", "--backend", "cpu", "--sizes", "1000");
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("1000", r.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void MalformedModel_InTheRealProcess_IsOneLineExit3_WithoutAStackTrace()
    {
        // Issue 11: num_attention_heads 0 without head_dim was a DivideByZeroException with a .NET stack trace.
        var dir = Path.Combine(Path.GetTempPath(), $"qtip-heads0-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            var nano = Path.Combine(TestData.RepoRoot(), "models", "llama-nano");
            var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(nano, "config.json")))!.AsObject();
            config["num_attention_heads"] = 0;
            config.Remove("head_dim");
            File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
            var r = QtipProcess.Run("inspect", "--model", dir);
            Assert.Equal(3, r.ExitCode);
            Assert.Single(r.Stderr.Trim().Split('\n'));
            Assert.Contains("num_attention_heads must be positive", r.Stderr, StringComparison.Ordinal);
            Assert.DoesNotContain("   at ", r.Stderr, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
