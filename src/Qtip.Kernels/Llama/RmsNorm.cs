using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Algorithms.ScanReduceOperations;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;

namespace Qtip.Kernels.Llama;

/// <summary>
/// RMSNorm, optionally fused with the residual add that precedes it in a Llama block:
/// x ← x + residual (when given), then y = x / √(mean(x²) + ε) ⊙ weight, per row of x (rows×n), all fp32 as
/// Hugging Face computes it. Fusing the add saves one launch and one pass over x per norm (two per layer in decode).
/// One group per row; the sum of squares is a group all-reduce. Serial style (CPU simulator): one thread per row.
/// </summary>
public sealed class RmsNorm : IKernelSet<RmsNorm>
{
    private readonly QtipDevice device;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, RmsNormParams> kernel;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, RmsNormParams> serial;
    private readonly MemoryBuffer1D<float, Stride1D.Dense> none;

    private RmsNorm(QtipDevice device)
    {
        this.device = device;
        kernel = device.Accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, RmsNormParams>(RmsNormKernel);
        serial = device.Accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, RmsNormParams>(RmsNormSerialKernel);
        none = device.Accelerator.Allocate1D<float>(1);
        Style = Check.DefaultStyle(device);
    }

    public KernelStyle Style { get; set; }

    public static RmsNorm Create(QtipDevice device) => new(device);

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
        var p = new RmsNormParams(n, eps, residual.HasValue ? 1 : 0);
        if (Style == KernelStyle.Serial)
            serial(stream ?? device.Accelerator.DefaultStream, rows, x, residual ?? none.View, weight, y, p);
        else
            kernel(stream ?? device.Accelerator.DefaultStream, new KernelConfig(rows, Check.GroupSize(device)), x, residual ?? none.View, weight, y, p);
    }

    public readonly struct RmsNormParams(int n, float eps, int addResidual)
    {
        public readonly int N = n;
        public readonly float Eps = eps;
        public readonly int AddResidual = addResidual;
    }

    internal static void RmsNormKernel(ArrayView<float> x, ArrayView<float> residual, ArrayView<float> weight, ArrayView<float> y, RmsNormParams p)
    {
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
        float total = GroupExtensions.AllReduce<float, AddFloat>(ss);
        float scale = XMath.Rsqrt((total / p.N) + p.Eps);
        for (int i = Group.IdxX; i < p.N; i += Group.DimX)
            y[b + i] = x[b + i] * scale * weight[i];
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
