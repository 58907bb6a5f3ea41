using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels;
using Qtip.Kernels.Llama;
using Qtip.Kernels.Runtime;
using Qtip.Quant;
using Qtip.Model.Checkpoint;
using Qtip.Model.Llama;

namespace Qtip.Model.Quantized;

/// <summary>
/// Where a layer-streaming quantization run gets its full-precision weights, one tensor at a time and in fp32 on the
/// device: a memory-mapped checkpoint, or seeded random weights made on the device (<c>qtip bench quantize</c>).
/// </summary>
public interface IWeightSource
{
    LlamaConfig Config { get; }

    /// <summary>W (m×n) of one linear, fp32 on the device, checked for NaN/Inf; the caller owns the buffer.</summary>
    MemoryBuffer1D<float, Stride1D.Dense> Linear(int layer, LinearKind kind);

    /// <summary>The norms and the seven linears of one decoder layer (linears in <paramref name="precision"/>), for the calibration forward.</summary>
    DecoderLayer Layer(int layer, WeightPrecision precision = WeightPrecision.Float32);

    /// <summary>The embedding table (vocab×dim, fp32) on the device; the caller owns the buffer.</summary>
    MemoryBuffer1D<float, Stride1D.Dense> Embedding();
}

/// <summary>Weights from a checkpoint (memory-mapped safetensors), read tensor by tensor: no whole-model copy on the host or the device.</summary>
public sealed class CheckpointWeights(QtipDevice device, LlamaCheckpoint checkpoint) : IWeightSource
{
    public LlamaConfig Config => checkpoint.Config;

    public MemoryBuffer1D<float, Stride1D.Dense> Linear(int layer, LinearKind kind)
    {
        string name = LlamaNames.Linear(layer, kind);
        var (m, n) = LlamaNames.LinearShape(Config, kind);
        long count = checkpoint.Tensors.Info(name).ElementCount;
        if (count != (long)m * n)
            throw new InvalidInputException($"{checkpoint.Tensors.FileOf(name).Path}: tensor {name} has {count} elements, expected [{m},{n}]");
        return FiniteWeights.Upload(device, checkpoint.Tensors, name); // refuses NaN/Inf, naming the tensor
    }

    public DecoderLayer Layer(int layer, WeightPrecision precision = WeightPrecision.Float32)
    {
        var store = checkpoint.Tensors;
        var result = new DecoderLayer(layer,
            FiniteWeights.Upload(device, store, LlamaNames.InputNorm(layer)),
            FiniteWeights.Upload(device, store, LlamaNames.PostAttentionNorm(layer)));
        try
        {
            foreach (var kind in LlamaNames.LayerLinears)
            {
                var (m, n) = LlamaNames.LinearShape(Config, kind);
                result[kind] = precision == WeightPrecision.Float32
                    ? DenseLinear.Own(device, Linear(layer, kind), m, n)
                    : DenseLinear.FromCheckpoint(device, store, LlamaNames.Linear(layer, kind), precision);
            }
            return result;
        }
        catch
        {
            result.Dispose();
            throw;
        }
    }

    public MemoryBuffer1D<float, Stride1D.Dense> Embedding() => FiniteWeights.Upload(device, checkpoint.Tensors, LlamaNames.Embedding);
}

/// <summary>
/// A model of <see cref="Config"/>'s shape with seeded random weights made on the device, tensor by tensor (nothing on
/// disk, nothing on the host): linears uniform with variance 1/in (as <see cref="LlamaModel.CreateRandom"/>), the
/// embedding uniform ±0.5, norms 1. Each tensor's seed depends only on (seed, layer, kind), so a layer is the same
/// whichever layers are loaded before it.
/// </summary>
public sealed class RandomWeights(QtipDevice device, LlamaConfig config, ulong seed = 1) : IWeightSource
{
    public LlamaConfig Config => config;

    public MemoryBuffer1D<float, Stride1D.Dense> Linear(int layer, LinearKind kind)
    {
        var (m, n) = LlamaNames.LinearShape(config, kind);
        var b = device.Allocate1D<float>((long)m * n);
        device.Get<RandomFill>().Apply(b.View, SplitMix64.Derive(seed, $"layer {layer} {kind}"), MathF.Sqrt(3f / n));
        return b;
    }

    public DecoderLayer Layer(int layer, WeightPrecision precision = WeightPrecision.Float32)
    {
        var result = new DecoderLayer(layer, Ones(config.HiddenSize), Ones(config.HiddenSize));
        foreach (var kind in LlamaNames.LayerLinears)
        {
            var (m, n) = LlamaNames.LinearShape(config, kind);
            if (precision == WeightPrecision.Float32)
            {
                result[kind] = DenseLinear.Own(device, Linear(layer, kind), m, n);
                continue;
            }
            var h = device.Allocate1D<ILGPU.Half>((long)m * n);
            device.Get<RandomFill>().Apply(h.View, SplitMix64.Derive(seed, $"layer {layer} {kind}"), MathF.Sqrt(3f / n));
            result[kind] = DenseLinear.Own(device, h, m, n);
        }
        return result;
    }

    public MemoryBuffer1D<float, Stride1D.Dense> Embedding()
    {
        var b = device.Allocate1D<float>((long)config.VocabSize * config.HiddenSize);
        device.Get<RandomFill>().Apply(b.View, SplitMix64.Derive(seed, "embedding"), 0.5f);
        return b;
    }

    private MemoryBuffer1D<float, Stride1D.Dense> Ones(int n) => device.Allocate1D(Enumerable.Repeat(1f, n).ToArray());
}
