using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels;
using Qtip.Kernels.Linalg;
using Qtip.Kernels.Runtime;

namespace Qtip.Quant.Ldlq;

/// <summary>Settings of one matrix's quantization (spec §4–5).</summary>
/// <param name="SigmaReg">Damping: H ← H + σ·mean(diag H)·I before the RHT (reference default 0.01).</param>
/// <param name="ScaleOverride">Wscale = RMS(Wr) / (RMS(code) · override); 0.9 as the reference README uses.</param>
/// <param name="MaxDampingRetries">Times the damping is multiplied by 10 when the block LDL finds a non-positive pivot.</param>
/// <param name="Rotate">Apply the random Hadamard transform (false only for the no-RHT ablation: SU, SV are then ignored).</param>
public sealed record LinearQuantizeOptions(double SigmaReg = 0.01, double ScaleOverride = 0.9, int MaxDampingRetries = 4, bool Rotate = true);

/// <summary>One quantized linear: what the checkpoint stores, plus diagnostics.</summary>
/// <param name="Su">Input-side signs (±1), length n.</param>
/// <param name="Sv">Output-side signs times Wscale, length m.</param>
/// <param name="Words">Packed trellis words, tile-major over (m/16, n/16) in the quantizer's generic layout.</param>
/// <param name="Wscale">The per-matrix scale folded into <paramref name="Sv"/>.</param>
/// <param name="ProxyError">tr(ΔW Hr ΔWᵀ) / tr(Wr Hr Wrᵀ) in the rotated space.</param>
/// <param name="SigmaUsed">The damping that made the block LDL succeed (larger than requested after retries).</param>
public sealed record QuantizedMatrix(int M, int N, float[] Su, float[] Sv, short[] Words, float Wscale, double ProxyError, double SigmaUsed);

/// <summary>
/// Quantizes one weight matrix W (m×n, y = W x) given its input Hessian H (n×n, the mean of x xᵀ):
/// damping → RHT of H and W with seeded signs → block LDL of Hr → Wscale → BlockLDLQ → proxy error. Device buffers
/// are allocated per call and freed at the end; the reconstruction Ŵ in the original (unrotated) space can be kept
/// for sequential quantization.
/// </summary>
public sealed class LinearQuantizer(QtipDevice device, LinearQuantizeOptions options)
{
    private readonly Rht rht = new(device);
    private readonly BlockLdl ldl = device.Get<BlockLdl>();
    private readonly Gram gram = device.Get<Gram>();
    private readonly TraceProduct trace = device.Get<TraceProduct>();
    private readonly VectorOps ops = device.Get<VectorOps>();
    private readonly BlockLdlq ldlq = new(device);

    public LinearQuantizeOptions Options => options;

    /// <summary>
    /// Quantizes w (m×n, float32, not modified) with Hessian h (n×n, float64, not modified). <paramref name="codeRms"/>
    /// is the RMS of the code's values (spec §12: after any cast to the model dtype). When
    /// <paramref name="reconstruction"/> is given (m×n) it receives Ŵ in the original space:
    /// diag(SV)·Had_m·Ŵr·Had_nᵀ·diag(SU) with Wscale folded in.
    /// </summary>
    public QuantizedMatrix Quantize(ArrayView<float> w, int m, int n, ArrayView<double> h, float[] su, float[] sv,
        double codeRms, ISequenceQuantizer quantizer, ArrayView<float>? reconstruction = null, IProgress<int>? blocksDone = null)
    {
        if (w.Length != (long)m * n)
            throw new ArgumentException($"quantize: W has {w.Length} elements, expected {m}×{n}", nameof(w));
        if (h.Length != (long)n * n)
            throw new ArgumentException($"quantize: H has {h.Length} elements, expected {n}×{n}", nameof(h));
        if (su.Length != n || sv.Length != m)
            throw new ArgumentException($"quantize: SU has {su.Length} (expected {n}), SV has {sv.Length} (expected {m})", nameof(su));
        if (m % 16 != 0 || n % 16 != 0)
            throw new ArgumentException($"quantize: {m}×{n} is not a multiple of 16×16 tiles", nameof(m));
        if (!(codeRms > 0))
            throw new ArgumentOutOfRangeException(nameof(codeRms), codeRms, "code RMS must be positive");
        var acc = device.Accelerator;
        long mn = (long)m * n, nn = (long)n * n;

        using var suBuf = acc.Allocate1D(su);
        using var svBuf = acc.Allocate1D(sv);
        using var hr = acc.Allocate1D<double>(nn);
        using var hrFloat = acc.Allocate1D<float>(nn);
        using var scratch = acc.Allocate1D<float>(Math.Max(mn, nn));
        using var diag = acc.Allocate1D<double>(n);

        // Hr = Had_nᵀ diag(SU) (H + σ·mean(diag H)·I) diag(SU) Had_n, rotated in float32, widened back to float64.
        h.CopyTo(acc.DefaultStream, hr.View);
        ldl.Diagonal(hr.View, n, diag.View, 0);
        double meanDiag = diag.GetAsArray1D().Average();
        if (!(meanDiag > 0))
            throw new InvalidInputException($"quantize: Hessian ({n}×{n}) has mean diagonal {meanDiag}; the calibration data never reached this layer");
        ldl.Diagonal(hr.View, n, diag.View, options.SigmaReg * meanDiag);
        if (options.Rotate)
        {
            ops.Narrow(hr.View, hrFloat.View);
            rht.RotateHessian(hrFloat.View, n, suBuf.View, scratch.View.SubView(0, nn));
            ops.Widen(hrFloat.View, hr.View);
        }

        // Block LDL with more damping on failure (added in the rotated space: Had is orthogonal, so +λI commutes).
        using var a = acc.Allocate1D<float>(nn);
        using var factor = acc.Allocate1D<double>(nn);
        using var status = acc.Allocate1D<int>(1);
        double sigma = options.SigmaReg;
        for (int attempt = 0; ; attempt++)
        {
            hr.View.CopyTo(acc.DefaultStream, factor.View);
            int failed = ldl.Factor(factor.View, n, a.View, status.View);
            if (failed < 0)
                break;
            if (attempt >= options.MaxDampingRetries)
                throw new InvalidInputException($"quantize: block LDL of the {n}×{n} Hessian failed at block {failed} even with damping σ = {sigma}");
            double extra = sigma * 9 * meanDiag;
            sigma *= 10;
            ldl.Diagonal(hr.View, n, diag.View, extra);
        }

        // Wr = Had_mᵀ diag(SV) W diag(SU) Had_n / Wscale.
        using var wr = acc.Allocate1D<float>(mn);
        w.CopyTo(acc.DefaultStream, wr.View);
        if (options.Rotate)
            rht.RotateWeight(wr.View, m, n, suBuf.View, svBuf.View, scratch.View.SubView(0, mn));
        double rms = Math.Sqrt(ops.SumOfSquares(wr.View) / mn);
        float wscale = (float)(rms / (codeRms * options.ScaleOverride));
        if (!(wscale > 0) || float.IsInfinity(wscale))
            throw new InvalidInputException($"quantize: weight ({m}×{n}) has RMS {rms}; cannot scale it to the code");
        ops.Scale(wr.View, 1f / wscale);

        using var what = acc.Allocate1D<float>(mn);
        using var resid = acc.Allocate1D<float>(mn);
        var words = ldlq.Run(wr.View, a.View, m, n, quantizer, what.View, resid.View, blocksDone);

        // Proxy error ⟨Hr, ΔWᵀΔW⟩ / ⟨Hr, WrᵀWr⟩ (scale-free, so in the Wscale-divided space).
        using var g = acc.Allocate1D<double>(nn);
        g.MemSetToZero();
        gram.Accumulate(resid.View, m, n, g.View);
        double num = trace.Compute(hr.View, g.View, n);
        g.MemSetToZero();
        gram.Accumulate(wr.View, m, n, g.View);
        double den = trace.Compute(hr.View, g.View, n);

        var svScaled = sv.Select(s => s * wscale).ToArray();
        if (reconstruction is { } rec)
        {
            if (rec.Length != mn)
                throw new ArgumentException($"quantize: reconstruction has {rec.Length} elements, expected {m}×{n}", nameof(reconstruction));
            what.View.CopyTo(acc.DefaultStream, rec);
            ops.Scale(rec, wscale);
            if (options.Rotate)
                rht.UnrotateWeight(rec, m, n, suBuf.View, svBuf.View, scratch.View.SubView(0, mn));
        }
        acc.Synchronize();
        return new QuantizedMatrix(m, n, su, svScaled, words, wscale, den > 0 ? num / den : double.NaN, sigma);
    }
}
