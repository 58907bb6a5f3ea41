using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Llama;
using Qtip.Kernels.Runtime;
using Qtip.Model.Checkpoint;
using Half = System.Half;

namespace Qtip.Model.Llama;

/// <summary>Storage precision of dense weights on the device (accumulation is always fp32).</summary>
public enum WeightPrecision
{
    Float16,
    Float32,
}

/// <summary>
/// A dense linear layer with W (out×in) on the device in fp16 or fp32: the matrix–vector kernel for one row
/// (decode), the tiled matrix–matrix kernel for more (prefill). May wrap a buffer it does not own (tied embeddings).
/// </summary>
public sealed class DenseLinear : ILinearLayer
{
    private readonly QtipDevice device;
    private readonly MemoryBuffer1D<ILGPU.Half, Stride1D.Dense>? half;
    private readonly MemoryBuffer1D<float, Stride1D.Dense>? single;
    private readonly bool owns;

    private DenseLinear(QtipDevice device, int outFeatures, int inFeatures,
        MemoryBuffer1D<ILGPU.Half, Stride1D.Dense>? half, MemoryBuffer1D<float, Stride1D.Dense>? single, bool owns)
    {
        this.device = device;
        OutFeatures = outFeatures;
        InFeatures = inFeatures;
        this.half = half;
        this.single = single;
        this.owns = owns;
    }

    public int InFeatures { get; }

    public int OutFeatures { get; }

    public WeightPrecision Precision => half is not null ? WeightPrecision.Float16 : WeightPrecision.Float32;

    /// <summary>W (out×in) in fp16; only when <see cref="Precision"/> is Float16.</summary>
    public ArrayView<ILGPU.Half> HalfWeights => half?.View ?? throw new InvalidOperationException("weights are fp32");

    /// <summary>W (out×in) in fp32; only when <see cref="Precision"/> is Float32.</summary>
    public ArrayView<float> FloatWeights => single?.View ?? throw new InvalidOperationException("weights are fp16");

    /// <summary>Bytes of weight read per forward row.</summary>
    public long WeightBytes => (long)OutFeatures * InFeatures * (half is not null ? 2 : 4);

    /// <summary>Wraps an existing device buffer (not owned: disposing this layer leaves it alone).</summary>
    public static DenseLinear Wrap(QtipDevice device, MemoryBuffer1D<ILGPU.Half, Stride1D.Dense> weights, int outFeatures, int inFeatures) =>
        new(device, outFeatures, inFeatures, Validate(weights, outFeatures, inFeatures), null, owns: false);

    /// <summary>Wraps an existing fp32 device buffer (not owned).</summary>
    public static DenseLinear Wrap(QtipDevice device, MemoryBuffer1D<float, Stride1D.Dense> weights, int outFeatures, int inFeatures) =>
        new(device, outFeatures, inFeatures, null, Validate(weights, outFeatures, inFeatures), owns: false);

    /// <summary>Takes ownership of a device buffer holding W (out×in).</summary>
    public static DenseLinear Own(QtipDevice device, MemoryBuffer1D<ILGPU.Half, Stride1D.Dense> weights, int outFeatures, int inFeatures) =>
        new(device, outFeatures, inFeatures, Validate(weights, outFeatures, inFeatures), null, owns: true);

    /// <summary>Takes ownership of an fp32 device buffer holding W (out×in).</summary>
    public static DenseLinear Own(QtipDevice device, MemoryBuffer1D<float, Stride1D.Dense> weights, int outFeatures, int inFeatures) =>
        new(device, outFeatures, inFeatures, null, Validate(weights, outFeatures, inFeatures), owns: true);

    /// <summary>Uploads W (out×in) from host fp32 values, stored in <paramref name="precision"/>.</summary>
    public static DenseLinear FromHost(QtipDevice device, ReadOnlySpan<float> weights, int outFeatures, int inFeatures, WeightPrecision precision)
    {
        if (weights.Length != (long)outFeatures * inFeatures)
            throw new ArgumentException($"weights have {weights.Length} elements, expected {outFeatures}×{inFeatures}", nameof(weights));
        if (precision == WeightPrecision.Float32)
        {
            var b = device.Allocate1D<float>(weights.Length);
            ((ArrayView<float>)b.View).CopyFromCPU(weights);
            return Own(device, b, outFeatures, inFeatures);
        }
        var h = new Half[weights.Length];
        for (int i = 0; i < h.Length; i++)
            h[i] = (Half)weights[i];
        return Own(device, UploadHalf(device, h), outFeatures, inFeatures);
    }

    /// <summary>Loads a checkpoint tensor W (out×in), converted to <paramref name="precision"/>.</summary>
    public static DenseLinear FromCheckpoint(QtipDevice device, TensorStore store, string name, WeightPrecision precision)
    {
        var t = store.Info(name);
        if (t.Shape.Length != 2)
            throw new ModelFormatException(t.File, name, $"shape {t.ShapeText} is not a matrix");
        int o = (int)t.Shape[0], i = (int)t.Shape[1];
        if (precision == WeightPrecision.Float32)
            return Own(device, FiniteWeights.Upload(device, store, name), o, i);
        return Own(device, UploadHalf(device, ReadHalfChecked(store, name)), o, i);
    }

    /// <summary>A tensor converted to fp16, refusing non-finite values and values beyond fp16's range (they would become ∞).</summary>
    internal static Half[] ReadHalfChecked(TensorStore store, string name)
    {
        var t = store.Info(name);
        var h = new Half[t.ElementCount];
        store.CopyFloat16(name, h);
        if (t.DType != SafeTensorsDType.F16)
        {
            // Values finite in fp32/bf16 but beyond ±65504 become ∞ here: say so rather than "corrupt".
            var f = store.FileOf(name);
            for (int i = 0; i < h.Length; i++)
            {
                if (Half.IsInfinity(h[i]) && float.IsFinite(ElementAsFloat(f, t, i)))
                    throw new ModelFormatException(t.File, name, $"{t.DType.Name()} {t.ShapeText} holds values beyond the fp16 range (±65504); load it with fp32 weights");
            }
        }
        FiniteWeights.Check(h, t);
        return h;
    }

    private static float ElementAsFloat(SafeTensorsFile f, TensorInfo t, int i)
    {
        var bytes = f.BytesAt(t, (long)i * t.DType.Size(), t.DType.Size());
        return t.DType == SafeTensorsDType.F32 ? BitConverter.ToSingle(bytes) : BFloat16.ToSingle(BitConverter.ToUInt16(bytes));
    }

    internal static MemoryBuffer1D<ILGPU.Half, Stride1D.Dense> UploadHalf(QtipDevice device, ReadOnlySpan<Half> values)
    {
        var b = device.Allocate1D<ILGPU.Half>(values.Length);
        ((ArrayView<ILGPU.Half>)b.View).CopyFromCPU(MemoryMarshal.Cast<Half, ILGPU.Half>(values));
        return b;
    }

    public void Forward(ArrayView<float> x, ArrayView<float> y, int rows, AcceleratorStream stream)
    {
        if (rows == 1)
        {
            var mv = device.Get<MatVec>();
            if (half is not null)
                mv.Apply(half.View, OutFeatures, x, y, InFeatures, stream);
            else
                mv.Apply(single!.View, OutFeatures, x, y, InFeatures, stream);
            return;
        }
        var mm = device.Get<MatMul>();
        if (half is not null)
            mm.Apply(half.View, x, y, rows, OutFeatures, InFeatures, stream);
        else
            mm.Apply(single!.View, x, y, rows, OutFeatures, InFeatures, stream);
    }

    /// <summary>W as fp32 (out×in) into <paramref name="destination"/> on the device (exact for fp16).</summary>
    public void CopyWeightFloat32(ArrayView<float> destination, AcceleratorStream? stream = null)
    {
        long count = (long)OutFeatures * InFeatures;
        if (destination.Length < count)
            throw new ArgumentException($"destination has {destination.Length} elements, W is {OutFeatures}×{InFeatures}", nameof(destination));
        if (half is not null)
            device.Get<HalfToFloat>().Apply(half.View.SubView(0, count), destination, stream);
        else
            ((ArrayView<float>)single!.View).SubView(0, count).CopyTo(stream ?? device.Accelerator.DefaultStream, destination.SubView(0, count));
    }

    /// <summary>A new device buffer holding W as fp32 (out×in); the caller owns it.</summary>
    public MemoryBuffer1D<float, Stride1D.Dense> WeightFloat32()
    {
        var b = device.Allocate1D<float>((long)OutFeatures * InFeatures);
        CopyWeightFloat32(b.View);
        return b;
    }

    /// <summary>True if both layers are dense with the same precision and input width (they can share one launch).</summary>
    public bool CanFuseWith(DenseLinear other) => other.Precision == Precision && other.InFeatures == InFeatures;

    private static T Validate<T>(T buffer, int outFeatures, int inFeatures) where T : MemoryBuffer
    {
        if (outFeatures <= 0 || inFeatures <= 0)
            throw new ArgumentException($"linear shape {outFeatures}×{inFeatures} must be positive");
        if (buffer.Length < (long)outFeatures * inFeatures)
            throw new ArgumentException($"weight buffer has {buffer.Length} elements, needs {outFeatures}×{inFeatures}");
        return buffer;
    }

    public void Dispose()
    {
        if (!owns)
            return;
        half?.Dispose();
        single?.Dispose();
    }
}
