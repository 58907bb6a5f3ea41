using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Linalg;
using Qtip.Kernels.Runtime;

namespace Qtip.Quant.Ldlq;

/// <summary>
/// BlockLDLQ with trellis tiles (spec §5, the paper's Algorithm 5): for the 16-column blocks J from last to first,
/// X_J = Wr[:, J] + (Wr − Ŵ)[:, J+] · A[J+, J], then all m/16 tiles of X_J are quantized in one batched call.
/// Everything stays on the device; one gather, one quantizer call and one scatter per block.
/// </summary>
public sealed class BlockLdlq(QtipDevice device)
{
    private readonly LdlqStep step = device.Get<LdlqStep>();

    /// <summary>
    /// Quantizes wr (m×n, already rotated and divided by Wscale) with feedback matrix a (n×n, from
    /// <see cref="BlockLdl.Factor"/>). Writes the reconstruction to <paramref name="what"/> (m×n), the residual
    /// Wr − Ŵ to <paramref name="resid"/> (m×n), and returns the packed words in tile order: tile (tr, tc) row-major
    /// over (m/16, n/16), <see cref="ISequenceQuantizer.WordsPerSequence"/> words each.
    /// </summary>
    public short[] Run(ArrayView<float> wr, ArrayView<float> a, int m, int n, ISequenceQuantizer quantizer,
        ArrayView<float> what, ArrayView<float> resid, IProgress<int>? blocksDone = null)
    {
        if (quantizer.SequenceLength != LdlqStep.SequenceLength)
            throw new ArgumentException($"BlockLDLQ: quantizer sequences have {quantizer.SequenceLength} targets, tiles need {LdlqStep.SequenceLength}", nameof(quantizer));
        var acc = device.Accelerator;
        var stream = acc.DefaultStream;
        int tilesDown = m / LdlqStep.Width;
        int blocks = n / LdlqStep.Width;
        int words = quantizer.WordsPerSequence;
        using var perm = acc.Allocate1D(quantizer.TilePermutation.ToArray());
        using var targets = acc.Allocate1D<float>((long)tilesDown * LdlqStep.SequenceLength);
        using var recon = acc.Allocate1D<float>((long)tilesDown * LdlqStep.SequenceLength);
        using var stepWords = acc.Allocate1D<short>((long)blocks * tilesDown * words);
        resid.MemSetToZero(stream);
        for (int j = blocks - 1; j >= 0; j--)
        {
            int j0 = j * LdlqStep.Width;
            step.Gather(wr, resid, a, perm.View, targets.View, m, n, j0, stream);
            quantizer.Quantize(targets.View, tilesDown, recon.View, stepWords.View.SubView((long)j * tilesDown * words, (long)tilesDown * words), stream);
            step.Scatter(wr, what, resid, perm.View, recon.View, m, n, j0, stream);
            blocksDone?.Report(blocks - j);
        }
        // Step-major [block][tile row][word] → tile-major [tile row][block][word].
        var byStep = stepWords.GetAsArray1D();
        var tiles = new short[byStep.Length];
        for (int j = 0; j < blocks; j++)
        {
            for (int tr = 0; tr < tilesDown; tr++)
                Array.Copy(byStep, ((long)((j * tilesDown) + tr)) * words, tiles, ((long)((tr * blocks) + j)) * words, words);
        }
        return tiles;
    }
}
