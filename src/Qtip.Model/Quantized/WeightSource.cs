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

    /// <summary>The norms and the seven linears of one decoder layer (linears in <paramref name="precision"/>, with their
    /// fp32 biases where the family has them), for the calibration forward.</summary>
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
        var spec = Config.Family.Linear(kind);
        string name = spec.WeightName(layer);
        var (m, n) = spec.Shape(Config);
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
            foreach (var spec in Config.Family.Linears)
            {
                var (m, n) = spec.Shape(Config);
                ILinearLayer linear = precision == WeightPrecision.Float32
                    ? DenseLinear.Own(device, Linear(layer, spec.Kind), m, n)
                    : DenseLinear.FromCheckpoint(device, store, spec.WeightName(layer), precision);
                result[spec.Kind] = spec.Bias ? BiasedLinear.FromCheckpoint(device, linear, store, spec.BiasName(layer)) : linear;
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
/// embedding uniform ±0.5, norms 1, biases (where the family has them) uniform ±0.5. Each tensor's seed depends only on (seed, layer, kind), so a layer is the same
/// whichever layers are loaded before it.
/// </summary>
public sealed class RandomWeights(QtipDevice device, LlamaConfig config, ulong seed = 1) : IWeightSource
{
    public LlamaConfig Config => config;

    public MemoryBuffer1D<float, Stride1D.Dense> Linear(int layer, LinearKind kind)
    {
        var (m, n) = config.Family.Linear(kind).Shape(config);
        var b = device.Allocate1D<float>((long)m * n);
        device.Get<RandomFill>().Apply(b.View, SplitMix64.Derive(seed, $"layer {layer} {kind}"), MathF.Sqrt(3f / n));
        return b;
    }

    public DecoderLayer Layer(int layer, WeightPrecision precision = WeightPrecision.Float32)
    {
        var result = new DecoderLayer(layer, Ones(config.HiddenSize), Ones(config.HiddenSize));
        foreach (var spec in config.Family.Linears)
        {
            var kind = spec.Kind;
            var (m, n) = spec.Shape(config);
            ILinearLayer linear;
            if (precision == WeightPrecision.Float32)
            {
                linear = DenseLinear.Own(device, Linear(layer, kind), m, n);
            }
            else
            {
                var h = device.Allocate1D<ILGPU.Half>((long)m * n);
                device.Get<RandomFill>().Apply(h.View, SplitMix64.Derive(seed, $"layer {layer} {kind}"), MathF.Sqrt(3f / n));
                linear = DenseLinear.Own(device, h, m, n);
            }
            if (spec.Bias)
            {
                // Biases uniform ±0.5 (as LlamaModel.CreateRandom), seeded by (seed, layer, kind) alone.
                var b = device.Allocate1D<float>(m);
                device.Get<RandomFill>().Apply(b.View, SplitMix64.Derive(seed, $"layer {layer} {kind} bias"), 0.5f);
                linear = new BiasedLinear(device, linear, b);
            }
            result[kind] = linear;
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
