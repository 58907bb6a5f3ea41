using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;

namespace Qtip.Kernels.Linalg;

/// <summary>
/// Hessian accumulation: H (n×n, float64) += Xᵀ X for a batch X (rows × n, fp32), lower triangle only
/// (<see cref="Symmetrize"/> mirrors it and divides by the token count at the end).
///
/// Precision: each thread sums at most <see cref="Fp32Run"/> products in fp32, then adds that partial into a float64
/// register, and the batch result into the float64 H. Relative error of an fp32 run of r terms is ~√r·6e-8 ≈ 2e-6;
/// the float64 sums across runs, batches and millions of tokens add nothing measurable. Plain fp32 accumulation
/// over 10^6 tokens would drift by up to ~1e-3 relative, which is the size of the effects BlockLDLQ corrects.
///
/// Tiling: a group of g = 256 threads (64 or 16 where groups are smaller) owns a T×T output tile (T = 2√g: 32, 16
/// or 8; only tiles with I ≥ J), stages T rows of the two T-column slices of X in shared memory per step, and each
/// thread accumulates 4 outputs of one column.
/// </summary>
public sealed class Gram : IKernelSet<Gram>
{
    private const int MaxTile = 32;

    /// <summary>Products summed in fp32 before flushing into float64.</summary>
    public const int Fp32Run = 256;

    private readonly QtipDevice device;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<double>, GramParams> accumulate;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<double>, GramParams> accumulateDirect;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<double>, SymmetrizeParams> symmetrize;

    private Gram(QtipDevice device)
    {
        this.device = device;
        accumulate = device.LoadKernel<ArrayView<float>, ArrayView<double>, GramParams>(AccumulateKernel);
        accumulateDirect = device.LoadKernel<ArrayView<float>, ArrayView<double>, GramParams>(AccumulateDirectKernel);
        symmetrize = device.LoadKernel<ArrayView<double>, SymmetrizeParams>(SymmetrizeKernel);
    }

    public static Gram Create(QtipDevice device) => new(device);

    /// <summary>Lower triangle of h (n×n) += xᵀ x, x (rows × n).</summary>
    public void Accumulate(ArrayView<float> x, int rows, int n, ArrayView<double> h, AcceleratorStream? stream = null)
    {
        if (rows < 0 || n <= 0)
            throw new ArgumentOutOfRangeException(nameof(rows), $"Gram: bad shape {rows}×{n}");
        if (x.Length < (long)rows * n)
            throw new ArgumentException($"Gram: x has {x.Length} elements, needs {rows}×{n}", nameof(x));
        if (h.Length != (long)n * n)
            throw new ArgumentException($"Gram: h has {h.Length} elements, expected {n}×{n}", nameof(h));
        if (rows == 0)
            return;
        if (device.Capabilities.Simulator)
        {
            // The CPU simulator pays for every group and barrier: a few groups of register-blocked threads instead.
            int blocks4 = (n + 3) / 4;
            long pairs = (long)blocks4 * (blocks4 + 1) / 2;
            int cpuGroups = (int)Math.Min(pairs, 4L * Math.Max(1, device.Accelerator.NumMultiprocessors));
            accumulateDirect(stream ?? device.Accelerator.DefaultStream, new KernelConfig(cpuGroups, 2), x, h, new GramParams(rows, n, blocks4, 4));
            return;
        }
        int groupSize = device.MaxGroupSize >= 256 ? 256 : device.MaxGroupSize >= 64 ? 64 : 16;
        int tile = groupSize == 256 ? 32 : groupSize == 64 ? 16 : 8;
        int tiles = (n + tile - 1) / tile;
        accumulate(stream ?? device.Accelerator.DefaultStream, new KernelConfig(tiles * tiles, groupSize), x, h, new GramParams(rows, n, tiles, tile));
    }

    /// <summary>h ← (lower(h) + lower(h)ᵀ − diag) · scale: the full symmetric matrix from its lower triangle.</summary>
    public void Symmetrize(ArrayView<double> h, int n, double scale, AcceleratorStream? stream = null)
    {
        if (h.Length != (long)n * n)
            throw new ArgumentException($"Gram: h has {h.Length} elements, expected {n}×{n}", nameof(h));
        int groupSize = Math.Min(device.MaxGroupSize, 256);
        long total = (long)n * n;
        int groups = (int)Math.Min((total + groupSize - 1) / groupSize, 65536);
        symmetrize(stream ?? device.Accelerator.DefaultStream, new KernelConfig(groups, groupSize), h, new SymmetrizeParams(n, scale));
    }

    public readonly struct GramParams(int rows, int n, int tiles, int tile)
    {
        public readonly int Rows = rows;
        public readonly int N = n;
        public readonly int Tiles = tiles;
        public readonly int Tile = tile;
    }

    public readonly struct SymmetrizeParams(int n, double scale)
    {
        public readonly int N = n;
        public readonly double Scale = scale;
    }

    internal static void AccumulateKernel(ArrayView<float> x, ArrayView<double> h, GramParams p)
    {
        int ti = Grid.IdxX / p.Tiles;
        int tj = Grid.IdxX - (ti * p.Tiles);
        if (tj > ti)
            return;
        var xi = SharedMemory.Allocate<float>(MaxTile * (MaxTile + 1));
        var xj = SharedMemory.Allocate<float>(MaxTile * (MaxTile + 1));
        int tile = p.Tile;
        int pitch = tile + 1;
        int tid = Group.IdxX;
        int groupSize = Group.DimX;
        int i0 = ti * tile, j0 = tj * tile;
        // Thread t owns outputs (a0 + k·aStep, b), k < 4, with b = t mod T, a0 = t / T, aStep = T/4.
        int b = tid % tile;
        int a0 = tid / tile;
        int aStep = tile / 4;
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        float f0 = 0, f1 = 0, f2 = 0, f3 = 0;
        int inRun = 0;
        for (int t0 = 0; t0 < p.Rows; t0 += tile)
        {
            for (int e = tid; e < tile * tile; e += groupSize)
            {
                int r = e / tile, c = e - (r * tile);
                int t = t0 + r;
                bool inRows = t < p.Rows;
                long rowBase = (long)t * p.N;
                xi[(r * pitch) + c] = inRows && i0 + c < p.N ? x[rowBase + i0 + c] : 0f;
                xj[(r * pitch) + c] = inRows && j0 + c < p.N ? x[rowBase + j0 + c] : 0f;
            }
            Group.Barrier();
            for (int r = 0; r < tile; r++)
            {
                int rowOff = r * pitch;
                float xb = xj[rowOff + b];
                f0 += xi[rowOff + a0] * xb;
                f1 += xi[rowOff + a0 + aStep] * xb;
                f2 += xi[rowOff + a0 + (2 * aStep)] * xb;
                f3 += xi[rowOff + a0 + (3 * aStep)] * xb;
            }
            inRun += tile;
            if (inRun >= Fp32Run)
            {
                s0 += f0; s1 += f1; s2 += f2; s3 += f3;
                f0 = 0; f1 = 0; f2 = 0; f3 = 0;
                inRun = 0;
            }
            Group.Barrier();
        }
        s0 += f0; s1 += f1; s2 += f2; s3 += f3;
        int col = j0 + b;
        AddOut(h, p.N, i0 + a0, col, s0);
        AddOut(h, p.N, i0 + a0 + aStep, col, s1);
        AddOut(h, p.N, i0 + a0 + (2 * aStep), col, s2);
        AddOut(h, p.N, i0 + a0 + (3 * aStep), col, s3);
    }

    /// <summary>
    /// CPU variant: each thread owns 4×4 blocks (I ≥ J) of H in a grid-stride loop and reads X directly, 8 values and
    /// 16 products per row, with the same fp32-run / float64 accumulation. No shared memory, no barriers.
    /// </summary>
    internal static void AccumulateDirectKernel(ArrayView<float> x, ArrayView<double> h, GramParams p)
    {
        int blocks = p.Tiles;
        long pairs = (long)blocks * (blocks + 1) / 2;
        for (long e = Grid.GlobalIndex.X; e < pairs; e += (long)Grid.DimX * Group.DimX)
        {
            // e → (bi, bj) with bj ≤ bi: bi = floor((√(8e+1) − 1)/2).
            int bi = (int)((XMathSqrt((8.0 * e) + 1.0) - 1.0) / 2.0);
            while ((long)bi * (bi + 1) / 2 > e)
                bi--;
            while ((long)(bi + 1) * (bi + 2) / 2 <= e)
                bi++;
            int bj = (int)(e - ((long)bi * (bi + 1) / 2));
            int i0 = bi * 4, j0 = bj * 4;
            double d00 = 0, d01 = 0, d02 = 0, d03 = 0, d10 = 0, d11 = 0, d12 = 0, d13 = 0;
            double d20 = 0, d21 = 0, d22 = 0, d23 = 0, d30 = 0, d31 = 0, d32 = 0, d33 = 0;
            for (int t0 = 0; t0 < p.Rows; t0 += Fp32Run)
            {
                float f00 = 0, f01 = 0, f02 = 0, f03 = 0, f10 = 0, f11 = 0, f12 = 0, f13 = 0;
                float f20 = 0, f21 = 0, f22 = 0, f23 = 0, f30 = 0, f31 = 0, f32 = 0, f33 = 0;
                int t1 = t0 + Fp32Run < p.Rows ? t0 + Fp32Run : p.Rows;
                for (int t = t0; t < t1; t++)
                {
                    long r = (long)t * p.N;
                    float a0 = Get(x, r, i0, p.N), a1 = Get(x, r, i0 + 1, p.N), a2 = Get(x, r, i0 + 2, p.N), a3 = Get(x, r, i0 + 3, p.N);
                    float b0 = Get(x, r, j0, p.N), b1 = Get(x, r, j0 + 1, p.N), b2 = Get(x, r, j0 + 2, p.N), b3 = Get(x, r, j0 + 3, p.N);
                    f00 += a0 * b0; f01 += a0 * b1; f02 += a0 * b2; f03 += a0 * b3;
                    f10 += a1 * b0; f11 += a1 * b1; f12 += a1 * b2; f13 += a1 * b3;
                    f20 += a2 * b0; f21 += a2 * b1; f22 += a2 * b2; f23 += a2 * b3;
                    f30 += a3 * b0; f31 += a3 * b1; f32 += a3 * b2; f33 += a3 * b3;
                }
                d00 += f00; d01 += f01; d02 += f02; d03 += f03; d10 += f10; d11 += f11; d12 += f12; d13 += f13;
                d20 += f20; d21 += f21; d22 += f22; d23 += f23; d30 += f30; d31 += f31; d32 += f32; d33 += f33;
            }
            AddOut(h, p.N, i0, j0, d00); AddOut(h, p.N, i0, j0 + 1, d01); AddOut(h, p.N, i0, j0 + 2, d02); AddOut(h, p.N, i0, j0 + 3, d03);
            AddOut(h, p.N, i0 + 1, j0, d10); AddOut(h, p.N, i0 + 1, j0 + 1, d11); AddOut(h, p.N, i0 + 1, j0 + 2, d12); AddOut(h, p.N, i0 + 1, j0 + 3, d13);
            AddOut(h, p.N, i0 + 2, j0, d20); AddOut(h, p.N, i0 + 2, j0 + 1, d21); AddOut(h, p.N, i0 + 2, j0 + 2, d22); AddOut(h, p.N, i0 + 2, j0 + 3, d23);
            AddOut(h, p.N, i0 + 3, j0, d30); AddOut(h, p.N, i0 + 3, j0 + 1, d31); AddOut(h, p.N, i0 + 3, j0 + 2, d32); AddOut(h, p.N, i0 + 3, j0 + 3, d33);
        }
    }

    private static double XMathSqrt(double v) => ILGPU.Algorithms.XMath.Sqrt(v);

    private static float Get(ArrayView<float> x, long rowBase, int col, int n) => col < n ? x[rowBase + col] : 0f;

    private static void AddOut(ArrayView<double> h, int n, int row, int col, double v)
    {
        if (row < n && col < n && col <= row)
            h[((long)row * n) + col] += v;
    }

    internal static void SymmetrizeKernel(ArrayView<double> h, SymmetrizeParams p)
    {
        long total = (long)p.N * p.N;
        for (long e = (long)Grid.GlobalIndex.X; e < total; e += (long)Grid.DimX * Group.DimX)
        {
            int i = (int)(e / p.N);
            int j = (int)(e - ((long)i * p.N));
            if (j <= i)
            {
                double v = h[e] * p.Scale;
                h[e] = v;
                if (j < i)
                    h[((long)j * p.N) + i] = v;
            }
        }
    }
}
