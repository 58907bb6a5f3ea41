using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels;
using Qtip.Kernels.Llama;
using Qtip.Kernels.Runtime;
using Qtip.Kernels.Trellis;
using Qtip.Model.Checkpoint;
using Qtip.Model.Llama;
using Qtip.Quant;
using Qtip.Quant.Trellis;

namespace Qtip.Model.Quantized;

/// <summary>How a quantized linear's trellis is to be read: code, state bits L, bits per weight K, layout.</summary>
public sealed record QtipCodeSpec(TrellisCodeInfo Code, int L, int K, TileLayoutKind Layout)
{
    /// <summary>Values per state of the code.</summary>
    public int V => Code.V;

    /// <summary>The code at L and K in its default layout (the reference's: the kernel layout for HYB at L = 16).</summary>
    public static QtipCodeSpec Default(TrellisCodeInfo code, int l, int k) => new(code, l, k, code.DefaultLayout(l));
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
    private readonly Rht rht;

    public QtipLinear(QtipDevice device, int outFeatures, int inFeatures, QtipCodeSpec spec,
        ReadOnlySpan<short> trellisWords, ReadOnlySpan<float> su, ReadOnlySpan<float> sv, ReadOnlySpan<float> table)
        : this(device, outFeatures, inFeatures, spec, Upload(device, outFeatures, inFeatures, spec, trellisWords, su, sv, table))
    {
    }

    private QtipLinear(QtipDevice device, int outFeatures, int inFeatures, QtipCodeSpec spec,
        (MemoryBuffer1D<short, Stride1D.Dense> Trellis, MemoryBuffer1D<float, Stride1D.Dense> Su, MemoryBuffer1D<float, Stride1D.Dense> Sv, MemoryBuffer1D<float, Stride1D.Dense> Table) buffers)
    {
        this.device = device;
        rht = new Rht(device);
        OutFeatures = outFeatures;
        InFeatures = inFeatures;
        Spec = spec;
        su = buffers.Su;
        sv = buffers.Sv;
        table = buffers.Table;
        trellis = ToStreamOrder(device, outFeatures, inFeatures, spec, buffers.Trellis);
    }

    private static void CheckShape(int outFeatures, int inFeatures, QtipCodeSpec spec, long trellisWords, long suLength, long svLength)
    {
        if (outFeatures <= 0 || inFeatures <= 0 || outFeatures % 16 != 0 || inFeatures % 16 != 0)
            throw new ArgumentException($"quantized linear {outFeatures}×{inFeatures} is not made of 16×16 tiles");
        HadamardMatrices.SmallFactor(outFeatures);
        HadamardMatrices.SmallFactor(inFeatures);
        if (spec.Layout == TileLayoutKind.Kernel && spec.V != 2)
            throw new ArgumentException($"code {spec.Code.Name} (V = {spec.V}): the kernel tile layout holds pairs of values (V = 2)");
        long words = (long)(outFeatures / 16) * (inFeatures / 16) * 16 * spec.K;
        if (trellisWords != words)
            throw new ArgumentException($"trellis has {trellisWords} words, a {outFeatures}×{inFeatures} matrix at K = {spec.K} needs {words}");
        if (suLength != inFeatures || svLength != outFeatures)
            throw new ArgumentException($"SU has {suLength} (expected {inFeatures}), SV has {svLength} (expected {outFeatures})");
    }

    private static (MemoryBuffer1D<short, Stride1D.Dense>, MemoryBuffer1D<float, Stride1D.Dense>, MemoryBuffer1D<float, Stride1D.Dense>, MemoryBuffer1D<float, Stride1D.Dense>) Upload(
        QtipDevice device, int outFeatures, int inFeatures, QtipCodeSpec spec,
        ReadOnlySpan<short> trellisWords, ReadOnlySpan<float> su, ReadOnlySpan<float> sv, ReadOnlySpan<float> table)
    {
        CheckShape(outFeatures, inFeatures, spec, trellisWords.Length, su.Length, sv.Length);
        var acc = device.Accelerator;
        return (acc.Allocate1D(trellisWords.ToArray()), acc.Allocate1D(su.ToArray()), acc.Allocate1D(sv.ToArray()), acc.Allocate1D(table.Length > 0 ? table.ToArray() : [0f]));
    }

    /// <summary>
    /// The trellis as the decode kernels read it: a kernel-layout (HYB) trellis is moved on the device to
    /// <see cref="KernelStreamLayout"/> (same positions, words in stream order), so the decode-matvec reads every layout
    /// with contiguous loads; a generic trellis is kept as it is. Takes ownership of <paramref name="stored"/>.
    /// </summary>
    private static MemoryBuffer1D<short, Stride1D.Dense> ToStreamOrder(QtipDevice device, int m, int n, QtipCodeSpec spec, MemoryBuffer1D<short, Stride1D.Dense> stored)
    {
        if (spec.Layout != TileLayoutKind.Kernel)
            return stored;
        var moved = device.Accelerator.Allocate1D<short>(stored.Length);
        device.Get<TrellisRelayout<KernelLayout, KernelStreamLayout>>().Apply(stored.View, m, n, spec.K, moved.View);
        device.Synchronize();
        stored.Dispose();
        return moved;
    }

    /// <summary>
    /// A quantized linear with random contents made on the device (no quantize run): uniformly random trellis words in
    /// the stored layout of <paramref name="spec"/>, SU random ±1, SV random ±1/√n (so a unit input gives unit outputs),
    /// and <paramref name="table"/> as the code's table. For speed measurements (<c>qtip bench decode --code</c>).
    /// </summary>
    public static QtipLinear CreateRandom(QtipDevice device, int outFeatures, int inFeatures, QtipCodeSpec spec, ReadOnlySpan<float> table, ulong seed)
    {
        long words = (long)(outFeatures / 16) * (inFeatures / 16) * 16 * spec.K;
        CheckShape(outFeatures, inFeatures, spec, words, inFeatures, outFeatures);
        var acc = device.Accelerator;
        var trellis = acc.Allocate1D<short>(words);
        device.Get<RandomFill>().ApplyBits(((ArrayView<short>)trellis.View).Cast<int>(), seed);
        var rng = new Random((int)(seed % int.MaxValue));
        float scale = 1f / MathF.Sqrt(inFeatures);
        var su = Enumerable.Range(0, inFeatures).Select(_ => rng.Next(2) == 0 ? -1f : 1f).ToArray();
        var sv = Enumerable.Range(0, outFeatures).Select(_ => rng.Next(2) == 0 ? -scale : scale).ToArray();
        return new QtipLinear(device, outFeatures, inFeatures, spec,
            (trellis, acc.Allocate1D(su), acc.Allocate1D(sv), acc.Allocate1D(table.Length > 0 ? table.ToArray() : [0f])));
    }

    public int InFeatures { get; }

    public int OutFeatures { get; }

    public QtipCodeSpec Spec { get; }

    /// <summary>SU (n): the input signs (fine-tuned into real values).</summary>
    public ArrayView<float> InputSigns => su.View;

    /// <summary>SV (m): the output signs with Wscale folded in.</summary>
    public ArrayView<float> OutputSigns => sv.View;

    /// <summary>The quantized linear stored under <paramref name="weightName"/>'s prefix (trellis, SU, SV, tlut).</summary>
    public static QtipLinear FromCheckpoint(QtipDevice device, TensorStore store, QuipParams quip, string weightName, int outFeatures, int inFeatures)
    {
        string prefix = LlamaNames.QuantizedPrefix(weightName);
        var spec = new QtipCodeSpec(quip.Code, quip.L, quip.K, quip.Layout);
        var stored = QtipFormat.ReadLinear(store, prefix, hasTable: quip.TableRows > 0);
        try
        {
            return new QtipLinear(device, outFeatures, inFeatures, spec, stored.Trellis, stored.Su, stored.Sv, stored.Table);
        }
        catch (ArgumentException e)
        {
            throw new ModelFormatException(stored.TrellisInfo.File, prefix + QtipFormat.TrellisSuffix, e.Message);
        }
    }

    /// <summary>Bytes a decode step reads: the packed trellis plus SU, SV and the table.</summary>
    /// <summary>A decode forward: the input copy, the input Hadamard, the matvec, the output Hadamard.</summary>
    public int DecodeLaunches => 1 + HadamardPlan.For(InFeatures).Launches + 1 + HadamardPlan.For(OutFeatures).Launches;

    public long WeightBytes => (trellis.Length * 2) + ((su.Length + sv.Length + table.Length) * 4);

    public void Forward(ArrayView<float> x, ArrayView<float> y, int rows, AcceleratorStream stream)
    {
        long xin = (long)rows * InFeatures;
        if (x.Length < xin || y.Length < (long)rows * OutFeatures)
            throw new ArgumentException($"quantized linear {OutFeatures}×{InFeatures}: x has {x.Length}, y has {y.Length} elements for {rows} rows");
        var scratch = device.Get<LinearScratch>();
        // x̃ = Had_nᵀ (SU ⊙ x)
        var xr = scratch.Input(xin);
        x.SubView(0, xin).CopyTo(stream, xr);
        rht.RotateInput(xr, rows, InFeatures, su.View, stream: stream);
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
        rht.UnrotateOutput(y, rows, OutFeatures, sv.View, stream: stream);
    }

    /// <summary>W (m×n) as this linear computes it: diag(SV)·Had_m·Ŵ·Had_nᵀ·diag(SU), on the host (the --sequential
    /// pipeline's reconstruction, equal to what a reload decodes).</summary>
    public float[] DecodeWeight()
    {
        long count = (long)OutFeatures * InFeatures;
        using var dense = device.Allocate1D<float>(count);
        using var scratch = device.Allocate1D<float>(count);
        DecodeDense(dense.View, device.Accelerator.DefaultStream);
        rht.UnrotateWeight(dense.View, OutFeatures, InFeatures, su.View, sv.View, scratch.View);
        return dense.GetAsArray1D();
    }

    /// <summary>Ŵ (m×n, the rotated, Wscale-free decoded matrix) into <paramref name="destination"/>.</summary>
    public void DecodeDense(ArrayView<float> destination, AcceleratorStream stream) =>
        ForCode(new DecodeOp(this, destination, stream));

    /// <summary>y (m) = Ŵ · xr (n), the fused trellis-decode matrix–vector product on the transformed input (no RHT).</summary>
    public void TransformedMatVec(ArrayView<float> xr, ArrayView<float> y, AcceleratorStream stream) => MatVec(xr, y, stream);

    private void MatVec(ArrayView<float> xr, ArrayView<float> y, AcceleratorStream stream) =>
        ForCode(new MatVecOp(this, xr, y, stream));

    /// <summary>An operation over the stored trellis, instantiated for the code and layout type arguments.</summary>
    private interface ILayoutOp
    {
        void Run<TCode, TLayout>() where TCode : struct, ITrellisCode where TLayout : struct, IStreamOrderLayout;
    }

    /// <summary>Runs <paramref name="op"/> with the code struct of <see cref="Spec"/> (the registry's dispatch) and its layout.</summary>
    private void ForCode<TOp>(TOp op) where TOp : ILayoutOp => Spec.Code.Run(new WithLayout<TOp>(op, Spec.Layout));

    /// <summary>The layout half of the dispatch: a kernel-layout trellis was moved to stream order at load (<see cref="ToStreamOrder"/>).</summary>
    private readonly struct WithLayout<TOp>(TOp op, TileLayoutKind layout) : ICodeOp where TOp : ILayoutOp
    {
        public void Run<TCode>() where TCode : struct, ITrellisCode
        {
            if (layout == TileLayoutKind.Kernel)
                op.Run<TCode, KernelStreamLayout>();
            else
                op.Run<TCode, GenericLayout>();
        }
    }

    private readonly struct DecodeOp(QtipLinear q, ArrayView<float> destination, AcceleratorStream stream) : ILayoutOp
    {
        public void Run<TCode, TLayout>() where TCode : struct, ITrellisCode where TLayout : struct, IStreamOrderLayout =>
            q.device.Get<TrellisDecode<TCode, TLayout>>().Apply(q.trellis.View, (q.OutFeatures / 16) * (q.InFeatures / 16), q.Spec.L, q.Spec.K, 256,
                DecodeOutput.Matrix, q.table.View, destination, default, q.OutFeatures, q.InFeatures, stream);
    }

    private readonly struct MatVecOp(QtipLinear q, ArrayView<float> xr, ArrayView<float> y, AcceleratorStream stream) : ILayoutOp
    {
        public void Run<TCode, TLayout>() where TCode : struct, ITrellisCode where TLayout : struct, IStreamOrderLayout =>
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
