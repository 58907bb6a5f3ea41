using Qtip.Kernels.Llama;
using Qtip.Kernels.Runtime;

namespace Qtip.Testing;

/// <summary>
/// Runs the decode-path kernel sets of a device (MatVec, RmsNorm, Attention, and MatMul when asked) in the grouped style
/// until disposed, then restores their styles: the GPU kernel design checked on the CPU simulator inside a whole model.
/// The test assemblies run their tests one at a time (one collection), so the shared kernel sets are not raced.
/// </summary>
public sealed class KernelStyles : IDisposable
{
    private readonly MatVec mv;
    private readonly RmsNorm norm;
    private readonly Attention att;
    private readonly MatMul? mm;
    private readonly (KernelStyle Mv, KernelStyle Norm, KernelStyle Att, KernelStyle? Mm) old;

    private KernelStyles(QtipDevice device, bool matMul)
    {
        mv = device.Get<MatVec>();
        norm = device.Get<RmsNorm>();
        att = device.Get<Attention>();
        mm = matMul ? device.Get<MatMul>() : null;
        old = (mv.Style, norm.Style, att.Style, mm?.Style);
    }

    /// <summary>The grouped style when <paramref name="grouped"/> (else the styles stay as they are, restored all the same).</summary>
    public static KernelStyles Grouped(QtipDevice device, bool grouped = true, bool matMul = false)
    {
        var s = new KernelStyles(device, matMul);
        if (grouped)
        {
            s.mv.Style = s.norm.Style = s.att.Style = KernelStyle.Grouped;
            if (s.mm is not null)
                s.mm.Style = KernelStyle.Grouped;
        }
        return s;
    }

    public void Dispose()
    {
        (mv.Style, norm.Style, att.Style) = (old.Mv, old.Norm, old.Att);
        if (mm is not null)
            mm.Style = old.Mm!.Value;
    }
}
