using System.Diagnostics;
using System.Text.Json;
using Xunit;

namespace Qtip.Tool.Tests;

/// <summary>
/// The first-run experience of the installed tool: pack qtip (from the Release build), install it into a temporary tool
/// path from that package alone, and run <c>qtip demo</c> from an unrelated folder — the bundled llama-nano and
/// corpus texts come with the package, and the demo's output goes under the working directory.
/// </summary>
public sealed class ToolInstallTests : IDisposable
{
    private readonly string work = Path.Combine(Path.GetTempPath(), $"qtip-tool-{Environment.ProcessId}-{Guid.NewGuid():N}");

    public ToolInstallTests() => Directory.CreateDirectory(work);

    public void Dispose()
    {
        if (Directory.Exists(work))
            Directory.Delete(work, recursive: true);
    }

    private static (int Code, string Output) Run(string file, string cwd, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = cwd };
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        psi.Environment["DOTNET_NOLOGO"] = "1";
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromMinutes(5)))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"{file} {string.Join(' ', args)} did not finish in 5 minutes");
        }
        return (p.ExitCode, stdout.Result + stderr.Result);
    }

    [Fact]
    public void InstalledTool_RunsTheDemoOutsideTheRepository()
    {
        var repo = QuantizedNanoFixture.Repo;
        var packages = Path.Combine(work, "packages");
        var tools = Path.Combine(work, "tools");
        var elsewhere = Path.Combine(work, "elsewhere");
        Directory.CreateDirectory(elsewhere);
        var config = AppContext.BaseDirectory.Contains("/Debug/", StringComparison.Ordinal) ? "Debug" : "Release";
        var pack = Run("dotnet", repo, "pack", Path.Combine(repo, "src", "Qtip.Tool"), "-c", config, "--no-build", "-o", packages);
        Assert.True(pack.Code == 0, pack.Output);
        // Only the local package as a source (no network needed).
        File.WriteAllText(Path.Combine(work, "nuget.config"),
            $"<?xml version=\"1.0\" encoding=\"utf-8\"?><configuration><packageSources><clear /><add key=\"local\" value=\"{packages}\" /></packageSources></configuration>");
        var install = Run("dotnet", work, "tool", "install", "Qtip.Tool", "--tool-path", tools, "--configfile", Path.Combine(work, "nuget.config"));
        Assert.True(install.Code == 0, install.Output);

        var qtip = Path.Combine(tools, OperatingSystem.IsWindows() ? "qtip.exe" : "qtip");
        var help = Run(qtip, elsewhere, "demo", "--help");
        Assert.True(help.Code == 0, help.Output);
        var json = Path.Combine(work, "demo.json");
        var demo = Run(qtip, elsewhere, "demo", "--windows", "1", "--calib-windows", "2", "--L", "8", "--backend", "cpu", "--json", json);
        Assert.True(demo.Code == 0, demo.Output);
        Assert.Contains("cpu backend is ILGPU's CPU simulator", demo.Output, StringComparison.Ordinal);
        using var doc = JsonDocument.Parse(File.ReadAllText(json));
        var r = doc.RootElement;
        Assert.Equal(1, r.GetProperty("windows").GetInt32());
        Assert.True(r.GetProperty("fp_perplexity").GetDouble() is > 1 and < 1000);
        Assert.True(r.GetProperty("quantized_perplexity").GetDouble() > r.GetProperty("fp_perplexity").GetDouble());
        // The quantized model went under the working directory, not into the tool's folder.
        Assert.True(File.Exists(Path.Combine(elsewhere, "out", "llama-nano-1mad-2bit", "config.json")), demo.Output);

        // eval and inspect with their defaults work there too.
        var eval = Run(qtip, elsewhere, "eval", "--backend", "cpu", "--ctx", "64", "--max-windows", "1");
        Assert.True(eval.Code == 0, eval.Output);
        Assert.Contains("ppl", eval.Output, StringComparison.Ordinal);
    }
}
