using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;

namespace Qtip.Model.Checkpoint;

/// <summary>
/// Writes a safetensors file: named tensors of any <see cref="SafeTensorsDType"/> with their shapes, plus
/// "__metadata__" strings. Data is laid out contiguously in the order tensors were added, each tensor starting at
/// a multiple of 8 bytes from the data start; the header is padded with spaces to a multiple of 8. The write is
/// atomic: a temporary file in the same folder, flushed, then renamed over the target. Every tensor's byte count
/// is checked against dtype × shape when added, so a file this class writes always passes
/// <see cref="SafeTensorsFile.Open"/>'s validation.
/// </summary>
public sealed class SafeTensorsWriter
{
    private readonly List<(string Name, SafeTensorsDType DType, long[] Shape, byte[] Data)> entries = [];
    private readonly HashSet<string> names = new(StringComparer.Ordinal);

    /// <summary>"__metadata__" entries (e.g. "format": "pt").</summary>
    public Dictionary<string, string> Metadata { get; } = new(StringComparer.Ordinal);

    public int Count => entries.Count;

    /// <summary>Adds a tensor from raw little-endian bytes. Throws if the byte count is not elements × dtype size.</summary>
    public SafeTensorsWriter Add(string name, SafeTensorsDType dtype, IReadOnlyList<long> shape, ReadOnlySpan<byte> data)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        if (name == "__metadata__")
            throw new ArgumentException("'__metadata__' is reserved; use Metadata", nameof(name));
        if (!names.Add(name))
            throw new ArgumentException($"tensor '{name}' added twice", nameof(name));
        long count = 1;
        foreach (long d in shape)
        {
            if (d < 0)
                throw new ArgumentException($"tensor '{name}': negative dimension in shape {TensorInfo.ShapeString(shape)}", nameof(shape));
            count *= d;
        }
        if (count * dtype.Size() != data.Length)
            throw new ArgumentException($"tensor '{name}': {dtype.Name()} {TensorInfo.ShapeString(shape)} needs {count * dtype.Size()} bytes, got {data.Length}", nameof(data));
        entries.Add((name, dtype, shape.ToArray(), data.ToArray()));
        return this;
    }

    /// <summary>Adds float32 values, stored as <paramref name="storeAs"/> (F32, F16 or BF16; rounding to nearest even).</summary>
    public SafeTensorsWriter AddFloat32(string name, ReadOnlySpan<float> values, IReadOnlyList<long> shape, SafeTensorsDType storeAs = SafeTensorsDType.F32)
    {
        switch (storeAs)
        {
            case SafeTensorsDType.F32:
                return Add(name, storeAs, shape, MemoryMarshal.AsBytes(values));
            case SafeTensorsDType.F16:
                {
                    var h = new Half[values.Length];
                    for (int i = 0; i < h.Length; i++)
                        h[i] = (Half)values[i];
                    return Add(name, storeAs, shape, MemoryMarshal.AsBytes(h.AsSpan()));
                }
            case SafeTensorsDType.BF16:
                {
                    var b = new ushort[values.Length];
                    for (int i = 0; i < b.Length; i++)
                        b[i] = BFloat16.FromSingle(values[i]);
                    return Add(name, storeAs, shape, MemoryMarshal.AsBytes(b.AsSpan()));
                }
            default:
                throw new ArgumentException($"tensor '{name}': float values cannot be stored as {storeAs.Name()}", nameof(storeAs));
        }
    }

    public SafeTensorsWriter AddFloat16(string name, ReadOnlySpan<Half> values, IReadOnlyList<long> shape) =>
        Add(name, SafeTensorsDType.F16, shape, MemoryMarshal.AsBytes(values));

    public SafeTensorsWriter AddInt16(string name, ReadOnlySpan<short> values, IReadOnlyList<long> shape) =>
        Add(name, SafeTensorsDType.I16, shape, MemoryMarshal.AsBytes(values));

    public SafeTensorsWriter AddInt32(string name, ReadOnlySpan<int> values, IReadOnlyList<long> shape) =>
        Add(name, SafeTensorsDType.I32, shape, MemoryMarshal.AsBytes(values));

    public SafeTensorsWriter AddInt64(string name, ReadOnlySpan<long> values, IReadOnlyList<long> shape) =>
        Add(name, SafeTensorsDType.I64, shape, MemoryMarshal.AsBytes(values));

    /// <summary>Copies a tensor unchanged from an open file (norms, embeddings passed through).</summary>
    public SafeTensorsWriter AddFrom(SafeTensorsFile file, string name, string? newName = null)
    {
        var t = file[name];
        return Add(newName ?? name, t.DType, t.Shape, file.Bytes(t));
    }

    /// <summary>The header JSON (without padding) for the current entries.</summary>
    internal byte[] HeaderJson()
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            if (Metadata.Count > 0)
            {
                w.WriteStartObject("__metadata__");
                foreach (var (k, v) in Metadata)
                    w.WriteString(k, v);
                w.WriteEndObject();
            }
            long offset = 0;
            foreach (var (name, dtype, shape, data) in entries)
            {
                w.WriteStartObject(name);
                w.WriteString("dtype", dtype.Name());
                w.WriteStartArray("shape");
                foreach (long d in shape)
                    w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                w.WriteNumberValue(offset + data.Length);
                w.WriteEndArray();
                w.WriteEndObject();
                offset = Align8(offset + data.Length);
            }
            w.WriteEndObject();
        }
        return ms.ToArray();
    }

    /// <summary>Writes the file atomically (temporary file in the same folder, then rename).</summary>
    public void Write(string path)
    {
        path = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(path)!;
        Directory.CreateDirectory(dir);
        var header = HeaderJson();
        int padded = (int)Align8(header.Length);
        var temp = Path.Combine(dir, $".{Path.GetFileName(path)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var fs = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                Span<byte> len = stackalloc byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)padded);
                fs.Write(len);
                fs.Write(header);
                for (int i = header.Length; i < padded; i++)
                    fs.WriteByte((byte)' ');
                long offset = 0;
                foreach (var e in entries)
                {
                    fs.Write(e.Data);
                    long next = Align8(offset + e.Data.Length);
                    for (long i = offset + e.Data.Length; i < next; i++)
                        fs.WriteByte(0);
                    offset = next;
                }
                fs.Flush(flushToDisk: true);
            }
            File.Move(temp, path, overwrite: true);
        }
        catch
        {
            if (File.Exists(temp))
                File.Delete(temp);
            throw;
        }
    }

    private static long Align8(long v) => (v + 7) & ~7L;
}
