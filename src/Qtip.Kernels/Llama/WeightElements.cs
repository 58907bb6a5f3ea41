using ILGPU;
using ILGPU.Runtime;
using Half = ILGPU.Half;

namespace Qtip.Kernels.Llama;

/// <summary>Eight consecutive fp16 values as one 16-byte load.</summary>
public struct Half8
{
    public uint A;
    public uint B;
    public uint C;
    public uint D;
}

/// <summary>Four consecutive fp32 values as one 16-byte load.</summary>
public struct Float4
{
    public float X;
    public float Y;
    public float Z;
    public float W;
}

/// <summary>How a kernel reads a weight element of type <typeparamref name="T"/> as fp32. A struct type parameter,
/// so every kernel is specialised per element type with no virtual call (the ILGPU.Algorithms pattern).</summary>
public interface IWeightElement<T> where T : unmanaged
{
    float Load(ArrayView<T> w, long index);

    /// <summary>Σ_{j&lt;8} w[index + j] · x[xIndex + j]; both indices multiples of 8, views 16-byte aligned.</summary>
    float Dot8(ArrayView<T> w, long index, ArrayView<float> x, long xIndex);

    /// <summary>Σ_{j&lt;8} w[index + j] · (lo, hi)[j] with the eight x values already in registers; index a multiple of 8.</summary>
    float Dot8(ArrayView<T> w, long index, Float4 lo, Float4 hi);
}

/// <summary>fp16 weights: one 16-byte load per 8 weights.</summary>
public readonly struct F16 : IWeightElement<Half>
{
    public float Load(ArrayView<Half> w, long index) => w[index];

    public float Dot8(ArrayView<Half> w, long index, ArrayView<float> x, long xIndex)
    {
        var h = w.AsAligned16().Cast<Half8>()[index >> 3];
        var xv = x.AsAligned16().Cast<Float4>();
        var x0 = xv[xIndex >> 2];
        var x1 = xv[(xIndex >> 2) + 1];
        return (Lo(h.A) * x0.X) + (Hi(h.A) * x0.Y) + (Lo(h.B) * x0.Z) + (Hi(h.B) * x0.W)
            + (Lo(h.C) * x1.X) + (Hi(h.C) * x1.Y) + (Lo(h.D) * x1.Z) + (Hi(h.D) * x1.W);
    }

    public float Dot8(ArrayView<Half> w, long index, Float4 lo, Float4 hi)
    {
        var h = w.AsAligned16().Cast<Half8>()[index >> 3];
        return (Lo(h.A) * lo.X) + (Hi(h.A) * lo.Y) + (Lo(h.B) * lo.Z) + (Hi(h.B) * lo.W)
            + (Lo(h.C) * hi.X) + (Hi(h.C) * hi.Y) + (Lo(h.D) * hi.Z) + (Hi(h.D) * hi.W);
    }

    private static float Lo(uint bits) => Interop.IntAsFloat((ushort)(bits & 0xFFFF));

    private static float Hi(uint bits) => Interop.IntAsFloat((ushort)(bits >> 16));
}

/// <summary>fp32 weights: two 16-byte loads per 8 weights.</summary>
public readonly struct F32 : IWeightElement<float>
{
    public float Load(ArrayView<float> w, long index) => w[index];

    public float Dot8(ArrayView<float> w, long index, ArrayView<float> x, long xIndex)
    {
        var wv = w.AsAligned16().Cast<Float4>();
        var xv = x.AsAligned16().Cast<Float4>();
        var w0 = wv[index >> 2];
        var w1 = wv[(index >> 2) + 1];
        var x0 = xv[xIndex >> 2];
        var x1 = xv[(xIndex >> 2) + 1];
        return (w0.X * x0.X) + (w0.Y * x0.Y) + (w0.Z * x0.Z) + (w0.W * x0.W)
            + (w1.X * x1.X) + (w1.Y * x1.Y) + (w1.Z * x1.Z) + (w1.W * x1.W);
    }

    public float Dot8(ArrayView<float> w, long index, Float4 lo, Float4 hi)
    {
        var wv = w.AsAligned16().Cast<Float4>();
        var w0 = wv[index >> 2];
        var w1 = wv[(index >> 2) + 1];
        return (w0.X * lo.X) + (w0.Y * lo.Y) + (w0.Z * lo.Z) + (w0.W * lo.W)
            + (w1.X * hi.X) + (w1.Y * hi.Y) + (w1.Z * hi.Z) + (w1.W * hi.W);
    }
}

/// <summary>
/// How a launcher maps work to threads. <see cref="Grouped"/> is the GPU design (groups, shared memory, warp
/// shuffles, barriers). <see cref="Serial"/> is for ILGPU's CPU accelerator, a simulator where every GPU thread costs
/// ~2 µs and every barrier or shuffle a round of OS-thread switches: there each thread owns a whole row (or block)
/// and loops, with no barrier at all — 10–100× faster there, and the same arithmetic. Serial kernels use no warp
/// function, so they are also what OpenCL runs (<see cref="Check.DefaultStyle"/>). Kernel sets start with the style of
/// their device and load the grouped variants only when that style is selected; tests set the other one to check both
/// on the CPU.
/// </summary>
public enum KernelStyle
{
    Grouped,
    Serial,
}

/// <summary>Shared host-side checks of the Llama launchers.</summary>
internal static class Check
{
    public static void Length<T>(string op, string what, ArrayView<T> view, long needed, string shape) where T : unmanaged
    {
        if (view.Length < needed)
            throw new ArgumentException($"{op}: {what} has {view.Length} elements, needs {needed} ({shape})", what);
    }

    public static void Positive(string op, string what, long value)
    {
        if (value <= 0)
            throw new ArgumentOutOfRangeException(what, value, $"{op}: {what} must be positive");
    }

    public static int GroupSize(Runtime.QtipDevice device, int cap = 256) => Math.Min(device.MaxGroupSize, cap);

    /// <summary>True if the view starts on a 16-byte boundary of its buffer (buffers themselves are allocated aligned).</summary>
    public static bool Aligned16<T>(ArrayView<T> view) where T : unmanaged =>
        ((IContiguousArrayView)view).Index * System.Runtime.CompilerServices.Unsafe.SizeOf<T>() % 16 == 0;

    /// <summary>
    /// The default style of a device: grouped on CUDA; serial on the CPU simulator and on OpenCL. The OpenCL device
    /// Qtip runs on is pocl's CPU device (the only one with the generic address space ILGPU needs), a CPU where a
    /// thread per row is the natural shape, and ILGPU 1.5.3's OpenCL backend cannot emit the warp shuffles the grouped
    /// kernels reduce with (only <c>Warp.Broadcast</c>). Kernel sets load their grouped variants only when selected.
    /// </summary>
    public static KernelStyle DefaultStyle(Runtime.QtipDevice device) => device.Capabilities.DefaultStyle;

    /// <summary>Elements per thread for elementwise kernels: 1 on GPUs; on the CPU simulator enough that about 256 threads cover the work.</summary>
    public static int Span(Runtime.QtipDevice device, long count) =>
        device.Capabilities.Simulator ? (int)Math.Max(1, (count + 255) / 256) : 1;

    /// <summary>Threads for <paramref name="count"/> elements at <paramref name="span"/> per thread.</summary>
    public static int Threads(long count, int span) => (int)((count + span - 1) / span);
}
