using System.Buffers.Binary;
using System.Text;
using Qtip.Kernels;
using Qtip.Model.Checkpoint;
using Xunit;

namespace Qtip.Model.Tests;

/// <summary>The safetensors reader's validation (every malformed case named in issue 4) and the writer's round trip.</summary>
public sealed class SafeTensorsTests : IDisposable
{
    private readonly string dir = Fixtures.TempDir("st");

    public void Dispose() => Directory.Delete(dir, recursive: true);

    /// <summary>A raw file: u64 header length, the header text, then <paramref name="dataBytes"/> zero bytes.</summary>
    private string Raw(string name, string header, int dataBytes, ulong? headerLength = null)
    {
        var h = Encoding.UTF8.GetBytes(header);
        var bytes = new byte[8 + h.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, headerLength ?? (ulong)h.Length);
        h.CopyTo(bytes, 8);
        var path = Path.Combine(dir, name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static ModelFormatException Bad(string path, params string[] expected)
    {
        var e = Assert.Throws<ModelFormatException>(() => SafeTensorsFile.Open(path).Dispose());
        Assert.Contains(Path.GetFileName(path), e.Message, StringComparison.Ordinal);
        foreach (var s in expected)
            Assert.Contains(s, e.Message, StringComparison.Ordinal);
        Assert.IsAssignableFrom<InvalidInputException>(e);
        return e;
    }

    [Fact]
    public void MissingFile_NamesTheFile() => Bad(Path.Combine(dir, "absent.safetensors"), "not found");

    [Fact]
    public void UnreadableFile_NamesTheFile()
    {
        var path = Path.Combine(dir, "folder.safetensors");
        Directory.CreateDirectory(path);
        Bad(path, "is a directory");
    }

    [Fact]
    public void ShorterThanTheLengthField()
    {
        var path = Path.Combine(dir, "tiny.safetensors");
        File.WriteAllBytes(path, [1, 2, 3]);
        Bad(path, "truncated", "3 bytes");
    }

    [Fact]
    public void HeaderLengthLargerThanFile_AllocatesNothingLarge()
    {
        var path = Raw("huge.safetensors", "{}", 0, headerLength: 1UL << 62);
        long before = GC.GetAllocatedBytesForCurrentThread();
        Bad(path, "header length 4611686018427387904", "larger than");
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 1 << 20, "the reader allocated more than 1 MiB for a bogus header length");
    }

    [Fact]
    public void HeaderNotAnObject() => Bad(Raw("array.safetensors", "[1,2,3]", 0), "not an object");

    [Fact]
    public void HeaderNotJson() => Bad(Raw("garbage.safetensors", "{\"a\": ", 0), "not valid JSON");

    [Fact]
    public void OffsetsOutOfRange() =>
        Bad(Raw("range.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8), "tensor 'w'", "[4]", "past the end");

    [Fact]
    public void TruncatedData() =>
        Bad(Raw("cut.safetensors", "{\"a\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F16\",\"shape\":[8],\"data_offsets\":[8,24]}}", 12),
            "tensor 'b'", "truncated");

    [Fact]
    public void OverlappingOffsets() =>
        Bad(Raw("overlap.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16),
            "overlap");

    [Fact]
    public void ByteCountMismatch() =>
        Bad(Raw("mismatch.safetensors", "{\"w\":{\"dtype\":\"BF16\",\"shape\":[3,5],\"data_offsets\":[0,32]}}", 32), "tensor 'w'", "BF16", "[3,5]", "32 bytes");

    [Fact]
    public void UnknownDtype() =>
        Bad(Raw("dtype.safetensors", "{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1), "tensor 'w'", "F8_E4M3");

    [Fact]
    public void NegativeShape() =>
        Bad(Raw("neg.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4), "tensor 'w'", "non-negative");

    [Fact]
    public void Writer_RoundTripsEveryDtypeAndMetadata()
    {
        var path = Path.Combine(dir, "out.safetensors");
        var f = new float[] { 1.5f, -2.25f, 3e-3f, 65000f, -1e-7f, 0f };
        var w = new SafeTensorsWriter();
        w.Metadata["format"] = "pt";
        w.Metadata["quantizer"] = "qtip";
        w.AddFloat32("f32", f, [2, 3]);
        w.AddFloat32("f16", f, [6], SafeTensorsDType.F16);
        w.AddFloat32("bf16", f, [3, 2], SafeTensorsDType.BF16);
        w.AddInt16("trellis", new short[] { -32768, 0, 1, 32767, 5 }, [5]);
        w.AddInt32("i32", new[] { int.MinValue, 7, int.MaxValue }, [3]);
        w.AddInt64("i64", new[] { long.MinValue, 42L }, [1, 2]);
        w.AddFloat32("scalar", new[] { 9f }, []);
        w.Write(path);
        Assert.Single(Directory.GetFiles(dir)); // no temporary file left behind

        using var r = SafeTensorsFile.Open(path);
        Assert.Equal("qtip", r.Metadata["quantizer"]);
        Assert.Equal(f, r.ReadFloat32(r["f32"]));
        Assert.Equal(new long[] { 2, 3 }, r["f32"].Shape);
        Assert.Equal(f.Select(v => (float)(Half)v), r.ReadFloat32(r["f16"]));
        Assert.Equal(f.Select(v => BFloat16.ToSingle(BFloat16.FromSingle(v))), r.ReadFloat32(r["bf16"]));
        Assert.Equal(new short[] { -32768, 0, 1, 32767, 5 }, r.ReadAs<short>(r["trellis"], SafeTensorsDType.I16));
        Assert.Equal(new[] { int.MinValue, 7, int.MaxValue }, r.ReadAs<int>(r["i32"], SafeTensorsDType.I32));
        Assert.Equal(new[] { long.MinValue, 42L }, r.ReadAs<long>(r["i64"], SafeTensorsDType.I64));
        Assert.Empty(r["scalar"].Shape);
        Assert.Equal(0, r.DataStart % 8);
        Assert.All(r.Tensors, t => Assert.Equal(0, t.Begin % 8));
        Assert.Throws<ModelFormatException>(() => r.ReadAs<short>(r["i32"], SafeTensorsDType.I16));
    }

    [Fact]
    public void Writer_CopiesTensorsThroughAndOverwritesAtomically()
    {
        var path = Path.Combine(dir, "copy.safetensors");
        using (var src = SafeTensorsFile.Open(Path.Combine(Fixtures.Nano, "model.safetensors")))
        {
            var w = new SafeTensorsWriter();
            w.AddFrom(src, "model.norm.weight");
            w.AddFrom(src, "model.layers.0.input_layernorm.weight", "renamed");
            w.Write(path);
            w.Write(path); // overwrite in place
            using var r = SafeTensorsFile.Open(path);
            Assert.Equal(src.ReadFloat32(src["model.norm.weight"]), r.ReadFloat32(r["model.norm.weight"]));
            Assert.Equal(SafeTensorsDType.BF16, r["renamed"].DType);
        }
        Assert.Single(Directory.GetFiles(dir));
    }

    [Fact]
    public void Writer_RejectsByteCountMismatchAndDuplicates()
    {
        var w = new SafeTensorsWriter();
        var e = Assert.Throws<ArgumentException>(() => w.Add("x", SafeTensorsDType.I16, [3], new byte[5]));
        Assert.Contains("[3]", e.Message, StringComparison.Ordinal);
        w.AddInt32("y", new[] { 1 }, [1]);
        Assert.Throws<ArgumentException>(() => w.AddInt32("y", new[] { 1 }, [1]));
    }
}
