using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels;
using Qtip.Kernels.Llama;
using Qtip.Kernels.Runtime;
using Qtip.Kernels.Trellis;
using Qtip.Model.Checkpoint;
using Qtip.Model.Llama;

namespace Qtip.Model.Quantized;

/// <summary>How a quantized linear's trellis is to be read: code, state bits L, bits per weight K, values per state V, layout.</summary>
public sealed record QtipCodeSpec(TrellisCodeKind Code, int L, int K, int V, TileLayoutKind Layout)
{
    /// <summary>The layout the reference uses: the kernel layout for HYB at L = 16 (Q = 9, V = 2), else generic.</summary>
    public static TileLayoutKind DefaultLayout(TrellisCodeKind code, int l, int v) =>
        code == TrellisCodeKind.Hyb && l == 16 && v == 2 ? TileLayoutKind.Kernel : TileLayoutKind.Generic;
}

/// <summary>
/// A QTIP-quantized linear (spec §6): y = SV ⊙ Had_m(Ŵ · Had_nᵀ(SU ⊙ x)), with Ŵ the decoded trellis. Batch 1 runs the
/// fused decode-matvec (<see cref="TrellisMatVec{TCode, TLayout}"/>); more rows decode Ŵ to fp32 into a shared
/// scratch and run the dense product. The rotated input and the decoded matrix live in <see cref="LinearScratch"/>,
/// shared by every quantized linear of the device (they run one after another on one stream).
/// </summary>
public sealed class QtipLinear : ILinearLayer
{
    private readonly QtipDevice device;
    private readonly MemoryBuffer1D<short, Stride1D.Dense> trellis;  // [(m/16)(n/16) × 16K]
    private readonly MemoryBuffer1D<float, Stride1D.Dense> su;       // (n)
    private readonly MemoryBuffer1D<float, Stride1D.Dense> sv;       // (m), Wscale folded in
    private readonly MemoryBuffer1D<float, Stride1D.Dense> table;    // the code's table (HYB LUT) or one unused float

    public QtipLinear(QtipDevice device, int outFeatures, int inFeatures, QtipCodeSpec spec,
        ReadOnlySpan<short> trellisWords, ReadOnlySpan<float> su, ReadOnlySpan<float> sv, ReadOnlySpan<float> table)
    {
        if (outFeatures % 16 != 0 || inFeatures % 16 != 0)
            throw new ArgumentException($"quantized linear {outFeatures}×{inFeatures} is not made of 16×16 tiles");
        HadamardMatrices.SmallFactor(outFeatures);
        HadamardMatrices.SmallFactor(inFeatures);
        long words = (long)(outFeatures / 16) * (inFeatures / 16) * 16 * spec.K;
        if (trellisWords.Length != words)
            throw new ArgumentException($"trellis has {trellisWords.Length} words, a {outFeatures}×{inFeatures} matrix at K = {spec.K} needs {words}");
        if (su.Length != inFeatures || sv.Length != outFeatures)
            throw new ArgumentException($"SU has {su.Length} (expected {inFeatures}), SV has {sv.Length} (expected {outFeatures})");
        this.device = device;
        OutFeatures = outFeatures;
        InFeatures = inFeatures;
        Spec = spec;
        var acc = device.Accelerator;
        trellis = acc.Allocate1D(trellisWords.ToArray());
        this.su = acc.Allocate1D(su.ToArray());
        this.sv = acc.Allocate1D(sv.ToArray());
        this.table = acc.Allocate1D(table.Length > 0 ? table.ToArray() : [0f]);
    }

    public int InFeatures { get; }

    public int OutFeatures { get; }

    public QtipCodeSpec Spec { get; }

    /// <summary>The quantized linear stored under <paramref name="weightName"/>'s prefix (trellis, SU, SV, tlut).</summary>
    public static QtipLinear FromCheckpoint(QtipDevice device, TensorStore store, QuipParams quip, string weightName, int outFeatures, int inFeatures)
    {
        string prefix = LlamaNames.QuantizedPrefix(weightName);
        var code = quip.DecodeMode switch
        {
            "quantlut_sym" => TrellisCodeKind.Hyb,
            "1mad" => TrellisCodeKind.OneMad,
            "3inst" => TrellisCodeKind.ThreeInst,
            _ => TrellisCodeKind.Lut,
        };
        var spec = new QtipCodeSpec(code, quip.L, quip.K, quip.V, quip.KernelLayout ? TileLayoutKind.Kernel : TileLayoutKind.Generic);
        var trellisInfo = store.Info(prefix + ".trellis");
        var words = store.FileOf(prefix + ".trellis").ReadAs<short>(trellisInfo, SafeTensorsDType.I16);
        var table = quip.TableRows > 0 ? store.ReadFloat32(prefix + ".tlut") : [];
        var su = store.ReadFloat32(prefix + ".SU");
        var sv = store.ReadFloat32(prefix + ".SV");
        if (quip.TableRows > 0)
            FiniteWeights.Check(table, store.Info(prefix + ".tlut"));
        FiniteWeights.Check(su, store.Info(prefix + ".SU"));
        FiniteWeights.Check(sv, store.Info(prefix + ".SV"));
        try
        {
            return new QtipLinear(device, outFeatures, inFeatures, spec, words, su, sv, table);
        }
        catch (ArgumentException e)
        {
            throw new ModelFormatException(trellisInfo.File, prefix + ".trellis", e.Message);
        }
    }

    /// <summary>Bytes a decode step reads: the packed trellis plus SU, SV and the table.</summary>
    public long WeightBytes => (trellis.Length * 2) + ((su.Length + sv.Length + table.Length) * 4);

    public void Forward(ArrayView<float> x, ArrayView<float> y, int rows, AcceleratorStream stream)
    {
        long xin = (long)rows * InFeatures;
        if (x.Length < xin || y.Length < (long)rows * OutFeatures)
            throw new ArgumentException($"quantized linear {OutFeatures}×{InFeatures}: x has {x.Length}, y has {y.Length} elements for {rows} rows");
        var scratch = device.Get<LinearScratch>();
        var had = device.Get<Hadamard>();
        // x̃ = Had_nᵀ (SU ⊙ x)
        var xr = scratch.Input(xin);
        x.SubView(0, xin).CopyTo(stream, xr);
        had.Apply(xr, rows, InFeatures, transpose: true, inSign: su.View, stream: stream);
        // ỹ = Ŵ x̃
        if (rows == 1)
        {
            MatVec(xr, y, stream);
        }
        else
        {
            var dense = scratch.Dense((long)OutFeatures * InFeatures);
            DecodeDense(dense, stream);
            device.Get<MatMul>().Apply(dense, xr, y, rows, OutFeatures, InFeatures, stream);
        }
        // y = SV ⊙ Had_m ỹ
        had.Apply(y, rows, OutFeatures, transpose: false, outSign: sv.View, stream: stream);
    }

    /// <summary>Ŵ (m×n, the rotated, Wscale-free decoded matrix) into <paramref name="destination"/>.</summary>
    public void DecodeDense(ArrayView<float> destination, AcceleratorStream stream) =>
        ForCode(new DecodeOp(this, destination, stream));

    /// <summary>y (m) = Ŵ · xr (n), the fused trellis-decode matrix–vector product.</summary>
    private void MatVec(ArrayView<float> xr, ArrayView<float> y, AcceleratorStream stream) =>
        ForCode(new MatVecOp(this, xr, y, stream));

    /// <summary>An operation over the stored trellis, instantiated for the code and layout type arguments.</summary>
    private interface ICodeOp
    {
        void Run<TCode, TLayout>() where TCode : struct, ITrellisCode where TLayout : struct, ITileLayout;
    }

    /// <summary>Runs <paramref name="op"/> with the code and layout structs of <see cref="Spec"/>: the one place that maps them.</summary>
    private void ForCode<TOp>(TOp op) where TOp : ICodeOp
    {
        var s = Spec;
        switch (s.Code, s.Layout)
        {
            case (TrellisCodeKind.Hyb, TileLayoutKind.Kernel):
                op.Run<HybCode, KernelLayout>();
                break;
            case (TrellisCodeKind.Hyb, _):
                op.Run<HybCode, GenericLayout>();
                break;
            case (TrellisCodeKind.OneMad, _):
                op.Run<OneMadCode, GenericLayout>();
                break;
            case (TrellisCodeKind.ThreeInst, _):
                op.Run<ThreeInstCode, GenericLayout>();
                break;
            case (TrellisCodeKind.Lut, _) when s.V == 1:
                op.Run<Lut1Code, GenericLayout>();
                break;
            case (TrellisCodeKind.Lut, _):
                op.Run<Lut2Code, GenericLayout>();
                break;
            default:
                throw new InvalidOperationException($"no trellis kernels for {s}");
        }
    }

    private readonly struct DecodeOp(QtipLinear q, ArrayView<float> destination, AcceleratorStream stream) : ICodeOp
    {
        public void Run<TCode, TLayout>() where TCode : struct, ITrellisCode where TLayout : struct, ITileLayout =>
            q.device.Get<TrellisDecode<TCode, TLayout>>().Apply(q.trellis.View, (q.OutFeatures / 16) * (q.InFeatures / 16), q.Spec.L, q.Spec.K, 256,
                DecodeOutput.Matrix, q.table.View, destination, default, q.OutFeatures, q.InFeatures, stream);
    }

    private readonly struct MatVecOp(QtipLinear q, ArrayView<float> xr, ArrayView<float> y, AcceleratorStream stream) : ICodeOp
    {
        public void Run<TCode, TLayout>() where TCode : struct, ITrellisCode where TLayout : struct, ITileLayout =>
            q.device.Get<TrellisMatVec<TCode, TLayout>>().Apply(q.trellis.View, q.OutFeatures, q.InFeatures, q.Spec.L, q.Spec.K, q.table.View, xr, y, stream);
    }

    public void Dispose()
    {
        trellis.Dispose();
        su.Dispose();
        sv.Dispose();
        table.Dispose();
    }
}

/// <summary>Growable device scratch shared by the quantized linears of one device: the rotated input and the decoded matrix.</summary>
public sealed class LinearScratch : IKernelSet<LinearScratch>, IDisposable
{
    private readonly QtipDevice device;
    private MemoryBuffer1D<float, Stride1D.Dense>? input;
    private MemoryBuffer1D<float, Stride1D.Dense>? dense;

    private LinearScratch(QtipDevice device) => this.device = device;

    public static LinearScratch Create(QtipDevice device) => new(device);

    public ArrayView<float> Input(long count) => Grow(ref input, count);

    public ArrayView<float> Dense(long count) => Grow(ref dense, count);

    private ArrayView<float> Grow(ref MemoryBuffer1D<float, Stride1D.Dense>? buffer, long count)
    {
        if (buffer is null || buffer.Length < count)
        {
            // Growing frees the old buffer: synchronize so no queued kernel still reads it.
            device.Accelerator.Synchronize();
            buffer?.Dispose();
            buffer = device.Accelerator.Allocate1D<float>(count);
        }
        return buffer.View.SubView(0, count);
    }

    public void Dispose()
    {
        input?.Dispose();
        dense?.Dispose();
    }
}
