using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;
using Qtip.Quant.Ldlq;

namespace Qtip.Quant.Tests.Ldlq;

/// <summary>Test double for BlockLDLQ: rounds every target to a uniform grid (on the host), words = grid indices.
/// It makes the LDLQ feedback observable without the trellis search.</summary>
internal sealed class GridQuantizer(float step, int levels, int[]? permutation = null) : ISequenceQuantizer
{
    public int SequenceLength => 256;

    public int WordsPerSequence => 256;

    public IReadOnlyList<int> TilePermutation { get; } = permutation ?? Enumerable.Range(0, 256).ToArray();

    public float Round(float x) => Math.Clamp(MathF.Round(x / step), -levels, levels) * step;

    public void Quantize(ArrayView<float> targets, int count, ArrayView<float> reconstruction, ArrayView<short> words, AcceleratorStream stream)
    {
        var t = new float[count * 256];
        ArrayView1D<float, Stride1D.Dense> tv = targets.SubView(0, t.Length);
        tv.CopyToCPU(stream, t);
        stream.Synchronize();
        var w = new short[count * 256];
        for (int i = 0; i < t.Length; i++)
        {
            float r = Round(t[i]);
            w[i] = (short)MathF.Round(r / step);
            t[i] = r;
        }
        ArrayView1D<float, Stride1D.Dense> rv = reconstruction.SubView(0, t.Length);
        rv.CopyFromCPU(stream, t);
        ArrayView1D<short, Stride1D.Dense> wv = words.SubView(0, w.Length);
        wv.CopyFromCPU(stream, w);
    }
}
