using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;
using Half = ILGPU.Half;

namespace Qtip.Kernels.Llama;

/// <summary>
/// Matrix–matrix product for prefill and evaluation: Y (rows×m) = X (rows×n) · Wᵀ, W (m×n) row-major as Hugging Face
/// stores linear weights, fp16 or fp32, fp32 accumulation.
///
/// Design: a classic shared-memory tiled GEMM. A group of a×b threads (a·b = the group size, 256 on GPUs, 16 on the
/// CPU simulator) computes a (4a)×(4b) tile of Y; each thread owns a 4×4 register block whose rows and columns
/// are strided by a and b, so shared-memory reads are conflict-free. K advances in chunks of 16: the group stages
/// the X and W chunks (W converted to fp32 on the way in) and every thread does 16 multiply-adds per pair of
/// loaded values. Bounds are checked only at tile edges. The serial style (CPU simulator) gives each thread a 4×4
/// block of Y and loops over all of K, with no shared memory and no barrier.
/// Only the serial fp32 kernel is loaded up front: the grouped kernels load when the grouped style first launches, the
/// fp16 ones when fp16 weights first come (a device without fp16 refuses them with <see cref="NotSupportedException"/>).
/// </summary>
public sealed class MatMul : IKernelSet<MatMul>
{
    private const int KChunk = 16;
    private const int Block = 4;

    private readonly QtipDevice device;
    private readonly Lazy<Action<AcceleratorStream, KernelConfig, ArrayView<Half>, ArrayView<float>, ArrayView<float>, MatMulParams>> f16;
    private readonly Lazy<Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, MatMulParams>> f32;
    private readonly Lazy<Action<AcceleratorStream, Index1D, ArrayView<Half>, ArrayView<float>, ArrayView<float>, MatMulParams>> f16Serial;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, MatMulParams> f32Serial;
    private readonly Lazy<Action<AcceleratorStream, KernelConfig, ArrayView<uint>, ArrayView<float>, ArrayView<float>, MatMulParams>> mma;

    private MatMul(QtipDevice device)
    {
        this.device = device;
        var acc = device.Accelerator;
        // OpenCL: a static shared buffer (ILGPU 1.5.3's dynamic local memory is wrong there across work-groups).
        bool staticShared = !device.Capabilities.DynamicSharedMemory;
        f16 = new(() => staticShared
            ? device.LoadKernel<ArrayView<Half>, ArrayView<float>, ArrayView<float>, MatMulParams>(MatMulKernel<Half, F16, StaticSharedFloats>)
            : device.LoadKernel<ArrayView<Half>, ArrayView<float>, ArrayView<float>, MatMulParams>(MatMulKernel<Half, F16, DynamicSharedFloats>));
        f32 = new(() => staticShared
            ? device.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, MatMulParams>(MatMulKernel<float, F32, StaticSharedFloats>)
            : device.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, MatMulParams>(MatMulKernel<float, F32, DynamicSharedFloats>));
        f16Serial = new(() => acc.LoadAutoGroupedKernel<Index1D, ArrayView<Half>, ArrayView<float>, ArrayView<float>, MatMulParams>(MatMulSerialKernel<Half, F16>));
        f32Serial = acc.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, MatMulParams>(MatMulSerialKernel<float, F32>);
        mma = new(() => device.LoadKernel<ArrayView<uint>, ArrayView<float>, ArrayView<float>, MatMulParams>(MatMulMma.MatMulMmaKernel));
        Style = Check.DefaultStyle(device);
        TensorCores = device.Capabilities.InlinePtx && Environment.GetEnvironmentVariable("QTIP_TENSOR_CORES") != "0";
    }

    /// <summary>
    /// fp16 weights on CUDA go through the tensor cores (<see cref="MatMulMma"/>: X rounded to fp16, fp32 accumulation)
    /// when n is a multiple of 32; off, or elsewhere, the tiled SIMT kernel (X fp32). On by default on CUDA; the environment
    /// variable QTIP_TENSOR_CORES=0 turns it off (for measuring against the SIMT kernel).
    /// </summary>
    public bool TensorCores { get; set; }

    public KernelStyle Style { get; set; }

    public static MatMul Create(QtipDevice device) => new(device);

    /// <summary>Y (rows×m) = X (rows×n) · Wᵀ with W (m×n) fp16.</summary>
    public void Apply(ArrayView<Half> w, ArrayView<float> x, ArrayView<float> y, int rows, int m, int n, AcceleratorStream? stream = null)
    {
        device.RequireFloat16("MatMul");
        var (cfg, p) = Plan(w.Length, x, y, rows, m, n);
        if (TensorCores && device.Capabilities.InlinePtx && Style == KernelStyle.Grouped && n % MatMulMma.BK == 0)
        {
            int tilesX = (m + MatMulMma.BN - 1) / MatMulMma.BN;
            mma.Value(stream ?? device.Accelerator.DefaultStream, MatMulMma.Config(rows, m), w.SubView(0, (long)m * n).Cast<uint>(), x, y,
                new MatMulParams(rows, m, n, 0, 0, tilesX));
            return;
        }
        if (Style == KernelStyle.Serial)
            f16Serial.Value(stream ?? device.Accelerator.DefaultStream, SerialThreads(rows, m), w, x, y, p);
        else
            f16.Value(stream ?? device.Accelerator.DefaultStream, cfg, w, x, y, p);
    }

    /// <summary>Y (rows×m) = X (rows×n) · Wᵀ with W (m×n) fp32.</summary>
    public void Apply(ArrayView<float> w, ArrayView<float> x, ArrayView<float> y, int rows, int m, int n, AcceleratorStream? stream = null)
    {
        var (cfg, p) = Plan(w.Length, x, y, rows, m, n);
        if (Style == KernelStyle.Serial)
            f32Serial(stream ?? device.Accelerator.DefaultStream, SerialThreads(rows, m), w, x, y, p);
        else
            f32.Value(stream ?? device.Accelerator.DefaultStream, cfg, w, x, y, p);
    }

    private (KernelConfig, MatMulParams) Plan(long wLength, ArrayView<float> x, ArrayView<float> y, int rows, int m, int n)
    {
        const string op = "MatMul";
        Check.Positive(op, "rows", rows);
        Check.Positive(op, "m", m);
        Check.Positive(op, "n", n);
        if (wLength < (long)m * n)
            throw new ArgumentException($"{op}: W has {wLength} elements, needs m×n = {m}×{n}", nameof(wLength));
        Check.Length(op, "x", x, (long)rows * n, $"rows×n = {rows}×{n}");
        Check.Length(op, "y", y, (long)rows * m, $"rows×m = {rows}×{m}");
        int g = Check.GroupSize(device);
        // a×b threads with a·b = g (g is a power of two): a = rows of threads, b = columns.
        int log = System.Numerics.BitOperations.Log2((uint)g);
        int b = 1 << ((log + 1) / 2);
        int a = g / b;
        int tileRows = Block * a, tileCols = Block * b;
        int tilesX = (m + tileCols - 1) / tileCols;
        int tilesY = (rows + tileRows - 1) / tileRows;
        long groups = (long)tilesX * tilesY;
        if (groups > int.MaxValue)
            throw new ArgumentException($"{op}: {rows}×{m} output is too large for one launch");
        int sharedFloats = (tileRows + tileCols) * KChunk;
        if (Style == KernelStyle.Grouped && !device.Capabilities.DynamicSharedMemory && sharedFloats > StaticSharedFloats.Capacity)
            throw new InvalidOperationException($"{op}: {sharedFloats} shared floats exceed the static OpenCL buffer of {StaticSharedFloats.Capacity}");
        var shared = device.Capabilities.DynamicSharedMemory ? SharedMemoryConfig.RequestDynamic<float>(sharedFloats) : SharedMemoryConfig.Empty;
        return (new KernelConfig((int)groups, a * b, shared), new MatMulParams(rows, m, n, a, b, tilesX));
    }

    private static int SerialThreads(int rows, int m) => checked(((rows + Block - 1) / Block) * ((m + Block - 1) / Block));

    /// <summary>Serial style: thread i owns the 4×4 block (rows 4a.., columns 4b..) of Y and loops over all of K.</summary>
    internal static void MatMulSerialKernel<T, TW>(Index1D i, ArrayView<T> w, ArrayView<float> x, ArrayView<float> y, MatMulParams p)
        where T : unmanaged
        where TW : struct, IWeightElement<T>
    {
        var loader = default(TW);
        int colBlocks = (p.M + Block - 1) / Block;
        int rb = i / colBlocks;
        int cb = i - (rb * colBlocks);
        int r0 = rb * Block, c0 = cb * Block;
        // Clamp edge rows/columns to valid ones (their results are not stored).
        long xr0 = (long)XMathMin(r0, p.Rows - 1) * p.N, xr1 = (long)XMathMin(r0 + 1, p.Rows - 1) * p.N;
        long xr2 = (long)XMathMin(r0 + 2, p.Rows - 1) * p.N, xr3 = (long)XMathMin(r0 + 3, p.Rows - 1) * p.N;
        long wc0 = (long)XMathMin(c0, p.M - 1) * p.N, wc1 = (long)XMathMin(c0 + 1, p.M - 1) * p.N;
        long wc2 = (long)XMathMin(c0 + 2, p.M - 1) * p.N, wc3 = (long)XMathMin(c0 + 3, p.M - 1) * p.N;
        float c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
        float c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
        for (int k = 0; k < p.N; k++)
        {
            float x0 = x[xr0 + k], x1 = x[xr1 + k], x2 = x[xr2 + k], x3 = x[xr3 + k];
            float w0 = loader.Load(w, wc0 + k), w1 = loader.Load(w, wc1 + k), w2 = loader.Load(w, wc2 + k), w3 = loader.Load(w, wc3 + k);
            c00 += x0 * w0; c01 += x0 * w1; c02 += x0 * w2; c03 += x0 * w3;
            c10 += x1 * w0; c11 += x1 * w1; c12 += x1 * w2; c13 += x1 * w3;
            c20 += x2 * w0; c21 += x2 * w1; c22 += x2 * w2; c23 += x2 * w3;
            c30 += x3 * w0; c31 += x3 * w1; c32 += x3 * w2; c33 += x3 * w3;
        }
        StoreSerial(y, p, r0, c0, c00, c01, c02, c03);
        StoreSerial(y, p, r0 + 1, c0, c10, c11, c12, c13);
        StoreSerial(y, p, r0 + 2, c0, c20, c21, c22, c23);
        StoreSerial(y, p, r0 + 3, c0, c30, c31, c32, c33);
    }

    private static int XMathMin(int a, int b) => a < b ? a : b;

    private static void StoreSerial(ArrayView<float> y, MatMulParams p, int row, int col, float v0, float v1, float v2, float v3)
    {
        if (row >= p.Rows)
            return;
        long b = (long)row * p.M;
        if (col < p.M)
            y[b + col] = v0;
        if (col + 1 < p.M)
            y[b + col + 1] = v1;
        if (col + 2 < p.M)
            y[b + col + 2] = v2;
        if (col + 3 < p.M)
            y[b + col + 3] = v3;
    }

    public readonly struct MatMulParams(int rows, int m, int n, int a, int b, int tilesX)
    {
        public readonly int Rows = rows;
        public readonly int M = m;
        public readonly int N = n;
        public readonly int A = a;
        public readonly int B = b;
        public readonly int TilesX = tilesX;
    }

    internal static void MatMulKernel<T, TW, TShared>(ArrayView<T> w, ArrayView<float> x, ArrayView<float> y, MatMulParams p)
        where T : unmanaged
        where TW : struct, IWeightElement<T>
        where TShared : struct, ISharedFloats
    {
        var loader = default(TW);
        var shared = default(TShared).Get();
        int tileRows = Block * p.A, tileCols = Block * p.B;
        var xs = shared.SubView(0, tileRows * KChunk);
        var ws = shared.SubView(tileRows * KChunk, tileCols * KChunk);
        int tid = Group.IdxX;
        int g = Group.DimX;
        int ty = tid / p.B;
        int tx = tid - (ty * p.B);
        int tileY = Grid.IdxX / p.TilesX;
        int tileX = Grid.IdxX - (tileY * p.TilesX);
        int row0 = tileY * tileRows;
        int col0 = tileX * tileCols;

        float c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
        float c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;

        for (int k0 = 0; k0 < p.N; k0 += KChunk)
        {
            // Stage X[row0.., k0..k0+16) and W[col0.., k0..k0+16) as [row][k] tiles.
            for (int e = tid; e < tileRows * KChunk; e += g)
            {
                int r = e / KChunk;
                int k = e - (r * KChunk);
                int gr = row0 + r, gk = k0 + k;
                xs[e] = gr < p.Rows && gk < p.N ? x[((long)gr * p.N) + gk] : 0f;
            }
            for (int e = tid; e < tileCols * KChunk; e += g)
            {
                int c = e / KChunk;
                int k = e - (c * KChunk);
                int gc = col0 + c, gk = k0 + k;
                ws[e] = gc < p.M && gk < p.N ? loader.Load(w, ((long)gc * p.N) + gk) : 0f;
            }
            Group.Barrier();
            for (int k = 0; k < KChunk; k++)
            {
                float x0 = xs[(ty * KChunk) + k];
                float x1 = xs[((ty + p.A) * KChunk) + k];
                float x2 = xs[((ty + (2 * p.A)) * KChunk) + k];
                float x3 = xs[((ty + (3 * p.A)) * KChunk) + k];
                float w0 = ws[(tx * KChunk) + k];
                float w1 = ws[((tx + p.B) * KChunk) + k];
                float w2 = ws[((tx + (2 * p.B)) * KChunk) + k];
                float w3 = ws[((tx + (3 * p.B)) * KChunk) + k];
                c00 += x0 * w0; c01 += x0 * w1; c02 += x0 * w2; c03 += x0 * w3;
                c10 += x1 * w0; c11 += x1 * w1; c12 += x1 * w2; c13 += x1 * w3;
                c20 += x2 * w0; c21 += x2 * w1; c22 += x2 * w2; c23 += x2 * w3;
                c30 += x3 * w0; c31 += x3 * w1; c32 += x3 * w2; c33 += x3 * w3;
            }
            Group.Barrier();
        }
        Store(y, p, row0 + ty, col0 + tx, c00, c01, c02, c03);
        Store(y, p, row0 + ty + p.A, col0 + tx, c10, c11, c12, c13);
        Store(y, p, row0 + ty + (2 * p.A), col0 + tx, c20, c21, c22, c23);
        Store(y, p, row0 + ty + (3 * p.A), col0 + tx, c30, c31, c32, c33);
    }

    private static void Store(ArrayView<float> y, MatMulParams p, int row, int col, float v0, float v1, float v2, float v3)
    {
        if (row >= p.Rows)
            return;
        long b = (long)row * p.M;
        if (col < p.M)
            y[b + col] = v0;
        if (col + p.B < p.M)
            y[b + col + p.B] = v1;
        if (col + (2 * p.B) < p.M)
            y[b + col + (2 * p.B)] = v2;
        if (col + (3 * p.B) < p.M)
            y[b + col + (3 * p.B)] = v3;
    }
}
