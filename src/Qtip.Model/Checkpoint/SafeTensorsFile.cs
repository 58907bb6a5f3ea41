using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;

namespace Qtip.Model.Checkpoint;

/// <summary>
/// A safetensors file, memory-mapped read-only: an 8-byte little-endian header length N, N bytes of JSON
/// (tensor name → {dtype, shape, data_offsets}, plus an optional "__metadata__" string map), then the data.
/// Every header entry is checked before any tensor is touched: known dtype, non-negative shape, byte count =
/// elements × dtype size, offsets inside the data section and not overlapping. A header length larger than the
/// file is rejected before anything is allocated, so a malicious header cannot make the reader allocate more
/// than the file's size. Every failure is a <see cref="ModelFormatException"/> naming the file (and tensor).
/// </summary>
public sealed unsafe class SafeTensorsFile : IDisposable
{
    /// <summary>Largest header accepted (the format's own limit is 100 MB).</summary>
    public const long MaxHeaderBytes = 100L << 20;

    private readonly MemoryMappedFile map;
    private readonly MemoryMappedViewAccessor view;
    private readonly byte* basePointer;
    private readonly Dictionary<string, TensorInfo> tensors;
    private bool disposed;

    private SafeTensorsFile(string path, long fileLength, long dataStart, Dictionary<string, TensorInfo> tensors,
        IReadOnlyDictionary<string, string> metadata, MemoryMappedFile map, MemoryMappedViewAccessor view)
    {
        Path = path;
        FileLength = fileLength;
        DataStart = dataStart;
        this.tensors = tensors;
        Metadata = metadata;
        this.map = map;
        this.view = view;
        byte* p = null;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
        basePointer = p + view.PointerOffset;
    }

    public string Path { get; }

    public long FileLength { get; }

    /// <summary>Offset of the data section (8 + header length).</summary>
    public long DataStart { get; }

    /// <summary>The "__metadata__" entries (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Tensors in header order.</summary>
    public IReadOnlyCollection<TensorInfo> Tensors => tensors.Values;

    public bool Contains(string name) => tensors.ContainsKey(name);

    public TensorInfo this[string name] => tensors.TryGetValue(name, out var t)
        ? t
        : throw new ModelFormatException(Path, name, "no such tensor in this file");

    /// <summary>Opens and validates <paramref name="path"/>.</summary>
    public static SafeTensorsFile Open(string path)
    {
        path = System.IO.Path.GetFullPath(path);
        InputFiles.RequireRegular(path, "safetensors file");
        long length;
        byte[] header;
        try
        {
            using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
            length = fs.Length;
            if (length < 8)
                throw new ModelFormatException(path, null, $"truncated: the file has {length} bytes, fewer than the 8-byte header length");
            Span<byte> lenBytes = stackalloc byte[8];
            fs.ReadExactly(lenBytes);
            ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(lenBytes);
            if (headerLength > (ulong)(length - 8))
                throw new ModelFormatException(path, null, $"header length {headerLength} is larger than the {length - 8} bytes that follow it (truncated or not a safetensors file)");
            if ((long)headerLength > MaxHeaderBytes)
                throw new ModelFormatException(path, null, $"header length {headerLength} exceeds the {MaxHeaderBytes}-byte limit");
            if (headerLength < 2)
                throw new ModelFormatException(path, null, $"header length {headerLength} is too short for a JSON object");
            header = new byte[headerLength];
            fs.ReadExactly(header);
        }
        catch (FileNotFoundException)
        {
            throw new ModelFormatException(path, null, "file not found");
        }
        catch (DirectoryNotFoundException)
        {
            throw new ModelFormatException(path, null, "file not found (no such directory)");
        }
        catch (UnauthorizedAccessException e)
        {
            throw new ModelFormatException(path, null, $"cannot read the file: {e.Message}", e);
        }
        catch (IOException e)
        {
            throw new ModelFormatException(path, null, $"cannot read the file: {e.Message}", e);
        }

        long dataStart = 8 + header.Length;
        long dataLength = length - dataStart;
        var (tensors, metadata) = ParseHeader(path, header, dataLength);

        MemoryMappedFile? map = null;
        MemoryMappedViewAccessor? view = null;
        try
        {
            map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
            view = map.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
            return new SafeTensorsFile(path, length, dataStart, tensors, metadata, map, view);
        }
        catch (IOException e)
        {
            view?.Dispose();
            map?.Dispose();
            throw new ModelFormatException(path, null, $"cannot map the file: {e.Message}", e);
        }
    }

    private static (Dictionary<string, TensorInfo>, IReadOnlyDictionary<string, string>) ParseHeader(string path, byte[] header, long dataLength)
    {
        JsonDocument doc;
        try
        {
            // Trailing spaces pad the header to an 8-byte boundary.
            doc = InputFiles.ParseJson(header.AsMemory().TrimEnd((byte)' '), path, maxDepth: 16);
        }
        catch (ModelFormatException e)
        {
            throw new ModelFormatException(path, null, $"the header is {e.Message[(path.Length + 2)..]}", e);
        }
        using (doc)
        {
            try
            {
                return ReadHeader(path, doc, dataLength);
            }
            catch (InvalidOperationException e)
            {
                // A name or string that escapes an unpaired surrogate ("\ud800") cannot become a .NET string.
                throw new ModelFormatException(path, null, $"the header holds a string that is not valid text: {e.Message}", e);
            }
        }
    }

    private static (Dictionary<string, TensorInfo>, IReadOnlyDictionary<string, string>) ReadHeader(string path, JsonDocument doc, long dataLength)
    {
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object)
            throw new ModelFormatException(path, null, $"the JSON header is a {root.ValueKind}, not an object");
        var tensors = new Dictionary<string, TensorInfo>(StringComparer.Ordinal);
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var prop in root.EnumerateObject())
        {
            if (prop.Name == "__metadata__")
            {
                if (prop.Value.ValueKind != JsonValueKind.Object)
                    throw new ModelFormatException(path, null, "__metadata__ is not an object");
                foreach (var m in prop.Value.EnumerateObject())
                {
                    if (m.Value.ValueKind != JsonValueKind.String)
                        throw new ModelFormatException(path, null, $"__metadata__ entry '{m.Name}' is not a string");
                    metadata[m.Name] = m.Value.GetString()!;
                }
                continue;
            }
            if (tensors.ContainsKey(prop.Name))
                throw new ModelFormatException(path, prop.Name, "named twice in the header");
            tensors[prop.Name] = ParseTensor(path, prop.Name, prop.Value, dataLength);
        }
        CheckOverlaps(path, tensors.Values);
        return (tensors, metadata);
    }

    private static TensorInfo ParseTensor(string path, string name, JsonElement e, long dataLength)
    {
        if (e.ValueKind != JsonValueKind.Object)
            throw new ModelFormatException(path, name, $"header entry is a {e.ValueKind}, not an object");
        if (!e.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String)
            throw new ModelFormatException(path, name, "header entry has no \"dtype\" string");
        if (!SafeTensorsDTypes.TryParse(dt.GetString()!, out var dtype))
            throw new ModelFormatException(path, name, $"unknown dtype '{dt.GetString()}'");
        if (!e.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array)
            throw new ModelFormatException(path, name, "header entry has no \"shape\" array");
        var shape = new long[sh.GetArrayLength()];
        int i = 0;
        long count = 1;
        foreach (var d in sh.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long v) || v < 0)
                throw new ModelFormatException(path, name, $"shape {sh.GetRawText()} has an entry that is not a non-negative integer");
            shape[i++] = v;
            count = v == 0 || count == 0 ? 0 : (count > long.MaxValue / v ? -1 : count * v);
            if (count < 0)
                throw new ModelFormatException(path, name, $"shape {sh.GetRawText()} has more elements than fit in 64 bits");
        }
        if (!e.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
            throw new ModelFormatException(path, name, $"{dtype.Name()} {TensorInfo.ShapeString(shape)}: header entry has no \"data_offsets\" [begin, end] pair");
        if (off[0].ValueKind != JsonValueKind.Number || off[1].ValueKind != JsonValueKind.Number
            || !off[0].TryGetInt64(out long begin) || !off[1].TryGetInt64(out long end) || begin < 0 || end < begin)
            throw new ModelFormatException(path, name, $"{dtype.Name()} {TensorInfo.ShapeString(shape)}: data_offsets {off.GetRawText()} are not 0 ≤ begin ≤ end");
        if (end > dataLength)
            throw new ModelFormatException(path, name, $"{dtype.Name()} {TensorInfo.ShapeString(shape)}: data_offsets {off.GetRawText()} run past the end of the data section ({dataLength} bytes; the file is truncated or the offsets are wrong)");
        if (count > long.MaxValue / dtype.Size() || count * dtype.Size() != end - begin)
            throw new ModelFormatException(path, name, $"dtype {dtype.Name()} × shape {TensorInfo.ShapeString(shape)} = {count} elements × {dtype.Size()} bytes, but data_offsets {off.GetRawText()} hold {end - begin} bytes");
        return new TensorInfo(name, dtype, shape, begin, end, path);
    }

    private static void CheckOverlaps(string path, IEnumerable<TensorInfo> tensors)
    {
        TensorInfo? previous = null;
        foreach (var t in tensors.Where(t => t.ByteCount > 0).OrderBy(t => t.Begin))
        {
            if (previous is not null && t.Begin < previous.End)
                throw new ModelFormatException(path, t.Name, $"{t.DType.Name()} {t.ShapeText}: data_offsets [{t.Begin},{t.End}] overlap those of '{previous.Name}' [{previous.Begin},{previous.End}]");
            previous = t;
        }
    }

    /// <summary>The raw little-endian bytes of a tensor (a view of the mapping; valid until Dispose).</summary>
    public ReadOnlySpan<byte> Bytes(TensorInfo t)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        if (t.ByteCount > int.MaxValue)
            throw new ModelFormatException(Path, t.Name, $"{t.ByteCount} bytes is larger than one span; read it in parts with {nameof(BytesAt)}");
        return new ReadOnlySpan<byte>(basePointer + DataStart + t.Begin, (int)t.ByteCount);
    }

    /// <summary>A part of a tensor's bytes: <paramref name="count"/> bytes from byte <paramref name="offset"/>.</summary>
    public ReadOnlySpan<byte> BytesAt(TensorInfo t, long offset, int count)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        if (offset < 0 || count < 0 || offset + count > t.ByteCount)
            throw new ArgumentOutOfRangeException(nameof(offset), $"bytes [{offset}, {offset + count}) outside tensor '{t.Name}' of {t.ByteCount} bytes");
        return new ReadOnlySpan<byte>(basePointer + DataStart + t.Begin + offset, count);
    }

    /// <summary>Elements of a float tensor (F32, F16 or BF16) converted to float32.</summary>
    public float[] ReadFloat32(TensorInfo t)
    {
        var result = new float[t.ElementCount];
        CopyFloat32(t, result);
        return result;
    }

    /// <summary>Converts the elements of a float tensor (F32, F16 or BF16) into <paramref name="destination"/>.</summary>
    public void CopyFloat32(TensorInfo t, Span<float> destination)
    {
        if (destination.Length != t.ElementCount)
            throw new ArgumentException($"tensor '{t.Name}' {t.ShapeText} has {t.ElementCount} elements, the destination {destination.Length}", nameof(destination));
        var bytes = Bytes(t);
        switch (t.DType)
        {
            case SafeTensorsDType.F32:
                MemoryMarshal.Cast<byte, float>(bytes).CopyTo(destination);
                break;
            case SafeTensorsDType.F16:
                {
                    var h = MemoryMarshal.Cast<byte, Half>(bytes);
                    for (int i = 0; i < h.Length; i++)
                        destination[i] = (float)h[i];
                    break;
                }
            case SafeTensorsDType.BF16:
                {
                    var b = MemoryMarshal.Cast<byte, ushort>(bytes);
                    for (int i = 0; i < b.Length; i++)
                        destination[i] = BFloat16.ToSingle(b[i]);
                    break;
                }
            default:
                throw new ModelFormatException(Path, t.Name, $"dtype {t.DType.Name()} is not a float type (F32, F16 or BF16)");
        }
    }

    /// <summary>Converts the elements of a float tensor (F32, F16 or BF16) to IEEE half (round to nearest even).</summary>
    public void CopyFloat16(TensorInfo t, Span<Half> destination)
    {
        if (destination.Length != t.ElementCount)
            throw new ArgumentException($"tensor '{t.Name}' {t.ShapeText} has {t.ElementCount} elements, the destination {destination.Length}", nameof(destination));
        var bytes = Bytes(t);
        switch (t.DType)
        {
            case SafeTensorsDType.F16:
                MemoryMarshal.Cast<byte, Half>(bytes).CopyTo(destination);
                break;
            case SafeTensorsDType.F32:
                {
                    var f = MemoryMarshal.Cast<byte, float>(bytes);
                    for (int i = 0; i < f.Length; i++)
                        destination[i] = (Half)f[i];
                    break;
                }
            case SafeTensorsDType.BF16:
                {
                    var b = MemoryMarshal.Cast<byte, ushort>(bytes);
                    for (int i = 0; i < b.Length; i++)
                        destination[i] = (Half)BFloat16.ToSingle(b[i]);
                    break;
                }
            default:
                throw new ModelFormatException(Path, t.Name, $"dtype {t.DType.Name()} is not a float type (F32, F16 or BF16)");
        }
    }

    /// <summary>Elements of an integer tensor of the given element type (the dtype must match exactly).</summary>
    public T[] ReadAs<T>(TensorInfo t, SafeTensorsDType expected) where T : unmanaged
    {
        if (t.DType != expected)
            throw new ModelFormatException(Path, t.Name, $"dtype {t.DType.Name()}, expected {expected.Name()}");
        return MemoryMarshal.Cast<byte, T>(Bytes(t)).ToArray();
    }

    public void Dispose()
    {
        if (disposed)
            return;
        disposed = true;
        view.SafeMemoryMappedViewHandle.ReleasePointer();
        view.Dispose();
        map.Dispose();
    }
}

/// <summary>bfloat16 ↔ float32: bf16 is the top 16 bits of a float32.</summary>
public static class BFloat16
{
    public static float ToSingle(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    /// <summary>float32 → bf16, round to nearest even (NaN stays NaN).</summary>
    public static ushort FromSingle(float value)
    {
        uint u = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value))
            return (ushort)((u >> 16) | 0x40);
        uint rounding = 0x7FFF + ((u >> 16) & 1);
        return (ushort)((u + rounding) >> 16);
    }
}
