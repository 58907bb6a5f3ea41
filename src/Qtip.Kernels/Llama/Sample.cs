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
/// </summary>
public sealed class Sample : IKernelSet<Sample>
{
    private readonly QtipDevice device;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<int>, SampleParams> kernel;

    private Sample(QtipDevice device)
    {
        this.device = device;
        kernel = device.Accelerator.LoadKernel<ArrayView<float>, ArrayView<int>, SampleParams>(SampleKernel);
    }

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
        int g = Math.Min(device.MaxGroupSize, 1024);
        kernel(stream ?? device.Accelerator.DefaultStream, new KernelConfig(1, g), logits, result,
            new SampleParams(n, 1f / temperature, topK <= 0 || topK >= n ? 0 : topK, topP, u, outIndex));
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

    internal static void SampleKernel(ArrayView<float> logits, ArrayView<int> result, SampleParams p)
    {
        int tid = Group.IdxX;
        int g = Group.DimX;
        float m = float.NegativeInfinity;
        for (int i = tid; i < p.N; i += g)
            m = XMath.Max(m, logits[i]);
        m = GroupExtensions.AllReduce<float, MaxFloat>(m);

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
                count = GroupExtensions.AllReduce<int, AddInt32>(count);
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
            massK = GroupExtensions.AllReduce<float, AddFloat>(massK);
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
                mass = GroupExtensions.AllReduce<float, AddFloat>(mass);
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
        float prefix = GroupExtensions.ExclusiveScan<float, AddFloat>(local);
        float total = GroupExtensions.AllReduce<float, AddFloat>(local);
        int fallback = GroupExtensions.AllReduce<int, MaxInt32>(lastKept);
        float goal = p.U * total;
        if (tid == 0)
            result[p.OutIndex] = fallback;
        Group.Barrier();
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
