using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Algorithms.ScanReduceOperations;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;

namespace Qtip.Kernels.Llama;

/// <summary>
/// Per-row negative log-likelihood of a target id under the logits: nll[r] = logsumexp(logits[r, :]) −
/// logits[r, targets[r]], fp32 with the row maximum subtracted (as log_softmax does). One group per row. Only
/// rows×1 floats come back to the host, not the rows×vocab logits; the host sums them in double. Serial style (CPU
/// simulator and OpenCL): one thread per row. The grouped kernel is loaded when first launched.
/// </summary>
public sealed class CrossEntropy : IKernelSet<CrossEntropy>
{
    private readonly QtipDevice device;
    private readonly Lazy<Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<int>, ArrayView<float>, CrossEntropyParams>> kernel;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, CrossEntropyParams> serial;

    private CrossEntropy(QtipDevice device)
    {
        this.device = device;
        kernel = new(() => device.LoadKernel<ArrayView<float>, ArrayView<int>, ArrayView<float>, CrossEntropyParams>(CrossEntropyKernel));
        serial = device.Accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, CrossEntropyParams>(CrossEntropySerialKernel);
        Style = Check.DefaultStyle(device);
    }

    public KernelStyle Style { get; set; }

    public static CrossEntropy Create(QtipDevice device) => new(device);

    /// <summary>nll (rows) from logits (rows×vocab) and targets (rows, each in [0, vocab) — checked by the caller).</summary>
    public void Apply(ArrayView<float> logits, ArrayView<int> targets, ArrayView<float> nll, int rows, int vocab, AcceleratorStream? stream = null)
    {
        const string op = "CrossEntropy";
        Check.Positive(op, "rows", rows);
        Check.Positive(op, "vocab", vocab);
        Check.Length(op, "logits", logits, (long)rows * vocab, $"rows×vocab = {rows}×{vocab}");
        Check.Length(op, "targets", targets, rows, $"rows = {rows}");
        Check.Length(op, "nll", nll, rows, $"rows = {rows}");
        if (Style == KernelStyle.Serial)
            serial(stream ?? device.Accelerator.DefaultStream, rows, logits, targets, nll, new CrossEntropyParams(vocab));
        else
            kernel.Value(stream ?? device.Accelerator.DefaultStream, new KernelConfig(rows, Check.GroupSize(device)), logits, targets, nll, new CrossEntropyParams(vocab));
    }

    public readonly struct CrossEntropyParams(int vocab)
    {
        public readonly int Vocab = vocab;
    }

    internal static void CrossEntropyKernel(ArrayView<float> logits, ArrayView<int> targets, ArrayView<float> nll, CrossEntropyParams p)
    {
        long b = (long)Grid.IdxX * p.Vocab;
        float m = float.NegativeInfinity;
        for (int i = Group.IdxX; i < p.Vocab; i += Group.DimX)
            m = XMath.Max(m, logits[b + i]);
        m = GroupExtensions.AllReduce<float, MaxFloat>(m);
        float s = 0f;
        for (int i = Group.IdxX; i < p.Vocab; i += Group.DimX)
            s += XMath.Exp(logits[b + i] - m);
        s = GroupExtensions.AllReduce<float, AddFloat>(s);
        if (Group.IdxX == 0)
            nll[Grid.IdxX] = m + XMath.Log(s) - logits[b + targets[Grid.IdxX]];
    }

    internal static void CrossEntropySerialKernel(Index1D row, ArrayView<float> logits, ArrayView<int> targets, ArrayView<float> nll, CrossEntropyParams p)
    {
        long b = (long)row.X * p.Vocab;
        float m = float.NegativeInfinity;
        for (int i = 0; i < p.Vocab; i++)
            m = XMath.Max(m, logits[b + i]);
        float s = 0f;
        for (int i = 0; i < p.Vocab; i++)
            s += XMath.Exp(logits[b + i] - m);
        nll[row] = m + XMath.Log(s) - logits[b + targets[row]];
    }
}
