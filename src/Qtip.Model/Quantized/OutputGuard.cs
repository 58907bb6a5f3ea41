using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Qtip.Kernels;
using Qtip.Model.Checkpoint;

namespace Qtip.Model.Quantized;

/// <summary>
/// The checks <c>qtip quantize</c> makes on its output before any work, and the lock it holds for the whole run:
/// <list type="bullet">
/// <item>--out may not be, lie inside, or contain --model or --calib (with or without --force: replacing the output
/// would delete the input); paths are compared after resolving symlinks;</item>
/// <item>--out naming an existing file (not a directory) is refused;</item>
/// <item>an existing --out is replaced only with --force, and only when qtip wrote it (it has <c>qtip-report.json</c>
/// or a config.json whose <c>quantization_config</c> qtip wrote) or it is empty;</item>
/// <item><c>&lt;out&gt;.lock</c> (a shard's: <c>&lt;out&gt;.layers-A_B.lock</c>) is created and locked exclusively (it also proves the folder is writable); a second run
/// on the same --out fails at once, naming the process that holds it;</item>
/// <item>the file system must have room for the estimated output (<see cref="EstimateBytes"/>).</item>
/// </list>
/// Dispose releases the lock and deletes the lock file (and parent folders it created, if the run wrote nothing).
/// Every refusal is an <see cref="InvalidInputException"/> (exit code 3).
/// </summary>
public sealed class OutputGuard : IDisposable
{
    private readonly FileStream lockStream;
    private readonly string lockPath;
    private readonly string outDir;
    private readonly List<string> createdParents;

    private OutputGuard(FileStream lockStream, string lockPath, string outDir, List<string> createdParents)
    {
        this.lockStream = lockStream;
        this.lockPath = lockPath;
        this.outDir = outDir;
        this.createdParents = createdParents;
    }

    /// <summary>Bytes the file system must have free (the estimate) when the guard was taken.</summary>
    public long RequiredBytes { get; private init; }

    /// <summary>Runs every check and takes the lock. <paramref name="freeSpace"/> (bytes free on the file system of a
    /// path) is for tests; the default asks the file system.</summary>
    public static OutputGuard Acquire(QuantizeOptions options, LlamaCheckpoint checkpoint, Func<string, long>? freeSpace = null)
    {
        string outDir = Path.GetFullPath(options.OutDir);
        string model = Canonical(options.ModelDir);
        string outCanon = Canonical(outDir);
        CheckApart(outDir, outCanon, model, "--model", isFile: false);
        if (UsesCalibration(options) && File.Exists(options.CalibrationFile))
            CheckApart(outDir, outCanon, Canonical(options.CalibrationFile), "--calib", isFile: true);
        if (File.Exists(outDir) || (Path.Exists(outDir) && !Directory.Exists(outDir)))
            throw new InvalidInputException($"--out {outDir} is an existing file, not a directory; choose another path");

        var created = CreateParents(Path.GetDirectoryName(outDir)!);
        // A shard (--layers A-B) locks its own range: shards of one output run side by side on a shared file system.
        string lockPath = options.Layers is null ? outDir + ".lock" : $"{outDir}.layers-{new string(options.Layers.Select(c => char.IsAsciiDigit(c) ? c : '_').ToArray())}.lock";
        FileStream? stream = null;
        try
        {
            stream = TakeLock(lockPath, outDir);
            if (Directory.Exists(outDir))
                CheckReplaceable(outDir, options.Force);
            long need = EstimateBytes(options, checkpoint);
            long free = (freeSpace ?? FreeBytes)(Path.GetDirectoryName(outDir)!);
            if (free >= 0 && free < need)
                throw new InvalidInputException($"not enough free space for --out {outDir}: the run needs about {Gib(need)} (output and per-layer state), the file system has {Gib(free)} free");
            return new OutputGuard(stream, lockPath, outDir, created) { RequiredBytes = need };
        }
        catch
        {
            if (stream is not null)
            {
                stream.Dispose();
                TryDelete(lockPath);
            }
            RemoveEmpty(created, outDir);
            throw;
        }
    }

    /// <summary>
    /// Bytes the run writes at its peak: the tensors copied as they are (embedding, norms, lm_head), the quantized
    /// linears (trellis K bits per weight + SU + SV + LUT, or fp32 for the dense RTN / no-RHT outputs) twice (the
    /// per-layer files and the final file exist together while the final file is written), the small files, and 1 MiB.
    /// </summary>
    public static long EstimateBytes(QuantizeOptions options, LlamaCheckpoint checkpoint)
    {
        var c = checkpoint.Config;
        var linearNames = new HashSet<string>(StringComparer.Ordinal);
        long linears = 0;
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            foreach (var spec in c.Family.Linears)
            {
                linearNames.Add(spec.WeightName(l));
                var (m, n) = spec.Shape(c);
                linears += options.WritesTrellis
                    ? ((long)m * n * options.Bits / 8) + (4L * n) + (4L * m) + 4096
                    : 4L * m * n;
            }
        }
        long copied = checkpoint.Tensors.Tensors.Where(t => !linearNames.Contains(t.Name)).Sum(t => t.ByteCount);
        long small = 0;
        foreach (var f in new[] { "config.json", "generation_config.json", "tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json" })
        {
            var p = Path.Combine(checkpoint.Folder, f);
            if (File.Exists(p))
                small += new FileInfo(p).Length;
        }
        return copied + (2 * linears) + small + (1L << 20);
    }

    private static bool UsesCalibration(QuantizeOptions o) => o.Method == QuantizeMethod.Qtip && o.Hessian != HessianSource.Identity;

    private static void CheckApart(string outDir, string outCanon, string input, string option, bool isFile)
    {
        if (Same(outCanon, input))
            throw new InvalidInputException($"--out {outDir} is the {option} {(isFile ? "file" : "folder")} itself; writing there would destroy it");
        if (Inside(input, outCanon))
            throw new InvalidInputException($"--out {outDir} contains the {option} {(isFile ? "file" : "folder")} {input}; replacing it would destroy the input");
        if (!isFile && Inside(outCanon, input))
            throw new InvalidInputException($"--out {outDir} lies inside the {option} folder {input}; write the output elsewhere");
    }

    private static void CheckReplaceable(string outDir, bool force)
    {
        if (!force)
            throw new InvalidInputException($"output directory {outDir} exists; pass --force to replace it");
        if (!Directory.EnumerateFileSystemEntries(outDir).Any() || WrittenByQtip(outDir))
            return;
        throw new InvalidInputException($"--out {outDir} exists and was not written by qtip (no qtip-report.json, no quantization_config of ours); --force replaces only qtip's own output directories");
    }

    /// <summary>True when <paramref name="dir"/> has qtip's report or a config.json whose quantization_config qtip wrote.</summary>
    public static bool WrittenByQtip(string dir)
    {
        if (InputFiles.IsRegular(Path.Combine(dir, "qtip-report.json")))
            return true;
        var config = Path.Combine(dir, "config.json");
        if (!InputFiles.IsRegular(config))
            return false;
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(config));
            return doc.RootElement.ValueKind == JsonValueKind.Object
                && doc.RootElement.TryGetProperty("quantization_config", out var qc) && qc.ValueKind == JsonValueKind.Object
                && qc.TryGetProperty("tool", out var tool) && tool.ValueKind == JsonValueKind.String
                && (tool.GetString() ?? "").StartsWith("qtip", StringComparison.Ordinal);
        }
        catch (Exception e) when (e is JsonException or IOException or UnauthorizedAccessException or InvalidOperationException)
        {
            return false;
        }
    }

    private static FileStream TakeLock(string lockPath, string outDir)
    {
        if (Path.Exists(lockPath) && !InputFiles.IsRegular(lockPath))
            throw new InvalidInputException($"{lockPath} exists and is not a regular file; qtip keeps its lock for --out {outDir} there");
        FileStream stream;
        try
        {
            // FileShare.None is an exclusive advisory lock (flock) on Unix; it lasts while the stream is open.
            stream = new FileStream(lockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        }
        catch (IOException e) when (e is not FileNotFoundException and not DirectoryNotFoundException && File.Exists(lockPath))
        {
            string who = ReadOwner(lockPath) ?? "another process";
            throw new InvalidInputException($"--out {outDir} is being written by {who} (it holds {lockPath}); wait for it to finish, or choose another --out", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InvalidInputException($"cannot write next to the output {outDir} ({lockPath}): {e.Message}", e);
        }
        try
        {
            stream.SetLength(0);
            var pid = Encoding.ASCII.GetBytes($"pid {Environment.ProcessId} (qtip quantize)\n");
            stream.Write(pid);
            stream.Flush();
            return stream;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            stream.Dispose();
            TryDelete(lockPath);
            throw new InvalidInputException($"cannot write next to the output {outDir} ({lockPath}): {e.Message}", e);
        }
    }

    /// <summary>The holder's "pid N" line. .NET opens every file with an advisory lock, so the locked file is read
    /// through the runtime's own open/read shims, which take none; null when that is not possible.</summary>
    private static unsafe string? ReadOwner(string lockPath)
    {
        if (OperatingSystem.IsWindows())
            return null;
        try
        {
            nint fd = SystemNativeOpen(lockPath, 0, 0);
            if (fd < 0)
                return null;
            try
            {
                var buffer = new byte[64];
                int n;
                fixed (byte* p = buffer)
                    n = SystemNativeRead(fd, p, buffer.Length);
                if (n <= 0)
                    return null;
                var text = Encoding.ASCII.GetString(buffer, 0, n);
                var first = text.Split('\n')[0].Trim();
                return first.StartsWith("pid ", StringComparison.Ordinal) ? first : null;
            }
            finally
            {
                _ = SystemNativeClose(fd);
            }
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return null;
        }
    }

    [DllImport("libSystem.Native", EntryPoint = "SystemNative_Open", BestFitMapping = false, ThrowOnUnmappableChar = true)]
    private static extern nint SystemNativeOpen([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags, int mode);

    [DllImport("libSystem.Native", EntryPoint = "SystemNative_Read")]
    private static extern unsafe int SystemNativeRead(nint fd, byte* buffer, int count);

    [DllImport("libSystem.Native", EntryPoint = "SystemNative_Close")]
    private static extern int SystemNativeClose(nint fd);

    private static List<string> CreateParents(string dir)
    {
        var missing = new List<string>();
        for (var d = dir; !string.IsNullOrEmpty(d) && !Directory.Exists(d); d = Path.GetDirectoryName(d))
        {
            if (Path.Exists(d))
                throw new InvalidInputException($"cannot create the output's folder {dir}: {d} is a file");
            missing.Add(d);
        }
        missing.Reverse();
        var created = new List<string>();
        try
        {
            foreach (var d in missing)
            {
                Directory.CreateDirectory(d);
                created.Add(d);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            RemoveEmpty(created, null);
            throw new InvalidInputException($"cannot write the output's folder {dir}: {e.Message}", e);
        }
        return created;
    }

    /// <summary>Deletes the folders this guard created (deepest first) when they are still empty.</summary>
    private static void RemoveEmpty(List<string> created, string? outDir)
    {
        if (outDir is not null && Directory.Exists(outDir))
            return;
        for (int i = created.Count - 1; i >= 0; i--)
        {
            try
            {
                if (Directory.Exists(created[i]) && !Directory.EnumerateFileSystemEntries(created[i]).Any())
                    Directory.Delete(created[i]);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                return;
            }
        }
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Best effort: a lock file left behind is harmless (it is unlocked once the process ends).
        }
    }

    private static long FreeBytes(string dir)
    {
        try
        {
            return new DriveInfo(dir).AvailableFreeSpace;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException)
        {
            return -1; // unknown: do not refuse
        }
    }

    private static string Gib(long bytes) => bytes >= 1L << 30 ? $"{bytes / (double)(1L << 30):F2} GiB" : $"{bytes / (double)(1L << 20):F1} MiB";

    private static StringComparison PathComparison =>
        OperatingSystem.IsLinux() ? StringComparison.Ordinal : StringComparison.OrdinalIgnoreCase;

    private static bool Same(string a, string b) => string.Equals(a.TrimEnd(Path.DirectorySeparatorChar), b.TrimEnd(Path.DirectorySeparatorChar), PathComparison);

    /// <summary>True when <paramref name="inner"/> lies strictly inside <paramref name="outer"/>.</summary>
    private static bool Inside(string inner, string outer)
    {
        var o = outer.TrimEnd(Path.DirectorySeparatorChar) + Path.DirectorySeparatorChar;
        return inner.StartsWith(o, PathComparison) && inner.Length > o.Length;
    }

    /// <summary>The absolute path with every symlink among its existing components resolved (a managed realpath).</summary>
    public static string Canonical(string path)
    {
        var full = Path.GetFullPath(path);
        var root = Path.GetPathRoot(full) ?? "/";
        var parts = new Queue<string>(full[root.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries));
        string current = root;
        int hops = 0;
        while (parts.Count > 0)
        {
            var next = Path.Combine(current, parts.Dequeue());
            FileSystemInfo? target = null;
            if (hops < 40 && IsLink(next))
            {
                try
                {
                    target = File.ResolveLinkTarget(next, returnFinalTarget: true);
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    target = null;
                }
            }
            if (target is not null)
            {
                hops++;
                var resolved = Path.GetFullPath(target.FullName);
                var rest = parts.ToArray();
                var rroot = Path.GetPathRoot(resolved) ?? root;
                parts = new Queue<string>(resolved[rroot.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries).Concat(rest));
                current = rroot;
                continue;
            }
            current = next;
        }
        return current;
    }

    private static bool IsLink(string path)
    {
        try
        {
            return new FileInfo(path).LinkTarget is not null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    public void Dispose()
    {
        lockStream.Dispose();
        TryDelete(lockPath);
        RemoveEmpty(createdParents, outDir);
    }
}
