using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Algorithms.ScanReduceOperations;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;

namespace Qtip.Kernels.Llama;

/// <summary>
/// Samples one id from logits (n) with temperature, top-k and top-p (nucleus), on the device, writing it to
/// result[outIndex]. Semantics as Hugging Face's warpers applied in that order: p ∝ exp((l − max)/T); keep the k
/// most probable; of those keep the smallest most-probable set whose mass reaches top_p of theirs (always at least
/// one); draw with the uniform number u ∈ [0, 1) the host supplies from its seeded generator.
///
/// Design: one group, no sort. A kept set is always {i : p_i ≥ τ} for a threshold τ, and the mass (and count) of
/// that set only falls as τ rises, so τ is found exactly by bisection over the bit patterns of positive floats
/// (31 steps, each one group all-reduce). The draw is then an exclusive scan of kept mass over contiguous slices in
/// index order. Ties at the threshold are all kept (Hugging Face's sort would keep an arbitrary subset of them).
/// Serial style (CPU simulator and OpenCL, whose ILGPU backend has no group reductions that pocl builds): the same
/// code in one thread (<see cref="SingleThread"/>: every reduction is the thread's own value); the grouped kernel
/// loads when first launched.
/// </summary>
public sealed class Sample : IKernelSet<Sample>
{
    private readonly QtipDevice device;
    private readonly Lazy<Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<int>, SampleParams>> kernel;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<int>, SampleParams> serial;

    private Sample(QtipDevice device)
    {
        this.device = device;
        kernel = new(() => device.LoadKernel<ArrayView<float>, ArrayView<int>, SampleParams>(SampleKernel));
        serial = device.Accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<int>, SampleParams>(SampleSerialKernel);
        Style = Check.DefaultStyle(device);
    }

    public KernelStyle Style { get; set; }

    public static Sample Create(QtipDevice device) => new(device);

    /// <param name="logits">n logits.</param>
    /// <param name="temperature">&gt; 0 (use <see cref="Argmax"/> for greedy).</param>
    /// <param name="topK">0 or ≥ n: no top-k.</param>
    /// <param name="topP">(0, 1]; 1: no top-p.</param>
    /// <param name="u">uniform in [0, 1).</param>
    public void Apply(ArrayView<float> logits, int n, float temperature, int topK, float topP, float u,
        ArrayView<int> result, int outIndex = 0, AcceleratorStream? stream = null)
    {
        const string op = "Sample";
        Check.Positive(op, "n", n);
        Check.Length(op, "logits", logits, n, $"n = {n}");
        if (!(temperature > 0) || float.IsInfinity(temperature))
            throw new ArgumentOutOfRangeException(nameof(temperature), temperature, $"{op}: temperature must be positive and finite");
        if (topK < 0)
            throw new ArgumentOutOfRangeException(nameof(topK), topK, $"{op}: top-k must be ≥ 0");
        if (!(topP > 0 && topP <= 1))
            throw new ArgumentOutOfRangeException(nameof(topP), topP, $"{op}: top-p must be in (0, 1]");
        if (!(u >= 0 && u < 1))
            throw new ArgumentOutOfRangeException(nameof(u), u, $"{op}: u must be in [0, 1)");
        if (outIndex < 0)
            throw new ArgumentOutOfRangeException(nameof(outIndex), outIndex, $"{op}: negative output index");
        Check.Length(op, "result", result, outIndex + 1L, $"outIndex = {outIndex}");
        var p = new SampleParams(n, 1f / temperature, topK <= 0 || topK >= n ? 0 : topK, topP, u, outIndex);
        if (Style == KernelStyle.Serial)
        {
            serial(stream ?? device.Accelerator.DefaultStream, 1, logits, result, p);
            return;
        }
        int g = Math.Min(device.MaxGroupSize, 1024);
        kernel.Value(stream ?? device.Accelerator.DefaultStream, new KernelConfig(1, g), logits, result, p);
    }

    public readonly struct SampleParams(int n, float invTemperature, int topK, float topP, float u, int outIndex)
    {
        public readonly int N = n;
        public readonly float InvTemperature = invTemperature;
        public readonly int TopK = topK;
        public readonly float TopP = topP;
        public readonly float U = u;
        public readonly int OutIndex = outIndex;
    }

    private static float Prob(ArrayView<float> logits, int i, float m, SampleParams p) => XMath.Exp((logits[i] - m) * p.InvTemperature);

    internal static void SampleKernel(ArrayView<float> logits, ArrayView<int> result, SampleParams p) =>
        Draw<WholeGroup>(logits, result, p, Group.IdxX, Group.DimX);

    internal static void SampleSerialKernel(Index1D i, ArrayView<float> logits, ArrayView<int> result, SampleParams p) =>
        Draw<SingleThread>(logits, result, p, 0, 1);

    /// <summary>The sampler run by threads tid = 0..g−1 that reduce through <typeparamref name="TGroup"/>.</summary>
    private static void Draw<TGroup>(ArrayView<float> logits, ArrayView<int> result, SampleParams p, int tid, int g)
        where TGroup : struct, ISampleGroup
    {
        var group = default(TGroup);
        float m = float.NegativeInfinity;
        for (int i = tid; i < p.N; i += g)
            m = XMath.Max(m, logits[i]);
        m = group.Max(m);

        // The most probable entry has p = 1, so every threshold lies in [0, 1].
        uint lo = 0; // bits of the threshold; the condition holds at lo
        if (p.TopK > 0)
        {
            uint hi = Interop.FloatAsInt(1f) + 1; // the condition fails above 1
            while (hi - lo > 1)
            {
                uint mid = lo + ((hi - lo) / 2);
                float tau = Interop.IntAsFloat(mid);
                int count = 0;
                for (int i = tid; i < p.N; i += g)
                    count += Prob(logits, i, m, p) >= tau ? 1 : 0;
                count = group.Sum(count);
                if (count >= p.TopK)
                    lo = mid;
                else
                    hi = mid;
            }
        }
        if (p.TopP < 1f)
        {
            float tauK = Interop.IntAsFloat(lo);
            float massK = 0f;
            for (int i = tid; i < p.N; i += g)
            {
                float pr = Prob(logits, i, m, p);
                massK += pr >= tauK ? pr : 0f;
            }
            massK = group.Sum(massK);
            float target = p.TopP * massK;
            uint hi = Interop.FloatAsInt(1f) + 1;
            while (hi - lo > 1)
            {
                uint mid = lo + ((hi - lo) / 2);
                float tau = Interop.IntAsFloat(mid);
                float mass = 0f;
                for (int i = tid; i < p.N; i += g)
                {
                    float pr = Prob(logits, i, m, p);
                    mass += pr >= tau ? pr : 0f;
                }
                mass = group.Sum(mass);
                if (mass >= target)
                    lo = mid;
                else
                    hi = mid;
            }
        }
        float threshold = Interop.IntAsFloat(lo);

        // Draw: kept mass over contiguous slices, an exclusive scan across the group, then the slice that holds u·Z.
        int chunk = (p.N + g - 1) / g;
        int begin = tid * chunk;
        int end = XMath.Min(begin + chunk, p.N);
        float local = 0f;
        int lastKept = -1;
        for (int i = begin; i < end; i++)
        {
            float pr = Prob(logits, i, m, p);
            if (pr >= threshold)
            {
                local += pr;
                lastKept = i;
            }
        }
        float prefix = group.ExclusivePrefixSum(local);
        float total = group.Sum(local);
        int fallback = group.Max(lastKept);
        float goal = p.U * total;
        if (tid == 0)
            result[p.OutIndex] = fallback;
        group.Barrier();
        if (local > 0f && goal >= prefix && goal < prefix + local)
        {
            float run = prefix;
            int chosen = lastKept;
            for (int i = begin; i < end; i++)
            {
                float pr = Prob(logits, i, m, p);
                if (pr >= threshold)
                {
                    run += pr;
                    if (goal < run)
                    {
                        chosen = i;
                        break;
                    }
                }
            }
            result[p.OutIndex] = chosen;
        }
    }
}

/// <summary>How the threads of a <see cref="Sample"/> launch combine values. A struct type parameter.</summary>
public interface ISampleGroup
{
    float Max(float value);

    int Max(int value);

    float Sum(float value);

    int Sum(int value);

    /// <summary>Σ of the values of the threads before this one.</summary>
    float ExclusivePrefixSum(float value);

    void Barrier();
}

/// <summary>All threads of the group (ILGPU.Algorithms group reductions).</summary>
public readonly struct WholeGroup : ISampleGroup
{
    public float Max(float value) => GroupExtensions.AllReduce<float, MaxFloat>(value);

    public int Max(int value) => GroupExtensions.AllReduce<int, MaxInt32>(value);

    public float Sum(float value) => GroupExtensions.AllReduce<float, AddFloat>(value);

    public int Sum(int value) => GroupExtensions.AllReduce<int, AddInt32>(value);

    public float ExclusivePrefixSum(float value) => GroupExtensions.ExclusiveScan<float, AddFloat>(value);

    public void Barrier() => Group.Barrier();
}

/// <summary>One thread: every reduction is its own value.</summary>
public readonly struct SingleThread : ISampleGroup
{
    public float Max(float value) => value;

    public int Max(int value) => value;

    public float Sum(float value) => value;

    public int Sum(int value) => value;

    public float ExclusivePrefixSum(float value) => 0f;

    public void Barrier()
    {
    }
}
