using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;
using Qtip.Kernels.Trellis;

namespace Qtip.Quant.Trellis;

/// <summary>Tuning knobs of <see cref="TrellisQuantizer"/>.</summary>
/// <param name="MemoryBudgetBytes">Device scratch for back-pointers (and global group minima) of all groups in flight;
/// with persistent groups this bounds memory for any batch size.</param>
/// <param name="MaxThreads">Cap on threads per group (0: the device's maximum, at most 1024).</param>
/// <param name="ValidateTargets">Reject NaN/Inf targets of device-resident calls (one small kernel and a 4-byte read-back).</param>
public sealed record TrellisQuantizerOptions(long MemoryBudgetBytes = 512L << 20, int MaxThreads = 0, bool ValidateTargets = true);

/// <summary>Host copies of a batch's results.</summary>
/// <param name="States">[B × N] the walk of each sequence.</param>
/// <param name="Reconstruction">[B × T] decoded values.</param>
/// <param name="Mse">[B] mean squared error of each sequence.</param>
/// <param name="Packed">[B × K·T/16] generic-layout words (null for <see cref="TailBiting.None"/>).</param>
public sealed record TrellisBatchResult(uint[] States, float[] Reconstruction, float[] Mse, short[]? Packed);

/// <summary>Host copies of a quantized matrix.</summary>
/// <param name="Trellis">[(m/16)·(n/16) × 16K] int16 in <paramref name="Layout"/>.</param>
/// <param name="Reconstruction">m×n decoded from <paramref name="Trellis"/>.</param>
/// <param name="TileMse">[(m/16)·(n/16)] per tile, row-major tile order.</param>
public sealed record TrellisMatrixResult(short[] Trellis, float[] Reconstruction, float[] TileMse, TileLayoutKind Layout);

/// <summary>
/// QTIP's trellis quantizer for one (code, L, K, T) on one device: quantize B sequences of T targets (already divided
/// by Wscale) to tail-biting walks, their packed K·T-bit words, their reconstruction and per-sequence MSE — in one
/// batched, device-resident call (<see cref="Quantize(ArrayView{float}, int, TailBiting, ArrayView{uint}, ArrayView{float}, ArrayView{float}, ArrayView{short}, AcceleratorStream?)"/>),
/// or from host arrays, or for a whole m×n matrix in 16×16 tiles. Kernels and scratch are made once per instance.
/// </summary>
public sealed class TrellisQuantizer : IDisposable
{
    private readonly ICodeKernels kernels;
    private readonly MemoryBuffer1D<float, Stride1D.Dense> table;
    private readonly ViterbiWorkspace workspace;
    private readonly Lock gate = new();

    public TrellisQuantizer(QtipDevice device, TrellisCodebook codebook, int l, int k, int t = 256, TrellisQuantizerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(codebook);
        TrellisShape.Validate(l, k, codebook.V, t);
        if (codebook.TableL is { } tl && tl != l)
            throw new ArgumentException($"the LUT was made for L = {tl}, the trellis has L = {l}", nameof(codebook));
        Device = device;
        Codebook = codebook;
        L = l;
        K = k;
        T = t;
        Options = options ?? new TrellisQuantizerOptions();
        kernels = ICodeKernels.For(codebook);
        Plan = kernels.Plan(device, l, k, t, codebook.Code.SymbolBits(l), Options);
        table = device.Allocate1D(codebook.Table is { Length: > 0 } tb ? tb : [0f]);
        workspace = new ViterbiWorkspace(device, Plan);
    }

    public QtipDevice Device { get; }

    public TrellisCodebook Codebook { get; }

    public int L { get; }

    public int K { get; }

    public int V => Codebook.V;

    public int T { get; }

    /// <summary>Trellis steps per sequence, N = T/V.</summary>
    public int Steps => T / V;

    /// <summary>Packed int16 words per sequence, K·T/16.</summary>
    public int WordsPerSequence => K * T / 16;

    /// <summary>Groups of state minima, 2^(L−KV): the number of overlap values the exact mode tries.</summary>
    public int Overlaps => 1 << (L - (K * V));

    public TrellisQuantizerOptions Options { get; }

    /// <summary>The Viterbi launch chosen for this device.</summary>
    public ViterbiPlan Plan { get; }

    /// <summary>The code table on the device (one unused float for codes without a table).</summary>
    public ArrayView<float> CodeTable => table.View;

    /// <summary>
    /// Device-resident batch: <paramref name="targets"/> [count × T] → <paramref name="states"/> [count × N],
    /// <paramref name="reconstruction"/> [count × T], <paramref name="mse"/> [count], and, unless
    /// <paramref name="packed"/> is empty, the generic-layout words [count × K·T/16] (not for
    /// <see cref="TailBiting.None"/>, whose walks need K·T + L − KV bits). NaN/Inf targets are rejected before any
    /// trellis kernel runs (<see cref="TrellisQuantizerOptions.ValidateTargets"/>).
    /// </summary>
    public void Quantize(
        ArrayView<float> targets, int count, TailBiting mode,
        ArrayView<uint> states, ArrayView<float> reconstruction, ArrayView<float> mse, ArrayView<short> packed,
        AcceleratorStream? stream = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        Need(targets.Length, (long)count * T, nameof(targets), $"[{count} × T = {T}]");
        Need(states.Length, (long)count * Steps, nameof(states), $"[{count} × N = {Steps}]");
        Need(reconstruction.Length, (long)count * T, nameof(reconstruction), $"[{count} × T = {T}]");
        Need(mse.Length, count, nameof(mse), $"[{count}]");
        bool pack = packed.Length > 0;
        if (pack)
        {
            if (mode == TailBiting.None)
                throw new ArgumentException("packing needs tail-biting walks: use TailBiting.Approx or Exact, or pass an empty packed view", nameof(mode));
            Need(packed.Length, (long)count * WordsPerSequence, nameof(packed), $"[{count} × K·T/16 = {WordsPerSequence}]");
        }
        if (count == 0)
            return;
        stream ??= Device.Accelerator.DefaultStream;
        if (Options.ValidateTargets)
        {
            int bad = Device.Get<FiniteCheck>().CountNonFinite(targets, (long)count * T, stream);
            if (bad > 0)
                throw new ArgumentException($"{bad} of the {(long)count * T} targets are NaN or infinite", nameof(targets));
        }
        lock (gate)
        {
            switch (mode)
            {
                case TailBiting.None:
                    kernels.Viterbi(Device, Plan, workspace, ViterbiMode.Plain, count, targets, table.View, default, states, reconstruction, mse, stream);
                    break;
                case TailBiting.Approx:
                    kernels.Viterbi(Device, Plan, workspace, ViterbiMode.TwoPass, count, targets, table.View, default, states, reconstruction, mse, stream);
                    break;
                case TailBiting.Exact:
                    RunExact(targets, count, states, reconstruction, mse, stream);
                    break;
                default:
                    throw new ArgumentOutOfRangeException(nameof(mode), mode, "unknown tail-biting mode");
            }
            if (pack)
                Device.Get<TrellisPack<GenericLayout>>().Apply(states, count, L, K, V, T, packed, stream: stream);
        }
    }

    /// <summary>Exact mode: per chunk of sequences, the constrained optimum's cost for every overlap, the argmin, then that walk.</summary>
    private void RunExact(ArrayView<float> targets, int count, ArrayView<uint> states, ArrayView<float> reconstruction, ArrayView<float> mse, AcceleratorStream stream)
    {
        int groups = Overlaps;
        long chunk = Math.Clamp(Options.MemoryBudgetBytes / 4 / 4 / groups, 1, count);
        chunk = Math.Min(chunk, int.MaxValue / groups);
        var acc = Device.Accelerator;
        using var costs = Device.Allocate1D<float>(chunk * groups);
        using var overlaps = Device.Allocate1D<int>(chunk);
        var argmin = Device.Get<OverlapArgmin>();
        for (long b0 = 0; b0 < count; b0 += chunk)
        {
            int n = (int)Math.Min(chunk, count - b0);
            var x = targets.SubView(b0 * T, (long)n * T);
            kernels.Viterbi(Device, Plan, workspace, ViterbiMode.OverlapCost, n * groups, x, table.View, default,
                states, reconstruction, costs.View, stream);
            argmin.Apply(costs.View, n, groups, overlaps.View, mse.SubView(b0, n), stream);
            kernels.Viterbi(Device, Plan, workspace, ViterbiMode.FixedOverlap, n, x, table.View, overlaps.View,
                states.SubView(b0 * Steps, (long)n * Steps), reconstruction.SubView(b0 * T, (long)n * T), mse.SubView(b0, n), stream);
        }
    }

    /// <summary>Host convenience: <paramref name="targets"/> [B × T] → results (allocates device buffers per call).</summary>
    public TrellisBatchResult Quantize(float[] targets, TailBiting mode)
    {
        ArgumentNullException.ThrowIfNull(targets);
        if (targets.Length % T != 0)
            throw new ArgumentException($"targets has {targets.Length} values, not a multiple of T = {T}", nameof(targets));
        RejectNonFinite(targets);
        int count = targets.Length / T;
        var acc = Device.Accelerator;
        using var x = Device.Allocate1D(targets.Length == 0 ? [0f] : targets);
        using var s = Device.Allocate1D<uint>(Math.Max(1, (long)count * Steps));
        using var r = Device.Allocate1D<float>(Math.Max(1, targets.Length));
        using var m = Device.Allocate1D<float>(Math.Max(1, count));
        bool pack = mode != TailBiting.None;
        using var p = Device.Allocate1D<short>(Math.Max(1, (long)count * WordsPerSequence));
        Quantize(x.View, count, mode, s.View, r.View, m.View, pack ? p.View : default, null);
        Device.Synchronize();
        return new TrellisBatchResult(
            s.View.SubView(0, (long)count * Steps).GetAsArray1D(), r.View.SubView(0, targets.Length).GetAsArray1D(),
            m.View.SubView(0, count).GetAsArray1D(), pack ? p.View.SubView(0, (long)count * WordsPerSequence).GetAsArray1D() : null);
    }

    /// <summary>
    /// Quantizes an m×n matrix (m, n multiples of 16; 32 for the kernel layout; T = 256) as its 16×16 tiles: each tile's
    /// values in the layout's sequence order (row-major for generic, spec §5's permutation for the kernel layout),
    /// packed in that layout; the reconstruction is decoded back from the packed tensor.
    /// </summary>
    public TrellisMatrixResult QuantizeMatrix(float[] w, int m, int n, TailBiting mode, TileLayoutKind layout = TileLayoutKind.Generic)
    {
        ArgumentNullException.ThrowIfNull(w);
        if (T != 256)
            throw new ArgumentException($"matrices are quantized in 16×16 tiles: T must be 256, this quantizer has T = {T}", nameof(w));
        if (mode == TailBiting.None)
            throw new ArgumentException("a packed matrix needs tail-biting walks (Approx or Exact)", nameof(mode));
        int multiple = layout == TileLayoutKind.Kernel ? 32 : 16;
        if (m <= 0 || n <= 0 || m % multiple != 0 || n % multiple != 0)
            throw new ArgumentException($"matrix {m}×{n}: m and n must be positive multiples of {multiple} for the {layout} layout", nameof(m));
        if (w.Length != (long)m * n)
            throw new ArgumentException($"w has {w.Length} values, m·n = {(long)m * n}", nameof(w));
        RejectNonFinite(w);
        int tiles = (m / 16) * (n / 16);
        var acc = Device.Accelerator;
        using var wd = Device.Allocate1D(w);
        using var seq = Device.Allocate1D<float>((long)tiles * T);
        using var s = Device.Allocate1D<uint>((long)tiles * Steps);
        using var r = Device.Allocate1D<float>((long)tiles * T);
        using var mse = Device.Allocate1D<float>(tiles);
        using var generic = Device.Allocate1D<short>((long)tiles * WordsPerSequence);
        using var final = Device.Allocate1D<short>((long)tiles * WordsPerSequence);
        using var rec = Device.Allocate1D<float>((long)m * n);
        if (layout == TileLayoutKind.Kernel)
            Device.Get<TileGather<KernelLayout>>().Gather(wd.View, m, n, 0, n / 16, seq.View);
        else
            Device.Get<TileGather<GenericLayout>>().Gather(wd.View, m, n, 0, n / 16, seq.View);
        Quantize(seq.View, tiles, mode, s.View, r.View, mse.View, generic.View);
        var packed = generic.View;
        if (layout == TileLayoutKind.Kernel)
        {
            Device.Get<TrellisRelayout<GenericLayout, KernelLayout>>().Apply(generic.View, m, n, K, final.View);
            packed = final.View;
        }
        kernels.DecodeMatrix(Device, layout, packed, tiles, L, K, table.View, rec.View, m, n);
        Device.Synchronize();
        return new TrellisMatrixResult(packed.GetAsArray1D(), rec.GetAsArray1D(), mse.GetAsArray1D(), layout);
    }

    /// <summary>Host convenience: generic-layout words [B × K·T/16] → decoded sequences [B × T].</summary>
    public float[] Decode(short[] packed)
    {
        ArgumentNullException.ThrowIfNull(packed);
        if (packed.Length == 0 || packed.Length % WordsPerSequence != 0)
            throw new ArgumentException($"packed has {packed.Length} words, not a positive multiple of K·T/16 = {WordsPerSequence}", nameof(packed));
        int count = packed.Length / WordsPerSequence;
        var acc = Device.Accelerator;
        using var p = Device.Allocate1D(packed);
        using var values = Device.Allocate1D<float>((long)count * T);
        kernels.DecodeSequences(Device, p.View, count, L, K, T, table.View, values.View);
        Device.Synchronize();
        return values.GetAsArray1D();
    }

    private static void RejectNonFinite(float[] values)
    {
        for (int i = 0; i < values.Length; i++)
        {
            if (!float.IsFinite(values[i]))
                throw new ArgumentException($"target {i} is {values[i]}; targets must be finite", nameof(values));
        }
    }

    private static void Need(long have, long need, string name, string shape)
    {
        if (have < need)
            throw new ArgumentException($"{name} has {have} elements, needs {shape} = {need}", name);
    }

    public void Dispose()
    {
        workspace.Dispose();
        table.Dispose();
    }
}

/// <summary>The code-specialised kernel sets behind <see cref="TrellisQuantizer"/> (one generic instantiation per code struct).</summary>
internal interface ICodeKernels
{
    ViterbiPlan Plan(QtipDevice device, int l, int k, int t, int symbolBits, TrellisQuantizerOptions options);

    void Viterbi(QtipDevice device, ViterbiPlan plan, ViterbiWorkspace ws, ViterbiMode mode, int count, ArrayView<float> targets,
        ArrayView<float> table, ArrayView<int> overlaps, ArrayView<uint> states, ArrayView<float> recon, ArrayView<float> result, AcceleratorStream stream);

    void DecodeSequences(QtipDevice device, ArrayView<short> packed, int tiles, int l, int k, int t, ArrayView<float> table, ArrayView<float> values);

    void DecodeMatrix(QtipDevice device, TileLayoutKind layout, ArrayView<short> packed, int tiles, int l, int k, ArrayView<float> table, ArrayView<float> matrix, int m, int n);

    static ICodeKernels For(TrellisCodebook codebook) => codebook.Code.Run<KernelsOf, ICodeKernels>(default);

    private readonly struct KernelsOf : ICodeOp<ICodeKernels>
    {
        public ICodeKernels Run<TCode>() where TCode : struct, ITrellisCode => new CodeKernels<TCode>();
    }
}

internal sealed class CodeKernels<TCode> : ICodeKernels where TCode : struct, ITrellisCode
{
    public ViterbiPlan Plan(QtipDevice device, int l, int k, int t, int symbolBits, TrellisQuantizerOptions options) =>
        device.Get<Viterbi<TCode>>().Plan(l, k, t, symbolBits, options.MemoryBudgetBytes, options.MaxThreads);

    public void Viterbi(QtipDevice device, ViterbiPlan plan, ViterbiWorkspace ws, ViterbiMode mode, int count, ArrayView<float> targets,
        ArrayView<float> table, ArrayView<int> overlaps, ArrayView<uint> states, ArrayView<float> recon, ArrayView<float> result, AcceleratorStream stream)
    {
        var ov = overlaps.IsValid ? overlaps : ws.Overlaps;
        device.Get<Viterbi<TCode>>().Launch(plan, ws, mode, count, targets, table, ov, states, recon, result, stream);
    }

    public void DecodeSequences(QtipDevice device, ArrayView<short> packed, int tiles, int l, int k, int t, ArrayView<float> table, ArrayView<float> values) =>
        device.Get<TrellisDecode<TCode, GenericLayout>>().Apply(packed, tiles, l, k, t, DecodeOutput.Sequences, table, values, default);

    public void DecodeMatrix(QtipDevice device, TileLayoutKind layout, ArrayView<short> packed, int tiles, int l, int k, ArrayView<float> table, ArrayView<float> matrix, int m, int n)
    {
        if (layout == TileLayoutKind.Kernel)
            device.Get<TrellisDecode<TCode, KernelLayout>>().Apply(packed, tiles, l, k, 256, DecodeOutput.Matrix, table, matrix, default, m, n);
        else
            device.Get<TrellisDecode<TCode, GenericLayout>>().Apply(packed, tiles, l, k, 256, DecodeOutput.Matrix, table, matrix, default, m, n);
    }
}
