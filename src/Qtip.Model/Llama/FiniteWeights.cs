using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;
using Qtip.Kernels.Trellis;
using Qtip.Model.Checkpoint;

namespace Qtip.Model.Llama;

/// <summary>
/// Refuses checkpoint tensors that hold NaN or ±∞ as they are uploaded: one <see cref="FiniteCheck"/> pass over an
/// fp32 device buffer (one launch and a 4-byte read-back), or a scan of the fp16 values during the host conversion
/// that already touches each of them. Without it a single bad value turns every perplexity into NaN and every
/// generation into empty text, with exit code 0.
/// </summary>
public static class FiniteWeights
{
    /// <summary>Uploads checkpoint tensor <paramref name="name"/> as fp32 and checks it on the device.</summary>
    public static MemoryBuffer1D<float, Stride1D.Dense> Upload(QtipDevice device, TensorStore store, string name)
    {
        var buffer = device.Allocate1D(store.ReadFloat32(name));
        try
        {
            Check(device, buffer.View, store.Info(name));
            return buffer;
        }
        catch
        {
            buffer.Dispose();
            throw;
        }
    }

    /// <summary>Throws a <see cref="ModelFormatException"/> naming <paramref name="tensor"/> when <paramref name="values"/> holds a non-finite value.</summary>
    public static void Check(QtipDevice device, ArrayView<float> values, TensorInfo tensor)
    {
        int bad = device.Get<FiniteCheck>().CountNonFinite(values, values.Length);
        if (bad > 0)
            throw NonFinite(tensor, bad);
    }

    /// <summary>Host check of values already converted to fp16 (exponent bits all ones: ±∞ or NaN).</summary>
    public static void Check(ReadOnlySpan<System.Half> values, TensorInfo tensor)
    {
        var bits = System.Runtime.InteropServices.MemoryMarshal.Cast<System.Half, ushort>(values);
        int bad = 0;
        foreach (ushort b in bits)
        {
            if ((b & 0x7C00) == 0x7C00)
                bad++;
        }
        if (bad > 0)
            throw NonFinite(tensor, bad);
    }

    /// <summary>Host check of a small fp32 tensor (sign vectors, code tables).</summary>
    public static void Check(ReadOnlySpan<float> values, TensorInfo tensor)
    {
        int bad = 0;
        foreach (float v in values)
        {
            if (!float.IsFinite(v))
                bad++;
        }
        if (bad > 0)
            throw NonFinite(tensor, bad);
    }

    private static ModelFormatException NonFinite(TensorInfo t, int count) =>
        new(t.File, t.Name, $"{t.DType.Name()} {t.ShapeText} holds {count} NaN or infinite value{(count == 1 ? "" : "s")}; the checkpoint is corrupt");
}
