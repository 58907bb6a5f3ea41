using Qtip.Kernels.Runtime;

namespace Qtip.Model.Llama;

/// <summary>How a <see cref="LlamaModel"/> is laid out on the device.</summary>
public sealed record ModelOptions
{
    /// <summary>Storage of dense weights and the embedding (bf16 checkpoints are exact in fp16 down to 6e-5). Null (the
    /// default): <see cref="DefaultPrecision"/> of the device.</summary>
    public WeightPrecision? Precision { get; init; }

    /// <summary>fp16 where the device has it (CUDA, the CPU accelerator), fp32 on a device without fp16 (an OpenCL device
    /// without cl_khr_fp16, e.g. pocl's CPU device).</summary>
    public static WeightPrecision DefaultPrecision(QtipDevice device) =>
        device.SupportsFloat16 ? WeightPrecision.Float16 : WeightPrecision.Float32;

    /// <summary><see cref="Precision"/>, or the device's default; throws <see cref="NotSupportedException"/> for fp16 on a
    /// device without it.</summary>
    public WeightPrecision PrecisionOn(QtipDevice device)
    {
        var p = Precision ?? DefaultPrecision(device);
        if (p == WeightPrecision.Float16)
            device.RequireFloat16("fp16 model weights");
        return p;
    }

    /// <summary>Positions held by the KV cache (prompt + generated tokens, or the eval window). Default:
    /// min(max_position_embeddings, 2048), capped by what attention fits in shared memory.</summary>
    public int? MaxContext { get; init; }

    /// <summary>Most rows one prefill call processes (activation buffers are sized for it). Default: MaxContext.</summary>
    public int? MaxPrefillRows { get; init; }
}

/// <summary>Which logits a prefill computes.</summary>
public enum LogitsMode
{
    /// <summary>No output head (e.g. a forward run only to collect activations).</summary>
    None,

    /// <summary>Only the last row's logits (generation), in row 0 of <see cref="LlamaModel.Logits"/>.</summary>
    Last,

    /// <summary>Every row's logits (evaluation).</summary>
    All,
}
