using ILGPU.Runtime;
using Qtip.Kernels.Runtime;
using Qtip.Kernels.Trellis;
using Qtip.Model.Checkpoint;
using Qtip.Quant.Trellis;

namespace Qtip.Model.Quantized;

/// <summary>The code side of a QTIP run: codebook, trellis quantizer, the stored layout and the table to write.</summary>
internal sealed class CodeSetup : IDisposable
{
    private readonly QtipDevice device;
    private readonly TrellisQuantizer quantizer;

    private CodeSetup(QtipDevice device, QtipCodeSpec spec, TrellisQuantizer quantizer, float[]? lut, double codeRms)
    {
        this.device = device;
        Spec = spec;
        this.quantizer = quantizer;
        Lut = lut;
        CodeRms = codeRms;
        Sequence = new TrellisSequenceQuantizer(quantizer, spec.Layout);
    }

    public QtipCodeSpec Spec { get; }

    /// <summary>The code's table as searched and stored (rounded by <see cref="QtipFormat.RoundTable"/>), or null.</summary>
    public float[]? Lut { get; }

    public double CodeRms { get; }

    public TrellisSequenceQuantizer Sequence { get; }

    public static CodeSetup Create(QtipDevice device, QuantizeOptions o, LlamaConfig config)
    {
        var code = o.Code;
        // Spec §12: the table is rounded to the model dtype before the search (QtipFormat's storage rule).
        float[]? lut = code.TableBits(o.L) > 0
            ? QtipFormat.RoundTable(code.MakeTable?.Invoke(device, o.L) ?? throw new ArgumentException($"code {code.Name} cannot be written to a checkpoint: no table maker"), config.TorchDtype)
            : null;
        var book = TrellisCodebook.For(code, lut, o.L);
        var spec = QtipCodeSpec.Default(code, o.L, o.Bits);
        // The pipeline checks the weights for NaN/Inf once on the host; no per-call check (and sync) in the search.
        var q = new TrellisQuantizer(device, book, o.L, o.Bits, options: new TrellisQuantizerOptions(ValidateTargets: false));
        return new CodeSetup(device, spec, q, lut, book.Rms(o.L));
    }

    /// <summary>Generic tile-major words → the stored layout (the code's default: the kernel layout for HYB at L = 16).</summary>
    public short[] ToStoredLayout(short[] generic, int m, int n)
    {
        if (Spec.Layout == TileLayoutKind.Generic)
            return generic;
        using var g = device.Allocate1D(generic);
        using var k = device.Allocate1D<short>(generic.Length);
        device.Get<TrellisRelayout<GenericLayout, KernelLayout>>().Apply(g.View, m, n, Spec.K, k.View);
        return k.GetAsArray1D();
    }

    public void Dispose()
    {
        Sequence.Dispose();
        quantizer.Dispose();
    }
}
