using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;

namespace Qtip.Kernels.Llama;

/// <summary>
/// RMSNorm, optionally fused with the residual add that precedes it in a Llama block:
/// x ← x + residual (when given), then y = x / √(mean(x²) + ε) ⊙ weight, per row of x (rows×n), all fp32 as
/// Hugging Face computes it. Fusing the add saves one launch and one pass over x per norm (two per layer in decode).
/// One group per row; the sum of squares is a group all-reduce. Rows of a multiple of 4 on 16-byte boundaries are read
/// and written as float4, with up to 1024 threads per group, so a 4096-wide row is one load per thread: the first
/// version (256 threads, scalar loads, 16 dependent iterations each waiting on memory) took 10 µs per 4096-wide row on
/// the H100, a batch-1 decode step ran 65 of them. Serial style (CPU simulator and OpenCL): one thread per row. The
/// grouped kernel is loaded when first launched.
/// </summary>
public sealed class RmsNorm : IKernelSet<RmsNorm>, IDisposable
{
    private readonly QtipDevice device;
    private readonly Lazy<Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, RmsNormParams>> kernel;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, RmsNormParams> serial;
    private readonly MemoryBuffer1D<float, Stride1D.Dense> none;

    private RmsNorm(QtipDevice device)
    {
        this.device = device;
        kernel = new(() => device.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, RmsNormParams>(RmsNormKernel));
        serial = device.Accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, RmsNormParams>(RmsNormSerialKernel);
        none = device.Allocate1D<float>(4);
        Style = Check.DefaultStyle(device);
    }

    public KernelStyle Style { get; set; }

    public static RmsNorm Create(QtipDevice device) => new(device);

    public void Dispose() => none.Dispose();

    /// <summary>y (rows×n) = rmsnorm(x) ⊙ weight; with <paramref name="residual"/>, first x += residual (x is updated).</summary>
    public void Apply(ArrayView<float> x, ArrayView<float>? residual, ArrayView<float> weight, ArrayView<float> y, int rows, int n, float eps, AcceleratorStream? stream = null)
    {
        const string op = "RmsNorm";
        Check.Positive(op, "rows", rows);
        Check.Positive(op, "n", n);
        Check.Length(op, "x", x, (long)rows * n, $"rows×n = {rows}×{n}");
        Check.Length(op, "y", y, (long)rows * n, $"rows×n = {rows}×{n}");
        Check.Length(op, "weight", weight, n, $"n = {n}");
        if (residual is { } res)
            Check.Length(op, "residual", res, (long)rows * n, $"rows×n = {rows}×{n}");
        bool vec = n % 4 == 0 && Check.Aligned16(x) && Check.Aligned16(weight) && Check.Aligned16(y) && (residual is not { } rv || Check.Aligned16(rv));
        var p = new RmsNormParams(n, eps, residual.HasValue ? 1 : 0, vec ? 1 : 0);
        if (Style == KernelStyle.Serial)
        {
            serial(stream ?? device.Accelerator.DefaultStream, rows, x, residual ?? none.View, weight, y, p);
            return;
        }
        int warp = device.WarpSize;
        int perRow = vec ? n / 4 : n;
        int group = Math.Max(warp, Math.Min(Check.GroupSize(device, 1024) / warp * warp, (perRow + warp - 1) / warp * warp));
        kernel.Value(stream ?? device.Accelerator.DefaultStream, new KernelConfig(rows, group), x, residual ?? none.View, weight, y, p);
    }

    public readonly struct RmsNormParams(int n, float eps, int addResidual, int vectorized)
    {
        public readonly int N = n;
        public readonly float Eps = eps;
        public readonly int AddResidual = addResidual;
        public readonly int Vectorized = vectorized;
    }

    internal static void RmsNormKernel(ArrayView<float> x, ArrayView<float> residual, ArrayView<float> weight, ArrayView<float> y, RmsNormParams p)
    {
        if (p.Vectorized != 0)
        {
            RmsNormRow4(x, residual, weight, y, p);
            return;
        }
        long b = (long)Grid.IdxX * p.N;
        float ss = 0f;
        for (int i = Group.IdxX; i < p.N; i += Group.DimX)
        {
            float v = x[b + i];
            if (p.AddResidual != 0)
            {
                v += residual[b + i];
                x[b + i] = v;
            }
            ss += v * v;
        }
        float scale = XMath.Rsqrt((GroupSum(ss) / p.N) + p.Eps);
        for (int i = Group.IdxX; i < p.N; i += Group.DimX)
            y[b + i] = x[b + i] * scale * weight[i];
    }

    /// <summary>
    /// Σ of one value per thread, the same in every thread and the same from run to run: a shuffle tree per warp, then
    /// every thread adds the warps' sums in warp order. (ILGPU's group all-reduce adds the warps' sums with shared-memory
    /// atomics, whose order varies, so the norm of a row differed in the last bit between runs.)
    /// </summary>
    private static float GroupSum(float value)
    {
        var sums = SharedMemory.Allocate<float>(1024);
        for (int d = Warp.WarpSize >> 1; d >= 1; d >>= 1)
            value += Warp.ShuffleXor(value, d);
        if (Warp.LaneIdx == 0)
            sums[Warp.WarpIdx] = value;
        Group.Barrier();
        float total = 0f;
        int warps = (Group.DimX + Warp.WarpSize - 1) / Warp.WarpSize;
        for (int w = 0; w < warps; w++)
            total += sums[w];
        return total;
    }

    /// <summary>One row as float4: each thread adds, squares and scales its quads (one per thread for n = 4·group).</summary>
    private static void RmsNormRow4(ArrayView<float> x, ArrayView<float> residual, ArrayView<float> weight, ArrayView<float> y, RmsNormParams p)
    {
        int quads = p.N >> 2;
        long b = (long)Grid.IdxX * quads;
        var x4 = x.AsAligned16().Cast<Float4>();
        var r4 = residual.AsAligned16().Cast<Float4>();
        var w4 = weight.AsAligned16().Cast<Float4>();
        var y4 = y.AsAligned16().Cast<Float4>();
        float ss = 0f;
        for (int i = Group.IdxX; i < quads; i += Group.DimX)
        {
            var v = x4[b + i];
            if (p.AddResidual != 0)
            {
                var r = r4[b + i];
                v = new Float4 { X = v.X + r.X, Y = v.Y + r.Y, Z = v.Z + r.Z, W = v.W + r.W };
                x4[b + i] = v;
            }
            ss += (v.X * v.X) + (v.Y * v.Y) + (v.Z * v.Z) + (v.W * v.W);
        }
        float scale = XMath.Rsqrt((GroupSum(ss) / p.N) + p.Eps);
        for (int i = Group.IdxX; i < quads; i += Group.DimX)
        {
            var v = x4[b + i];
            var w = w4[i];
            y4[b + i] = new Float4 { X = v.X * scale * w.X, Y = v.Y * scale * w.Y, Z = v.Z * scale * w.Z, W = v.W * scale * w.W };
        }
    }

    internal static void RmsNormSerialKernel(Index1D row, ArrayView<float> x, ArrayView<float> residual, ArrayView<float> weight, ArrayView<float> y, RmsNormParams p)
    {
        long b = (long)row.X * p.N;
        float ss = 0f;
        for (int i = 0; i < p.N; i++)
        {
            float v = x[b + i];
            if (p.AddResidual != 0)
            {
                v += residual[b + i];
                x[b + i] = v;
            }
            ss += v * v;
        }
        float scale = XMath.Rsqrt((ss / p.N) + p.Eps);
        for (int i = 0; i < p.N; i++)
            y[b + i] = x[b + i] * scale * weight[i];
    }
}
