using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;

namespace Qtip.Kernels.Linalg;

/// <summary>
/// One BlockLDLQ step on a 16-column block J = [j0, j0+16) of an m×n rotated weight (spec §5):
/// <code>
/// Gather:  X (m×16) = Wr[:, J] + R[:, J+] · A[J+, J]      R = Wr − Ŵ on the already quantized columns J+ = [j0+16, n)
///          and write X as m/16 sequences of 256 targets: tile row r of rows 16r..16r+15, position perm[16·row + col]
/// Scatter: Ŵ[:, J] ← reconstruction of those sequences;  R[:, J] ← Wr[:, J] − Ŵ[:, J]
/// </code>
/// The gather is a skinny GEMM (m × k by k × 16, k = n − j0 − 16): a group owns a (4·g/16)×16 output tile, stages
/// 32-column slices of R and 32×16 slices of A in shared memory, and each thread accumulates 4 outputs.
/// </summary>
public sealed class LdlqStep : IKernelSet<LdlqStep>
{
    public const int Width = 16;
    public const int SequenceLength = Width * Width;
    private const int KChunk = 32;
    private const int MaxRows = 64;

    private readonly QtipDevice device;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, StepParams> gather;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, StepParams> gatherDirect;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, StepParams> scatter;

    private LdlqStep(QtipDevice device)
    {
        this.device = device;
        gather = device.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, StepParams>(GatherKernel);
        gatherDirect = device.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, StepParams>(GatherDirectKernel);
        scatter = device.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, StepParams>(ScatterKernel);
    }

    public static LdlqStep Create(QtipDevice device) => new(device);

    /// <summary>targets (m/16 × 256) ← Wr[:, J] + R[:, J+]·A[J+, J] in sequence order <paramref name="perm"/> (256 entries).</summary>
    public void Gather(ArrayView<float> wr, ArrayView<float> resid, ArrayView<float> a, ArrayView<int> perm, ArrayView<float> targets,
        int m, int n, int j0, AcceleratorStream? stream = null)
    {
        Check(wr, resid, a, perm, targets, m, n, j0);
        if (device.Capabilities.Simulator)
        {
            gatherDirect(stream ?? device.Accelerator.DefaultStream, new KernelConfig(CpuGroups(m * Width), 2), wr, resid, a, perm, targets, new StepParams(m, n, j0, 0));
            return;
        }
        int groupSize = GroupSize();
        int rowsPerGroup = 4 * (groupSize / Width);
        int groups = (m + rowsPerGroup - 1) / rowsPerGroup;
        gather(stream ?? device.Accelerator.DefaultStream, new KernelConfig(groups, groupSize), wr, resid, a, perm, targets, new StepParams(m, n, j0, rowsPerGroup));
    }

    /// <summary>Ŵ[:, J] ← reconstruction (m/16 × 256, sequence order); R[:, J] ← Wr[:, J] − Ŵ[:, J].</summary>
    public void Scatter(ArrayView<float> wr, ArrayView<float> what, ArrayView<float> resid, ArrayView<int> perm, ArrayView<float> reconstruction,
        int m, int n, int j0, AcceleratorStream? stream = null)
    {
        Check(wr, resid, what, perm, reconstruction, m, n, j0, aIsSquare: false);
        int groupSize = device.Capabilities.Simulator ? 2 : GroupSize();
        int total = m * Width;
        int groups = device.Capabilities.Simulator ? CpuGroups(total) : (total + groupSize - 1) / groupSize;
        scatter(stream ?? device.Accelerator.DefaultStream, new KernelConfig(groups, groupSize),
            wr, what, resid, perm, reconstruction, new StepParams(m, n, j0, 0));
    }

    private int CpuGroups(long work) => (int)Math.Min(Math.Max(1, work / 2), 4L * Math.Max(1, device.Accelerator.NumMultiprocessors));

    private int GroupSize() => device.MaxGroupSize >= 256 ? 256 : device.MaxGroupSize >= 64 ? 64 : 16;

    private static void Check(ArrayView<float> wr, ArrayView<float> resid, ArrayView<float> a, ArrayView<int> perm, ArrayView<float> seq,
        int m, int n, int j0, bool aIsSquare = true)
    {
        if (m <= 0 || n <= 0 || m % Width != 0 || n % Width != 0)
            throw new ArgumentException($"LDLQ: weight shape {m}×{n} must be positive multiples of {Width}", nameof(m));
        if (j0 < 0 || j0 % Width != 0 || j0 >= n)
            throw new ArgumentOutOfRangeException(nameof(j0), j0, $"LDLQ: block start must be a multiple of {Width} below n = {n}");
        long mn = (long)m * n;
        if (wr.Length != mn || resid.Length != mn)
            throw new ArgumentException($"LDLQ: Wr has {wr.Length} and R has {resid.Length} elements, expected {m}×{n}", nameof(wr));
        if (aIsSquare && a.Length != (long)n * n)
            throw new ArgumentException($"LDLQ: A has {a.Length} elements, expected {n}×{n}", nameof(a));
        if (!aIsSquare && a.Length != mn)
            throw new ArgumentException($"LDLQ: Ŵ has {a.Length} elements, expected {m}×{n}", nameof(a));
        if (perm.Length != SequenceLength)
            throw new ArgumentException($"LDLQ: permutation has {perm.Length} entries, expected {SequenceLength}", nameof(perm));
        if (seq.Length != (long)(m / Width) * SequenceLength)
            throw new ArgumentException($"LDLQ: sequence buffer has {seq.Length} elements, expected {m / Width}×{SequenceLength}", nameof(seq));
    }

    public readonly struct StepParams(int m, int n, int j0, int rowsPerGroup)
    {
        public readonly int M = m;
        public readonly int N = n;
        public readonly int J0 = j0;
        public readonly int RowsPerGroup = rowsPerGroup;
    }

    internal static void GatherKernel(ArrayView<float> wr, ArrayView<float> resid, ArrayView<float> a, ArrayView<int> perm, ArrayView<float> targets, StepParams p)
    {
        var rt = SharedMemory.Allocate<float>(MaxRows * (KChunk + 1));
        var at = SharedMemory.Allocate<float>(KChunk * Width);
        int tid = Group.IdxX, gs = Group.DimX;
        int rowsHere = p.RowsPerGroup;
        int row0 = Grid.IdxX * rowsHere;
        int col = tid % Width;
        int r0 = tid / Width;
        int rStep = gs / Width;
        float acc0 = 0, acc1 = 0, acc2 = 0, acc3 = 0;
        for (int k0 = p.J0 + Width; k0 < p.N; k0 += KChunk)
        {
            for (int e = tid; e < rowsHere * KChunk; e += gs)
            {
                int r = e / KChunk, kk = e - (r * KChunk);
                int row = row0 + r, k = k0 + kk;
                rt[(r * (KChunk + 1)) + kk] = row < p.M && k < p.N ? resid[((long)row * p.N) + k] : 0f;
            }
            for (int e = tid; e < KChunk * Width; e += gs)
            {
                int kk = e / Width, c = e - (kk * Width);
                int k = k0 + kk;
                at[e] = k < p.N ? a[((long)k * p.N) + p.J0 + c] : 0f;
            }
            Group.Barrier();
            for (int kk = 0; kk < KChunk; kk++)
            {
                float av = at[(kk * Width) + col];
                acc0 += rt[(r0 * (KChunk + 1)) + kk] * av;
                acc1 += rt[((r0 + rStep) * (KChunk + 1)) + kk] * av;
                acc2 += rt[((r0 + (2 * rStep)) * (KChunk + 1)) + kk] * av;
                acc3 += rt[((r0 + (3 * rStep)) * (KChunk + 1)) + kk] * av;
            }
            Group.Barrier();
        }
        int pc = col;
        WriteTarget(wr, perm, targets, p, row0 + r0, pc, acc0);
        WriteTarget(wr, perm, targets, p, row0 + r0 + rStep, pc, acc1);
        WriteTarget(wr, perm, targets, p, row0 + r0 + (2 * rStep), pc, acc2);
        WriteTarget(wr, perm, targets, p, row0 + r0 + (3 * rStep), pc, acc3);
    }

    private static void WriteTarget(ArrayView<float> wr, ArrayView<int> perm, ArrayView<float> targets, StepParams p, int row, int col, float feedback)
    {
        if (row >= p.M)
            return;
        float x = wr[((long)row * p.N) + p.J0 + col] + feedback;
        int tile = row / Width;
        int inTile = ((row - (tile * Width)) * Width) + col;
        targets[((long)tile * SequenceLength) + perm[inTile]] = x;
    }

    internal static void ScatterKernel(ArrayView<float> wr, ArrayView<float> what, ArrayView<float> resid, ArrayView<int> perm, ArrayView<float> reconstruction, StepParams p)
    {
        for (int e = Grid.GlobalIndex.X; e < p.M * Width; e += Grid.DimX * Group.DimX)
        {
            int row = e / Width, col = e - (row * Width);
            int tile = row / Width;
            int inTile = ((row - (tile * Width)) * Width) + col;
            float v = reconstruction[((long)tile * SequenceLength) + perm[inTile]];
            long k = ((long)row * p.N) + p.J0 + col;
            what[k] = v;
            resid[k] = wr[k] - v;
        }
    }

    /// <summary>CPU variant of the gather: one output (row, column) per loop step, the dot product read from global.</summary>
    internal static void GatherDirectKernel(ArrayView<float> wr, ArrayView<float> resid, ArrayView<float> a, ArrayView<int> perm, ArrayView<float> targets, StepParams p)
    {
        for (int e = Grid.GlobalIndex.X; e < p.M * Width; e += Grid.DimX * Group.DimX)
        {
            int row = e / Width, col = e - (row * Width);
            long rowBase = (long)row * p.N;
            float acc = 0f;
            for (int k = p.J0 + Width; k < p.N; k++)
                acc += resid[rowBase + k] * a[((long)k * p.N) + p.J0 + col];
            WriteTarget(wr, perm, targets, p, row, col, acc);
        }
    }
}
