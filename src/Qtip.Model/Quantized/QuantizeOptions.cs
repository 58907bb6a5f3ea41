using Qtip.Kernels;
using Qtip.Quant.Trellis;

namespace Qtip.Model.Quantized;

/// <summary>How the weights are quantized: QTIP (trellis + BlockLDLQ), or round-to-nearest as a baseline.</summary>
public enum QuantizeMethod
{
    Qtip,
    Rtn,
}

/// <summary>Where each layer's Hessians come from.</summary>
public enum HessianSource
{
    /// <summary>All layers' Hessians from the full-precision model, collected once (the reference's way).</summary>
    FullPrecision,

    /// <summary>Layer l's Hessians from the model whose layers &lt; l are already quantized.</summary>
    Sequential,

    /// <summary>H = I (ablation: no Hessian information; BlockLDLQ has no feedback).</summary>
    Identity,
}

/// <summary>Everything <c>qtip quantize</c> needs. Immutable; the CLI builds it from its options.</summary>
public sealed record QuantizeOptions
{
    public required string ModelDir { get; init; }

    public required string OutDir { get; init; }

    public int Bits { get; init; } = 2;

    /// <summary>The trellis code (a row of <see cref="TrellisCodes"/>).</summary>
    public TrellisCodeInfo Code { get; init; } = TrellisCodes.Hyb;

    public int L { get; init; } = 16;

    public QuantizeMethod Method { get; init; } = QuantizeMethod.Qtip;

    public HessianSource Hessian { get; init; } = HessianSource.FullPrecision;

    /// <summary>Skip the random Hadamard transform (ablation); the output is then a dense checkpoint of Ŵ.</summary>
    public bool NoRht { get; init; }

    /// <summary>Calibration text (UTF-8, documents separated by blank lines).</summary>
    public required string CalibrationFile { get; init; }

    public int CalibrationContext { get; init; } = 512;

    /// <summary>Calibration windows to use; 0 (the default) takes every whole window of the text.</summary>
    public int CalibrationWindows { get; init; }

    public ulong Seed { get; init; }

    public double SigmaReg { get; init; } = 0.01;

    /// <summary>Wscale = RMS(Wr) / (RMS(code) · this). 0 (the default) picks <see cref="DefaultScaleOverride"/> for the bit width.</summary>
    public double ScaleOverride { get; init; }

    /// <summary>The override actually used: the given one, else the code's own (<see cref="TrellisCodeInfo.ScaleOverride"/>, when it
    /// has one), else 0.95 at K ≤ 2 and 0.9 (the reference's) at K ≥ 3. Measured on
    /// llama-small (docs/BENCHMARKS.md): at 2 bits 0.95 beats 0.9 for every code and seed (HYB 24.31 vs 24.40, mean of 3
    /// seeds); at 3 and 4 bits 0.9 is as good or better than 0.95, 0.85 and 0.8.</summary>
    public double EffectiveScaleOverride => ScaleOverride > 0 ? ScaleOverride : Code.ScaleOverride > 0 ? Code.ScaleOverride : DefaultScaleOverride(Bits);

    public static double DefaultScaleOverride(int bits) => bits <= 2 ? 0.95 : 0.9;

    public bool Resume { get; init; }

    public bool Force { get; init; }

    /// <summary>Layers to quantize, "A-B" (0-based, inclusive), for a shard of a run spread over machines; null = all.
    /// A shard keeps its layer files in <c>&lt;out&gt;.partial</c>; <see cref="Assemble"/> writes the checkpoint.</summary>
    public string? Layers { get; init; }

    /// <summary>Write the checkpoint from the layer files the shards left in <c>&lt;out&gt;.partial</c> (quantizing any layer still missing).</summary>
    public bool Assemble { get; init; }

    /// <summary>Device bytes of prepared matrices in one BlockLDLQ batch; 0 = a quarter of the device's memory, at most 8 GiB (the CPU: 2 GiB).</summary>
    public long BatchBytes { get; init; }

    /// <summary>Most decoder layers quantized together (sharing trellis batches), when their matrices fit <see cref="BatchBytes"/>.
    /// Bounds the Hessians held at once, so device memory does not grow with depth.</summary>
    public int MaxGroupLayers { get; init; } = 2;

    /// <summary>Weights of the calibration forward: fp32 (the default; the Hessians are those of the whole-model fp32
    /// prefill, bit for bit) or fp16 (the tensor-core product on CUDA, activations rounded to fp16 inside each product:
    /// faster (the 7B-width prefill product ~4× on an H100); Hessians from fp16-rounded products, not bit-identical to fp32).</summary>
    public Qtip.Model.Llama.WeightPrecision ForwardPrecision { get; init; } = Qtip.Model.Llama.WeightPrecision.Float32;

    /// <summary>Completed layer files are kept and reused: --resume, a shard (--layers) or --assemble.</summary>
    public bool KeepsPartial => Resume || Layers is not null || Assemble;

    /// <summary>The layer range (first, last), 0-based inclusive, checked against <paramref name="layers"/>.</summary>
    public (int First, int Last) LayerRange(int layers)
    {
        if (Layers is null)
            return (0, layers - 1);
        var parts = Layers.Split('-');
        if (parts.Length is < 1 or > 2 || !int.TryParse(parts[0], out int a) || !int.TryParse(parts[^1], out int b) || a < 0 || b < a)
            throw new ArgumentException($"--layers '{Layers}': expected A-B with 0 ≤ A ≤ B (0-based, inclusive), or one layer N", nameof(layers));
        if (b >= layers)
            throw new InvalidInputException($"--layers '{Layers}': the model has {layers} layers (0..{layers - 1})");
        return (a, b);
    }

    /// <summary>Values per trellis state of the code.</summary>
    public int V => Code.V;

    /// <summary>True when the output stores the trellis; false for dense fake-quantized checkpoints (RTN, no-RHT).</summary>
    public bool WritesTrellis => Method == QuantizeMethod.Qtip && !NoRht;

    public string CodeName => Code.Name;

    /// <summary>Throws <see cref="ArgumentException"/> naming the bad option.</summary>
    public void Validate()
    {
        // K = 1 has kernel paths (TrellisShape, the K = 1 matvec, bench distortion) but no 1-bit checkpoint is tested end to
        // end (quantize → load → eval), so checkpoints are 2, 3 or 4 bits per weight.
        if (Bits is < 2 or > 4)
            throw new ArgumentException($"--bits must be 2, 3 or 4 (got {Bits})", nameof(Bits));
        if (L is < 8 or > 16)
            throw new ArgumentException($"--L must be 8…16 (got {L})", nameof(L));
        if (Bits * V >= L)
            throw new ArgumentException($"K·V = {Bits * V} must be below L = {L}", nameof(L));
        if (!Code.Quantizable)
            throw new ArgumentException($"--code {Code.Name} is a distortion baseline (bench distortion), not a checkpoint format: a quantize run cannot make its table", nameof(Code));
        if (CalibrationContext < 2)
            throw new ArgumentException($"--calib-ctx must be at least 2 (got {CalibrationContext})", nameof(CalibrationContext));
        if (CalibrationWindows < 0)
            throw new ArgumentException($"--calib-windows must be 0 (all) or positive (got {CalibrationWindows})", nameof(CalibrationWindows));
        if (!(SigmaReg >= 0))
            throw new ArgumentException($"--sigma-reg must be ≥ 0 (got {SigmaReg})", nameof(SigmaReg));
        if (MaxGroupLayers < 1)
            throw new ArgumentException($"--group-layers must be at least 1 (got {MaxGroupLayers})", nameof(MaxGroupLayers));
        if (BatchBytes < 0)
            throw new ArgumentException($"--batch-mb must be 0 (auto) or positive (got {BatchBytes})", nameof(BatchBytes));
        if (Layers is not null)
            LayerRange(int.MaxValue);
        if (Layers is not null && Assemble)
            throw new ArgumentException("--layers (a shard) and --assemble (the final step) exclude each other", nameof(Layers));
        if (Layers is not null && Hessian == HessianSource.Sequential)
            throw new ArgumentException("--layers shards need full-precision Hessians: --sequential needs every earlier layer quantized first", nameof(Layers));
        if (!(ScaleOverride >= 0))
            throw new ArgumentException($"--scale-override must be > 0, or 0 for the default (got {ScaleOverride})", nameof(ScaleOverride));
    }
}
