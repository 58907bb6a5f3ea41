using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels;
using Qtip.Kernels.Runtime;

namespace Qtip.Quant;

/// <summary>
/// Incoherence processing with the random Hadamard transform (spec §4). With ±1 sign vectors SU (input side,
/// length n) and SV (output side, length m) and the orthogonal Had_k = (H_K ⊗ H_{k/K})/√k:
/// <code>
/// Wr = Had_mᵀ · diag(SV) · W · diag(SU) · Had_n          W (m×n), y = W x
/// Hr = Had_nᵀ · diag(SU) · H · diag(SU) · Had_n          H (n×n), symmetric
/// x̃  = Had_nᵀ (SU ⊙ x)     ỹ → y = SV ⊙ (Had_m ỹ)          activations (rows of a batch)
/// </code>
/// and the exact inverses. All buffers are device views, row-major; transforms run in place (the weight and
/// Hessian transforms use one scratch buffer of the same size for the column pass).
/// </summary>
public sealed class Rht
{
    private readonly QtipDevice device;
    private readonly Hadamard hadamard;
    private readonly Transpose transpose;

    public Rht(QtipDevice device)
    {
        this.device = device;
        hadamard = device.Get<Hadamard>();
        transpose = device.Get<Transpose>();
    }

    /// <summary>In place: W (m×n) ← Had_mᵀ diag(SV) W diag(SU) Had_n. <paramref name="scratch"/> holds m·n floats.</summary>
    public void RotateWeight(ArrayView<float> w, int m, int n, ArrayView<float> su, ArrayView<float> sv, ArrayView<float> scratch)
    {
        CheckMatrix(w, scratch, m, n, su, sv);
        // Right side, row by row: w_i ← Had_nᵀ (SU ⊙ w_i), i.e. W diag(SU) Had_n.
        hadamard.Apply(w, m, n, transpose: true, inSign: su);
        // Left side through a transpose: (Aᵀ diag(SV) Had_m)ᵀ = Had_mᵀ diag(SV) A.
        transpose.Apply(w, scratch, m, n);
        hadamard.Apply(scratch, n, m, transpose: true, inSign: sv);
        transpose.Apply(scratch, w, n, m);
    }

    /// <summary>In place: Wr (m×n) ← diag(SV) Had_m Wr Had_nᵀ diag(SU), the inverse of <see cref="RotateWeight"/> for ±1 signs.</summary>
    public void UnrotateWeight(ArrayView<float> wr, int m, int n, ArrayView<float> su, ArrayView<float> sv, ArrayView<float> scratch)
    {
        CheckMatrix(wr, scratch, m, n, su, sv);
        // Right side: rows r ← SU ⊙ (Had_n r), i.e. Wr Had_nᵀ diag(SU).
        hadamard.Apply(wr, m, n, transpose: false, outSign: su);
        // Left side: (Bᵀ Had_mᵀ diag(SV))ᵀ = diag(SV) Had_m B.
        transpose.Apply(wr, scratch, m, n);
        hadamard.Apply(scratch, n, m, transpose: false, outSign: sv);
        transpose.Apply(scratch, wr, n, m);
    }

    /// <summary>In place: H (n×n, symmetric) ← Had_nᵀ diag(SU) H diag(SU) Had_n.</summary>
    public void RotateHessian(ArrayView<float> h, int n, ArrayView<float> su, ArrayView<float> scratch)
    {
        CheckMatrix(h, scratch, n, n, su, su);
        // R(X) = X diag(SU) Had_n acts on rows; Hr = R(R(H)ᵀ) because H is symmetric.
        hadamard.Apply(h, n, n, transpose: true, inSign: su);
        transpose.Apply(h, scratch, n, n);
        hadamard.Apply(scratch, n, n, transpose: true, inSign: su);
        transpose.Apply(scratch, h, n, n);
    }

    /// <summary>In place, each of <paramref name="rows"/> activation rows: x ← Had_nᵀ (SU ⊙ x) · <paramref name="scale"/>.</summary>
    public void RotateInput(ArrayView<float> x, int rows, int n, ArrayView<float> su, float scale = 1f, AcceleratorStream? stream = null) =>
        hadamard.Apply(x, rows, n, transpose: true, inSign: su, scale: scale, stream: stream);

    /// <summary>In place, each of <paramref name="rows"/> output rows: y ← SV ⊙ (Had_m y) · <paramref name="scale"/>.</summary>
    public void UnrotateOutput(ArrayView<float> y, int rows, int m, ArrayView<float> sv, float scale = 1f, AcceleratorStream? stream = null) =>
        hadamard.Apply(y, rows, m, transpose: false, outSign: sv, scale: scale, stream: stream);

    public QtipDevice Device => device;

    private static void CheckMatrix(ArrayView<float> w, ArrayView<float> scratch, int m, int n, ArrayView<float> su, ArrayView<float> sv)
    {
        if (w.Length != (long)m * n)
            throw new ArgumentException($"RHT: matrix has {w.Length} elements, expected {m}×{n}", nameof(w));
        if (scratch.Length < (long)m * n)
            throw new ArgumentException($"RHT: scratch has {scratch.Length} elements, needs {m}×{n}", nameof(scratch));
        if (su.Length != n)
            throw new ArgumentException($"RHT: SU has {su.Length} elements, expected n = {n}", nameof(su));
        if (sv.Length != m)
            throw new ArgumentException($"RHT: SV has {sv.Length} elements, expected m = {m}", nameof(sv));
        HadamardMatrices.SmallFactor(m);
        HadamardMatrices.SmallFactor(n);
    }
}
