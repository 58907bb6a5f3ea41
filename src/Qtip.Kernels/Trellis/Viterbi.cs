using System.Numerics;
using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;

namespace Qtip.Kernels.Trellis;

/// <summary>How the per-state error is evaluated inside the Viterbi: a compile-time switch (struct type argument).</summary>
public interface ICostMode
{
    /// <summary>True: per step, tabulate the error of every symbol in shared memory, then one lookup per state.</summary>
    bool Table { get; }
}

/// <summary>Per step, E[y] = ‖Value(y) − x_t‖² for all 2^b symbols in shared memory; per state one hash + one load.
/// Used when the code has ≤ 2^10 symbols (1MAD, HYB, LUT with L ≤ 10).</summary>
public readonly struct TableCost : ICostMode
{
    public bool Table => true;
}

/// <summary>Per state, decode the values and form the error (3INST, large LUTs).</summary>
public readonly struct DirectCost : ICostMode
{
    public bool Table => false;
}

/// <summary>Where the double-buffered group minima live: a compile-time switch (struct type argument).</summary>
public interface IMinimaStore
{
    /// <summary>True: a per-slot global buffer (L1/L2-resident); false: shared memory.</summary>
    bool Global { get; }
}

/// <summary>Group minima in shared memory (they fit: 2G floats next to the targets and tables).</summary>
public readonly struct SharedMinima : IMinimaStore
{
    public bool Global => false;
}

/// <summary>Group minima in a per-slot global buffer (V = 1, K ≤ 3 at L = 16: 2G floats exceed 48 KB).</summary>
public readonly struct GlobalMinima : IMinimaStore
{
    public bool Global => true;
}

/// <summary>What one Viterbi launch computes per item.</summary>
public enum ViterbiMode
{
    /// <summary>One unconstrained pass: the optimal walk, not tail-biting.</summary>
    Plain = 0,

    /// <summary>Spec §1 Algorithm 4: pass 1 on the target rotated right by h = ⌊T/2V⌋·V, its state at step h/V fixes the
    /// overlap ov, pass 2 on the target restricted to s_0 ≫ KV = ov and s_{N−1} mod 2^(L−KV) = ov.</summary>
    TwoPass = 1,

    /// <summary>One pass with the overlap given per sequence (<c>overlaps[b]</c>): the best walk with that overlap.</summary>
    FixedOverlap = 2,

    /// <summary>Item i = (sequence i / G, overlap i mod G): only the constrained optimum's cost (sum of squared errors)
    /// is written to <c>result[i]</c>; no back-pointers, no states. The exact tail-biting mode is the argmin over these.</summary>
    OverlapCost = 3,
}

/// <summary>
/// Launch geometry and memory of the Viterbi kernel for one (L, K, V, T, code) on one device; see <see cref="Viterbi{TCode}.Plan"/>.
/// </summary>
/// <param name="L">State bits.</param>
/// <param name="K">Bits per weight.</param>
/// <param name="V">Values per state.</param>
/// <param name="T">Values per sequence.</param>
/// <param name="Threads">Threads per group (a multiple of the warp size).</param>
/// <param name="ActiveThreads">Threads that own groups of states (the rest only join barriers and reductions).</param>
/// <param name="GroupsPerThread">R: consecutive state groups owned by one thread.</param>
/// <param name="BackPointerBits">Bits per stored back-pointer (KV rounded up to 1, 2, 4 or 8).</param>
/// <param name="TableSymbols">Entries of the per-step error table (0: direct evaluation).</param>
/// <param name="GlobalCosts">Whether the group minima live in global memory (they do not fit in shared memory).</param>
/// <param name="SharedBytes">Dynamic shared memory per group.</param>
/// <param name="BackPointerStepBytes">Bytes of back-pointers per step.</param>
/// <param name="Slots">Groups launched (persistent: each loops over items); scratch is allocated per slot.</param>
/// <param name="Interleaved">Thread t owns groups t + r·Threads instead of t·R + r (with global minima, when every
/// thread is active and a warp spans at least one back-pointer word: 32/Bb lanes).</param>
public sealed record ViterbiPlan(
    int L, int K, int V, int T, int Threads, int ActiveThreads, int GroupsPerThread, int BackPointerBits,
    int TableSymbols, bool GlobalCosts, int SharedBytes, int BackPointerStepBytes, int Slots, bool Interleaved)
{
    /// <summary>Whether the interleaved ownership is possible for this plan on a device with the given warp size.</summary>
    public bool CanInterleave(int warpSize) =>
        ActiveThreads == Threads && warpSize * BackPointerBits >= 32 && Threads % warpSize == 0;

    public int KV => K * V;

    /// <summary>Trellis steps per sequence, N = T/V.</summary>
    public int Steps => T / V;

    /// <summary>State groups G = 2^(L−KV) (states sharing their low L−KV bits, i.e. one predecessor set).</summary>
    public int Groups => 1 << (L - KV);

    /// <summary>Back-pointer bytes per slot (one sequence in flight).</summary>
    public long BackPointerSlotBytes => (long)Steps * BackPointerStepBytes;

    /// <summary>Global group-minimum floats per slot (0 when they live in shared memory).</summary>
    public long GlobalCostFloatsPerSlot => GlobalCosts ? 2L * Groups : 0;

    /// <summary>Device scratch bytes for all slots.</summary>
    public long ScratchBytes => Slots * (BackPointerSlotBytes + (4 * GlobalCostFloatsPerSlot));
}

/// <summary>Scratch for one <see cref="ViterbiPlan"/>: back-pointers and (when needed) global group minima, per slot.</summary>
public sealed class ViterbiWorkspace : IDisposable
{
    public ViterbiWorkspace(QtipDevice device, ViterbiPlan plan)
    {
        Plan = plan;
        long words = Math.Max(1, plan.Slots * plan.BackPointerSlotBytes / 4);
        BackPointers = device.Accelerator.Allocate1D<uint>(words);
        GlobalCosts = device.Accelerator.Allocate1D<float>(Math.Max(1, plan.Slots * plan.GlobalCostFloatsPerSlot));
        NoOverlaps = device.Accelerator.Allocate1D<int>(1);
    }

    public ViterbiPlan Plan { get; }

    /// <summary>[slots × N × stepBytes/4] packed back-pointers.</summary>
    public MemoryBuffer1D<uint, Stride1D.Dense> BackPointers { get; }

    /// <summary>[slots × 2G] group minima (double-buffered), or one unused float.</summary>
    public MemoryBuffer1D<float, Stride1D.Dense> GlobalCosts { get; }

    /// <summary>A one-element placeholder for the overlaps argument of modes that do not read it.</summary>
    public ArrayView<int> Overlaps => NoOverlaps.View;

    private MemoryBuffer1D<int, Stride1D.Dense> NoOverlaps { get; }

    public void Dispose()
    {
        NoOverlaps.Dispose();
        BackPointers.Dispose();
        GlobalCosts.Dispose();
    }
}

/// <summary>
/// Batched Viterbi over the bitshift trellis (spec §1, §3) for one code <typeparamref name="TCode"/>.
///
/// <para><b>Recursion in group form.</b> The predecessors of state s are (s ≫ KV) + d·2^(L−KV), d &lt; 2^KV, so all
/// 2^KV states with the same low L−KV bits g ("group g") share one predecessor set. Per step only the
/// G = 2^(L−KV) group minima survive: gm_t[g] = min_d c_t(g + d·G) with c_t(s) = e_t(s) + gm_{t−1}[s ≫ KV], and the
/// back-pointer of group g is the argmin d (KV bits). The per-state cost array never exists. e_t(s) = ‖C(s) − x_t‖²
/// in fp32 (keeping the x² term keeps the running costs small, hence their fp32 rounding).</para>
///
/// <para><b>Work split.</b> One group of threads per sequence; each active thread owns R consecutive state groups and
/// loops over their 2^KV candidates itself (no cross-thread min), so a warp's reads of gm_{t−1}[(g ≫ KV) + d·2^(L−2KV)]
/// hit few distinct addresses (broadcast). One barrier per step: gm is double-buffered, and so is the per-step error
/// table of table-mode codes (1MAD: 1024 byte sums; HYB: 512 rows × 2 signs): step t reads table t while the group
/// fills table t+1. Groups are persistent: the grid is <see cref="ViterbiPlan.Slots"/> wide and each group loops over
/// items, so scratch is bounded by the slot count, not the batch size.</para>
///
/// <para><b>Memory.</b> gm lives in shared memory when 2G floats fit next to the targets and tables (48 KB per group
/// on CUDA in ILGPU 1.5.3: HYB K = 2…4, V = 1 K = 4 at L = 16), else in a per-slot global buffer (L1/L2-resident;
/// V = 1 K ≤ 3 at L = 16). Back-pointers take KV bits rounded up to 1/2/4/8 (HYB K = 2: 4 bits × 4096 groups × 128
/// steps = 256 KB per sequence, 32× less than int64 states), written as whole bytes or words per thread, and read
/// back by one thread for the traceback (N dependent loads; a few % of a pass).</para>
///
/// <para><b>Ties</b> go to the smallest d, and in the final argmin to the smallest state — the first index, as in the
/// reference, whose walks these reproduce bit for bit on the golden vectors (HYB has 64 states per 2-D point, so
/// exact ties are common there).</para>
/// </summary>
public sealed class Viterbi<TCode> : IKernelSet<Viterbi<TCode>> where TCode : struct, ITrellisCode
{
    /// <summary>Largest error table kept per step in shared memory (entries).</summary>
    public const int MaxTableBits = 10;

    /// <summary>Shared memory a group may use: ILGPU 1.5.3 cannot opt in to more than 48 KB on CUDA.</summary>
    public const int MaxSharedBytes = 48 * 1024;

    private readonly QtipDevice device;

    /// <summary>[table mode, global minima] → the loaded kernel (each compiled on first use).</summary>
    private readonly bool staticShared;
    private readonly Lazy<Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<uint>, ArrayView<float>, ArrayView<float>, ArrayView<uint>, ArrayView<byte>, ArrayView<float>, ViterbiParams>>[] kernels;

    private Viterbi(QtipDevice device)
    {
        this.device = device;
        var acc = device.Accelerator;
        // Compiled for the largest group the plans use: on CUDA this emits .maxntid, so ptxas keeps the kernel within
        // 64 registers per thread and a 1024-thread group can always launch.
        var spec = new KernelSpecialization(device.MaxGroupSize, null);
        // OpenCL: a static 48 KiB buffer instead of dynamic local memory (see SharedFloats), and the barrier fix-up.
        staticShared = device.Kind == BackendKind.OpenCL;
        kernels = staticShared
            ?
            [
                new(() => Load(acc, Kernel<TCode, DirectCost, SharedMinima, LargeStaticSharedFloats>, spec)),
                new(() => Load(acc, Kernel<TCode, DirectCost, GlobalMinima, LargeStaticSharedFloats>, spec)),
                new(() => Load(acc, Kernel<TCode, TableCost, SharedMinima, LargeStaticSharedFloats>, spec)),
                new(() => Load(acc, Kernel<TCode, TableCost, GlobalMinima, LargeStaticSharedFloats>, spec)),
            ]
            :
            [
                new(() => Load(acc, Kernel<TCode, DirectCost, SharedMinima, DynamicSharedFloats>, spec)),
                new(() => Load(acc, Kernel<TCode, DirectCost, GlobalMinima, DynamicSharedFloats>, spec)),
                new(() => Load(acc, Kernel<TCode, TableCost, SharedMinima, DynamicSharedFloats>, spec)),
                new(() => Load(acc, Kernel<TCode, TableCost, GlobalMinima, DynamicSharedFloats>, spec)),
            ];
    }

    private static Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<uint>, ArrayView<float>, ArrayView<float>, ArrayView<uint>, ArrayView<byte>, ArrayView<float>, ViterbiParams> Load(Accelerator acc, Action<ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<uint>, ArrayView<float>, ArrayView<float>, ArrayView<uint>, ArrayView<byte>, ArrayView<float>, ViterbiParams> kernel, KernelSpecialization spec) =>
        KernelLoader.Load<Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<uint>, ArrayView<float>, ArrayView<float>, ArrayView<uint>, ArrayView<byte>, ArrayView<float>, ViterbiParams>>(acc, kernel.Method, spec);

    public static Viterbi<TCode> Create(QtipDevice device) => new(device);

    /// <summary>
    /// Chooses the launch for (L, K, T) of this code. <paramref name="symbolBits"/>: <see cref="Codes.SymbolBits"/>.
    /// <paramref name="memoryBudget"/> bounds the scratch (back-pointers and global minima) of all slots;
    /// <paramref name="maxThreads"/> caps the group size (0: the device's maximum, at most 1024).
    /// </summary>
    public ViterbiPlan Plan(int l, int k, int t, int symbolBits, long memoryBudget = 1L << 29, int maxThreads = 0)
    {
        int v = default(TCode).V;
        TrellisShape.Validate(l, k, v, t);
        ArgumentOutOfRangeException.ThrowIfLessThan(memoryBudget, 1, nameof(memoryBudget));
        int kv = k * v;
        int groups = 1 << (l - kv);
        int steps = t / v;
        int bpBits = kv <= 1 ? 1 : kv <= 2 ? 2 : kv <= 4 ? 4 : 8;
        int minR = Math.Max(1, 8 / bpBits);
        int warp = Math.Max(1, device.WarpSize);
        // On the CPU simulator a barrier costs far more than the work of a step at small L, and groups run side by
        // side anyway: one warp per group is fastest there (measured: 4 threads 2.5× faster than 16 at L = 10).
        int cap = maxThreads > 0 ? Math.Min(device.MaxGroupSize, maxThreads)
            : device.Kind == BackendKind.Cpu ? warp : device.MaxGroupSize;
        cap = Math.Max(warp, 1 << BitOperations.Log2((uint)Math.Max(1, cap)));
        int active = Math.Min(cap, Math.Max(1, groups / minR));
        int threads = Math.Max(warp, active);
        int r = groups / active;
        int symbols = symbolBits <= MaxTableBits ? 1 << symbolBits : 0;
        int warps = threads / warp;
        long baseFloats = t + (2L * symbols) + steps + (2L * warps) + 4;
        int sharedCap = Math.Min(MaxSharedBytes, device.Accelerator.MaxSharedMemoryPerGroup);
        bool globalCosts = 4 * (baseFloats + (2L * groups)) > sharedCap;
        long sharedFloats = baseFloats + (globalCosts ? 0 : 2L * groups);
        if (4 * sharedFloats > sharedCap)
            throw new ArgumentException($"Viterbi: T = {t} with a {symbols}-entry table needs {4 * sharedFloats} bytes of shared memory, above {sharedCap}", nameof(t));
        int stepBytes = (int)(((((long)groups * bpBits) + 7) / 8 + 3) / 4 * 4);
        long perSlot = ((long)steps * stepBytes) + (globalCosts ? 8L * groups : 0);
        long resident = (long)device.Accelerator.NumMultiprocessors * Math.Max(1, device.Accelerator.MaxNumThreadsPerMultiprocessor / threads);
        long slots = Math.Clamp(memoryBudget / perSlot, 1, Math.Max(1, 4 * resident));
        var plan = new ViterbiPlan(l, k, v, t, threads, active, r, bpBits, symbols, globalCosts, (int)(4 * sharedFloats), stepBytes, (int)slots, false);
        return plan with { Interleaved = globalCosts && plan.CanInterleave(warp) };
    }

    /// <summary>
    /// Runs <paramref name="mode"/> on <paramref name="count"/> items. Sequences are rows of
    /// <paramref name="targets"/> [B × T]; for <see cref="ViterbiMode.OverlapCost"/> item i is (sequence i / G,
    /// overlap i mod G). Outputs: <paramref name="states"/> [B × N], <paramref name="reconstruction"/> [B × T],
    /// <paramref name="result"/> [items]: the MSE of the walk vs the targets, or for OverlapCost the constrained
    /// optimum's sum of squared errors. <paramref name="overlaps"/> [B] is read by FixedOverlap only.
    /// <paramref name="codeTable"/>: the code's table (any non-empty view for codes without one).
    /// </summary>
    public void Launch(
        ViterbiPlan plan, ViterbiWorkspace workspace, ViterbiMode mode, int count,
        ArrayView<float> targets, ArrayView<float> codeTable, ArrayView<int> overlaps,
        ArrayView<uint> states, ArrayView<float> reconstruction, ArrayView<float> result, AcceleratorStream? stream = null)
    {
        if (!ReferenceEquals(workspace.Plan, plan) && workspace.Plan != plan)
            throw new ArgumentException("Viterbi: the workspace was made for another plan", nameof(workspace));
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        if (plan.Interleaved && !plan.CanInterleave(device.WarpSize))
            throw new ArgumentException($"Viterbi: interleaved ownership needs every thread active and 32/Bb = {32 / plan.BackPointerBits} ≤ warp size {device.WarpSize}", nameof(plan));
        int steps = plan.Steps;
        long sequences = mode == ViterbiMode.OverlapCost ? (count + plan.Groups - 1) / plan.Groups : count;
        if (mode == ViterbiMode.OverlapCost && count % plan.Groups != 0)
            throw new ArgumentException($"Viterbi: OverlapCost needs count = sequences × G (G = {plan.Groups}), got {count}", nameof(count));
        Need(targets.Length, sequences * plan.T, "targets", $"[{sequences} × T = {plan.T}]");
        Need(codeTable.Length, 1, "codeTable", "at least one element");
        Need(result.Length, count, "result", $"[{count}]");
        if (mode is ViterbiMode.Plain or ViterbiMode.TwoPass or ViterbiMode.FixedOverlap)
        {
            Need(states.Length, sequences * steps, "states", $"[{sequences} × N = {steps}]");
            Need(reconstruction.Length, sequences * plan.T, "reconstruction", $"[{sequences} × T = {plan.T}]");
        }
        if (mode == ViterbiMode.FixedOverlap)
            Need(overlaps.Length, sequences, "overlaps", $"[{sequences}]");
        if (count == 0)
            return;
        stream ??= device.Accelerator.DefaultStream;

        int warps = plan.Threads / Math.Max(1, device.WarpSize);
        int xOff = 0;
        int eOff = xOff + plan.T;
        int stOff = eOff + (2 * plan.TableSymbols);
        int redOff = stOff + steps;
        int gmOff = redOff + (2 * warps) + 4;
        int v = plan.V;
        var p = new ViterbiParams(
            plan.L, plan.KV, plan.T, steps, plan.Groups, 1 << plan.KV, plan.GroupsPerThread, plan.BackPointerBits,
            plan.ActiveThreads, count, (int)mode, (plan.T / (2 * v)) * v, plan.TableSymbols, plan.GlobalCosts ? 1 : 0,
            plan.BackPointerStepBytes, plan.BackPointerSlotBytes, xOff, eOff, gmOff, stOff, redOff, warps, plan.Interleaved ? 1 : 0);
        int grid = (int)Math.Min(count, plan.Slots);
        var config = staticShared
            ? new KernelConfig(grid, plan.Threads)
            : new KernelConfig(grid, plan.Threads, SharedMemoryConfig.RequestDynamic<float>(plan.SharedBytes / 4));
        ArrayView<uint> bpWords = workspace.BackPointers.View;
        var bpBytes = bpWords.Cast<byte>();
        var kernel = kernels[((plan.TableSymbols > 0) ? 2 : 0) + (plan.GlobalCosts ? 1 : 0)].Value;
        kernel(stream, config, targets, codeTable, overlaps, states, reconstruction, result, bpWords, bpBytes, workspace.GlobalCosts.View, p);
    }

    private static void Need(long have, long need, string name, string shape)
    {
        if (have < need)
            throw new ArgumentException($"Viterbi: {name} has {have} elements, needs {shape} = {need}", name);
    }

    // ---------------------------------------------------------------------------------------------------------
    // Kernel. Every helper is inlined and addresses shared memory through the root dynamic view with integer
    // offsets, so the backends see shared (not generic) loads; where the group minima live is a type argument
    // (TStore), so no view is ever a phi of two address spaces.

    /// <summary>One group per item (persistent over items); see the class comment.</summary>
    internal static void Kernel<TC, TMode, TStore, TShared>(
        ArrayView<float> targets, ArrayView<float> codeTable, ArrayView<int> overlaps,
        ArrayView<uint> states, ArrayView<float> recon, ArrayView<float> result,
        ArrayView<uint> bpWords, ArrayView<byte> bpBytes, ArrayView<float> gmGlobal, ViterbiParams p)
        where TC : struct, ITrellisCode
        where TMode : struct, ICostMode
        where TStore : struct, IMinimaStore
        where TShared : struct, ISharedFloats
    {
        var sh = default(TShared).Get();
        var table = new DeviceTable(codeTable);
        int tid = Group.IdxX;
        int nt = Group.DimX;
        long bpBase = Grid.IdxX * p.BpSlotBytes;
        long gmBase = (long)Grid.IdxX * 2 * p.G;
        int v = default(TC).V;
        int ovSlot = p.RedOff + (2 * p.Warps) + 1;

        for (int item = Grid.IdxX; item < p.Count; item += Grid.DimX)
        {
            int b = p.Mode == (int)ViterbiMode.OverlapCost ? item / p.G : item;
            for (int i = tid; i < p.T; i += nt)
                sh[p.XOff + i] = targets[((long)b * p.T) + i];
            Group.Barrier();

            int ov = -1;
            if (p.Mode == (int)ViterbiMode.FixedOverlap)
                ov = overlaps[b];
            else if (p.Mode == (int)ViterbiMode.OverlapCost)
                ov = item - (b * p.G);
            else if (p.Mode == (int)ViterbiMode.TwoPass)
            {
                // Pass 1: unconstrained, on x rotated right by h; its state at step h/V fixes the overlap.
                Pass<TC, TMode, TStore>(sh, gmGlobal, gmBase, table, bpWords, bpBytes, bpBase, p.Rotation, -1, true, p);
                int g1 = FinalGroup<TStore>(sh, gmGlobal, gmBase, -1, bpBytes, bpBase, p);
                if (tid == 0)
                {
                    uint s = Traceback(sh, bpBytes, bpBase, g1, p.Rotation / v, p);
                    sh[ovSlot] = Interop.IntAsFloat(s >> p.KV);
                }
                Group.Barrier();
                ov = (int)Interop.FloatAsInt(sh[ovSlot]);
                Group.Barrier();
            }

            bool store = p.Mode != (int)ViterbiMode.OverlapCost;
            Pass<TC, TMode, TStore>(sh, gmGlobal, gmBase, table, bpWords, bpBytes, bpBase, 0, ov, store, p);
            if (!store)
            {
                if (tid == 0)
                    result[item] = LoadGm<TStore>(sh, gmGlobal, gmBase, p, ((p.N & 1) * p.G) + ov);
                Group.Barrier();
                continue;
            }

            int gF = FinalGroup<TStore>(sh, gmGlobal, gmBase, ov, bpBytes, bpBase, p);
            if (tid == 0)
                Traceback(sh, bpBytes, bpBase, gF, 0, p);
            Group.Barrier();

            float err = 0f;
            for (int i = tid; i < p.N; i += nt)
            {
                uint s = Interop.FloatAsInt(sh[p.StOff + i]);
                states[((long)b * p.N) + i] = s;
                Codes.Decode<TC, DeviceTable>(s, table, out float c0, out float c1);
                long o = ((long)b * p.T) + (i * v);
                float d0 = c0 - sh[p.XOff + (i * v)];
                err += d0 * d0;
                recon[o] = c0;
                if (v == 2)
                {
                    float d1 = c1 - sh[p.XOff + (i * v) + 1];
                    err += d1 * d1;
                    recon[o + 1] = c1;
                }
            }
            float sum = BlockSum(sh, err, p);
            if (tid == 0)
                result[b] = sum / p.T;
            Group.Barrier();
        }
    }

    /// <summary>Group minimum i (of the 2G double-buffered entries).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float LoadGm<TStore>(ArrayView<float> sh, ArrayView<float> global, long globalBase, ViterbiParams p, int i)
        where TStore : struct, IMinimaStore =>
        default(TStore).Global ? global[globalBase + i] : sh[p.GmOff + i];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreGm<TStore>(ArrayView<float> sh, ArrayView<float> global, long globalBase, ViterbiParams p, int i, float value)
        where TStore : struct, IMinimaStore
    {
        if (default(TStore).Global)
            global[globalBase + i] = value;
        else
            sh[p.GmOff + i] = value;
    }

    /// <summary>One forward pass over N steps. Targets are read as x[(i − rot) mod T]; ov ≥ 0 restricts the start
    /// states to s ≫ KV = ov. Leaves the final group minima in gm[(N mod 2)·G …].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Pass<TC, TMode, TStore>(
        ArrayView<float> sh, ArrayView<float> gmGlobal, long gmBase, DeviceTable table,
        ArrayView<uint> bpWords, ArrayView<byte> bpBytes, long bpBase, int rot, int ov, bool store, ViterbiParams p)
        where TC : struct, ITrellisCode
        where TMode : struct, ICostMode
        where TStore : struct, IMinimaStore
    {
        int tid = Group.IdxX;
        int nt = Group.DimX;
        bool useTable = default(TMode).Table;
        var code = default(TC);
        int v = code.V;
        for (int q = tid; q < p.G; q += nt)
            StoreGm<TStore>(sh, gmGlobal, gmBase, p, q, ov < 0 || q == ov ? 0f : float.PositiveInfinity);
        if (useTable)
            FillTable<TC>(sh, table, 0, rot, p);
        Group.Barrier();

        bool active = tid < p.Active;
        // Contiguous ownership (groups tid·R … tid·R + R − 1: a thread's back-pointers are whole bytes or words), or
        // interleaved (groups tid + r·Active: a warp's loads of gm_{t−1} are consecutive, which matters when gm lives
        // in global memory; back-pointer words are assembled with warp shuffles).
        bool interleaved = p.Interleaved != 0;
        int g0 = interleaved ? tid : tid * p.R;
        int gStride = interleaved ? p.Active : 1;
        int lanesPerWord = 32 / p.Bb;
        int top = p.L - p.KV;
        int kv = p.KV;
        int dCount = p.D;
        int rCount = p.R;
        int bb = p.Bb;
        for (int t = 0; t < p.N; t++)
        {
            int cur = t & 1;
            int prevBase = cur * p.G;
            int nextBase = (1 - cur) * p.G;
            int eBase = p.EOff + (cur * p.Symbols);
            float x0 = 0f, x1 = 0f;
            if (!useTable)
            {
                x0 = sh[p.XOff + (((t * v) + p.T - rot) % p.T)];
                if (v == 2)
                    x1 = sh[p.XOff + (((t * v) + 1 + p.T - rot) % p.T)];
            }
            if (active)
            {
                uint acc = 0;
                long stepByte = bpBase + ((long)t * p.BpStepBytes);
                for (int r = 0; r < rCount; r++)
                {
                    int g = g0 + (r * gStride);
                    float best = float.PositiveInfinity;
                    int arg = 0;
                    for (int d = 0; d < dCount; d++)
                    {
                        uint s = (uint)g | ((uint)d << top);
                        float c;
                        if (useTable)
                        {
                            c = sh[eBase + (int)code.Symbol(s)];
                        }
                        else
                        {
                            code.Value(code.Symbol(s), table, out float c0, out float c1);
                            float d0 = c0 - x0;
                            c = d0 * d0;
                            if (v == 2)
                            {
                                float d1 = c1 - x1;
                                c += d1 * d1;
                            }
                        }
                        c += LoadGm<TStore>(sh, gmGlobal, gmBase, p, prevBase + (int)(s >> kv));
                        bool better = c < best;
                        best = better ? c : best;
                        arg = better ? d : arg;
                    }
                    StoreGm<TStore>(sh, gmGlobal, gmBase, p, nextBase + g, best);
                    if (interleaved)
                    {
                        // 32/Bb neighbouring lanes hold one word's entries: OR them together, the first lane writes.
                        int lane = Warp.LaneIdx & (lanesPerWord - 1);
                        uint word = (uint)arg << (lane * bb);
                        for (int off = 1; off < lanesPerWord; off <<= 1)
                            word |= Warp.ShuffleXor(word, off);
                        if (store && lane == 0)
                            bpWords[(stepByte >> 2) + ((g * bb) >> 5)] = word;
                        continue;
                    }
                    // Bits relative to the thread's first group; when R·Bb ≥ 32 that group starts a word.
                    int rel = r * bb;
                    acc |= (uint)arg << (rel & 31);
                    if (((rel + bb) & 31) == 0)
                    {
                        if (store)
                            bpWords[(stepByte >> 2) + ((g * bb) >> 5)] = acc;
                        acc = 0;
                    }
                }
                int bits = rCount * bb;
                if (store && !interleaved && bits < 32)
                {
                    long first = stepByte + ((g0 * bb) >> 3);
                    for (int j = 0; j < (bits + 7) >> 3; j++)
                        bpBytes[first + j] = (byte)(acc >> (8 * j));
                }
            }
            if (useTable && t + 1 < p.N)
                FillTable<TC>(sh, table, t + 1, rot, p);
            if (default(TStore).Global)
                MemoryFence.GroupLevel();
            Group.Barrier();
        }
    }

    /// <summary>E[(t mod 2)·S + y] = ‖Value(y) − x_t‖² for every symbol y &lt; S.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void FillTable<TC>(ArrayView<float> sh, DeviceTable table, int t, int rot, ViterbiParams p)
        where TC : struct, ITrellisCode
    {
        var code = default(TC);
        int v = code.V;
        float x0 = sh[p.XOff + (((t * v) + p.T - rot) % p.T)];
        float x1 = v == 2 ? sh[p.XOff + (((t * v) + 1 + p.T - rot) % p.T)] : 0f;
        int off = p.EOff + ((t & 1) * p.Symbols);
        for (int y = Group.IdxX; y < p.Symbols; y += Group.DimX)
        {
            code.Value((uint)y, table, out float c0, out float c1);
            float d0 = c0 - x0;
            float e = d0 * d0;
            if (v == 2)
            {
                float d1 = c1 - x1;
                e += d1 * d1;
            }
            sh[off + y] = e;
        }
    }

    /// <summary>The final group: ov when the end is constrained, else the group of the best final state, ties to the
    /// smallest state g + d*·G (the first index of an argmin over all states, as the reference).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int FinalGroup<TStore>(ArrayView<float> sh, ArrayView<float> gmGlobal, long gmBase, int ov, ArrayView<byte> bpBytes, long bpBase, ViterbiParams p)
        where TStore : struct, IMinimaStore
    {
        if (ov >= 0)
            return ov;
        int fin = (p.N & 1) * p.G;
        float best = float.PositiveInfinity;
        int arg = int.MaxValue;
        if (Group.IdxX < p.Active)
        {
            bool interleaved = p.Interleaved != 0;
            int g0 = interleaved ? Group.IdxX : Group.IdxX * p.R;
            int gStride = interleaved ? p.Active : 1;
            for (int r = 0; r < p.R; r++)
            {
                int g = g0 + (r * gStride);
                float c = LoadGm<TStore>(sh, gmGlobal, gmBase, p, fin + g);
                if (c <= best)
                {
                    int s = g | (int)(BackPointer(bpBytes, bpBase, p.N - 1, g, p) << (p.L - p.KV));
                    if (c < best || s < arg)
                    {
                        best = c;
                        arg = s;
                    }
                }
            }
        }
        return BlockArgMin(sh, best, arg, p) & (p.G - 1);
    }

    /// <summary>Back-pointer (top KV bits of the best state) of group g at step t.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint BackPointer(ArrayView<byte> bpBytes, long bpBase, int t, int g, ViterbiParams p)
    {
        int bit = g * p.Bb;
        uint raw = bpBytes[bpBase + ((long)t * p.BpStepBytes) + (bit >> 3)];
        return (raw >> (bit & 7)) & ((1u << p.Bb) - 1u);
    }

    /// <summary>One thread: walks back from group gF at step N−1 down to step <paramref name="stop"/>, writing the
    /// states (as float bits) to the states slot of shared memory; returns the state at <paramref name="stop"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint Traceback(ArrayView<float> sh, ArrayView<byte> bpBytes, long bpBase, int gF, int stop, ViterbiParams p)
    {
        int top = p.L - p.KV;
        uint s = (uint)gF | (BackPointer(bpBytes, bpBase, p.N - 1, gF, p) << top);
        sh[p.StOff + p.N - 1] = Interop.IntAsFloat(s);
        for (int t = p.N - 1; t > stop; t--)
        {
            int q = (int)(s >> p.KV);
            s = (uint)q | (BackPointer(bpBytes, bpBase, t - 1, q, p) << top);
            sh[p.StOff + t - 1] = Interop.IntAsFloat(s);
        }
        return s;
    }

    /// <summary>Group-wide (value, index) argmin, ties to the smaller index; every thread gets the index.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int BlockArgMin(ArrayView<float> sh, float v, int i, ViterbiParams p)
    {
        for (int off = Warp.WarpSize / 2; off > 0; off >>= 1)
        {
            float ov = Warp.ShuffleXor(v, off);
            int oi = Warp.ShuffleXor(i, off);
            if (ov < v || (ov == v && oi < i))
            {
                v = ov;
                i = oi;
            }
        }
        int red = p.RedOff;
        int w = Group.IdxX / Warp.WarpSize;
        if (Warp.LaneIdx == 0)
        {
            sh[red + w] = v;
            sh[red + p.Warps + w] = Interop.IntAsFloat((uint)i);
        }
        Group.Barrier();
        if (Group.IdxX == 0)
        {
            float bv = sh[red];
            uint bi = Interop.FloatAsInt(sh[red + p.Warps]);
            for (int k = 1; k < p.Warps; k++)
            {
                float kv = sh[red + k];
                uint ki = Interop.FloatAsInt(sh[red + p.Warps + k]);
                if (kv < bv || (kv == bv && ki < bi))
                {
                    bv = kv;
                    bi = ki;
                }
            }
            sh[red + (2 * p.Warps)] = Interop.IntAsFloat(bi);
        }
        Group.Barrier();
        int result = (int)Interop.FloatAsInt(sh[red + (2 * p.Warps)]);
        Group.Barrier();
        return result;
    }

    /// <summary>Group-wide sum (fp32), returned to every thread.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float BlockSum(ArrayView<float> sh, float v, ViterbiParams p)
    {
        for (int off = Warp.WarpSize / 2; off > 0; off >>= 1)
            v += Warp.ShuffleXor(v, off);
        int red = p.RedOff;
        if (Warp.LaneIdx == 0)
            sh[red + (Group.IdxX / Warp.WarpSize)] = v;
        Group.Barrier();
        if (Group.IdxX == 0)
        {
            float s = 0f;
            for (int k = 0; k < p.Warps; k++)
                s += sh[red + k];
            sh[red + (2 * p.Warps)] = s;
        }
        Group.Barrier();
        float total = sh[red + (2 * p.Warps)];
        Group.Barrier();
        return total;
    }
}

/// <summary>Parameters of the Viterbi kernel (see <see cref="Viterbi{TCode}"/>); offsets are in floats of dynamic shared memory.</summary>
public readonly struct ViterbiParams(
    int l, int kv, int t, int n, int g, int d, int r, int bb, int active, int count, int mode, int rotation,
    int symbols, int globalGm, int bpStepBytes, long bpSlotBytes, int xOff, int eOff, int gmOff, int stOff, int redOff, int warps,
    int interleaved)
{
    public readonly int L = l;
    public readonly int KV = kv;
    public readonly int T = t;
    public readonly int N = n;
    public readonly int G = g;
    public readonly int D = d;
    public readonly int R = r;
    public readonly int Bb = bb;
    public readonly int Active = active;
    public readonly int Count = count;
    public readonly int Mode = mode;
    public readonly int Rotation = rotation;
    public readonly int Symbols = symbols;
    public readonly int GlobalGm = globalGm;
    public readonly int BpStepBytes = bpStepBytes;
    public readonly long BpSlotBytes = bpSlotBytes;
    public readonly int XOff = xOff;
    public readonly int EOff = eOff;
    public readonly int GmOff = gmOff;
    public readonly int StOff = stOff;
    public readonly int RedOff = redOff;
    public readonly int Warps = warps;
    public readonly int Interleaved = interleaved;
}
