using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Trellis;
using Qtip.Quant.Ldlq;

namespace Qtip.Quant.Trellis;

/// <summary>
/// The trellis quantizer as BlockLDLQ's tile quantizer: two-pass tail-biting Viterbi on a batch of 16×16 tiles
/// flattened in the order of the checkpoint's layout (row-major for the generic layout, the tensor-core fragment
/// order for the HYB kernel layout), returning reconstructions and generic-layout words.
/// </summary>
public sealed class TrellisSequenceQuantizer : ISequenceQuantizer, IDisposable
{
    private readonly TrellisQuantizer quantizer;
    private readonly TailBiting mode;
    private MemoryBuffer1D<uint, Stride1D.Dense>? states;
    private MemoryBuffer1D<float, Stride1D.Dense>? mse;

    public TrellisSequenceQuantizer(TrellisQuantizer quantizer, TileLayoutKind layout, TailBiting mode = TailBiting.Approx)
    {
        if (quantizer.T != 256)
            throw new ArgumentException($"tiles are 16×16: the trellis must have T = 256, not {quantizer.T}", nameof(quantizer));
        if (mode == TailBiting.None)
            throw new ArgumentException("a checkpoint stores tail-biting walks: use Approx or Exact", nameof(mode));
        this.quantizer = quantizer;
        this.mode = mode;
        Layout = layout;
        TilePermutation = Permutation(layout);
    }

    public TileLayoutKind Layout { get; }

    public int SequenceLength => 256;

    public int WordsPerSequence => quantizer.WordsPerSequence;

    public IReadOnlyList<int> TilePermutation { get; }

    public TrellisQuantizer Quantizer => quantizer;

    /// <summary>perm[16·row + col] = sequence position of tile element (row, col) in <paramref name="layout"/>.</summary>
    public static int[] Permutation(TileLayoutKind layout)
    {
        var perm = new int[256];
        var p = new LayoutParams(2, 256, 32, 32);
        for (int pos = 0; pos < 256; pos++)
        {
            int row, col;
            if (layout == TileLayoutKind.Kernel)
                default(KernelLayout).Position(0, pos, p, out row, out col);
            else
                default(GenericLayout).Position(0, pos, p, out row, out col);
            perm[(row * 16) + col] = pos;
        }
        return perm;
    }

    public void Quantize(ArrayView<float> targets, int count, ArrayView<float> reconstruction, ArrayView<short> words, AcceleratorStream stream)
    {
        int steps = quantizer.Steps;
        if (states is null || states.Length < (long)count * steps)
        {
            states?.Dispose();
            mse?.Dispose();
            states = quantizer.Device.Allocate1D<uint>((long)count * steps);
            mse = quantizer.Device.Allocate1D<float>(count);
        }
        quantizer.Quantize(targets.SubView(0, (long)count * 256), count, mode,
            states.View.SubView(0, (long)count * steps), reconstruction.SubView(0, (long)count * 256),
            mse!.View.SubView(0, count), words.SubView(0, (long)count * WordsPerSequence), stream);
    }

    public void Dispose()
    {
        states?.Dispose();
        mse?.Dispose();
    }
}
