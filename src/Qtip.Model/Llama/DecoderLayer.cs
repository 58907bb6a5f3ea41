using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;
using Qtip.Model.Checkpoint;

namespace Qtip.Model.Llama;

/// <summary>
/// The weights of one decoder layer on the device: input_layernorm and post_attention_layernorm (dim), and the seven
/// linears indexed by <see cref="LinearKind"/>: q (qDim, dim), k, v (kvDim, dim), o (dim, qDim), gate, up (hidden, dim),
/// down (dim, hidden). The model holds one per layer; layer-streaming quantization holds one or a few at a time. Both
/// run it with <see cref="LayerForward.RunLayer"/>.
/// </summary>
public sealed class DecoderLayer : IDisposable
{
    private readonly ILinearLayer?[] linears = new ILinearLayer?[7];

    /// <summary>The linears by <see cref="LinearKind"/>, for the model that owns the layer (it swaps them without the indexer's dispose).</summary>
    internal ILinearLayer[] Linears => linears!;

    public ILinearLayer Q => this[LinearKind.Q];

    public ILinearLayer K => this[LinearKind.K];

    public ILinearLayer V => this[LinearKind.V];

    public ILinearLayer O => this[LinearKind.O];

    public ILinearLayer Gate => this[LinearKind.Gate];

    public ILinearLayer Up => this[LinearKind.Up];

    public ILinearLayer Down => this[LinearKind.Down];

    public DecoderLayer(int index, MemoryBuffer1D<float, Stride1D.Dense> inputNorm, MemoryBuffer1D<float, Stride1D.Dense> postNorm)
    {
        Index = index;
        InputNorm = inputNorm;
        PostNorm = postNorm;
    }

    /// <summary>The layer's index in the model.</summary>
    public int Index { get; }

    public MemoryBuffer1D<float, Stride1D.Dense> InputNorm { get; }

    public MemoryBuffer1D<float, Stride1D.Dense> PostNorm { get; }

    /// <summary>The linear <paramref name="kind"/>; the layer owns it.</summary>
    public ILinearLayer this[LinearKind kind]
    {
        get => linears[(int)kind] ?? throw new InvalidOperationException($"layer {Index}: {kind} not loaded");
        set
        {
            var old = linears[(int)kind];
            if (old is not null && (old.InFeatures != value.InFeatures || old.OutFeatures != value.OutFeatures))
                throw new ArgumentException($"{LlamaNames.Linear(Index, kind)}: replacement is {value.OutFeatures}×{value.InFeatures}, expected {old.OutFeatures}×{old.InFeatures}", nameof(value));
            if (old is not null && !ReferenceEquals(old, value))
                old.Dispose();
            linears[(int)kind] = value;
        }
    }

    /// <summary>
    /// Replaces the weight of linear <paramref name="kind"/> by <paramref name="product"/> (same shape), keeping its bias
    /// if it has one: what the sequential quantizer does with each reconstruction. The old product is disposed.
    /// </summary>
    public void ReplaceProduct(LinearKind kind, ILinearLayer product)
    {
        if (linears[(int)kind] is BiasedLinear b)
        {
            if (b.InFeatures != product.InFeatures || b.OutFeatures != product.OutFeatures)
                throw new ArgumentException($"{LlamaNames.Linear(Index, kind)}: replacement is {product.OutFeatures}×{product.InFeatures}, expected {b.OutFeatures}×{b.InFeatures}", nameof(product));
            linears[(int)kind] = b.WithProduct(product);
            return;
        }
        this[kind] = product;
    }

    public void Dispose()
    {
        InputNorm.Dispose();
        PostNorm.Dispose();
        foreach (var l in linears)
            l?.Dispose();
        Array.Clear(linears);
    }
}
