using System.Numerics;
using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using Qtip.Kernels.Llama;
using Qtip.Kernels.Runtime;

namespace Qtip.Kernels;

/// <summary>What <see cref="VectorRht"/> does with each transformed element.</summary>
public enum RhtEpilogue
{
    /// <summary>dst[v·dstStride + i] = y_v[i].</summary>
    Store = 0,

    /// <summary>dst[v·dstStride + i] += y_v[i] (a residual add).</summary>
    AddInto = 1,

    /// <summary>Vectors in pairs (g, u): dst[pair·dstStride + i] = silu(y_g[i]) · y_u[i] (SwiGLU).</summary>
    SwiGlu = 2,
}

/// <summary>
/// The randomized Hadamard transform of one to a few vectors (batch 1, a decode step) in a single launch, with what
/// surrounds it in a QTIP linear fused in: for each vector v (length n),
/// y_v = s_out,v ⊙ (Had_n (s_in,v ⊙ norm(x_v)))/√n, or Had_nᵀ, where norm is an optional RMSNorm with weight w
/// (x·rsqrt(mean x² + ε)·w), then stored, added into the destination (residual), or combined in pairs by SwiGLU.
///
/// Design. Write n = M·P with P = min(2^p, 1024) (the power-of-two part, capped) and M = n/P ≤ 256 (H_K ⊗ H_{2^p/P},
/// e.g. 172 for 11008, 28 for 28672, 4 for 4096). Had_n = H_M ⊗ H_P, and the two factors commute, so output row a
/// (elements a·P … a·P+P−1) is H_P (Σ_b M[a,b] x_b) with x_b the b-th P-chunk: a signed sum over the chunks, then one
/// length-P Walsh–Hadamard transform. A group (up to 1024 threads) owns A rows (A·P ≤ its thread count) of one vector (or of a g, u pair): it
/// streams the whole input through shared memory in chunks (applying the norm weight and s_in, and summing x² for the
/// norm), accumulates its rows' signed sums, runs the FWHT of each row in shared memory, and writes its slice through
/// the epilogue. Every element is written by one group only, so the residual add is race-free; there is no global
/// synchronization. The ±1 mix matrix is stored as bits. Reference: <see cref="Hadamard"/> and the CPU tests.
/// </summary>
public sealed class VectorRht : IKernelSet<VectorRht>, IDisposable
{
    /// <summary>Largest row length P kept in one group.</summary>
    public const int MaxInner = 1024;

    /// <summary>Floats of input staged per round.</summary>
    private const int StageFloats = 4096;

    private readonly QtipDevice device;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<uint>, RhtParams> kernel;
    private readonly Dictionary<(int N, bool Transpose), MemoryBuffer1D<uint, Stride1D.Dense>> bits = [];
    private readonly MemoryBuffer1D<float, Stride1D.Dense> none;
    private readonly Lock bitsLock = new();

    private VectorRht(QtipDevice device)
    {
        this.device = device;
        kernel = device.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<uint>, RhtParams>(RhtKernel);
        none = device.Accelerator.Allocate1D<float>(1);
    }

    public static VectorRht Create(QtipDevice device) => new(device);

    /// <summary>n = M·P split used for a vector of length n: (M, P).</summary>
    public static (int Mix, int Inner) Split(int n)
    {
        int k = HadamardMatrices.SmallFactor(n);
        int pow2 = n / k;
        int inner = Math.Min(pow2, MaxInner);
        int mix = n / inner;
        if (mix > Hadamard.MaxMixOrder)
            throw new ArgumentException($"VectorRht: size {n} needs a {mix}×{mix} mix, above the supported {Hadamard.MaxMixOrder}", nameof(n));
        return (mix, inner);
    }

    /// <summary>True when <paramref name="n"/> has a Hadamard matrix this op can apply.</summary>
    public static bool Supports(int n)
    {
        if (n <= 0 || !HadamardMatrices.IsSupported(n))
            return false;
        int k = HadamardMatrices.SmallFactor(n);
        return n / Math.Min(n / k, MaxInner) <= Hadamard.MaxMixOrder;
    }

    /// <summary>
    /// For v &lt; <paramref name="vectors"/>: y_v = s_out,v ⊙ Had_n(ᵀ)(s_in,v ⊙ norm(src[v·srcStride …]))/√n, through
    /// <paramref name="epilogue"/> into dst (v·dstStride, or pair·dstStride for SwiGLU). srcStride 0 reads one input for
    /// every vector. Signs: v·inStride / v·outStride into the sign views (null: none). The norm (null: none) is
    /// RMSNorm with weight <paramref name="normWeight"/> (n) and <paramref name="eps"/>. src and dst must not overlap.
    /// </summary>
    public void Apply(ArrayView<float> src, int srcStride, ArrayView<float> dst, int dstStride, int n, int vectors, bool transpose, RhtEpilogue epilogue,
        ArrayView<float>? normWeight = null, float eps = 0f, ArrayView<float>? inSign = null, int inStride = 0,
        ArrayView<float>? outSign = null, int outStride = 0, AcceleratorStream? stream = null)
    {
        const string op = "VectorRht";
        var (mix, inner) = Split(n);
        if (vectors < 1 || (epilogue == RhtEpilogue.SwiGlu && vectors % 2 != 0))
            throw new ArgumentException($"{op}: {vectors} vectors (SwiGLU takes pairs)", nameof(vectors));
        Check.Length(op, "src", src, ((long)(vectors - 1) * srcStride) + n, $"{vectors} vectors of {n} at stride {srcStride}");
        int jobs = epilogue == RhtEpilogue.SwiGlu ? vectors / 2 : vectors;
        Check.Length(op, "dst", dst, ((long)(jobs - 1) * dstStride) + n, $"{jobs} outputs of {n} at stride {dstStride}");
        if (normWeight is { } w)
            Check.Length(op, "normWeight", w, n, $"n = {n}");
        if (inSign is { } si)
            Check.Length(op, "inSign", si, ((long)(vectors - 1) * inStride) + n, $"{vectors} sign vectors of {n}");
        if (outSign is { } so)
            Check.Length(op, "outSign", so, ((long)(vectors - 1) * outStride) + n, $"{vectors} sign vectors of {n}");
        // Groups of up to 1024 threads, each owning as many rows as it has threads for (A·P ≤ group size): fewer
        // groups restage the input, and each thread has few elements to stage.
        int groupSize = Math.Min(device.MaxGroupSize, MaxInner);
        groupSize = 1 << BitOperations.Log2((uint)groupSize);
        int rowsPerGroup = Math.Max(1, Math.Min(mix, groupSize / inner));
        int groupsPerJob = (mix + rowsPerGroup - 1) / rowsPerGroup;
        var p = new RhtParams(n, mix, inner, BitOperations.Log2((uint)inner), rowsPerGroup, (mix + 31) / 32, groupsPerJob,
            epilogue == RhtEpilogue.SwiGlu ? 2 : 1, srcStride, dstStride, inStride, outStride,
            normWeight.HasValue ? 1 : 0, inSign.HasValue ? 1 : 0, outSign.HasValue ? 1 : 0, (int)epilogue, eps, 1f / MathF.Sqrt(n));
        kernel(stream ?? device.Accelerator.DefaultStream, new KernelConfig(jobs * groupsPerJob, groupSize),
            src, dst, normWeight ?? none.View, inSign ?? none.View, outSign ?? none.View, MixBits(n, transpose), p);
    }

    /// <summary>Bits of M = H_K ⊗ H_{2^p/P} (transposed if asked), row-major, ⌈M/32⌉ words a row, bit set = −1.</summary>
    internal ArrayView<uint> MixBits(int n, bool transpose)
    {
        lock (bitsLock)
        {
            if (bits.TryGetValue((n, transpose), out var cached))
                return cached.View;
            var host = HostMixBits(n, transpose);
            var buffer = device.Accelerator.Allocate1D(host);
            bits[(n, transpose)] = buffer;
            return buffer.View;
        }
    }

    internal static uint[] HostMixBits(int n, bool transpose)
    {
        var (mix, inner) = Split(n);
        int k = HadamardMatrices.SmallFactor(n);
        var h = HadamardMatrices.Kronecker(HadamardMatrices.Get(k), HadamardMatrices.Sylvester(n / k / inner));
        int words = (mix + 31) / 32;
        var result = new uint[Math.Max(1, mix * words)];
        for (int a = 0; a < mix; a++)
        {
            for (int b = 0; b < mix; b++)
            {
                int v = transpose ? h[b, a] : h[a, b];
                if (v < 0)
                    result[(a * words) + (b >> 5)] |= 1u << (b & 31);
            }
        }
        return result;
    }

    public readonly struct RhtParams(int n, int mix, int inner, int log2Inner, int rowsPerGroup, int words, int groupsPerJob, int vectorsPerJob,
        int srcStride, int dstStride, int inStride, int outStride, int useNorm, int useIn, int useOut, int epilogue, float eps, float scale)
    {
        public readonly int N = n;
        public readonly int Mix = mix;
        public readonly int Inner = inner;
        public readonly int Log2Inner = log2Inner;
        public readonly int RowsPerGroup = rowsPerGroup;
        public readonly int Words = words;
        public readonly int GroupsPerJob = groupsPerJob;
        public readonly int VectorsPerJob = vectorsPerJob;
        public readonly int SrcStride = srcStride;
        public readonly int DstStride = dstStride;
        public readonly int InStride = inStride;
        public readonly int OutStride = outStride;
        public readonly int UseNorm = useNorm;
        public readonly int UseIn = useIn;
        public readonly int UseOut = useOut;
        public readonly int Epilogue = epilogue;
        public readonly float Eps = eps;
        public readonly float Scale = scale;
    }

    /// <summary>Σ of one value per thread over the group (a power of two), the same in every thread and every run.</summary>
    private static float GroupSum(ArrayView<float> red, float value)
    {
        int tid = Group.IdxX;
        red[tid] = value;
        Group.Barrier();
        for (int s = Group.DimX / 2; s > 0; s >>= 1)
        {
            if (tid < s)
                red[tid] += red[tid + s];
            Group.Barrier();
        }
        float total = red[0];
        Group.Barrier();
        return total;
    }

    /// <summary>Writes staged element e (input index first + e) with the norm weight and input sign applied; returns its x² for the norm (0 past the end).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Stage(ArrayView<float> stage, ArrayView<float> normWeight, ArrayView<float> inSign, RhtParams p, long inBase, int first, int e, float v, int count)
    {
        if (e >= count)
            return 0f;
        int i = first + e;
        float sq = 0f;
        if (p.UseNorm != 0)
        {
            sq = v * v;
            v *= normWeight[i];
        }
        if (p.UseIn != 0)
            v *= inSign[inBase + i];
        stage[e] = v;
        return sq;
    }

    /// <summary>
    /// One vector's rows a0 … a0+A−1 into <paramref name="tile"/> (A·P values): the signed chunk sums, then the FWHT of
    /// each row. Returns the norm factor (1 without a norm).
    /// </summary>
    private static float Rows(ArrayView<float> src, ArrayView<float> normWeight, ArrayView<float> inSign, ArrayView<uint> bits,
        ArrayView<float> stage, ArrayView<float> tile, ArrayView<float> red, RhtParams p, int vec, int a0)
    {
        int tid = Group.IdxX;
        int g = Group.DimX;
        int tileSize = p.RowsPerGroup * p.Inner;
        long srcBase = (long)vec * p.SrcStride;
        long inBase = (long)vec * p.InStride;
        int chunk = XMath.Max(1, StageFloats / p.Inner); // chunks b staged per round
        for (int e = tid; e < tileSize; e += g)
            tile[e] = 0f;
        float ss = 0f;
        for (int b0 = 0; b0 < p.Mix; b0 += chunk)
        {
            int nb = XMath.Min(chunk, p.Mix - b0);
            int count = nb * p.Inner;
            int first = b0 * p.Inner;
            Group.Barrier();
            // Four independent loads in flight per thread before the first use (the input comes from L2).
            for (int e = tid; e < count; e += 4 * g)
            {
                float v0 = src[srcBase + first + e];
                float v1 = e + g < count ? src[srcBase + first + e + g] : 0f;
                float v2 = e + (2 * g) < count ? src[srcBase + first + e + (2 * g)] : 0f;
                float v3 = e + (3 * g) < count ? src[srcBase + first + e + (3 * g)] : 0f;
                ss += Stage(stage, normWeight, inSign, p, inBase, first, e, v0, count);
                ss += Stage(stage, normWeight, inSign, p, inBase, first, e + g, v1, count);
                ss += Stage(stage, normWeight, inSign, p, inBase, first, e + (2 * g), v2, count);
                ss += Stage(stage, normWeight, inSign, p, inBase, first, e + (3 * g), v3, count);
            }
            Group.Barrier();
            for (int e = tid; e < tileSize; e += g)
            {
                int a = a0 + (e >> p.Log2Inner);
                if (a >= p.Mix)
                    continue;
                int r = e & (p.Inner - 1);
                float acc = 0f;
                uint word = 0;
                for (int bb = 0; bb < nb; bb++)
                {
                    int b = b0 + bb;
                    if (bb == 0 || (b & 31) == 0)
                        word = bits[(a * p.Words) + (b >> 5)] >> (b & 31);
                    float v = stage[(bb * p.Inner) + r];
                    acc += (word & 1u) != 0 ? -v : v;
                    word >>= 1;
                }
                tile[e] += acc;
            }
        }
        float rs = 1f;
        if (p.UseNorm != 0)
            rs = XMath.Rsqrt((GroupSum(red, ss) / p.N) + p.Eps);
        // FWHT of each row (length P, natural order), radix 2, one barrier per stage.
        int half = p.Inner >> 1;
        int log2Half = p.Log2Inner - 1;
        for (int h = 1, lh = 0; h < p.Inner; h <<= 1, lh++)
        {
            Group.Barrier();
            for (int t = tid; t < tileSize >> 1; t += g)
            {
                int row = t >> log2Half;
                int k = t & (half - 1);
                int i0 = (row * p.Inner) + ((k >> lh) << (lh + 1)) + (k & (h - 1));
                float x = tile[i0];
                float y = tile[i0 + h];
                tile[i0] = x + y;
                tile[i0 + h] = x - y;
            }
        }
        Group.Barrier();
        return rs;
    }

    internal static void RhtKernel(ArrayView<float> src, ArrayView<float> dst, ArrayView<float> normWeight, ArrayView<float> inSign,
        ArrayView<float> outSign, ArrayView<uint> bits, RhtParams p)
    {
        var stage = SharedMemory.Allocate<float>(StageFloats);
        var tile0 = SharedMemory.Allocate<float>(MaxInner);
        var tile1 = SharedMemory.Allocate<float>(MaxInner);
        var red = SharedMemory.Allocate<float>(1024);
        int tid = Group.IdxX;
        int job = Grid.IdxX / p.GroupsPerJob;
        int a0 = (Grid.IdxX - (job * p.GroupsPerJob)) * p.RowsPerGroup;
        int vec0 = job * p.VectorsPerJob;
        float f0 = Rows(src, normWeight, inSign, bits, stage, tile0, red, p, vec0, a0) * p.Scale;
        float f1 = 0f;
        if (p.VectorsPerJob == 2)
            f1 = Rows(src, normWeight, inSign, bits, stage, tile1, red, p, vec0 + 1, a0) * p.Scale;
        int tileSize = p.RowsPerGroup * p.Inner;
        long dstBase = (long)job * p.DstStride;
        for (int e = tid; e < tileSize; e += Group.DimX)
        {
            int a = a0 + (e >> p.Log2Inner);
            if (a >= p.Mix)
                continue;
            int i = (a * p.Inner) + (e & (p.Inner - 1));
            float y0 = tile0[e] * f0;
            if (p.UseOut != 0)
                y0 *= outSign[((long)vec0 * p.OutStride) + i];
            if (p.Epilogue == (int)RhtEpilogue.Store)
            {
                dst[dstBase + i] = y0;
            }
            else if (p.Epilogue == (int)RhtEpilogue.AddInto)
            {
                dst[dstBase + i] += y0;
            }
            else
            {
                float y1 = tile1[e] * f1;
                if (p.UseOut != 0)
                    y1 *= outSign[((long)(vec0 + 1) * p.OutStride) + i];
                dst[dstBase + i] = y0 / (1f + XMath.Exp(-y0)) * y1;
            }
        }
    }

    public void Dispose()
    {
        lock (bitsLock)
        {
            foreach (var b in bits.Values)
                b.Dispose();
            bits.Clear();
        }
        none.Dispose();
    }
}
