using System.Numerics;
using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;

namespace Qtip.Kernels.Trellis;

/// <summary>
/// Launch geometry and memory of the Viterbi kernel for one (L, K, V, T, code) on one device; see <see cref="Viterbi{TCode}.Plan"/>.
/// </summary>
/// <param name="L">State bits.</param>
/// <param name="K">Bits per weight.</param>
/// <param name="V">Values per state.</param>
/// <param name="T">Values per sequence.</param>
/// <param name="Threads">Threads per group (a multiple of the warp size when <paramref name="Shuffles"/>).</param>
/// <param name="ActiveThreads">Threads that own groups of states (the rest only join barriers and reductions).</param>
/// <param name="GroupsPerThread">R: state groups owned by one thread (whole butterflies of 2^KV for in-place layouts).</param>
/// <param name="BackPointerBits">Bits per stored back-pointer (KV rounded up to 1, 2, 4 or 8).</param>
/// <param name="TableSymbols">Entries of the per-step error table (0: direct evaluation).</param>
/// <param name="Minima">Where and how the group minima are kept.</param>
/// <param name="Shuffles">Group reductions start with warp shuffles (<see cref="WarpReduction"/>), else shared memory
/// only (<see cref="SharedReduction"/>).</param>
/// <param name="SharedBytes">Shared memory per group.</param>
/// <param name="BackPointerStepBytes">Bytes of back-pointers per step.</param>
/// <param name="Slots">Groups launched (persistent: each loops over items); scratch is allocated per slot.</param>
/// <param name="Interleaved">Thread t owns groups t + r·Threads instead of t·R + r (global minima only).</param>
public sealed record ViterbiPlan(
    int L, int K, int V, int T, int Threads, int ActiveThreads, int GroupsPerThread, int BackPointerBits,
    int TableSymbols, MinimaLayout Minima, bool Shuffles, int SharedBytes, int BackPointerStepBytes, int Slots, bool Interleaved)
{
    /// <summary>Whether interleaved ownership is possible: global minima, every thread active, and the 32/Bb lanes that
    /// share a back-pointer word inside one warp (shuffles) or one group (shared memory).</summary>
    public bool CanInterleave(int warpSize) =>
        Minima == MinimaLayout.Global && ActiveThreads == Threads && Threads * BackPointerBits >= 32
        && (!Shuffles || (warpSize * BackPointerBits >= 32 && Threads % warpSize == 0));

    public int KV => K * V;

    /// <summary>Trellis steps per sequence, N = T/V.</summary>
    public int Steps => T / V;

    /// <summary>State groups G = 2^(L−KV) (states sharing their low L−KV bits, i.e. one predecessor set).</summary>
    public int Groups => 1 << (L - KV);

    /// <summary>Back-pointer bytes per slot (one sequence in flight).</summary>
    public long BackPointerSlotBytes => (long)Steps * BackPointerStepBytes;

    /// <summary>Global group-minimum floats per slot (0 when they live in shared memory).</summary>
    public long GlobalCostFloatsPerSlot => Minima == MinimaLayout.Global ? 2L * Groups : 0;

    /// <summary>Device scratch bytes for all slots.</summary>
    public long ScratchBytes => Slots * (BackPointerSlotBytes + (4 * GlobalCostFloatsPerSlot));
}

/// <summary>Choices <see cref="Viterbi{TCode}.Plan"/> makes itself unless given here (tests, experiments).</summary>
/// <param name="Minima">The minima layout (it must fit, and in-place layouts need L ≥ 2·KV and KV ≤ 4).</param>
/// <param name="Shuffles">Warp-shuffle reductions (not on OpenCL) or shared-memory ones.</param>
/// <param name="Table">Per-step error table (codes with at most 2^10 symbols) or direct decoding.</param>
public sealed record ViterbiOverrides(MinimaLayout? Minima = null, bool? Shuffles = null, bool? Table = null);

/// <summary>Scratch for one <see cref="ViterbiPlan"/>: back-pointers and (when needed) global group minima, per slot.</summary>
public sealed class ViterbiWorkspace : IDisposable
{
    public ViterbiWorkspace(QtipDevice device, ViterbiPlan plan)
    {
        Plan = plan;
        long words = Math.Max(1, plan.Slots * plan.BackPointerSlotBytes / 4);
        BackPointers = device.Allocate1D<uint>(words);
        GlobalCosts = device.Allocate1D<float>(Math.Max(1, plan.Slots * plan.GlobalCostFloatsPerSlot));
        NoOverlaps = device.Allocate1D<int>(1);
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
/// <para><b>Butterflies.</b> With D = 2^KV and L ≥ 2·KV, the D groups j·D … j·D + D − 1 ("butterfly j") read exactly the D
/// predecessors x_d = j + d·2^(L−2KV): their states g + d'·G have s ≫ KV = x_{d'}. A butterfly therefore maps D minima
/// to D minima and no other butterfly reads them, so a thread that owns whole butterflies can overwrite its inputs
/// with its outputs: output j·D + o goes to the slot of input x_o. Minimum y then sits at slot rotr(y, KV·t mod
/// (L−KV)) after step t, and one buffer of G minima suffices (<see cref="MinimaLayout.InPlace"/>,
/// <see cref="MinimaLayout.FixedPoint"/>; each thread reads its D inputs once into local memory).</para>
///
/// <para><b>Work split.</b> One group of threads per sequence; each active thread owns R state groups and loops over
/// their 2^KV candidates itself (no cross-thread min). One barrier per step: double-buffered minima are read from one
/// half and written to the other, in-place minima are never read by another thread in the same step, and the
/// per-step error table of table-mode codes (1MAD: 1024 byte sums; HYB: 512 rows × 2 signs) is double-buffered:
/// step t reads table t while the group fills table t+1. Groups are persistent: the grid is
/// <see cref="ViterbiPlan.Slots"/> wide and each group loops over items, so scratch is bounded by the slot count,
/// not the batch size. Reductions across the group go through <see cref="IGroupReduction"/>: warp shuffles on CUDA,
/// shared memory on OpenCL (whose ILGPU backend cannot emit shuffles) and on the CPU accelerator.</para>
///
/// <para><b>Memory.</b> The first layout that fits is used: fp32 double-buffered in shared memory (2G floats next to
/// the targets and tables; 48 KB per group on CUDA in ILGPU 1.5.3: HYB K = 2…4, V = 1 K = 4 at L = 16); fp32 in place
/// (G floats: V = 1 K = 3 at L = 16); 16-bit fixed point in place (G halves: V = 1 K = 2 at L = 16); else a per-slot
/// global double buffer (V = 1 K = 1 at L = 16), where threads own interleaved groups so that a warp's loads are
/// consecutive. The CPU accelerator (1 MiB of shared memory per group, one thread per group) takes fp32 in place
/// first when D = 4, whose inputs stay in registers, else the fp32 double buffer. Back-pointers take KV bits rounded up to 1/2/4/8 (HYB K = 2: 4 bits × 4096 groups × 128 steps =
/// 256 KB per sequence, 32× less than int64 states), written as whole bytes or words per thread, and read back by one
/// thread for the traceback (N dependent loads; a few % of a pass).</para>
///
/// <para><b>Fixed point.</b> Costs are kept in units of Δ = 2^−12 relative to a base B_t: at step t every input is
/// reduced by m_t, the least minimum stored at step t−1 (found with one atomic min per warp while the step is
/// written, read after the barrier), so B_t = B_{t−1} + m_t, and every output is stored as round(value) clamped to
/// 65534 (16.0 above the base); 65535 marks an unreachable group (+∞). Rounding perturbs each group minimum by at most
/// Δ/2 per step, so the walk found is optimal for costs that differ from the true ones by at most N·Δ/2 along any walk:
/// its squared error exceeds the optimum by at most N·Δ (0.0625 at N = 256; measured on 240 L = 16 1MAD/3INST K = 2
/// sequences with float64 references: 238 exact, worst excess 8·10^−4). Minima more than 16 above the previous
/// step's least one are clamped (low): they are far from any optimal walk (its prefixes stayed within 6.3 of the
/// least one in that measurement). The cost reported by <see cref="ViterbiMode.OverlapCost"/> is (Σm_t + stored)·Δ.</para>
///
/// <para><b>Ties</b> go to the smallest d, and in the final argmin to the smallest state — the first index, as in the
/// reference, whose walks these reproduce bit for bit on the golden vectors (HYB has 64 states per 2-D point, so
/// exact ties are common there).</para>
/// </summary>
public sealed class Viterbi<TCode> : IKernelSet<Viterbi<TCode>> where TCode : struct, ITrellisCode
{
    /// <summary>Largest error table kept per step in shared memory (entries).</summary>
    public const int MaxTableBits = 10;

    /// <summary>Shared memory a group may use on CUDA and OpenCL: ILGPU 1.5.3 cannot opt in to more than 48 KB on CUDA.</summary>
    public const int MaxSharedBytes = 48 * 1024;

    /// <summary>Shared memory a group may use on the CPU accelerator (plain host memory): fp32 minima always fit.</summary>
    public const int CpuSharedBytes = 1 << 20;

    /// <summary>In-place layouts hold a butterfly's 2^KV inputs in local memory: KV ≤ 4.</summary>
    public const int MaxFanoutBits = 4;

    /// <summary>Fixed-point minima: stored value = cost · 2^12 (Δ = 2^−12).</summary>
    public const float FixedPointScale = 4096f;

    /// <summary>Largest finite fixed-point value (16.0 above the base); <see cref="Unreachable"/> is +∞.</summary>
    public const int FixedPointMax = 65534;

    /// <summary>Fixed-point code of an unreachable group.</summary>
    public const int Unreachable = 65535;

    /// <summary>Threads per group on the CPU accelerator: one. A barrier among simulated threads costs an OS-thread
    /// handoff (tens of µs on 2 cores), so each group runs one thread and the multiprocessors run groups side by side.</summary>
    public const int CpuThreads = 1;

    private const int Fanout = 1 << MaxFanoutBits;

    private readonly QtipDevice device;
    private readonly bool staticShared;

    /// <summary>[shuffles, table mode, layout] → the loaded kernel (each compiled on first use).</summary>
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
                .. Variants<LargeStaticSharedFloats, SharedReduction>(acc, spec),
                .. Variants<LargeStaticSharedFloats, WarpReduction>(acc, spec),
            ]
            :
            [
                .. Variants<DynamicSharedFloats, SharedReduction>(acc, spec),
                .. Variants<DynamicSharedFloats, WarpReduction>(acc, spec),
            ];
    }

    private static Lazy<Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<uint>, ArrayView<float>, ArrayView<float>, ArrayView<uint>, ArrayView<byte>, ArrayView<float>, ViterbiParams>>[] Variants<TShared, TReduce>(Accelerator acc, KernelSpecialization spec)
        where TShared : struct, ISharedFloats
        where TReduce : struct, IGroupReduction =>
    [
        new(() => Load(acc, Kernel<TCode, DirectCost, SharedMinima, TShared, TReduce>, spec)),
        new(() => Load(acc, Kernel<TCode, DirectCost, GlobalMinima, TShared, TReduce>, spec)),
        new(() => Load(acc, Kernel<TCode, DirectCost, InPlaceMinima, TShared, TReduce>, spec)),
        new(() => Load(acc, Kernel<TCode, DirectCost, FixedPointMinima, TShared, TReduce>, spec)),
        new(() => Load(acc, Kernel<TCode, TableCost, SharedMinima, TShared, TReduce>, spec)),
        new(() => Load(acc, Kernel<TCode, TableCost, GlobalMinima, TShared, TReduce>, spec)),
        new(() => Load(acc, Kernel<TCode, TableCost, InPlaceMinima, TShared, TReduce>, spec)),
        new(() => Load(acc, Kernel<TCode, TableCost, FixedPointMinima, TShared, TReduce>, spec)),
    ];

    private static Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<uint>, ArrayView<float>, ArrayView<float>, ArrayView<uint>, ArrayView<byte>, ArrayView<float>, ViterbiParams> Load(Accelerator acc, Action<ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<uint>, ArrayView<float>, ArrayView<float>, ArrayView<uint>, ArrayView<byte>, ArrayView<float>, ViterbiParams> kernel, KernelSpecialization spec) =>
        KernelLoader.Load<Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<uint>, ArrayView<float>, ArrayView<float>, ArrayView<uint>, ArrayView<byte>, ArrayView<float>, ViterbiParams>>(acc, kernel.Method, spec);

    public static Viterbi<TCode> Create(QtipDevice device) => new(device);

    /// <summary>Whether this device can run group reductions with warp shuffles (not on OpenCL: ILGPU 1.5.3 cannot emit them).</summary>
    public bool ShufflesSupported => device.Kind != BackendKind.OpenCL;

    /// <summary>
    /// Chooses the launch for (L, K, T) of this code. <paramref name="symbolBits"/>: the code's <see cref="ITrellisCode.SymbolBits"/>.
    /// <paramref name="memoryBudget"/> bounds the scratch (back-pointers and global minima) of all slots;
    /// <paramref name="maxThreads"/> caps the group size (0: the device's maximum, at most 1024; on the CPU accelerator
    /// <see cref="CpuThreads"/>). <paramref name="overrides"/> forces choices the plan would otherwise make: the
    /// minima layout (the first of Shared, InPlace, FixedPoint, Global that fits), the reduction strategy (shuffles on
    /// CUDA only) and the error table (used when the code has at most 2^10 symbols and a step has at least 4× as many
    /// states: below that, filling the table costs more than it saves — measured on the CPU accelerator, HYB L = 10:
    /// 405 vs 352 sequences/s).
    /// </summary>
    public ViterbiPlan Plan(int l, int k, int t, int symbolBits, long memoryBudget = 1L << 29, int maxThreads = 0, ViterbiOverrides? overrides = null)
    {
        int v = default(TCode).V;
        TrellisShape.Validate(l, k, v, t);
        ArgumentOutOfRangeException.ThrowIfLessThan(memoryBudget, 1, nameof(memoryBudget));
        ArgumentOutOfRangeException.ThrowIfNegative(maxThreads);
        var minima = overrides?.Minima;
        bool warpReduce = overrides?.Shuffles ?? device.Kind == BackendKind.Cuda;
        if (warpReduce && !ShufflesSupported)
            throw new ArgumentException("Viterbi: ILGPU 1.5.3's OpenCL backend cannot compile warp shuffles; use shared-memory reductions", nameof(overrides));
        if (overrides?.Table == true && symbolBits > MaxTableBits)
            throw new ArgumentException($"Viterbi: a code with 2^{symbolBits} symbols has no per-step error table (at most 2^{MaxTableBits})", nameof(overrides));
        int kv = k * v;
        int groups = 1 << (l - kv);
        int steps = t / v;
        int bpBits = kv <= 1 ? 1 : kv <= 2 ? 2 : kv <= 4 ? 4 : 8;
        int minR = Math.Max(1, 8 / bpBits);
        int warp = Math.Max(1, device.WarpSize);
        int unit = warpReduce ? warp : 1;
        int cap = maxThreads > 0 ? Math.Min(device.MaxGroupSize, maxThreads)
            : device.Kind == BackendKind.Cpu ? CpuThreads : device.MaxGroupSize;
        cap = Math.Max(unit, 1 << BitOperations.Log2((uint)Math.Max(1, cap)));
        bool useTable = overrides?.Table ?? (symbolBits <= MaxTableBits && l >= symbolBits + 2);
        int symbols = useTable ? 1 << symbolBits : 0;
        long sharedCap = device.Kind == BackendKind.Cpu ? CpuSharedBytes : Math.Min(MaxSharedBytes, device.Accelerator.MaxSharedMemoryPerGroup);
        bool butterflies = l >= 2 * kv && kv <= MaxFanoutBits;
        // On the CPU accelerator the in-place layout with D = 4 (inputs in registers) saves a memory access per state
        // (1MAD K = 2, L = 16: 3.2 → 4.4 sequences/s); other fan-outs read their inputs from local memory, slower than
        // the double buffer there (HYB L = 12: 77 vs 118).
        MinimaLayout[] layouts = minima is { } forced ? [forced]
            : device.Kind == BackendKind.Cpu && butterflies && kv == 2 ? [MinimaLayout.InPlace, MinimaLayout.Shared, MinimaLayout.FixedPoint, MinimaLayout.Global]
            : [MinimaLayout.Shared, MinimaLayout.InPlace, MinimaLayout.FixedPoint, MinimaLayout.Global];
        foreach (var layout in layouts)
        {
            bool inPlace = layout is MinimaLayout.InPlace or MinimaLayout.FixedPoint;
            if (inPlace && !butterflies)
            {
                if (minima is not null)
                    throw new ArgumentException($"Viterbi: the {layout} layout needs L ≥ 2·KV and KV ≤ {MaxFanoutBits} (L = {l}, KV = {kv})", nameof(overrides));
                continue;
            }
            int rMin = inPlace ? Math.Max(minR, 1 << kv) : minR;
            int active = Math.Min(cap, Math.Max(1, groups / rMin));
            int threads = Math.Max(unit, active);
            int r = groups / active;
            int redSlots = warpReduce ? WarpReduction.Slots(threads, warp) : SharedReduction.Slots(threads);
            long sharedFloats = SharedFloats(t, symbols, steps, redSlots, groups, layout);
            if (4 * sharedFloats > sharedCap)
            {
                if (minima is not null || layout == MinimaLayout.Global)
                    throw new ArgumentException($"Viterbi: T = {t} with a {symbols}-entry table and {layout} minima needs {4 * sharedFloats} bytes of shared memory, above {sharedCap}", minima is null ? nameof(t) : nameof(overrides));
                continue;
            }
            int stepBytes = (int)(((((long)groups * bpBits) + 7) / 8 + 3) / 4 * 4);
            long perSlot = ((long)steps * stepBytes) + (layout == MinimaLayout.Global ? 8L * groups : 0);
            // Groups in flight at once: per multiprocessor, as many as its threads hold on a GPU; one on the CPU
            // accelerator, which runs a multiprocessor's groups one after another (more slots would only add scratch).
            long resident = (long)device.Accelerator.NumMultiprocessors
                * (device.Kind == BackendKind.Cpu ? 1 : Math.Max(1, device.Accelerator.MaxNumThreadsPerMultiprocessor / threads));
            long slots = Math.Clamp(memoryBudget / perSlot, 1, Math.Max(1, 4 * resident));
            var plan = new ViterbiPlan(l, k, v, t, threads, active, r, bpBits, symbols, layout, warpReduce, (int)(4 * sharedFloats), stepBytes, (int)slots, false);
            // Interleaving pays where a warp's global loads coalesce and shuffles assemble the back-pointer words.
            return plan with { Interleaved = layout == MinimaLayout.Global && warpReduce && plan.CanInterleave(warp) };
        }
        throw new InvalidOperationException("Viterbi: the global layout always fits or throws");
    }

    /// <summary>Shared floats of a group: targets, two error tables, the walk, the reduction scratch, the minima.</summary>
    private static long SharedFloats(int t, int symbols, int steps, int redSlots, int groups, MinimaLayout layout) =>
        t + (2L * symbols) + steps + (2L * redSlots) + 8 + layout switch
        {
            MinimaLayout.Shared => 2L * groups,
            MinimaLayout.InPlace => groups,
            MinimaLayout.FixedPoint => groups / 2,
            _ => 0,
        };

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
        CheckPlan(plan);
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

        int redSlots = plan.Shuffles ? WarpReduction.Slots(plan.Threads, device.WarpSize) : SharedReduction.Slots(plan.Threads);
        int xOff = 0;
        int eOff = xOff + plan.T;
        int stOff = eOff + (2 * plan.TableSymbols);
        int redOff = stOff + steps;
        int gmOff = redOff + (2 * redSlots) + 8;
        int v = plan.V;
        var p = new ViterbiParams(
            plan.L, plan.KV, plan.T, steps, plan.Groups, 1 << plan.KV, plan.GroupsPerThread, plan.BackPointerBits,
            plan.ActiveThreads, count, (int)mode, (plan.T / (2 * v)) * v, plan.TableSymbols,
            plan.BackPointerStepBytes, plan.BackPointerSlotBytes, xOff, eOff, gmOff, stOff, redOff, redSlots, plan.Interleaved ? 1 : 0);
        int grid = (int)Math.Min(count, plan.Slots);
        var config = staticShared
            ? new KernelConfig(grid, plan.Threads)
            : new KernelConfig(grid, plan.Threads, SharedMemoryConfig.RequestDynamic<float>(plan.SharedBytes / 4));
        ArrayView<uint> bpWords = workspace.BackPointers.View;
        var bpBytes = bpWords.Cast<byte>();
        var kernel = kernels[((plan.Shuffles ? 1 : 0) * 8) + ((plan.TableSymbols > 0 ? 1 : 0) * 4) + (int)plan.Minima].Value;
        kernel(stream, config, targets, codeTable, overlaps, states, reconstruction, result, bpWords, bpBytes, workspace.GlobalCosts.View, p);
    }

    /// <summary>The invariants the kernel relies on (a plan edited with <c>with</c> must still satisfy them).</summary>
    private void CheckPlan(ViterbiPlan plan)
    {
        int warp = Math.Max(1, device.WarpSize);
        if (plan.Shuffles && !ShufflesSupported)
            throw new ArgumentException("Viterbi: this plan reduces with warp shuffles, which ILGPU 1.5.3 cannot compile for OpenCL", nameof(plan));
        if (plan.Threads < 1 || plan.Threads > device.MaxGroupSize || (plan.Shuffles && plan.Threads % warp != 0))
            throw new ArgumentException($"Viterbi: {plan.Threads} threads per group is not possible here (at most {device.MaxGroupSize}{(plan.Shuffles ? $", a multiple of the warp size {warp}" : "")})", nameof(plan));
        if (plan.ActiveThreads < 1 || plan.ActiveThreads > plan.Threads || (long)plan.ActiveThreads * plan.GroupsPerThread != plan.Groups)
            throw new ArgumentException($"Viterbi: {plan.ActiveThreads} active threads × R = {plan.GroupsPerThread} must cover the {plan.Groups} groups", nameof(plan));
        bool inPlace = plan.Minima is MinimaLayout.InPlace or MinimaLayout.FixedPoint;
        if (inPlace && (plan.L < 2 * plan.KV || plan.KV > MaxFanoutBits || plan.GroupsPerThread % (1 << plan.KV) != 0))
            throw new ArgumentException($"Viterbi: in-place minima need L ≥ 2·KV, KV ≤ {MaxFanoutBits} and whole butterflies per thread (R = {plan.GroupsPerThread}, KV = {plan.KV})", nameof(plan));
        if (plan.Interleaved && !plan.CanInterleave(warp))
            throw new ArgumentException($"Viterbi: interleaved ownership needs global minima, every thread active and 32/Bb = {32 / plan.BackPointerBits} lanes within a warp of {warp}", nameof(plan));
        int redSlots = plan.Shuffles ? WarpReduction.Slots(plan.Threads, warp) : SharedReduction.Slots(plan.Threads);
        long need = 4 * SharedFloats(plan.T, plan.TableSymbols, plan.Steps, redSlots, plan.Groups, plan.Minima);
        long capacity = staticShared ? 4L * LargeStaticSharedFloats.Capacity : device.Kind == BackendKind.Cpu ? CpuSharedBytes : MaxSharedBytes;
        if (plan.SharedBytes < need || plan.SharedBytes > capacity)
            throw new ArgumentException($"Viterbi: the plan reserves {plan.SharedBytes} B of shared memory; it needs {need} B and may use {capacity} B", nameof(plan));
    }

    private static void Need(long have, long need, string name, string shape)
    {
        if (have < need)
            throw new ArgumentException($"Viterbi: {name} has {have} elements, needs {shape} = {need}", name);
    }

    // ---------------------------------------------------------------------------------------------------------
    // Kernel. Every helper is inlined and addresses shared memory through the root view with integer offsets, so the
    // backends see shared (not generic) loads; where and how the group minima live is a type argument (TStore), so no
    // view is ever a phi of two address spaces.

    /// <summary>One group per item (persistent over items); see the class comment.</summary>
    internal static void Kernel<TC, TMode, TStore, TShared, TReduce>(
        ArrayView<float> targets, ArrayView<float> codeTable, ArrayView<int> overlaps,
        ArrayView<uint> states, ArrayView<float> recon, ArrayView<float> result,
        ArrayView<uint> bpWords, ArrayView<byte> bpBytes, ArrayView<float> gmGlobal, ViterbiParams p)
        where TC : struct, ITrellisCode
        where TMode : struct, ICostMode
        where TStore : struct, IMinimaStore
        where TShared : struct, ISharedFloats
        where TReduce : struct, IGroupReduction
    {
        var sh = default(TShared).Get();
        // A butterfly's inputs (in-place layouts only; unused otherwise).
        var inputs = LocalMemory.Allocate<float>(Fanout);
        var table = new DeviceTable(codeTable);
        int tid = Group.IdxX;
        int nt = Group.DimX;
        long bpBase = Grid.IdxX * p.BpSlotBytes;
        long gmBase = (long)Grid.IdxX * 2 * p.G;
        int v = default(TC).V;
        int ovSlot = p.RedOff + (2 * p.RedSlots) + 1;

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
                Pass<TC, TMode, TStore, TReduce>(sh, inputs, gmGlobal, gmBase, table, bpWords, bpBytes, bpBase, p.Rotation, -1, true, p);
                int g1 = FinalGroup<TStore, TReduce>(sh, gmGlobal, gmBase, -1, bpBytes, bpBase, p);
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
            int offset = Pass<TC, TMode, TStore, TReduce>(sh, inputs, gmGlobal, gmBase, table, bpWords, bpBytes, bpBase, 0, ov, store, p);
            if (!store)
            {
                if (tid == 0)
                {
                    float c = FinalValue<TStore>(sh, gmGlobal, gmBase, p, ov);
                    result[item] = default(TStore).Fixed ? (offset + c) / FixedPointScale : c;
                }
                Group.Barrier();
                continue;
            }

            int gF = FinalGroup<TStore, TReduce>(sh, gmGlobal, gmBase, ov, bpBytes, bpBase, p);
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
            float sum = default(TReduce).Sum(sh, p.RedOff, p.RedSlots, err);
            if (tid == 0)
                result[b] = sum / p.T;
            Group.Barrier();
        }
    }

    /// <summary>One forward pass over N steps. Targets are read as x[(i − rot) mod T]; ov ≥ 0 restricts the start
    /// states to s ≫ KV = ov. Leaves the final minima where <see cref="FinalValue"/> finds them and returns the
    /// fixed-point base Σm_t (0 for fp32 layouts).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Pass<TC, TMode, TStore, TReduce>(
        ArrayView<float> sh, ArrayView<float> inputs, ArrayView<float> gmGlobal, long gmBase, DeviceTable table,
        ArrayView<uint> bpWords, ArrayView<byte> bpBytes, long bpBase, int rot, int ov, bool store, ViterbiParams p)
        where TC : struct, ITrellisCode
        where TMode : struct, ICostMode
        where TStore : struct, IMinimaStore
        where TReduce : struct, IGroupReduction
    {
        if (default(TStore).InPlace)
            return PassInPlace<TC, TMode, TStore, TReduce>(sh, inputs, table, bpWords, bpBytes, bpBase, rot, ov, store, p);
        PassGrouped<TC, TMode, TStore, TReduce>(sh, gmGlobal, gmBase, table, bpWords, bpBytes, bpBase, rot, ov, store, p);
        return 0;
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

    /// <summary>Double-buffered layouts: thread t owns R groups (contiguous, or interleaved with global minima) and
    /// writes their minima to the other half of the buffer.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PassGrouped<TC, TMode, TStore, TReduce>(
        ArrayView<float> sh, ArrayView<float> gmGlobal, long gmBase, DeviceTable table,
        ArrayView<uint> bpWords, ArrayView<byte> bpBytes, long bpBase, int rot, int ov, bool store, ViterbiParams p)
        where TC : struct, ITrellisCode
        where TMode : struct, ICostMode
        where TStore : struct, IMinimaStore
        where TReduce : struct, IGroupReduction
    {
        int tid = Group.IdxX;
        int nt = Group.DimX;
        bool useTable = default(TMode).Table;
        var code = default(TC);
        int v = code.V;
        for (int q = tid; q < p.G; q += nt)
            StoreGm<TStore>(sh, gmGlobal, gmBase, p, q, ov < 0 || q == ov ? 0f : float.PositiveInfinity);
        if (useTable)
            FillTable<TC>(sh, table, 0, rot, false, p);
        Group.Barrier();

        bool active = tid < p.Active;
        // Contiguous ownership (groups tid·R … tid·R + R − 1: a thread's back-pointers are whole bytes or words), or
        // interleaved (groups tid + r·Active: a warp's loads of gm_{t−1} are consecutive, which matters when gm lives
        // in global memory; back-pointer words are assembled across 32/Bb neighbouring threads).
        bool interleaved = p.Interleaved != 0;
        int g0 = interleaved ? tid : tid * p.R;
        int gStride = interleaved ? p.Active : 1;
        int lanesPerWord = 32 / p.Bb;
        int top = p.L - p.KV;
        int kv = p.KV;
        int dCount = p.D;
        int rCount = p.R;
        int bb = p.Bb;
        var bits = sh.Cast<uint>();
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
                        float c = Error<TC, TMode>(code, table, sh, eBase, s, x0, x1);
                        c += LoadGm<TStore>(sh, gmGlobal, gmBase, p, prevBase + (int)(s >> kv));
                        bool better = c < best;
                        best = better ? c : best;
                        arg = better ? d : arg;
                    }
                    StoreGm<TStore>(sh, gmGlobal, gmBase, p, nextBase + g, best);
                    if (interleaved)
                    {
                        // 32/Bb neighbouring threads hold one word's entries: OR them together, the first one writes.
                        int lane = tid & (lanesPerWord - 1);
                        uint word = default(TReduce).OrLanes(bits, p.RedOff, (uint)arg << (lane * bb), lanesPerWord);
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
                if (store && !interleaved)
                    FlushBytes(bpBytes, stepByte, g0, acc, p);
            }
            if (useTable && t + 1 < p.N)
                FillTable<TC>(sh, table, t + 1, rot, false, p);
            if (default(TStore).Global)
                MemoryFence.GroupLevel();
            Group.Barrier();
        }
    }

    /// <summary>In-place layouts: thread t owns butterflies t·R/D … (its R groups), reads each butterfly's D inputs
    /// into local memory and overwrites them with its D outputs. Fixed point: see the class comment.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int PassInPlace<TC, TMode, TStore, TReduce>(
        ArrayView<float> sh, ArrayView<float> inputs, DeviceTable table,
        ArrayView<uint> bpWords, ArrayView<byte> bpBytes, long bpBase, int rot, int ov, bool store, ViterbiParams p)
        where TC : struct, ITrellisCode
        where TMode : struct, ICostMode
        where TStore : struct, IMinimaStore
        where TReduce : struct, IGroupReduction
    {
        int tid = Group.IdxX;
        int nt = Group.DimX;
        bool useTable = default(TMode).Table;
        bool fix = default(TStore).Fixed;
        var code = default(TC);
        int v = code.V;
        var halves = sh.Cast<ushort>();
        var cells = sh.Cast<int>();
        int minCell = p.RedOff + (2 * p.RedSlots) + 2;
        int n = p.L - p.KV;
        int kv = p.KV;
        uint mask = (uint)p.G - 1u;
        uint inStride = 1u << (n - kv);
        for (int q = tid; q < p.G; q += nt)
            StoreSlot<TStore>(sh, halves, p, q, ov < 0 || q == ov ? 0f : float.PositiveInfinity);
        if (fix && tid == 0)
            cells[minCell] = int.MaxValue;
        if (useTable)
            FillTable<TC>(sh, table, 0, rot, fix, p);
        Group.Barrier();

        bool active = tid < p.Active;
        int perThread = p.R >> kv;
        int j0 = tid * perThread;
        int g0 = tid * p.R;
        int dCount = p.D;
        bool four = dCount == 4;
        int bb = p.Bb;
        uint groups = (uint)p.G;
        int offset = 0;
        int rho = 0;
        for (int t = 0; t < p.N; t++)
        {
            // Fixed point: m = least value stored at step t − 1 (0 before the first step), the new base's increment.
            int m = 0;
            if (fix)
            {
                if (t > 0)
                    m = cells[minCell + ((t + 2) % 3)];
                offset += m;
                if (tid == 0)
                    cells[minCell + ((t + 1) % 3)] = int.MaxValue;
            }
            int eBase = p.EOff + ((t & 1) * p.Symbols);
            float x0 = 0f, x1 = 0f;
            if (!useTable)
            {
                x0 = sh[p.XOff + (((t * v) + p.T - rot) % p.T)];
                if (v == 2)
                    x1 = sh[p.XOff + (((t * v) + 1 + p.T - rot) % p.T)];
            }
            int least = int.MaxValue;
            if (active)
            {
                uint acc = 0;
                long stepByte = bpBase + ((long)t * p.BpStepBytes);
                int r = 0;
                for (int bf = 0; bf < perThread; bf++)
                {
                    uint j = (uint)(j0 + bf);
                    // D = 4 (V = 1, K = 2): the inputs live in registers and the four candidates of an output are
                    // independent expressions; other fan-outs keep them in local memory.
                    float in0 = 0f, in1 = 0f, in2 = 0f, in3 = 0f;
                    if (four)
                    {
                        in0 = LoadSlot<TStore>(sh, halves, p, Rotr(j, rho, n, mask), m);
                        in1 = LoadSlot<TStore>(sh, halves, p, Rotr(j + inStride, rho, n, mask), m);
                        in2 = LoadSlot<TStore>(sh, halves, p, Rotr(j + (2 * inStride), rho, n, mask), m);
                        in3 = LoadSlot<TStore>(sh, halves, p, Rotr(j + (3 * inStride), rho, n, mask), m);
                    }
                    else
                    {
                        for (int d = 0; d < dCount; d++)
                            inputs[d] = LoadSlot<TStore>(sh, halves, p, Rotr(j + ((uint)d * inStride), rho, n, mask), m);
                    }
                    for (int o = 0; o < dCount; o++)
                    {
                        uint y = (j << kv) | (uint)o;
                        float best;
                        int arg;
                        if (four)
                        {
                            float c0 = Cost<TC, TMode, TStore>(code, table, sh, eBase, y, x0, x1) + in0;
                            float c1 = Cost<TC, TMode, TStore>(code, table, sh, eBase, y + groups, x0, x1) + in1;
                            float c2 = Cost<TC, TMode, TStore>(code, table, sh, eBase, y + (2 * groups), x0, x1) + in2;
                            float c3 = Cost<TC, TMode, TStore>(code, table, sh, eBase, y + (3 * groups), x0, x1) + in3;
                            // Ties to the smallest d, as the loop below.
                            best = c0;
                            arg = 0;
                            bool better = c1 < best;
                            best = better ? c1 : best;
                            arg = better ? 1 : arg;
                            better = c2 < best;
                            best = better ? c2 : best;
                            arg = better ? 2 : arg;
                            better = c3 < best;
                            best = better ? c3 : best;
                            arg = better ? 3 : arg;
                        }
                        else
                        {
                            best = float.PositiveInfinity;
                            arg = 0;
                            uint s = y;
                            for (int d = 0; d < dCount; d++)
                            {
                                float c = Cost<TC, TMode, TStore>(code, table, sh, eBase, s, x0, x1) + inputs[d];
                                bool better = c < best;
                                best = better ? c : best;
                                arg = better ? d : arg;
                                s += groups;
                            }
                        }
                        int slot = (int)Rotr(j + ((uint)o * inStride), rho, n, mask);
                        if (fix)
                        {
                            // Round half up, clamp finite values to FixedPointMax, +∞ to Unreachable (branch-free).
                            int q = (int)Math.Min(best + 0.5f, FixedPointMax);
                            q = best == float.PositiveInfinity ? Unreachable : q;
                            least = Math.Min(least, q);
                            halves[(2 * p.GmOff) + slot] = (ushort)q;
                        }
                        else
                        {
                            sh[p.GmOff + slot] = best;
                        }
                        int rel = r * bb;
                        acc |= (uint)arg << (rel & 31);
                        if (((rel + bb) & 31) == 0)
                        {
                            if (store)
                                bpWords[(stepByte >> 2) + (((int)y * bb) >> 5)] = acc;
                            acc = 0;
                        }
                        r++;
                    }
                }
                if (store)
                    FlushBytes(bpBytes, stepByte, g0, acc, p);
            }
            if (fix)
                default(TReduce).MinInto(cells, minCell + (t % 3), least);
            if (useTable && t + 1 < p.N)
                FillTable<TC>(sh, table, t + 1, rot, fix, p);
            Group.Barrier();
            rho += kv;
            if (rho >= n)
                rho -= n;
        }
        return offset;
    }

    /// <summary>‖Value(s) − x_t‖²: a lookup in this step's error table, or decoded (x0, x1 = the step's targets).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Error<TC, TMode>(TC code, DeviceTable table, ArrayView<float> sh, int eBase, uint s, float x0, float x1)
        where TC : struct, ITrellisCode
        where TMode : struct, ICostMode
    {
        if (default(TMode).Table)
            return sh[eBase + (int)code.Symbol(s)];
        code.Value(code.Symbol(s), table, out float c0, out float c1);
        float d0 = c0 - x0;
        float e = d0 * d0;
        if (code.V == 2)
        {
            float d1 = c1 - x1;
            e += d1 * d1;
        }
        return e;
    }

    /// <summary>In-place layouts: the error of state s in the units of the minima (fixed point: 2^12 per unit of squared error).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Cost<TC, TMode, TStore>(TC code, DeviceTable table, ArrayView<float> sh, int eBase, uint s, float x0, float x1)
        where TC : struct, ITrellisCode
        where TMode : struct, ICostMode
        where TStore : struct, IMinimaStore
    {
        float e = Error<TC, TMode>(code, table, sh, eBase, s, x0, x1);
        // Table entries are scaled when the table is filled.
        return default(TStore).Fixed && !default(TMode).Table ? e * FixedPointScale : e;
    }

    /// <summary>Contiguous ownership with R·Bb &lt; 32: the thread's back-pointers of this step are whole bytes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void FlushBytes(ArrayView<byte> bpBytes, long stepByte, int g0, uint acc, ViterbiParams p)
    {
        int bits = p.R * p.Bb;
        if (bits >= 32)
            return;
        long first = stepByte + ((g0 * p.Bb) >> 3);
        for (int j = 0; j < (bits + 7) >> 3; j++)
            bpBytes[first + j] = (byte)(acc >> (8 * j));
    }

    /// <summary>Rotates the low n bits of x right by rho.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint Rotr(uint x, int rho, int n, uint mask) => ((x >> rho) | (x << (n - rho))) & mask;

    /// <summary>In-place layouts: a butterfly input, relative to the new base (fixed point: minus m; +∞ when unreachable).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float LoadSlot<TStore>(ArrayView<float> sh, ArrayView<ushort> halves, ViterbiParams p, uint slot, int m)
        where TStore : struct, IMinimaStore
    {
        if (!default(TStore).Fixed)
            return sh[p.GmOff + (int)slot];
        int u = halves[(2 * p.GmOff) + (int)slot];
        return u == Unreachable ? float.PositiveInfinity : u - m;
    }

    /// <summary>In-place layouts: the start value of slot q (0 or +∞).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreSlot<TStore>(ArrayView<float> sh, ArrayView<ushort> halves, ViterbiParams p, int q, float value)
        where TStore : struct, IMinimaStore
    {
        if (default(TStore).Fixed)
            halves[(2 * p.GmOff) + q] = (ushort)(value == 0f ? 0 : Unreachable);
        else
            sh[p.GmOff + q] = value;
    }

    /// <summary>The minimum of group g after the last step, comparable across groups (fixed point: relative to the base).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float FinalValue<TStore>(ArrayView<float> sh, ArrayView<float> gmGlobal, long gmBase, ViterbiParams p, int g)
        where TStore : struct, IMinimaStore
    {
        if (!default(TStore).InPlace)
            return LoadGm<TStore>(sh, gmGlobal, gmBase, p, ((p.N & 1) * p.G) + g);
        int n = p.L - p.KV;
        uint slot = Rotr((uint)g, p.KV * p.N % n, n, (uint)p.G - 1u);
        return LoadSlot<TStore>(sh, sh.Cast<ushort>(), p, slot, 0);
    }

    /// <summary>E[(t mod 2)·S + y] = ‖Value(y) − x_t‖² for every symbol y &lt; S (times 2^12 when <paramref name="scaled"/>: fixed point).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void FillTable<TC>(ArrayView<float> sh, DeviceTable table, int t, int rot, bool scaled, ViterbiParams p)
        where TC : struct, ITrellisCode
    {
        var code = default(TC);
        int v = code.V;
        float x0 = sh[p.XOff + (((t * v) + p.T - rot) % p.T)];
        float x1 = v == 2 ? sh[p.XOff + (((t * v) + 1 + p.T - rot) % p.T)] : 0f;
        int off = p.EOff + ((t & 1) * p.Symbols);
        // Group.IdxX/DimX read once: on the CPU accelerator each read is a thread-static lookup.
        int nt = Group.DimX;
        for (int y = Group.IdxX; y < p.Symbols; y += nt)
        {
            code.Value((uint)y, table, out float c0, out float c1);
            float d0 = c0 - x0;
            float e = d0 * d0;
            if (v == 2)
            {
                float d1 = c1 - x1;
                e += d1 * d1;
            }
            sh[off + y] = scaled ? e * FixedPointScale : e;
        }
    }

    /// <summary>The final group: ov when the end is constrained, else the group of the best final state, ties to the
    /// smallest state g + d*·G (the first index of an argmin over all states, as the reference).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int FinalGroup<TStore, TReduce>(ArrayView<float> sh, ArrayView<float> gmGlobal, long gmBase, int ov, ArrayView<byte> bpBytes, long bpBase, ViterbiParams p)
        where TStore : struct, IMinimaStore
        where TReduce : struct, IGroupReduction
    {
        if (ov >= 0)
            return ov;
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
                float c = FinalValue<TStore>(sh, gmGlobal, gmBase, p, g);
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
        return default(TReduce).ArgMin(sh, p.RedOff, p.RedSlots, best, arg) & (p.G - 1);
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
}

/// <summary>Parameters of the Viterbi kernel (see <see cref="Viterbi{TCode}"/>); offsets are in floats of shared memory.</summary>
public readonly struct ViterbiParams(
    int l, int kv, int t, int n, int g, int d, int r, int bb, int active, int count, int mode, int rotation,
    int symbols, int bpStepBytes, long bpSlotBytes, int xOff, int eOff, int gmOff, int stOff, int redOff, int redSlots,
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
    public readonly int BpStepBytes = bpStepBytes;
    public readonly long BpSlotBytes = bpSlotBytes;
    public readonly int XOff = xOff;
    public readonly int EOff = eOff;
    public readonly int GmOff = gmOff;
    public readonly int StOff = stOff;
    public readonly int RedOff = redOff;

    /// <summary>Reduction slots (warps, or threads for shared-memory reductions); scratch is 2·RedSlots + 8 floats.</summary>
    public readonly int RedSlots = redSlots;
    public readonly int Interleaved = interleaved;
}
