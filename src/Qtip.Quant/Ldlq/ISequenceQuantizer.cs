using ILGPU;
using ILGPU.Runtime;

namespace Qtip.Quant.Ldlq;

/// <summary>
/// What BlockLDLQ needs from a tile quantizer: quantize a batch of sequences of 256 targets (one per 16×16 tile,
/// already divided by Wscale) on the device, returning their reconstruction and their packed words.
/// </summary>
public interface ISequenceQuantizer
{
    /// <summary>Targets per sequence (16×16 = 256).</summary>
    int SequenceLength { get; }

    /// <summary>int16 words per packed sequence (K·T/16).</summary>
    int WordsPerSequence { get; }

    /// <summary>Sequence position of tile element (row, col): <c>TilePermutation[16·row + col]</c>. Row-major for the
    /// generic layout; the tensor-core fragment order of spec §5 for the HYB kernel layout.</summary>
    IReadOnlyList<int> TilePermutation { get; }

    /// <summary>targets (count × 256) → reconstruction (count × 256) and words (count × <see cref="WordsPerSequence"/>).</summary>
    void Quantize(ArrayView<float> targets, int count, ArrayView<float> reconstruction, ArrayView<short> words, AcceleratorStream stream);
}
