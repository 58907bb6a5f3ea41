using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;

namespace Qtip.Kernels.Llama;

/// <summary>
/// Rotary position embedding (RoPE, Hugging Face "rotate_half" layout: element j pairs with j + d/2 inside each
/// head), fused with the KV-cache write that follows it in attention: for each row r at position t = pos0 + r,
/// q heads are rotated in place, k heads are rotated and written to kCache[t], and v is copied to vCache[t].
/// cos/sin come from a table (<see cref="RopeTable"/>) computed on the host in double from fp32 angles, as
/// Hugging Face computes them in fp32 — the device's fast sin/cos approximations are inaccurate at large angles.
/// One thread per rotated pair or copied v element.
/// </summary>
public sealed class Rope : IKernelSet<Rope>
{
    private readonly QtipDevice device;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, RopeParams> kernel;

    private Rope(QtipDevice device)
    {
        this.device = device;
        kernel = device.Accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, RopeParams>(RopeKernel);
    }

    public static Rope Create(QtipDevice device) => new(device);

    /// <summary>
    /// Rows r = 0..rows−1 at positions pos0 + r. q: rows × qStride (heads·headDim used), k: rows × kStride, v: rows ×
    /// vStride (kvHeads·headDim used). Caches: [maxPos × kvHeads·headDim]. Table: cos, sin [maxPos × headDim/2].
    /// </summary>
    public void Apply(ArrayView<float> q, int qStride, ArrayView<float> k, int kStride, ArrayView<float> v, int vStride,
        ArrayView<float> kCache, ArrayView<float> vCache, ArrayView<float> cos, ArrayView<float> sin,
        int rows, int pos0, int heads, int kvHeads, int headDim, AcceleratorStream? stream = null)
    {
        const string op = "Rope";
        Check.Positive(op, "rows", rows);
        Check.Positive(op, "heads", heads);
        Check.Positive(op, "kvHeads", kvHeads);
        if (headDim <= 0 || headDim % 2 != 0)
            throw new ArgumentException($"{op}: headDim {headDim} must be positive and even", nameof(headDim));
        if (pos0 < 0)
            throw new ArgumentOutOfRangeException(nameof(pos0), pos0, $"{op}: negative position");
        int qDim = heads * headDim, kvDim = kvHeads * headDim, half = headDim / 2;
        if (qStride < qDim || kStride < kvDim || vStride < kvDim)
            throw new ArgumentException($"{op}: strides q {qStride}, k {kStride}, v {vStride} below widths {qDim}, {kvDim}, {kvDim}");
        Check.Length(op, "q", q, ((long)(rows - 1) * qStride) + qDim, $"rows {rows} × stride {qStride}");
        Check.Length(op, "k", k, ((long)(rows - 1) * kStride) + kvDim, $"rows {rows} × stride {kStride}");
        Check.Length(op, "v", v, ((long)(rows - 1) * vStride) + kvDim, $"rows {rows} × stride {vStride}");
        long end = (long)pos0 + rows;
        Check.Length(op, "kCache", kCache, end * kvDim, $"positions {end} × {kvDim}");
        Check.Length(op, "vCache", vCache, end * kvDim, $"positions {end} × {kvDim}");
        Check.Length(op, "cos", cos, end * half, $"positions {end} × {half}");
        Check.Length(op, "sin", sin, end * half, $"positions {end} × {half}");
        int perRow = (heads * half) + (kvHeads * half) + kvDim;
        int total = rows * perRow, span = Check.Span(device, total);
        kernel(stream ?? device.Accelerator.DefaultStream, Check.Threads(total, span), q, k, v, kCache, vCache, cos, sin,
            new RopeParams(qStride, kStride, vStride, pos0, heads, kvHeads, headDim, perRow, total, span));
    }

    public readonly struct RopeParams(int qStride, int kStride, int vStride, int pos0, int heads, int kvHeads, int headDim, int perRow, int total, int span)
    {
        public readonly int Total = total;
        public readonly int Span = span;
        public readonly int QStride = qStride;
        public readonly int KStride = kStride;
        public readonly int VStride = vStride;
        public readonly int Pos0 = pos0;
        public readonly int Heads = heads;
        public readonly int KvHeads = kvHeads;
        public readonly int HeadDim = headDim;
        public readonly int PerRow = perRow;
    }

    internal static void RopeKernel(Index1D thread, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v,
        ArrayView<float> kCache, ArrayView<float> vCache, ArrayView<float> cos, ArrayView<float> sin, RopeParams p)
    {
        int end = (thread + 1) * p.Span;
        if (end > p.Total)
            end = p.Total;
        for (int index = thread * p.Span; index < end; index++)
            RopeElement(index, q, k, v, kCache, vCache, cos, sin, p);
    }

    private static void RopeElement(int index, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v,
        ArrayView<float> kCache, ArrayView<float> vCache, ArrayView<float> cos, ArrayView<float> sin, RopeParams p)
    {
        int r = index / p.PerRow;
        int e = index - (r * p.PerRow);
        int half = p.HeadDim / 2;
        int kvDim = p.KvHeads * p.HeadDim;
        long t = (long)p.Pos0 + r;
        int qPairs = p.Heads * half;
        int kPairs = p.KvHeads * half;
        if (e < qPairs + kPairs)
        {
            bool isQ = e < qPairs;
            int pair = isQ ? e : e - qPairs;
            int h = pair / half;
            int j = pair - (h * half);
            float c = cos[(t * half) + j];
            float s = sin[(t * half) + j];
            if (isQ)
            {
                long b = ((long)r * p.QStride) + (h * p.HeadDim) + j;
                float x0 = q[b], x1 = q[b + half];
                q[b] = (x0 * c) - (x1 * s);
                q[b + half] = (x1 * c) + (x0 * s);
            }
            else
            {
                long b = ((long)r * p.KStride) + (h * p.HeadDim) + j;
                float x0 = k[b], x1 = k[b + half];
                long cb = (t * kvDim) + (h * p.HeadDim) + j;
                kCache[cb] = (x0 * c) - (x1 * s);
                kCache[cb + half] = (x1 * c) + (x0 * s);
            }
        }
        else
        {
            int d = e - qPairs - kPairs;
            vCache[(t * kvDim) + d] = v[((long)r * p.VStride) + d];
        }
    }
}

/// <summary>RoPE inverse frequencies and cos/sin tables, computed on the host.</summary>
public static class RopeTable
{
    /// <summary>inv_freq[j] = 1 / θ^(2j/d) in fp32 as Hugging Face computes it, j &lt; d/2.</summary>
    public static float[] DefaultFrequencies(int headDim, double theta)
    {
        var f = new float[headDim / 2];
        for (int j = 0; j < f.Length; j++)
            f[j] = (float)(1.0 / (float)Math.Pow(theta, (float)(2 * j) / headDim));
        return f;
    }

    /// <summary>Linear scaling: positions divided by <paramref name="factor"/> (frequencies divided).</summary>
    public static float[] Linear(float[] inv, double factor) => inv.Select(f => (float)(f / factor)).ToArray();

    /// <summary>Llama 3.1 scaling: low frequencies divided by the factor, high kept, a smooth blend between.</summary>
    public static float[] Llama3(float[] inv, double factor, double lowFreqFactor, double highFreqFactor, int originalMaxPositions)
    {
        double lowWavelen = originalMaxPositions / lowFreqFactor;
        double highWavelen = originalMaxPositions / highFreqFactor;
        var result = new float[inv.Length];
        for (int j = 0; j < inv.Length; j++)
        {
            double f = inv[j];
            double wavelen = 2 * Math.PI / f;
            double scaled = wavelen > lowWavelen ? f / factor : f;
            if (!(wavelen < highWavelen) && !(wavelen > lowWavelen))
            {
                double smooth = ((originalMaxPositions / wavelen) - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
                scaled = ((1 - smooth) * scaled / factor) + (smooth * scaled);
            }
            result[j] = (float)scaled;
        }
        return result;
    }

    /// <summary>cos and sin [positions × inv.Length] of the fp32 angle t·inv[j].</summary>
    public static (float[] Cos, float[] Sin) Build(float[] inv, int positions)
    {
        var cos = new float[(long)positions * inv.Length];
        var sin = new float[cos.Length];
        for (int t = 0; t < positions; t++)
        {
            for (int j = 0; j < inv.Length; j++)
            {
                float angle = t * inv[j];
                cos[((long)t * inv.Length) + j] = (float)Math.Cos(angle);
                sin[((long)t * inv.Length) + j] = (float)Math.Sin(angle);
            }
        }
        return (cos, sin);
    }
}
