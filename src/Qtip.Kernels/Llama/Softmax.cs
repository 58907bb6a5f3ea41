using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Algorithms.ScanReduceOperations;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;

namespace Qtip.Kernels.Llama;

/// <summary>
/// Softmax or log-softmax of every row of x (rows×n), in place, fp32 with the row maximum subtracted (optionally
/// after dividing by a temperature). One group per row, group all-reduces for max and sum; serial style (CPU
/// simulator and OpenCL): one thread per row. The grouped kernel is loaded when first launched.
/// </summary>
public sealed class Softmax : IKernelSet<Softmax>
{
    private readonly QtipDevice device;
    private readonly Lazy<Action<AcceleratorStream, KernelConfig, ArrayView<float>, SoftmaxParams>> kernel;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, SoftmaxParams> serial;

    private Softmax(QtipDevice device)
    {
        this.device = device;
        kernel = new(() => device.LoadKernel<ArrayView<float>, SoftmaxParams>(SoftmaxKernel));
        serial = device.Accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, SoftmaxParams>(SoftmaxSerialKernel);
        Style = Check.DefaultStyle(device);
    }

    public KernelStyle Style { get; set; }

    public static Softmax Create(QtipDevice device) => new(device);

    /// <summary>x (rows×n) ← softmax(x / temperature) per row, or its logarithm when <paramref name="log"/>.</summary>
    public void Apply(ArrayView<float> x, int rows, int n, bool log, float temperature = 1f, AcceleratorStream? stream = null)
    {
        const string op = "Softmax";
        Check.Positive(op, "rows", rows);
        Check.Positive(op, "n", n);
        if (!(temperature > 0) || float.IsInfinity(temperature))
            throw new ArgumentOutOfRangeException(nameof(temperature), temperature, $"{op}: temperature must be positive and finite");
        Check.Length(op, "x", x, (long)rows * n, $"rows×n = {rows}×{n}");
        var p = new SoftmaxParams(n, log ? 1 : 0, 1f / temperature);
        if (Style == KernelStyle.Serial)
            serial(stream ?? device.Accelerator.DefaultStream, rows, x, p);
        else
            kernel.Value(stream ?? device.Accelerator.DefaultStream, new KernelConfig(rows, Check.GroupSize(device)), x, p);
    }

    public readonly struct SoftmaxParams(int n, int log, float invTemperature)
    {
        public readonly int N = n;
        public readonly int Log = log;
        public readonly float InvTemperature = invTemperature;
    }

    internal static void SoftmaxKernel(ArrayView<float> x, SoftmaxParams p)
    {
        long b = (long)Grid.IdxX * p.N;
        float m = float.NegativeInfinity;
        for (int i = Group.IdxX; i < p.N; i += Group.DimX)
            m = XMath.Max(m, x[b + i] * p.InvTemperature);
        m = GroupExtensions.AllReduce<float, MaxFloat>(m);
        float s = 0f;
        for (int i = Group.IdxX; i < p.N; i += Group.DimX)
            s += XMath.Exp((x[b + i] * p.InvTemperature) - m);
        s = GroupExtensions.AllReduce<float, AddFloat>(s);
        float logZ = m + XMath.Log(s);
        float inv = 1f / s;
        for (int i = Group.IdxX; i < p.N; i += Group.DimX)
        {
            float z = x[b + i] * p.InvTemperature;
            x[b + i] = p.Log != 0 ? z - logZ : XMath.Exp(z - m) * inv;
        }
    }

    internal static void SoftmaxSerialKernel(Index1D row, ArrayView<float> x, SoftmaxParams p)
    {
        long b = (long)row.X * p.N;
        float m = float.NegativeInfinity;
        for (int i = 0; i < p.N; i++)
            m = XMath.Max(m, x[b + i] * p.InvTemperature);
        float s = 0f;
        for (int i = 0; i < p.N; i++)
            s += XMath.Exp((x[b + i] * p.InvTemperature) - m);
        float logZ = m + XMath.Log(s);
        float inv = 1f / s;
        for (int i = 0; i < p.N; i++)
        {
            float z = x[b + i] * p.InvTemperature;
            x[b + i] = p.Log != 0 ? z - logZ : XMath.Exp(z - m) * inv;
        }
    }
}
