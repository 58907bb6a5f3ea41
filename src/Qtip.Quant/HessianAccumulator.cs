using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Linalg;
using Qtip.Kernels.Runtime;

namespace Qtip.Quant;

/// <summary>
/// H = Σ x xᵀ / tokens for the inputs x (n) of one linear group, accumulated on the device as float64 from fp32
/// activation batches (see <see cref="Gram"/> for the precision argument: fp32 runs of ≤ 256 products, float64
/// above that, so the sum stays accurate over millions of tokens).
/// </summary>
public sealed class HessianAccumulator : IDisposable
{
    private readonly Gram gram;
    private readonly MemoryBuffer1D<double, Stride1D.Dense> sum;
    private bool finished;

    public HessianAccumulator(QtipDevice device, int n)
    {
        if (n <= 0)
            throw new ArgumentOutOfRangeException(nameof(n), n, "Hessian size must be positive");
        N = n;
        gram = device.Get<Gram>();
        sum = device.Allocate1D<double>((long)n * n);
        sum.MemSetToZero();
    }

    public int N { get; }

    /// <summary>Tokens seen so far.</summary>
    public long Tokens { get; private set; }

    /// <summary>Adds the rows of x (rows × n) as tokens.</summary>
    public void Add(ArrayView<float> x, int rows, AcceleratorStream? stream = null)
    {
        if (finished)
            throw new InvalidOperationException("Hessian already finished");
        gram.Accumulate(x, rows, N, sum.View, stream);
        Tokens += rows;
    }

    /// <summary>Symmetrizes and divides by the token count; returns the mean Hessian (n×n, float64, on the device).</summary>
    public ArrayView<double> Finish(AcceleratorStream? stream = null)
    {
        if (!finished)
        {
            if (Tokens == 0)
                throw new InvalidOperationException("Hessian has no tokens: nothing reached this layer");
            gram.Symmetrize(sum.View, N, 1.0 / Tokens, stream);
            finished = true;
        }
        return sum.View;
    }

    public void Dispose() => sum.Dispose();
}
