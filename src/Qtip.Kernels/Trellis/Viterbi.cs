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
public sealed record ViterbiPlan(
    int L, int K, int V, int T, int Threads, int ActiveThreads, int GroupsPerThread, int BackPointerBits,
    int TableSymbols, bool GlobalCosts, int SharedBytes, int BackPointerStepBytes, int Slots)
{
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
/// <para><b>Ties</b> go to the smallest d, and in the final argmin to the smallest group.</para>
/// </summary>
public sealed class Viterbi<TCode> : IKernelSet<Viterbi<TCode>> where TCode : struct, ITrellisCode
{
    /// <summary>Largest error table kept per step in shared memory (entries).</summary>
    public const int MaxTableBits = 10;

    /// <summary>Shared memory a group may use: ILGPU 1.5.3 cannot opt in to more than 48 KB on CUDA.</summary>
    public const int MaxSharedBytes = 48 * 1024;

    private readonly QtipDevice device;
    private readonly Lazy<Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<uint>, ArrayView<float>, ArrayView<float>, ArrayView<uint>, ArrayView<byte>, ArrayView<float>, ViterbiParams>> table;
    private readonly Lazy<Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<uint>, ArrayView<float>, ArrayView<float>, ArrayView<uint>, ArrayView<byte>, ArrayView<float>, ViterbiParams>> direct;

    private Viterbi(QtipDevice device)
    {
        this.device = device;
        var acc = device.Accelerator;
        table = new(() => acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<uint>, ArrayView<float>, ArrayView<float>, ArrayView<uint>, ArrayView<byte>, ArrayView<float>, ViterbiParams>(Kernel<TCode, TableCost>));
        direct = new(() => acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<uint>, ArrayView<float>, ArrayView<float>, ArrayView<uint>, ArrayView<byte>, ArrayView<float>, ViterbiParams>(Kernel<TCode, DirectCost>));
    }

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
        return new ViterbiPlan(l, k, v, t, threads, active, r, bpBits, symbols, globalCosts, (int)(4 * sharedFloats), stepBytes, (int)slots);
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
            plan.BackPointerStepBytes, plan.BackPointerSlotBytes, xOff, eOff, gmOff, stOff, redOff, warps);
        int grid = (int)Math.Min(count, plan.Slots);
        var config = new KernelConfig(grid, plan.Threads, SharedMemoryConfig.RequestDynamic<float>(plan.SharedBytes / 4));
        ArrayView<uint> bpWords = workspace.BackPointers.View;
        var bpBytes = bpWords.Cast<byte>();
        var kernel = plan.TableSymbols > 0 ? table.Value : direct.Value;
        kernel(stream, config, targets, codeTable, overlaps, states, reconstruction, result, bpWords, bpBytes, workspace.GlobalCosts.View, p);
    }

    private static void Need(long have, long need, string name, string shape)
    {
        if (have < need)
            throw new ArgumentException($"Viterbi: {name} has {have} elements, needs {shape} = {need}", name);
    }

    // ---------------------------------------------------------------------------------------------------------
    // Kernel

    /// <summary>One group per item (persistent over items); see the class comment.</summary>
    internal static void Kernel<TC, TMode>(
        ArrayView<float> targets, ArrayView<float> codeTable, ArrayView<int> overlaps,
        ArrayView<uint> states, ArrayView<float> recon, ArrayView<float> result,
        ArrayView<uint> bpWords, ArrayView<byte> bpBytes, ArrayView<float> gmGlobal, ViterbiParams p)
        where TC : struct, ITrellisCode
        where TMode : struct, ICostMode
    {
        var shared = SharedMemory.GetDynamic<float>();
        var xs = shared.SubView(p.XOff, p.T);
        var st = shared.SubView(p.StOff, p.N);
        var red = shared.SubView(p.RedOff, (2 * p.Warps) + 4);
        var et = shared.SubView(p.EOff, Math.Max(1, 2 * p.Symbols));
        var gm = p.GlobalGm != 0
            ? gmGlobal.SubView((long)Grid.IdxX * 2 * p.G, 2L * p.G)
            : shared.SubView(p.GmOff, 2 * p.G);
        var table = new DeviceTable(codeTable);
        int tid = Group.IdxX;
        int nt = Group.DimX;
        long bpBase = Grid.IdxX * p.BpSlotBytes;
        int v = default(TC).V;

        for (int item = Grid.IdxX; item < p.Count; item += Grid.DimX)
        {
            int b = p.Mode == (int)ViterbiMode.OverlapCost ? item / p.G : item;
            for (int i = tid; i < p.T; i += nt)
                xs[i] = targets[((long)b * p.T) + i];
            Group.Barrier();

            int ov = -1;
            if (p.Mode == (int)ViterbiMode.FixedOverlap)
                ov = overlaps[b];
            else if (p.Mode == (int)ViterbiMode.OverlapCost)
                ov = item - (b * p.G);
            else if (p.Mode == (int)ViterbiMode.TwoPass)
            {
                // Pass 1: unconstrained, on x rotated right by h; its state at step h/V fixes the overlap.
                Pass<TC, TMode>(xs, et, gm, table, bpWords, bpBytes, bpBase, p.Rotation, -1, true, p);
                int g1 = FinalGroup(gm, -1, bpBytes, bpBase, red, p);
                int stop = p.Rotation / v;
                if (tid == 0)
                {
                    uint s = Traceback(bpBytes, bpBase, g1, stop, st, p);
                    red[(2 * p.Warps) + 1] = Interop.IntAsFloat(s >> p.KV);
                }
                Group.Barrier();
                ov = (int)Interop.FloatAsInt(red[(2 * p.Warps) + 1]);
                Group.Barrier();
            }

            bool store = p.Mode != (int)ViterbiMode.OverlapCost;
            Pass<TC, TMode>(xs, et, gm, table, bpWords, bpBytes, bpBase, 0, ov, store, p);
            if (!store)
            {
                if (tid == 0)
                    result[item] = gm[((p.N & 1) * p.G) + ov];
                Group.Barrier();
                continue;
            }

            int gF = FinalGroup(gm, ov, bpBytes, bpBase, red, p);
            if (tid == 0)
                Traceback(bpBytes, bpBase, gF, 0, st, p);
            Group.Barrier();

            float err = 0f;
            for (int i = tid; i < p.N; i += nt)
            {
                uint s = Interop.FloatAsInt(st[i]);
                states[((long)b * p.N) + i] = s;
                Codes.Decode<TC, DeviceTable>(s, table, out float c0, out float c1);
                long o = ((long)b * p.T) + (i * v);
                float d0 = c0 - xs[i * v];
                err += d0 * d0;
                recon[o] = c0;
                if (v == 2)
                {
                    float d1 = c1 - xs[(i * v) + 1];
                    err += d1 * d1;
                    recon[o + 1] = c1;
                }
            }
            float sum = BlockSum(err, red, p);
            if (tid == 0)
                result[b] = sum / p.T;
            Group.Barrier();
        }
    }

    /// <summary>One forward pass over N steps. Targets are read as x[(i − rot) mod T]; ov ≥ 0 restricts the start
    /// states to s ≫ KV = ov. Leaves the final group minima in gm[(N mod 2)·G …].</summary>
    private static void Pass<TC, TMode>(
        ArrayView<float> xs, ArrayView<float> et, ArrayView<float> gm, DeviceTable table,
        ArrayView<uint> bpWords, ArrayView<byte> bpBytes, long bpBase, int rot, int ov, bool store, ViterbiParams p)
        where TC : struct, ITrellisCode
        where TMode : struct, ICostMode
    {
        int tid = Group.IdxX;
        int nt = Group.DimX;
        bool useTable = default(TMode).Table;
        var code = default(TC);
        int v = code.V;
        for (int q = tid; q < p.G; q += nt)
            gm[q] = ov < 0 || q == ov ? 0f : float.PositiveInfinity;
        if (useTable)
            FillTable<TC>(xs, et, table, 0, rot, p);
        Group.Barrier();

        bool active = tid < p.Active;
        int g0 = tid * p.R;
        int top = p.L - p.KV;
        for (int t = 0; t < p.N; t++)
        {
            int cur = t & 1;
            var prev = gm.SubView(cur * p.G, p.G);
            var next = gm.SubView((1 - cur) * p.G, p.G);
            var e = et.SubView(cur * p.Symbols, Math.Max(1, p.Symbols));
            float x0 = 0f, x1 = 0f;
            if (!useTable)
            {
                x0 = xs[((t * v) + p.T - rot) % p.T];
                if (v == 2)
                    x1 = xs[((t * v) + 1 + p.T - rot) % p.T];
            }
            if (active)
            {
                uint acc = 0;
                long stepByte = bpBase + ((long)t * p.BpStepBytes);
                for (int r = 0; r < p.R; r++)
                {
                    int g = g0 + r;
                    float best = float.PositiveInfinity;
                    int arg = 0;
                    for (int d = 0; d < p.D; d++)
                    {
                        uint s = (uint)g | ((uint)d << top);
                        float c;
                        if (useTable)
                        {
                            c = e[(int)code.Symbol(s)];
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
                        c += prev[(int)(s >> p.KV)];
                        if (c < best)
                        {
                            best = c;
                            arg = d;
                        }
                    }
                    next[g] = best;
                    // Bits relative to the thread's first group; when R·Bb ≥ 32 that group starts a word.
                    int rel = r * p.Bb;
                    acc |= (uint)arg << (rel & 31);
                    if (((rel + p.Bb) & 31) == 0)
                    {
                        if (store)
                            bpWords[(stepByte >> 2) + ((g * p.Bb) >> 5)] = acc;
                        acc = 0;
                    }
                }
                int bits = p.R * p.Bb;
                if (store && bits < 32)
                {
                    long first = stepByte + ((g0 * p.Bb) >> 3);
                    for (int j = 0; j < (bits + 7) >> 3; j++)
                        bpBytes[first + j] = (byte)(acc >> (8 * j));
                }
            }
            if (useTable && t + 1 < p.N)
                FillTable<TC>(xs, et, table, t + 1, rot, p);
            if (p.GlobalGm != 0)
                MemoryFence.GroupLevel();
            Group.Barrier();
        }
    }

    /// <summary>et[(t mod 2)·S + y] = ‖Value(y) − x_t‖² for every symbol y &lt; S.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void FillTable<TC>(ArrayView<float> xs, ArrayView<float> et, DeviceTable table, int t, int rot, ViterbiParams p)
        where TC : struct, ITrellisCode
    {
        var code = default(TC);
        int v = code.V;
        float x0 = xs[((t * v) + p.T - rot) % p.T];
        float x1 = v == 2 ? xs[((t * v) + 1 + p.T - rot) % p.T] : 0f;
        int off = (t & 1) * p.Symbols;
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
            et[off + y] = e;
        }
    }

    /// <summary>The final group: ov when the end is constrained, else the group of the best final state, ties to the
    /// smallest state g + d*·G (the first index of an argmin over all states, as the reference).</summary>
    private static int FinalGroup(ArrayView<float> gm, int ov, ArrayView<byte> bpBytes, long bpBase, ArrayView<float> red, ViterbiParams p)
    {
        if (ov >= 0)
            return ov;
        var fin = gm.SubView((p.N & 1) * p.G, p.G);
        float best = float.PositiveInfinity;
        int arg = int.MaxValue;
        if (Group.IdxX < p.Active)
        {
            int g0 = Group.IdxX * p.R;
            for (int r = 0; r < p.R; r++)
            {
                int g = g0 + r;
                float c = fin[g];
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
        return BlockArgMin(best, arg, red, p) & (p.G - 1);
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
    /// states (as float bits) to st; returns the state at <paramref name="stop"/>.</summary>
    private static uint Traceback(ArrayView<byte> bpBytes, long bpBase, int gF, int stop, ArrayView<float> st, ViterbiParams p)
    {
        int top = p.L - p.KV;
        uint s = (uint)gF | (BackPointer(bpBytes, bpBase, p.N - 1, gF, p) << top);
        st[p.N - 1] = Interop.IntAsFloat(s);
        for (int t = p.N - 1; t > stop; t--)
        {
            int q = (int)(s >> p.KV);
            s = (uint)q | (BackPointer(bpBytes, bpBase, t - 1, q, p) << top);
            st[t - 1] = Interop.IntAsFloat(s);
        }
        return s;
    }

    /// <summary>Group-wide (value, index) argmin, ties to the smaller index; every thread gets the index.</summary>
    private static int BlockArgMin(float v, int i, ArrayView<float> red, ViterbiParams p)
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
        int w = Group.IdxX / Warp.WarpSize;
        if (Warp.LaneIdx == 0)
        {
            red[w] = v;
            red[p.Warps + w] = Interop.IntAsFloat((uint)i);
        }
        Group.Barrier();
        if (Group.IdxX == 0)
        {
            float bv = red[0];
            uint bi = Interop.FloatAsInt(red[p.Warps]);
            for (int k = 1; k < p.Warps; k++)
            {
                float kv = red[k];
                uint ki = Interop.FloatAsInt(red[p.Warps + k]);
                if (kv < bv || (kv == bv && ki < bi))
                {
                    bv = kv;
                    bi = ki;
                }
            }
            red[2 * p.Warps] = Interop.IntAsFloat(bi);
        }
        Group.Barrier();
        int result = (int)Interop.FloatAsInt(red[2 * p.Warps]);
        Group.Barrier();
        return result;
    }

    /// <summary>Group-wide sum (fp32), returned to every thread.</summary>
    private static float BlockSum(float v, ArrayView<float> red, ViterbiParams p)
    {
        for (int off = Warp.WarpSize / 2; off > 0; off >>= 1)
            v += Warp.ShuffleXor(v, off);
        if (Warp.LaneIdx == 0)
            red[Group.IdxX / Warp.WarpSize] = v;
        Group.Barrier();
        if (Group.IdxX == 0)
        {
            float s = 0f;
            for (int k = 0; k < p.Warps; k++)
                s += red[k];
            red[2 * p.Warps] = s;
        }
        Group.Barrier();
        float total = red[2 * p.Warps];
        Group.Barrier();
        return total;
    }
}

/// <summary>Parameters of the Viterbi kernel (see <see cref="Viterbi{TCode}"/>); offsets are in floats of dynamic shared memory.</summary>
public readonly struct ViterbiParams(
    int l, int kv, int t, int n, int g, int d, int r, int bb, int active, int count, int mode, int rotation,
    int symbols, int globalGm, int bpStepBytes, long bpSlotBytes, int xOff, int eOff, int gmOff, int stOff, int redOff, int warps)
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
}
