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
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<double>, SymmetrizeParams> symmetrize;

    private Gram(QtipDevice device)
    {
        this.device = device;
        accumulate = device.LoadKernel<ArrayView<float>, ArrayView<double>, GramParams>(AccumulateKernel);
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
