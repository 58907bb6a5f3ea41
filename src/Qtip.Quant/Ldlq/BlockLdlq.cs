using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Linalg;
using Qtip.Kernels.Runtime;

namespace Qtip.Quant.Ldlq;

/// <summary>
/// BlockLDLQ with trellis tiles (spec §5, the paper's Algorithm 5): for the 16-column blocks J from last to first,
/// X_J = Wr[:, J] + (Wr − Ŵ)[:, J+] · A[J+, J], then all m/16 tiles of X_J are quantized in one batched call.
///
/// Matrices are independent once their Hessians are fixed, so <see cref="RunMany"/> steps any number of them in
/// lockstep: step s gathers block (n/16 − 1 − s) of every matrix that still has one into one target buffer and makes
/// ONE trellis call for all their tiles. A trellis call costs about the same for 24 tiles as for 1,000 (one sequence
/// per GPU thread group, many groups per SM), so a layer's seven matrices cost max(n/16) calls instead of Σ n/16, and
/// a whole small model as many calls as its widest matrix has column blocks.
/// </summary>
public sealed class BlockLdlq(QtipDevice device)
{
    private readonly LdlqStep step = device.Get<LdlqStep>();

    /// <summary>
    /// Runs BlockLDLQ on every prepared matrix (each holds Wr already rotated and divided by Wscale, and its feedback
    /// matrix A), filling their Ŵr and residual buffers. Returns per matrix the packed words in tile order: tile
    /// (tr, tc) row-major over (m/16, n/16), <see cref="ISequenceQuantizer.WordsPerSequence"/> words each.
    /// </summary>
    public short[][] RunMany(IReadOnlyList<PreparedMatrix> matrices, ISequenceQuantizer quantizer, IProgress<(int Step, int Steps)>? progress = null)
    {
        if (quantizer.SequenceLength != LdlqStep.SequenceLength)
            throw new ArgumentException($"BlockLDLQ: quantizer sequences have {quantizer.SequenceLength} targets, tiles need {LdlqStep.SequenceLength}", nameof(quantizer));
        if (matrices.Count == 0)
            return [];
        var acc = device.Accelerator;
        var stream = acc.DefaultStream;
        int words = quantizer.WordsPerSequence;
        int seq = LdlqStep.SequenceLength;
        int steps = matrices.Max(p => p.N / LdlqStep.Width);
        // Tile offset of each matrix inside one step's batch, for the largest batch (all matrices active).
        var offsets = new int[matrices.Count];
        int totalTiles = 0;
        for (int i = 0; i < matrices.Count; i++)
        {
            offsets[i] = totalTiles;
            totalTiles += matrices[i].M / LdlqStep.Width;
        }
        using var perm = device.Allocate1D(quantizer.TilePermutation.ToArray());
        using var targets = device.Allocate1D<float>((long)totalTiles * seq);
        using var recon = device.Allocate1D<float>((long)totalTiles * seq);
        // Words of every step of every matrix: [matrix][block][tile row][word] (band-major per matrix).
        var wordOffsets = new long[matrices.Count + 1];
        for (int i = 0; i < matrices.Count; i++)
            wordOffsets[i + 1] = wordOffsets[i] + ((long)(matrices[i].M / LdlqStep.Width) * (matrices[i].N / LdlqStep.Width) * words);
        using var allWords = device.Allocate1D<short>(wordOffsets[^1]);
        using var stepWords = device.Allocate1D<short>((long)totalTiles * words);
        foreach (var p in matrices)
            p.Resid.MemSetToZero(stream);

        for (int s = 0; s < steps; s++)
        {
            // Active matrices pack contiguously at the front of the step's batch.
            int count = 0;
            var active = new List<(int Index, int Block, int Offset)>();
            for (int i = 0; i < matrices.Count; i++)
            {
                var p = matrices[i];
                int blocks = p.N / LdlqStep.Width;
                if (s >= blocks)
                    continue;
                int j = blocks - 1 - s;
                active.Add((i, j, count));
                step.Gather(p.Wr.View, p.Resid.View, p.A.View, perm.View, targets.View.SubView((long)count * seq, (long)(p.M / LdlqStep.Width) * seq),
                    p.M, p.N, j * LdlqStep.Width, stream);
                count += p.M / LdlqStep.Width;
            }
            quantizer.Quantize(targets.View.SubView(0, (long)count * seq), count, recon.View.SubView(0, (long)count * seq),
                stepWords.View.SubView(0, (long)count * words), stream);
            foreach (var (i, j, offset) in active)
            {
                var p = matrices[i];
                int tiles = p.M / LdlqStep.Width;
                step.Scatter(p.Wr.View, p.What.View, p.Resid.View, perm.View, recon.View.SubView((long)offset * seq, (long)tiles * seq),
                    p.M, p.N, j * LdlqStep.Width, stream);
                stepWords.View.SubView((long)offset * words, (long)tiles * words)
                    .CopyTo(stream, allWords.View.SubView(wordOffsets[i] + ((long)j * tiles * words), (long)tiles * words));
            }
            progress?.Report((s + 1, steps));
        }

        // Band-major [block][tile row][word] → tile-major [tile row][block][word], per matrix.
        var host = allWords.GetAsArray1D();
        var result = new short[matrices.Count][];
        for (int i = 0; i < matrices.Count; i++)
        {
            int tilesDown = matrices[i].M / LdlqStep.Width, blocks = matrices[i].N / LdlqStep.Width;
            var tiles = new short[(long)tilesDown * blocks * words];
            for (int j = 0; j < blocks; j++)
            {
                for (int tr = 0; tr < tilesDown; tr++)
                    Array.Copy(host, wordOffsets[i] + ((long)((j * tilesDown) + tr) * words), tiles, (long)((tr * blocks) + j) * words, words);
            }
            result[i] = tiles;
        }
        return result;
    }
}
