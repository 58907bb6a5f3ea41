using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;

namespace Qtip.Kernels.Linalg;

/// <summary>
/// Block LDL of a symmetric positive-definite H (n×n, float64, n a multiple of 16) with 16×16 blocks, on the device:
/// <code>
/// H = C Cᵀ                    (blocked right-looking Cholesky, lower C)
/// Lb = C · blockdiag(C_JJ⁻¹)  (unit block-lower: its diagonal blocks are I)
/// H = Lb D Lbᵀ,  D_J = C_JJ C_JJᵀ,  A = Lb − I   (strictly block-lower; what BlockLDLQ feeds back)
/// </code>
/// Everything is float64 (the Hessians of deep layers are ill-conditioned and the cost is small next to the trellis
/// search); only the output A is float32. The Cholesky runs per 16-column block: factor the diagonal block in
/// shared memory, solve the panel below it, update the trailing lower triangle tile by tile. A non-positive pivot
/// sets a status word instead of producing NaNs, so the caller can add damping and retry.
/// </summary>
public sealed class BlockLdl : IKernelSet<BlockLdl>
{
    public const int Block = 16;

    private readonly QtipDevice device;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<double>, ArrayView<int>, StepParams> potrf;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<double>, StepParams> trsm;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<double>, StepParams> syrk;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<double>, StepParams> syrkDirect;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<double>, ArrayView<float>, StepParams> feedback;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<double>, ArrayView<double>, DiagonalParams> diagonal;

    private BlockLdl(QtipDevice device)
    {
        this.device = device;
        potrf = device.LoadKernel<ArrayView<double>, ArrayView<int>, StepParams>(PotrfDiagonalKernel);
        trsm = device.LoadKernel<ArrayView<double>, StepParams>(TrsmPanelKernel);
        syrk = device.LoadKernel<ArrayView<double>, StepParams>(SyrkTrailingKernel);
        syrkDirect = device.LoadKernel<ArrayView<double>, StepParams>(SyrkTrailingDirectKernel);
        feedback = device.LoadKernel<ArrayView<double>, ArrayView<float>, StepParams>(FeedbackKernel);
        diagonal = device.LoadKernel<ArrayView<double>, ArrayView<double>, DiagonalParams>(DiagonalKernel);
    }

    public static BlockLdl Create(QtipDevice device) => new(device);

    /// <summary>
    /// Factors h in place (it is overwritten) and writes A = Lb − I into <paramref name="a"/> (n×n float32; entries
    /// outside the strictly-lower blocks are zero). Returns −1 on success, else the index of the first 16-block whose
    /// pivot was not positive (then <paramref name="a"/> is meaningless).
    /// </summary>
    public int Factor(ArrayView<double> h, int n, ArrayView<float> a, ArrayView<int> status, AcceleratorStream? stream = null)
    {
        Check(h, n);
        if (a.Length != (long)n * n)
            throw new ArgumentException($"BlockLdl: A has {a.Length} elements, expected {n}×{n}", nameof(a));
        if (status.Length < 1)
            throw new ArgumentException("BlockLdl: status needs one int", nameof(status));
        stream ??= device.Accelerator.DefaultStream;
        status.SubView(0, 1).MemSetToZero(stream);
        int nb = n / Block;
        int groupSize = Math.Min(device.MaxGroupSize, 256);
        for (int j = 0; j < nb; j++)
        {
            var p = new StepParams(n, j);
            potrf(stream, new KernelConfig(1, groupSize), h, status, p);
            int trailing = nb - j - 1;
            if (trailing == 0)
                break;
            trsm(stream, device.LoopConfig(n, groupSize), h, p);
            if (device.Capabilities.Simulator)
                syrkDirect(stream, new KernelConfig(4 * Math.Max(1, device.Accelerator.NumMultiprocessors), 2), h, p);
            else
                syrk(stream, new KernelConfig(trailing * trailing, groupSize), h, p);
        }
        a.MemSetToZero(stream);
        feedback(stream, device.LoopConfig((long)n * nb, groupSize, int.MaxValue), h, a, new StepParams(n, nb));
        var result = new int[1];
        status.SubView(0, 1).CopyToCPU(stream, result);
        stream.Synchronize();
        return result[0] == 0 ? -1 : result[0] - 1;
    }

    /// <summary>diag ← diagonal of h, then h[i,i] += add (add may be 0 to only read the diagonal).</summary>
    public void Diagonal(ArrayView<double> h, int n, ArrayView<double> diag, double add, AcceleratorStream? stream = null)
    {
        Check(h, n);
        if (diag.Length < n)
            throw new ArgumentException($"BlockLdl: diag has {diag.Length} elements, needs {n}", nameof(diag));
        int groupSize = Math.Min(device.MaxGroupSize, 256);
        diagonal(stream ?? device.Accelerator.DefaultStream, new KernelConfig((n + groupSize - 1) / groupSize, groupSize), h, diag, new DiagonalParams(n, add));
    }

    private static void Check(ArrayView<double> h, int n)
    {
        if (n <= 0 || n % Block != 0)
            throw new ArgumentException($"BlockLdl: n = {n} must be a positive multiple of {Block}", nameof(n));
        if (h.Length != (long)n * n)
            throw new ArgumentException($"BlockLdl: H has {h.Length} elements, expected {n}×{n}", nameof(h));
    }

    public readonly struct StepParams(int n, int block)
    {
        public readonly int N = n;
        public readonly int BlockIndex = block;
    }

    public readonly struct DiagonalParams(int n, double add)
    {
        public readonly int N = n;
        public readonly double Add = add;
    }

    private const int Pitch = Block + 1;

    /// <summary>The group copies diagonal block J of h into <paramref name="s"/> (shared, rows padded to <see cref="Pitch"/>); no barrier.</summary>
    private static void LoadDiagonalBlock(ArrayView<double> h, StepParams p, ArrayView<double> s)
    {
        long j0 = (long)p.BlockIndex * Block;
        for (int e = Group.IdxX; e < Block * Block; e += Group.DimX)
        {
            int r = e / Block, c = e - (r * Block);
            s[(r * Pitch) + c] = h[((j0 + r) * p.N) + j0 + c];
        }
    }

    /// <summary>Cholesky of the diagonal block J in shared memory (one group).</summary>
    internal static void PotrfDiagonalKernel(ArrayView<double> h, ArrayView<int> status, StepParams p)
    {
        var s = SharedMemory.Allocate<double>(Block * Pitch);
        LoadDiagonalBlock(h, p, s);
        int tid = Group.IdxX, gs = Group.DimX;
        long j0 = (long)p.BlockIndex * Block;
        Group.Barrier();
        for (int k = 0; k < Block; k++)
        {
            if (tid == 0)
            {
                double d = s[(k * Pitch) + k];
                if (!(d > 0))
                {
                    if (status[0] == 0)
                        status[0] = p.BlockIndex + 1;
                    d = 1;
                }
                s[(k * Pitch) + k] = XMath.Sqrt(d);
            }
            Group.Barrier();
            double pivot = s[(k * Pitch) + k];
            for (int r = k + 1 + tid; r < Block; r += gs)
                s[(r * Pitch) + k] /= pivot;
            Group.Barrier();
            for (int e = tid; e < Block * Block; e += gs)
            {
                int r = e / Block, c = e - (r * Block);
                if (c > k && c <= r)
                    s[(r * Pitch) + c] -= s[(r * Pitch) + k] * s[(c * Pitch) + k];
            }
            Group.Barrier();
        }
        for (int e = tid; e < Block * Block; e += gs)
        {
            int r = e / Block, c = e - (r * Block);
            h[((j0 + r) * p.N) + j0 + c] = c <= r ? s[(r * Pitch) + c] : 0.0;
        }
    }

    /// <summary>Panel below block J: each row i solves y · C_JJᵀ = H[i, J] by forward substitution, in place.</summary>
    internal static void TrsmPanelKernel(ArrayView<double> h, StepParams p)
    {
        var c = SharedMemory.Allocate<double>(Block * Pitch);
        LoadDiagonalBlock(h, p, c);
        int gs = Group.DimX;
        long j0 = (long)p.BlockIndex * Block;
        Group.Barrier();
        for (long i = j0 + Block + Grid.GlobalIndex.X; i < p.N; i += (long)Grid.DimX * gs)
        {
            long row = (i * p.N) + j0;
            for (int k = 0; k < Block; k++)
            {
                double v = h[row + k];
                for (int t = 0; t < k; t++)
                    v -= h[row + t] * c[(k * Pitch) + t];
                h[row + k] = v / c[(k * Pitch) + k];
            }
        }
    }

    /// <summary>Trailing update H[I,K] −= L[I,J]·L[K,J]ᵀ for blocks J &lt; K ≤ I, one group per tile.</summary>
    internal static void SyrkTrailingKernel(ArrayView<double> h, StepParams p)
    {
        int nb = p.N / Block;
        int trailing = nb - p.BlockIndex - 1;
        int bi = Grid.IdxX / trailing;
        int bk = Grid.IdxX - (bi * trailing);
        if (bk > bi)
            return;
        var li = SharedMemory.Allocate<double>(Block * Pitch);
        var lk = SharedMemory.Allocate<double>(Block * Pitch);
        int tid = Group.IdxX, gs = Group.DimX;
        long j0 = (long)p.BlockIndex * Block;
        long i0 = j0 + Block + ((long)bi * Block);
        long k0 = j0 + Block + ((long)bk * Block);
        for (int e = tid; e < Block * Block; e += gs)
        {
            int r = e / Block, t = e - (r * Block);
            li[(r * Pitch) + t] = h[((i0 + r) * p.N) + j0 + t];
            lk[(r * Pitch) + t] = h[((k0 + r) * p.N) + j0 + t];
        }
        Group.Barrier();
        for (int e = tid; e < Block * Block; e += gs)
        {
            int a = e / Block, b = e - (a * Block);
            if (bi == bk && b > a)
                continue;
            double acc = 0;
            for (int t = 0; t < Block; t++)
                acc += li[(a * Pitch) + t] * lk[(b * Pitch) + t];
            h[((i0 + a) * p.N) + k0 + b] -= acc;
        }
    }

    /// <summary>CPU variant of the trailing update: a grid-stride loop over the lower trailing elements, no shared memory.</summary>
    internal static void SyrkTrailingDirectKernel(ArrayView<double> h, StepParams p)
    {
        long j0 = (long)p.BlockIndex * Block;
        long start = j0 + Block;
        long size = p.N - start;
        long total = size * size;
        for (long e = Grid.GlobalIndex.X; e < total; e += (long)Grid.DimX * Group.DimX)
        {
            long i = start + (e / size);
            long k = start + (e - ((i - start) * size));
            if (k > i)
                continue;
            double acc = 0;
            for (int t = 0; t < Block; t++)
                acc += h[(i * p.N) + j0 + t] * h[(k * p.N) + j0 + t];
            h[(i * p.N) + k] -= acc;
        }
    }

    /// <summary>A[i, J] = C[i, J] · C_JJ⁻¹ for every row i below block J (back substitution, in place in h), written
    /// to a as float32. One thread per (row, block) pair; BlockIndex holds the number of blocks.</summary>
    internal static void FeedbackKernel(ArrayView<double> h, ArrayView<float> a, StepParams p)
    {
        int nb = p.BlockIndex;
        long total = (long)p.N * nb;
        for (long e = Grid.GlobalIndex.X; e < total; e += (long)Grid.DimX * Group.DimX)
        {
            long i = e / nb;
            int bj = (int)(e - (i * nb));
            if (bj >= i / Block)
                continue;
            long j0 = (long)bj * Block;
            long row = (i * p.N) + j0;
            for (int c = Block - 1; c >= 0; c--)
            {
                double v = h[row + c];
                for (int t = c + 1; t < Block; t++)
                    v -= h[row + t] * h[((j0 + t) * p.N) + j0 + c];
                v /= h[((j0 + c) * p.N) + j0 + c];
                h[row + c] = v;
                a[row + c] = (float)v;
            }
        }
    }

    internal static void DiagonalKernel(ArrayView<double> h, ArrayView<double> diag, DiagonalParams p)
    {
        int i = Grid.GlobalIndex.X;
        if (i >= p.N)
            return;
        long k = ((long)i * p.N) + i;
        diag[i] = h[k];
        h[k] += p.Add;
    }
}
