using System.Runtime.InteropServices;
using System.Text.Json;

namespace Qtip.Model.Checkpoint;

/// <summary>
/// Checks made before an input file is opened or parsed. <see cref="RequireRegular"/> refuses FIFOs, devices,
/// sockets and directories (opening a FIFO for reading blocks until a writer appears: a hang); a symlink to a regular
/// file is fine (the Hugging Face cache is made of them). <see cref="ParseJson"/> reads a JSON file whose strings are
/// all valid UTF-8, so no later <c>GetString</c> or property name can throw.
/// </summary>
public static class InputFiles
{
    // POSIX file type bits as .NET's System.Native reports them (pal_io.h: PAL_S_IFMT, PAL_S_IFREG, ...).
    private const int TypeMask = 0xF000;
    private const int Regular = 0x8000;
    private const int Directory = 0x4000;
    private const int Fifo = 0x1000;
    private const int CharDevice = 0x2000;
    private const int BlockDevice = 0x6000;
    private const int Socket = 0xC000;

    /// <summary>Throws a <see cref="ModelFormatException"/> naming <paramref name="path"/> unless it is a regular file
    /// (after following symlinks). A missing file is left to the caller's own "not found" message.</summary>
    public static void RequireRegular(string path, string what = "input")
    {
        if (path.Contains('\0', StringComparison.Ordinal))
            throw new ModelFormatException(path.Replace("\0", "\\0", StringComparison.Ordinal), null, $"{what}: the path contains a NUL character");
        if (FileType(path) is not { } type || type == Regular)
            return;
        string kind = type switch
        {
            Directory => "a directory",
            Fifo => "a FIFO (named pipe)",
            CharDevice => "a character device",
            BlockDevice => "a block device",
            Socket => "a socket",
            _ => $"not a regular file (type 0x{type:X4})",
        };
        throw new ModelFormatException(Path.GetFullPath(path), null, $"{what} is {kind}; only regular files (or symlinks to them) are used");
    }

    /// <summary>True when <paramref name="path"/> exists and is a regular file (or a symlink to one).</summary>
    public static bool IsRegular(string path) => FileType(path) == Regular;

    /// <summary>The file type bits of <paramref name="path"/> (symlinks followed), or null when it does not exist or the
    /// platform cannot tell (Windows: no FIFOs to fear there).</summary>
    private static int? FileType(string path)
    {
        if (OperatingSystem.IsWindows())
            return System.IO.Directory.Exists(path) ? Directory : File.Exists(path) ? Regular : null;
        try
        {
            var status = default(NativeFileStatus);
            if (SystemNativeStat(path, ref status) != 0)
                return null;
            return status.Mode & TypeMask;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return System.IO.Directory.Exists(path) ? Directory : File.Exists(path) ? Regular : null;
        }
    }

    /// <summary>Reads <paramref name="path"/> (a regular file) and parses it as JSON, refusing invalid UTF-8 anywhere in
    /// it. Every failure is a <see cref="ModelFormatException"/> naming the file; the caller disposes the document.</summary>
    public static JsonDocument ParseJson(string path)
    {
        path = Path.GetFullPath(path);
        RequireRegular(path);
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new ModelFormatException(path, null, "file not found");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ModelFormatException(path, null, $"cannot read: {e.Message}", e);
        }
        return ParseJson(bytes, path);
    }

    /// <summary>Parses JSON bytes, refusing invalid UTF-8 (with its byte offset) and malformed JSON.</summary>
    public static JsonDocument ParseJson(ReadOnlyMemory<byte> bytes, string path, int maxDepth = 64)
    {
        RequireUtf8(bytes.Span, path);
        try
        {
            return JsonDocument.Parse(bytes, new JsonDocumentOptions { MaxDepth = maxDepth });
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(path, null, $"not valid JSON: {e.Message}", e);
        }
    }

    /// <summary>Throws unless <paramref name="bytes"/> are valid UTF-8.</summary>
    public static void RequireUtf8(ReadOnlySpan<byte> bytes, string path)
    {
        if (System.Text.Unicode.Utf8.IsValid(bytes))
            return;
        int bad = 0;
        while (bad < bytes.Length && System.Text.Rune.DecodeFromUtf8(bytes[bad..], out _, out int used) == System.Buffers.OperationStatus.Done)
            bad += used;
        throw new ModelFormatException(path, null, $"not valid UTF-8 (bad byte sequence at offset {bad})");
    }

    // SystemNative_Stat (the runtime's own stat shim, shipped with every .NET on Unix): Flags, Mode, then fields we
    // do not read; the buffer is larger than the native struct.
    [StructLayout(LayoutKind.Sequential, Size = 256)]
    private struct NativeFileStatus
    {
        public int Flags;
        public int Mode;
    }

    [DllImport("libSystem.Native", EntryPoint = "SystemNative_Stat", CharSet = CharSet.Ansi, BestFitMapping = false, ThrowOnUnmappableChar = true)]
    private static extern int SystemNativeStat([MarshalAs(UnmanagedType.LPUTF8Str)] string path, ref NativeFileStatus status);
}
