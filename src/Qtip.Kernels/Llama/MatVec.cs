using System.Numerics;
using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;
using Half = ILGPU.Half;

namespace Qtip.Kernels.Llama;

/// <summary>
/// Matrix–vector products for batch-1 decode: y (m) = W (m×n) · x (n), fp16 or fp32 weights, fp32 accumulation.
/// Up to three matrices sharing x run as one launch with their outputs stacked, y = [W0·x | W1·x | W2·x] (q, k, v);
/// the SwiGLU form runs gate and up together and writes y = silu(W_gate·x) ⊙ (W_up·x) (gate, up, and the
/// activation in one launch).
///
/// Design: decode is bound by reading W once, so the kernel is built for bandwidth. S lanes of a warp own one row
/// (S = the warp width, or fewer for short rows so that a warp serves several rows); each lane reads 8 consecutive
/// weights per step as one 16-byte load (two for fp32) and the matching x as two 16-byte loads (x is small and
/// stays in L1/L2), then the S partial sums meet through a shuffle-down tree. Rows whose length is not a multiple
/// of 8 take a scalar path. Groups hold up to 256 threads; the warp width is read from the device, never assumed.
/// </summary>
public sealed class MatVec : IKernelSet<MatVec>
{
    private readonly QtipDevice device;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<Half>, ArrayView<Half>, ArrayView<Half>, ArrayView<float>, ArrayView<float>, MatVecParams> f16;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, MatVecParams> f32;

    private MatVec(QtipDevice device)
    {
        this.device = device;
        Style = Check.DefaultStyle(device);
        var acc = device.Accelerator;
        f16 = acc.LoadKernel<ArrayView<Half>, ArrayView<Half>, ArrayView<Half>, ArrayView<float>, ArrayView<float>, MatVecParams>(MatVecKernel<Half, F16>);
        f32 = acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, MatVecParams>(MatVecKernel<float, F32>);
    }

    public static MatVec Create(QtipDevice device) => new(device);

    /// <summary>Grouped: S lanes per row with a shuffle reduction. Serial (CPU simulator): one thread per row, no shuffle.</summary>
    public KernelStyle Style { get; set; }

    /// <summary>y (m0+m1+m2) = [W0;W1;W2] · x (n), fp16 weights. Pass m1 = m2 = 0 for a single matrix.</summary>
    public void Apply(ArrayView<Half> w0, int m0, ArrayView<Half> w1, int m1, ArrayView<Half> w2, int m2,
        ArrayView<float> x, ArrayView<float> y, int n, AcceleratorStream? stream = null)
    {
        var p = Plan(w0.Length, m0, w1.Length, m1, w2.Length, m2, x, y, n, swiGlu: false);
        f16(stream ?? device.Accelerator.DefaultStream, Config(p), w0, m1 > 0 ? w1 : w0, m2 > 0 ? w2 : w0, x, y, p);
    }

    /// <summary>y (m0+m1+m2) = [W0;W1;W2] · x (n), fp32 weights.</summary>
    public void Apply(ArrayView<float> w0, int m0, ArrayView<float> w1, int m1, ArrayView<float> w2, int m2,
        ArrayView<float> x, ArrayView<float> y, int n, AcceleratorStream? stream = null)
    {
        var p = Plan(w0.Length, m0, w1.Length, m1, w2.Length, m2, x, y, n, swiGlu: false);
        f32(stream ?? device.Accelerator.DefaultStream, Config(p), w0, m1 > 0 ? w1 : w0, m2 > 0 ? w2 : w0, x, y, p);
    }

    /// <summary>y (m) = W (m×n) · x (n), fp16.</summary>
    public void Apply(ArrayView<Half> w, int m, ArrayView<float> x, ArrayView<float> y, int n, AcceleratorStream? stream = null) =>
        Apply(w, m, w, 0, w, 0, x, y, n, stream);

    /// <summary>y (m) = W (m×n) · x (n), fp32.</summary>
    public void Apply(ArrayView<float> w, int m, ArrayView<float> x, ArrayView<float> y, int n, AcceleratorStream? stream = null) =>
        Apply(w, m, w, 0, w, 0, x, y, n, stream);

    /// <summary>y (m) = silu(W_gate (m×n) · x) ⊙ (W_up (m×n) · x), fp16.</summary>
    public void SwiGlu(ArrayView<Half> gate, ArrayView<Half> up, int m, ArrayView<float> x, ArrayView<float> y, int n, AcceleratorStream? stream = null)
    {
        var p = Plan(gate.Length, m, up.Length, m, 0, 0, x, y, n, swiGlu: true);
        f16(stream ?? device.Accelerator.DefaultStream, Config(p), gate, up, gate, x, y, p);
    }

    /// <summary>y (m) = silu(W_gate (m×n) · x) ⊙ (W_up (m×n) · x), fp32.</summary>
    public void SwiGlu(ArrayView<float> gate, ArrayView<float> up, int m, ArrayView<float> x, ArrayView<float> y, int n, AcceleratorStream? stream = null)
    {
        var p = Plan(gate.Length, m, up.Length, m, 0, 0, x, y, n, swiGlu: true);
        f32(stream ?? device.Accelerator.DefaultStream, Config(p), gate, up, gate, x, y, p);
    }

    private MatVecParams Plan(long len0, int m0, long len1, int m1, long len2, int m2, ArrayView<float> x, ArrayView<float> y, int n, bool swiGlu)
    {
        const string op = "MatVec";
        Check.Positive(op, "n", n);
        Check.Positive(op, "m0", m0);
        if (m1 < 0 || m2 < 0)
            throw new ArgumentOutOfRangeException(nameof(m1), $"{op}: negative row count m1={m1}, m2={m2}");
        if (len0 < (long)m0 * n || len1 < (long)m1 * n || len2 < (long)m2 * n)
            throw new ArgumentException($"{op}: weights hold {len0}/{len1}/{len2} elements, need {m0}×{n}, {m1}×{n}, {m2}×{n}");
        Check.Length(op, "x", x, n, $"n = {n}");
        long outRows = swiGlu ? m0 : (long)m0 + m1 + m2;
        Check.Length(op, "y", y, outRows, swiGlu ? $"m = {m0}" : $"m0+m1+m2 = {m0}+{m1}+{m2}");
        int warp = device.WarpSize;
        bool vec = n % 8 == 0;
        int chunks = vec ? n / 8 : n;
        int lanes = Style == KernelStyle.Serial ? 1 : Math.Min(warp, (int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(1, chunks)));
        int group = Math.Max(warp, Check.GroupSize(device) / warp * warp);
        int rowsPerGroup = group / lanes;
        long groups = (outRows + rowsPerGroup - 1) / rowsPerGroup;
        if (groups > int.MaxValue)
            throw new ArgumentException($"{op}: {outRows} rows exceed one launch");
        return new MatVecParams(n, m0, m1, m2, lanes, swiGlu ? 1 : 0, vec ? 1 : 0, (int)groups, group);
    }

    private static KernelConfig Config(MatVecParams p) => new(p.Groups, p.GroupSize);

    public readonly struct MatVecParams(int n, int m0, int m1, int m2, int lanesPerRow, int swiGlu, int vectorized, int groups, int groupSize)
    {
        public readonly int N = n;
        public readonly int M0 = m0;
        public readonly int M1 = m1;
        public readonly int M2 = m2;
        public readonly int LanesPerRow = lanesPerRow;
        public readonly int SwiGlu = swiGlu;
        public readonly int Vectorized = vectorized;
        public readonly int Groups = groups;
        public readonly int GroupSize = groupSize;
    }

    internal static void MatVecKernel<T, TW>(ArrayView<T> w0, ArrayView<T> w1, ArrayView<T> w2, ArrayView<float> x, ArrayView<float> y, MatVecParams p)
        where T : unmanaged
        where TW : struct, IWeightElement<T>
    {
        var loader = default(TW);
        int warp = Warp.WarpSize;
        int lane = Warp.LaneIdx;
        int s = p.LanesPerRow;
        int rowsPerWarp = warp / s;
        int sub = lane / s;
        int sl = lane - (sub * s);
        long row = ((((long)Grid.IdxX * (Group.DimX / warp)) + Warp.WarpIdx) * rowsPerWarp) + sub;
        long outRows = p.SwiGlu != 0 ? p.M0 : (long)p.M0 + p.M1 + p.M2;
        bool valid = row < outRows;

        // Pick the matrix and the row inside it.
        var w = w0;
        long r = row;
        if (p.SwiGlu == 0 && valid && r >= p.M0)
        {
            r -= p.M0;
            if (r < p.M1)
            {
                w = w1;
            }
            else
            {
                r -= p.M1;
                w = w2;
            }
        }
        long rowBase = r * p.N;
        float acc = 0f;
        float accUp = 0f;
        if (valid)
        {
            if (p.Vectorized != 0)
            {
                int chunks = p.N >> 3;
                for (int c = sl; c < chunks; c += s)
                {
                    long k = (long)c << 3;
                    acc += loader.Dot8(w, rowBase + k, x, k);
                    if (p.SwiGlu != 0)
                        accUp += loader.Dot8(w1, rowBase + k, x, k);
                }
            }
            else
            {
                for (int k = sl; k < p.N; k += s)
                {
                    float xv = x[k];
                    acc += loader.Load(w, rowBase + k) * xv;
                    if (p.SwiGlu != 0)
                        accUp += loader.Load(w1, rowBase + k) * xv;
                }
            }
        }
        for (int d = s >> 1; d >= 1; d >>= 1)
        {
            acc += Warp.ShuffleDown(acc, d);
            if (p.SwiGlu != 0)
                accUp += Warp.ShuffleDown(accUp, d);
        }
        if (valid && sl == 0)
        {
            if (p.SwiGlu != 0)
                acc = acc / (1f + ILGPU.Algorithms.XMath.Exp(-acc)) * accUp;
            y[row] = acc;
        }
    }
}
