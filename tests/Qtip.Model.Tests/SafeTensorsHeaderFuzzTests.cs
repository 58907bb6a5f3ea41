using System.Buffers.Binary;
using System.Text;
using Qtip.Model.Checkpoint;
using Xunit;

namespace Qtip.Model.Tests;

/// <summary>
/// Seeded mutation fuzz of the safetensors reader: a small valid file (four dtypes, an empty tensor, metadata) is
/// mutated thousands of times (bit flips, byte overwrites with JSON-significant or invalid-UTF-8 bytes, insertions,
/// deletions, truncations, forged header lengths, numbers in the header replaced by hostile ones). Every mutant must
/// either open (and then every tensor reads within the file) or fail with <see cref="ModelFormatException"/>; nothing
/// else may escape. Allocations while opening are bounded by the file's size: at most
/// <see cref="AllocationPerFileByte"/> bytes per file byte plus <see cref="AllocationSlack"/>, so no number in the
/// file can make the reader allocate beyond what the file holds.
/// </summary>
public sealed class SafeTensorsHeaderFuzzTests : IDisposable
{
    /// <summary>Managed bytes allowed per byte of the file (the JSON document and the parsed entries).</summary>
    private const long AllocationPerFileByte = 24;

    /// <summary>Fixed allocations of an open (file stream buffer, mapping objects, dictionaries).</summary>
    private const long AllocationSlack = 64 << 10;

    private const int Mutations = 6000;
    private const int Seed = 20261206;

    private readonly string dir = Fixtures.TempDir("stfuzz");

    public void Dispose() => Directory.Delete(dir, recursive: true);

    private static byte[] SeedFile()
    {
        var w = new SafeTensorsWriter();
        w.Metadata["format"] = "pt";
        w.Metadata["note"] = "seed";
        w.AddFloat32("a.weight", Enumerable.Range(0, 12).Select(i => i * 0.5f).ToArray(), [3, 4]);
        w.AddFloat32("b.norm", [1f, 2f, 3f, 4f, 5f], [5], SafeTensorsDType.BF16);
        w.AddInt16("c.trellis", [1, -2, 3, -4, 5, -6, 7, -8], [2, 2, 2]);
        w.AddFloat32("d.empty", [], [0, 4], SafeTensorsDType.F16);
        w.AddInt64("e.scalar", [42L], []);
        var path = Path.Combine(Path.GetTempPath(), $"qtip-stfuzz-seed-{Guid.NewGuid():N}.safetensors");
        w.Write(path);
        var bytes = File.ReadAllBytes(path);
        File.Delete(path);
        return bytes;
    }

    private static readonly byte[] Interesting = "\"{}[],:-0123456789.eE\\ \u0000"u8.ToArray().Concat(new byte[] { 0xFF, 0xC3, 0xED, 0xA0, 0x80, 0x7F }).ToArray();

    private static readonly string[] HostileNumbers =
        ["-1", "0", "1", "-0", "1.5", "1e30", "9223372036854775807", "9223372036854775808", "18446744073709551616", "-9223372036854775808",
            "\"8\"", "null", "[]", "{}", "true", "1e999", "4294967296", "2147483648"];

    private static byte[] Mutate(byte[] seed, Random rng)
    {
        var b = new List<byte>(seed);
        int headerLength = (int)BinaryPrimitives.ReadUInt64LittleEndian(seed);
        int HeaderPos() => 8 + rng.Next(Math.Max(1, Math.Min(headerLength, b.Count - 8)));
        int ops = 1 + rng.Next(3);
        for (int o = 0; o < ops && b.Count > 8; o++)
        {
            switch (rng.Next(8))
            {
                case 0: // bit flip
                    {
                        int p = HeaderPos();
                        if (p < b.Count)
                            b[p] ^= (byte)(1 << rng.Next(8));
                        break;
                    }
                case 1: // byte overwrite
                    {
                        int p = HeaderPos();
                        if (p < b.Count)
                            b[p] = Interesting[rng.Next(Interesting.Length)];
                        break;
                    }
                case 2: // insertion (the header length kept or fixed up)
                    {
                        int p = HeaderPos();
                        int n = 1 + rng.Next(8);
                        b.InsertRange(Math.Min(p, b.Count), Enumerable.Range(0, n).Select(_ => Interesting[rng.Next(Interesting.Length)]));
                        if (rng.Next(2) == 0)
                            SetLength(b, (ulong)(headerLength += n));
                        break;
                    }
                case 3: // deletion
                    {
                        int p = HeaderPos();
                        int n = Math.Min(1 + rng.Next(8), b.Count - p);
                        if (n > 0)
                        {
                            b.RemoveRange(p, n);
                            if (rng.Next(2) == 0)
                                SetLength(b, (ulong)Math.Max(0, headerLength -= n));
                        }
                        break;
                    }
                case 4: // truncation
                    {
                        int keep = rng.Next(b.Count);
                        b.RemoveRange(keep, b.Count - keep);
                        break;
                    }
                case 5: // forged header length
                    {
                        ulong[] values = [0, 1, 2, (ulong)headerLength - 1, (ulong)headerLength + 1, (ulong)b.Count, (ulong)b.Count - 8, 1UL << 40, ulong.MaxValue, long.MaxValue, 100UL << 20];
                        SetLength(b, values[rng.Next(values.Length)]);
                        break;
                    }
                default: // a number of the header replaced by a hostile token
                    {
                        var text = Encoding.Latin1.GetString(b.ToArray(), 8, Math.Min(headerLength, b.Count - 8));
                        var numbers = System.Text.RegularExpressions.Regex.Matches(text, "-?[0-9]+");
                        if (numbers.Count == 0)
                            break;
                        var m = numbers[rng.Next(numbers.Count)];
                        var replacement = Encoding.ASCII.GetBytes(HostileNumbers[rng.Next(HostileNumbers.Length)]);
                        b.RemoveRange(8 + m.Index, m.Length);
                        b.InsertRange(8 + m.Index, replacement);
                        if (rng.Next(4) != 0)
                            SetLength(b, (ulong)(headerLength += replacement.Length - m.Length));
                        break;
                    }
            }
        }
        return [.. b];
    }

    private static void SetLength(List<byte> b, ulong length)
    {
        if (b.Count < 8)
            return;
        Span<byte> s = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(s, length);
        for (int i = 0; i < 8; i++)
            b[i] = s[i];
    }

    /// <summary>Opens <paramref name="path"/> and touches every tensor; returns the bytes allocated while opening.</summary>
    private static long OpenAndRead(string path)
    {
        long before = GC.GetAllocatedBytesForCurrentThread();
        using var f = SafeTensorsFile.Open(path);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        foreach (var t in f.Tensors)
        {
            Assert.InRange(t.End, t.Begin, f.FileLength - f.DataStart);
            var bytes = f.Bytes(t);
            Assert.Equal(t.ByteCount, bytes.Length);
            if (t.DType.IsWeightFloat())
                Assert.Equal(t.ElementCount, f.ReadFloat32(t).LongLength);
        }
        return allocated;
    }

    [Fact]
    public void TheSeed_Opens()
    {
        var path = Path.Combine(dir, "seed.safetensors");
        File.WriteAllBytes(path, SeedFile());
        OpenAndRead(path);
    }

    [Fact]
    public void SeededMutations_OnlyEverThrowModelFormatException_AndAllocateWithinTheFileSize()
    {
        var seed = SeedFile();
        var rng = new Random(Seed);
        var path = Path.Combine(dir, "mutant.safetensors");
        int opened = 0, refused = 0;
        for (int i = 0; i < Mutations; i++)
        {
            var mutant = Mutate(seed, rng);
            File.WriteAllBytes(path, mutant);
            long before = GC.GetAllocatedBytesForCurrentThread();
            try
            {
                OpenAndRead(path);
                opened++;
            }
            catch (ModelFormatException)
            {
                refused++;
            }
            catch (Exception e) when (e is not Xunit.Sdk.XunitException)
            {
                Assert.Fail($"mutation {i} (seed {Seed}, {mutant.Length} bytes, header '{Preview(mutant)}'): {e.GetType().Name}: {e.Message}");
            }
            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            // Reading the float tensors of an opened mutant allocates their float copies (≤ 2 × the data): counted too.
            long bound = (AllocationPerFileByte * mutant.Length) + AllocationSlack;
            Assert.True(allocated <= bound, $"mutation {i}: {allocated} bytes allocated for a {mutant.Length}-byte file (bound {bound})");
        }
        // Both outcomes occur: the mutations reach the parser's checks rather than all failing at the first byte.
        Assert.True(refused > Mutations / 4, $"{refused} refused, {opened} opened");
        Assert.True(opened > 0, $"{refused} refused, {opened} opened");
    }

    [Theory]
    [InlineData(1UL << 40)]
    [InlineData(ulong.MaxValue)]
    [InlineData(100UL << 20)]
    public void AForgedHeaderLength_AllocatesNothingLikeIt(ulong length)
    {
        var bytes = SeedFile();
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, length);
        var path = Path.Combine(dir, "forged.safetensors");
        File.WriteAllBytes(path, bytes);
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<ModelFormatException>(() => SafeTensorsFile.Open(path).Dispose());
        Assert.Contains("header length", e.Message, StringComparison.Ordinal);
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < AllocationSlack);
    }

    private static string Preview(byte[] b)
    {
        var s = Encoding.Latin1.GetString(b, 8, Math.Clamp(b.Length - 8, 0, 120));
        return string.Concat(s.Select(c => c < ' ' || c > '~' ? $"\\x{(int)c:X2}" : c.ToString()));
    }
}
