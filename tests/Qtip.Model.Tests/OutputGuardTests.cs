using System.Diagnostics;
using System.Text;
using Qtip.Kernels;
using Qtip.Model.Checkpoint;
using Qtip.Model.Families;
using Qtip.Model.Quantized;
using Xunit;

namespace Qtip.Model.Tests;

/// <summary>
/// <see cref="OutputGuard"/>: the output location checks of <c>qtip quantize</c> (issue 11: a run with --out equal to
/// or above --model deleted the model; two runs into one --out both "succeeded"), the lock, --force's limits, the
/// free-space estimate, and that a refused run leaves nothing behind.
/// </summary>
public sealed class OutputGuardTests : IDisposable
{
    private readonly string dir = Fixtures.TempDir("guard");

    public void Dispose() => Directory.Delete(dir, recursive: true);

    private QuantizeOptions Options(string outDir, bool force = false) => new()
    {
        ModelDir = Fixtures.Nano,
        OutDir = outDir,
        CalibrationFile = Fixtures.Corpus("calib.txt"),
        Force = force,
        L = 8,
        Code = Qtip.Quant.Trellis.TrellisCodes.OneMad,
    };

    private static OutputGuard Acquire(QuantizeOptions o, Func<string, long>? free = null)
    {
        using var ckpt = LlamaCheckpoint.Open(o.ModelDir);
        return OutputGuard.Acquire(o, ckpt, free);
    }

    private List<string> Listing() =>
        Directory.EnumerateFileSystemEntries(dir, "*", SearchOption.AllDirectories).Select(p => Path.GetRelativePath(dir, p)).Order(StringComparer.Ordinal).ToList();

    [Fact]
    public void TheLock_IsHeldForTheRun_AndASecondRunFailsAtOnceNamingTheFirst()
    {
        var outDir = Path.Combine(dir, "q");
        using (var first = Acquire(Options(outDir)))
        {
            Assert.True(File.Exists(outDir + ".lock"));
            var sw = Stopwatch.StartNew();
            var e = Assert.Throws<InvalidInputException>(() => Acquire(Options(outDir)).Dispose());
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5), "the second run must fail at once, not wait");
            Assert.Contains($"pid {Environment.ProcessId}", e.Message, StringComparison.Ordinal);
            Assert.Contains("is being written by", e.Message, StringComparison.Ordinal);
            Assert.True(File.Exists(outDir + ".lock"), "the refused run must not remove the holder's lock");
        }
        Assert.False(File.Exists(outDir + ".lock"));
        using (Acquire(Options(outDir)))
        {
            // Free again once the first run ended.
        }
        Assert.Empty(Listing());
    }

    [Fact]
    public void MissingParents_AreCreated_AndRemovedWhenTheRunWroteNothing()
    {
        var outDir = Path.Combine(dir, "a", "b", "q");
        using (Acquire(Options(outDir)))
            Assert.True(Directory.Exists(Path.Combine(dir, "a", "b")));
        Assert.Empty(Listing());
    }

    [Fact]
    public void NotEnoughFreeSpace_IsRefusedBeforeWork_NamingBothSizes()
    {
        var outDir = Path.Combine(dir, "q");
        using var ckpt = LlamaCheckpoint.Open(Fixtures.Nano);
        long need = OutputGuard.EstimateBytes(Options(outDir), ckpt);
        // nano: the embedding and head (2 × 8192 × 128 bf16) are copied; the 2-bit linears are small.
        Assert.InRange(need, 4L << 20, 8L << 20);
        var e = Assert.Throws<InvalidInputException>(() => OutputGuard.Acquire(Options(outDir), ckpt, _ => need - 1).Dispose());
        Assert.Contains("not enough free space", e.Message, StringComparison.Ordinal);
        Assert.Empty(Listing());
        using (OutputGuard.Acquire(Options(outDir), ckpt, _ => need))
        {
        }
    }

    [Fact]
    public void TheEstimate_CountsDenseOutputsAt32Bits()
    {
        using var ckpt = LlamaCheckpoint.Open(Fixtures.Nano);
        var o = Options(Path.Combine(dir, "q"));
        long trellis = OutputGuard.EstimateBytes(o, ckpt);
        long rtn = OutputGuard.EstimateBytes(o with { Method = QuantizeMethod.Rtn }, ckpt);
        // 2 layers × (2·128² + 2·64·128 + 3·384·128) weights, fp32 twice, against 2 bits twice.
        long weights = 2L * ((2 * 128 * 128) + (2 * 64 * 128) + (3 * 384 * 128));
        Assert.True(rtn - trellis > 2 * weights * (4 - 0.25) - (2 * 14 * 4096) - (2 * weights), $"{rtn} vs {trellis}");
    }

    [Fact]
    public void Force_ReplacesOnlyQtipOutput_OrAnEmptyFolder()
    {
        var foreign = Path.Combine(dir, "foreign");
        Directory.CreateDirectory(foreign);
        File.WriteAllText(Path.Combine(foreign, "thesis.tex"), "years of work");
        var e = Assert.Throws<InvalidInputException>(() => Acquire(Options(foreign, force: true)).Dispose());
        Assert.Contains("was not written by qtip", e.Message, StringComparison.Ordinal);
        Assert.False(File.Exists(foreign + ".lock"));

        var empty = Path.Combine(dir, "empty");
        Directory.CreateDirectory(empty);
        Acquire(Options(empty, force: true)).Dispose();

        var ours = Path.Combine(dir, "ours");
        Directory.CreateDirectory(ours);
        File.WriteAllText(Path.Combine(ours, "config.json"), "{\"quantization_config\": {\"quant_method\": \"qtip\", \"tool\": \"qtip 0.1.0\"}}");
        Acquire(Options(ours, force: true)).Dispose();
        var reported = Path.Combine(dir, "reported");
        Directory.CreateDirectory(reported);
        File.WriteAllText(Path.Combine(reported, "qtip-report.json"), "{}");
        Acquire(Options(reported, force: true)).Dispose();

        var noForce = Assert.Throws<InvalidInputException>(() => Acquire(Options(ours)).Dispose());
        Assert.Contains("pass --force", noForce.Message, StringComparison.Ordinal);
        Assert.True(File.Exists(Path.Combine(foreign, "thesis.tex")));
    }

    [Fact]
    public void OutputNearTheModel_IsRefused_WithOrWithoutForce()
    {
        var model = Path.Combine(dir, "model");
        Directory.CreateDirectory(model);
        foreach (var f in Directory.GetFiles(Fixtures.Nano))
            File.CreateSymbolicLink(Path.Combine(model, Path.GetFileName(f)), f);
        var link = Path.Combine(dir, "model-link");
        Directory.CreateSymbolicLink(link, model);
        foreach (var force in new[] { false, true })
        {
            foreach (var (outDir, says) in new[] { (model, "itself"), (link, "itself"), (dir, "contains"), (Path.Combine(model, "q"), "lies inside"), (Path.Combine(link, "q"), "lies inside") })
            {
                var o = Options(outDir, force) with { ModelDir = model };
                var e = Assert.Throws<InvalidInputException>(() => Acquire(o).Dispose());
                Assert.Contains(says, e.Message, StringComparison.Ordinal);
            }
        }
        Assert.Equal(Directory.GetFiles(Fixtures.Nano).Length, Directory.GetFiles(model).Length);
        Assert.DoesNotContain(Directory.EnumerateFileSystemEntries(dir), p => p.EndsWith(".lock", StringComparison.Ordinal));
    }

    [Fact]
    public void Canonical_ResolvesSymlinksInAnyComponent()
    {
        var real = Path.Combine(dir, "real");
        Directory.CreateDirectory(Path.Combine(real, "inner"));
        var link = Path.Combine(dir, "link");
        Directory.CreateSymbolicLink(link, real);
        Assert.Equal(Path.Combine(real, "inner", "x"), OutputGuard.Canonical(Path.Combine(link, "inner", "x")));
        Assert.Equal(Path.Combine(real, "inner"), OutputGuard.Canonical(Path.Combine(link, "inner", "..", "inner")));
    }
}

/// <summary><see cref="LayerReports"/>: what --resume reads from a finished layer file.</summary>
public sealed class LayerReportsTests : IDisposable
{
    private readonly string dir = Fixtures.TempDir("layerreports");

    public void Dispose() => Directory.Delete(dir, recursive: true);

    private SafeTensorsFile Layer(string? metadata)
    {
        var w = new SafeTensorsWriter();
        if (metadata is not null)
            w.Metadata[LayerReports.MetadataKey] = metadata;
        w.AddFloat32("x", [1f], [1]);
        var path = Path.Combine(dir, $"layer-{Guid.NewGuid():N}.safetensors");
        w.Write(path);
        return SafeTensorsFile.Open(path);
    }

    private static string Reports(int layer, int count) =>
        "[" + string.Join(",", Enumerable.Range(0, count).Select(i =>
            $"{{\"layer\":{layer},\"name\":\"m{i}\",\"m\":16,\"n\":16,\"proxy_error\":\"NaN\",\"wscale\":1,\"sigma\":0.01,\"seconds\":0.1}}")) + "]";

    [Fact]
    public void SevenReports_AreRead()
    {
        using var f = Layer(Reports(3, 7));
        var r = LayerReports.Read(f, 3, LlamaFamily.Spec.Linears.Count);
        Assert.Equal(7, r.Count);
        Assert.True(double.IsNaN(r[0].ProxyError));
    }

    [Theory]
    [InlineData(null, "has no qtip_layer_reports")]
    [InlineData("not json", "not a valid report")]
    [InlineData("{\"layer\": 3}", "not a valid report")]
    [InlineData("null", "does not hold the 7 reports")]
    [InlineData("[]", "does not hold the 7 reports")]
    public void MissingOrGarbledReports_AreBadInput_NamingTheFile(string? metadata, string says)
    {
        using var f = Layer(metadata);
        var e = Assert.Throws<InvalidInputException>(() => LayerReports.Read(f, 3, LlamaFamily.Spec.Linears.Count));
        Assert.Contains(says, e.Message, StringComparison.Ordinal);
        Assert.Contains(f.Path, e.Message, StringComparison.Ordinal);
        Assert.Contains("redo layer 3", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ReportsOfAnotherLayer_AreRefused()
    {
        using var f = Layer(Reports(2, 7));
        Assert.Throws<InvalidInputException>(() => LayerReports.Read(f, 3, LlamaFamily.Spec.Linears.Count));
    }
}

/// <summary><see cref="InputFiles"/>: regular files only (a FIFO hung the reader), symlinks to regular files accepted.</summary>
public sealed class InputFilesTests : IDisposable
{
    private readonly string dir = Fixtures.TempDir("inputfiles");

    public void Dispose() => Directory.Delete(dir, recursive: true);

    [Fact]
    public void Fifo_IsRefusedWithoutOpeningIt()
    {
        Assert.SkipUnless(OperatingSystem.IsLinux() || OperatingSystem.IsMacOS(), "FIFOs need mkfifo");
        var fifo = Path.Combine(dir, "model.safetensors");
        using (var p = Process.Start(new ProcessStartInfo("mkfifo", [fifo]) { UseShellExecute = false })!)
            p.WaitForExit();
        var e = Assert.Throws<ModelFormatException>(() => SafeTensorsFile.Open(fifo));
        Assert.Contains("FIFO", e.Message, StringComparison.Ordinal);
        Assert.False(InputFiles.IsRegular(fifo));
    }

    [Fact]
    public void SymlinkToRegularFile_IsAccepted_DirectoryIsNot()
    {
        var link = Path.Combine(dir, "config.json");
        File.CreateSymbolicLink(link, Path.Combine(Fixtures.Nano, "config.json"));
        InputFiles.RequireRegular(link);
        Assert.True(InputFiles.IsRegular(link));
        var e = Assert.Throws<ModelFormatException>(() => InputFiles.RequireRegular(dir, "--calib"));
        Assert.Contains("--calib is a directory", e.Message, StringComparison.Ordinal);
        InputFiles.RequireRegular(Path.Combine(dir, "absent")); // missing: left to the caller's "not found"
    }

    [Fact]
    public void InvalidUtf8_IsNamedWithItsOffset()
    {
        var e = Assert.Throws<ModelFormatException>(() => InputFiles.ParseJson(Encoding.ASCII.GetBytes("{\"a\": \"x\"}").Select((b, i) => i == 7 ? (byte)0xFF : b).ToArray(), "f.json").Dispose());
        Assert.Contains("not valid UTF-8 (bad byte sequence at offset 7)", e.Message, StringComparison.Ordinal);
    }
}
