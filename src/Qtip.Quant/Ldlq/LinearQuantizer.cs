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
/// A matrix ready for BlockLDLQ: its rotated Hessian Hr (n×n, float64), the feedback matrix A (n×n), the rotated and
/// Wscale-divided weight Wr (m×n), and the buffers BlockLDLQ fills (Ŵr and the residual Wr − Ŵr). Owns its device memory.
/// </summary>
public sealed class PreparedMatrix : IDisposable
{
    internal PreparedMatrix(int m, int n, float[] su, float[] sv, float wscale, double sigma, QtipDevice device,
        MemoryBuffer1D<double, Stride1D.Dense> hr, MemoryBuffer1D<float, Stride1D.Dense> a, MemoryBuffer1D<float, Stride1D.Dense> wr)
    {
        M = m;
        N = n;
        Su = su;
        Sv = sv;
        Wscale = wscale;
        Sigma = sigma;
        Hr = hr;
        A = a;
        Wr = wr;
        What = device.Allocate1D<float>((long)m * n);
        Resid = device.Allocate1D<float>((long)m * n);
    }

    public int M { get; }

    public int N { get; }

    public float[] Su { get; }

    public float[] Sv { get; }

    public float Wscale { get; }

    public double Sigma { get; }

    internal MemoryBuffer1D<double, Stride1D.Dense> Hr { get; }

    internal MemoryBuffer1D<float, Stride1D.Dense> A { get; }

    internal MemoryBuffer1D<float, Stride1D.Dense> Wr { get; }

    internal MemoryBuffer1D<float, Stride1D.Dense> What { get; }

    internal MemoryBuffer1D<float, Stride1D.Dense> Resid { get; }

    /// <summary>Device bytes this matrix holds while it waits for BlockLDLQ.</summary>
    public static long DeviceBytes(int m, int n) => (12L * n * n) + (16L * m * n);

    public void Dispose()
    {
        Hr.Dispose();
        A.Dispose();
        Wr.Dispose();
        What.Dispose();
        Resid.Dispose();
    }
}

/// <summary>
/// Quantizes weight matrices W (m×n, y = W x) given their input Hessians H (n×n, the mean of x xᵀ):
/// <see cref="Prepare"/> (damping → RHT of H and W with the given signs → block LDL of Hr → Wscale), BlockLDLQ over one
/// or many prepared matrices in lockstep (<see cref="BlockLdlq.RunMany"/>: one trellis call per step for all of
/// them), then <see cref="Finish"/> (proxy error, optional reconstruction in the original space).
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

    /// <summary>One matrix, start to end (see the class comment).</summary>
    public QuantizedMatrix Quantize(ArrayView<float> w, int m, int n, ArrayView<double> h, float[] su, float[] sv,
        double codeRms, ISequenceQuantizer quantizer, ArrayView<float>? reconstruction = null)
    {
        using var p = Prepare(w, m, n, h, su, sv, codeRms);
        var words = ldlq.RunMany([p], quantizer)[0];
        return Finish(p, words, reconstruction);
    }

    /// <summary>
    /// Damping, RHT and block LDL of h, and Wr = RHT(w)/Wscale. <paramref name="codeRms"/> is the RMS of the code's
    /// values (spec §12: after any cast to the model dtype). w and h are not modified.
    /// </summary>
    public PreparedMatrix Prepare(ArrayView<float> w, int m, int n, ArrayView<double> h, float[] su, float[] sv, double codeRms)
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
        var stream = acc.DefaultStream;
        long mn = (long)m * n, nn = (long)n * n;

        using var suBuf = device.Allocate1D(su);
        using var svBuf = device.Allocate1D(sv);
        using var scratch = device.Allocate1D<float>(Math.Max(mn, nn));
        using var diag = device.Allocate1D<double>(n);
        var hr = device.Allocate1D<double>(nn);
        var a = device.Allocate1D<float>(nn);
        var wr = device.Allocate1D<float>(mn);
        try
        {
            // Hr = Had_nᵀ diag(SU) (H + σ·mean(diag H)·I) diag(SU) Had_n, rotated in float32, widened back to float64.
            h.CopyTo(stream, hr.View);
            ldl.Diagonal(hr.View, n, diag.View, 0);
            double meanDiag = diag.GetAsArray1D().Average();
            if (!double.IsFinite(meanDiag))
                throw new InvalidInputException($"quantize: Hessian ({n}×{n}) has mean diagonal {meanDiag}: this layer's calibration activations hold NaN or infinite values (the model overflows on the calibration text)");
            if (!(meanDiag > 0))
                throw new InvalidInputException($"quantize: Hessian ({n}×{n}) has mean diagonal {meanDiag}: this layer's calibration activations are all zero");
            ldl.Diagonal(hr.View, n, diag.View, options.SigmaReg * meanDiag);
            if (options.Rotate)
            {
                using var hrFloat = device.Allocate1D<float>(nn);
                ops.Narrow(hr.View, hrFloat.View);
                rht.RotateHessian(hrFloat.View, n, suBuf.View, scratch.View.SubView(0, nn));
                ops.Widen(hrFloat.View, hr.View);
            }

            // Block LDL with more damping on failure (added in the rotated space: Had is orthogonal, so +λI commutes).
            double sigma = options.SigmaReg;
            using (var factor = device.Allocate1D<double>(nn))
            using (var status = device.Allocate1D<int>(1))
            {
                for (int attempt = 0; ; attempt++)
                {
                    hr.View.CopyTo(stream, factor.View);
                    int failed = ldl.Factor(factor.View, n, a.View, status.View);
                    if (failed < 0)
                        break;
                    if (attempt >= options.MaxDampingRetries)
                        throw new InvalidInputException($"quantize: block LDL of the {n}×{n} Hessian failed at block {failed} even with damping σ = {sigma}");
                    double extra = sigma * 9 * meanDiag;
                    sigma *= 10;
                    ldl.Diagonal(hr.View, n, diag.View, extra);
                }
            }

            // Wr = Had_mᵀ diag(SV) W diag(SU) Had_n / Wscale.
            w.CopyTo(stream, wr.View);
            if (options.Rotate)
                rht.RotateWeight(wr.View, m, n, suBuf.View, svBuf.View, scratch.View.SubView(0, mn));
            double rms = Math.Sqrt(ops.SumOfSquares(wr.View) / mn);
            float wscale = (float)(rms / (codeRms * options.ScaleOverride));
            if (!(wscale > 0) || float.IsInfinity(wscale))
                throw new InvalidInputException($"quantize: weight ({m}×{n}) has RMS {rms}; cannot scale it to the code");
            ops.Scale(wr.View, 1f / wscale);
            acc.Synchronize();
            return new PreparedMatrix(m, n, su, sv, wscale, sigma, device, hr, a, wr);
        }
        catch
        {
            hr.Dispose();
            a.Dispose();
            wr.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The proxy error ⟨Hr, ΔWᵀΔW⟩ / ⟨Hr, WrᵀWr⟩ (scale-free) and the checkpoint's signs; when
    /// <paramref name="reconstruction"/> is given (m×n) it receives Ŵ in the original space:
    /// diag(SV)·Had_m·Ŵr·Had_nᵀ·diag(SU) with Wscale folded in.
    /// </summary>
    public QuantizedMatrix Finish(PreparedMatrix p, short[] words, ArrayView<float>? reconstruction = null)
    {
        var acc = device.Accelerator;
        int m = p.M, n = p.N;
        long mn = (long)m * n, nn = (long)n * n;
        double num, den;
        using (var g = device.Allocate1D<double>(nn))
        {
            g.MemSetToZero();
            gram.Accumulate(p.Resid.View, m, n, g.View);
            num = trace.Compute(p.Hr.View, g.View, n);
            g.MemSetToZero();
            gram.Accumulate(p.Wr.View, m, n, g.View);
            den = trace.Compute(p.Hr.View, g.View, n);
        }
        if (reconstruction is { } rec)
        {
            if (rec.Length != mn)
                throw new ArgumentException($"quantize: reconstruction has {rec.Length} elements, expected {m}×{n}", nameof(reconstruction));
            p.What.View.CopyTo(acc.DefaultStream, rec);
            ops.Scale(rec, p.Wscale);
            if (options.Rotate)
            {
                using var suBuf = device.Allocate1D(p.Su);
                using var svBuf = device.Allocate1D(p.Sv);
                using var scratch = device.Allocate1D<float>(mn);
                rht.UnrotateWeight(rec, m, n, suBuf.View, svBuf.View, scratch.View);
            }
        }
        acc.Synchronize();
        if (!double.IsFinite(num) || !double.IsFinite(den))
            throw new InvalidInputException($"quantize: the {m}×{n} matrix's proxy error is not finite (⟨H, ΔWᵀΔW⟩ = {num}, ⟨H, WᵀW⟩ = {den}); nothing is written");
        var svScaled = p.Sv.Select(s => s * p.Wscale).ToArray();
        return new QuantizedMatrix(m, n, p.Su, svScaled, words, p.Wscale, den > 0 ? num / den : double.NaN, p.Sigma);
    }
}
