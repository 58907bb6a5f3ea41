using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;
using Half = ILGPU.Half;

namespace Qtip.Kernels.Llama;

/// <summary>
/// Embedding lookup: x (rows×dim) = E[tokens[r], :] as fp32, E (vocab×dim) fp16 or fp32. The ids are read on the
/// device, so a decode loop can feed the id that the argmax or sampling kernel wrote without a host round trip.
/// Ids are checked on the host where they come from the host (<see cref="CheckIds"/>); device-produced ids are in
/// range by construction. One thread per output element on GPUs; on the CPU simulator each thread takes a span. The
/// fp16 kernel is loaded on first use (a device without fp16 refuses it with <see cref="NotSupportedException"/>).
/// </summary>
public sealed class Embedding : IKernelSet<Embedding>
{
    private readonly QtipDevice device;
    private readonly Lazy<Action<AcceleratorStream, Index1D, ArrayView<Half>, ArrayView<int>, ArrayView<float>, EmbeddingParams>> f16;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, EmbeddingParams> f32;

    private Embedding(QtipDevice device)
    {
        this.device = device;
        f16 = new(() => device.Accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<Half>, ArrayView<int>, ArrayView<float>, EmbeddingParams>(EmbeddingKernel<Half, F16>));
        f32 = device.Accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, EmbeddingParams>(EmbeddingKernel<float, F32>);
    }

    public static Embedding Create(QtipDevice device) => new(device);

    public void Apply(ArrayView<Half> table, int vocab, int dim, ArrayView<int> tokens, ArrayView<float> x, int rows, AcceleratorStream? stream = null)
    {
        device.RequireFloat16("Embedding");
        var p = Validate(device, table.Length, vocab, dim, tokens, x, rows);
        f16.Value(stream ?? device.Accelerator.DefaultStream, Check.Threads(p.Total, p.Span), table, tokens, x, p);
    }

    public void Apply(ArrayView<float> table, int vocab, int dim, ArrayView<int> tokens, ArrayView<float> x, int rows, AcceleratorStream? stream = null)
    {
        var p = Validate(device, table.Length, vocab, dim, tokens, x, rows);
        f32(stream ?? device.Accelerator.DefaultStream, Check.Threads(p.Total, p.Span), table, tokens, x, p);
    }

    /// <summary>Throws if an id is outside [0, vocab).</summary>
    public static void CheckIds(ReadOnlySpan<int> ids, int vocab)
    {
        for (int i = 0; i < ids.Length; i++)
        {
            if ((uint)ids[i] >= (uint)vocab)
                throw new InvalidInputException($"token id {ids[i]} at position {i} is outside the vocabulary [0, {vocab})");
        }
    }

    private static EmbeddingParams Validate(QtipDevice device, long tableLength, int vocab, int dim, ArrayView<int> tokens, ArrayView<float> x, int rows)
    {
        const string op = "Embedding";
        Check.Positive(op, "vocab", vocab);
        Check.Positive(op, "dim", dim);
        Check.Positive(op, "rows", rows);
        if (tableLength < (long)vocab * dim)
            throw new ArgumentException($"{op}: table has {tableLength} elements, needs vocab×dim = {vocab}×{dim}");
        Check.Length(op, "tokens", tokens, rows, $"rows = {rows}");
        Check.Length(op, "x", x, (long)rows * dim, $"rows×dim = {rows}×{dim}");
        if ((long)rows * dim > int.MaxValue)
            throw new ArgumentException($"{op}: {rows}×{dim} exceeds one launch");
        int total = rows * dim;
        return new EmbeddingParams(dim, total, Check.Span(device, total));
    }

    public readonly struct EmbeddingParams(int dim, int total, int span)
    {
        public readonly int Dim = dim;
        public readonly int Total = total;
        public readonly int Span = span;
    }

    internal static void EmbeddingKernel<T, TW>(Index1D i, ArrayView<T> table, ArrayView<int> tokens, ArrayView<float> x, EmbeddingParams p)
        where T : unmanaged
        where TW : struct, IWeightElement<T>
    {
        int end = XMathMin((i + 1) * p.Span, p.Total);
        for (int e = i * p.Span; e < end; e++)
        {
            int r = e / p.Dim;
            int d = e - (r * p.Dim);
            x[e] = default(TW).Load(table, ((long)tokens[r] * p.Dim) + d);
        }
    }

    private static int XMathMin(int a, int b) => a < b ? a : b;
}
