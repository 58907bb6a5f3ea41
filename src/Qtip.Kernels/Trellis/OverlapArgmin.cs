using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;

namespace Qtip.Kernels.Trellis;

/// <summary>
/// The exact tail-biting mode's selection step: overlaps[b] = argmin over ov &lt; G of costs[b·G + ov] (ties to the
/// smaller ov), where costs come from <see cref="ViterbiMode.OverlapCost"/>. One thread per sequence; G ≤ 2^15
/// loads each, negligible next to the G constrained passes that produced them.
/// </summary>
public sealed class OverlapArgmin : IKernelSet<OverlapArgmin>
{
    private readonly QtipDevice device;
    private readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, Params> kernel;

    private OverlapArgmin(QtipDevice device)
    {
        this.device = device;
        kernel = device.Accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, Params>(Kernel);
    }

    public static OverlapArgmin Create(QtipDevice device) => new(device);

    /// <summary>costs [sequences × groups] → overlaps [sequences], best [sequences] (the least cost).</summary>
    public void Apply(ArrayView<float> costs, int sequences, int groups, ArrayView<int> overlaps, ArrayView<float> best, AcceleratorStream? stream = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(sequences);
        ArgumentOutOfRangeException.ThrowIfLessThan(groups, 1);
        if (costs.Length < (long)sequences * groups)
            throw new ArgumentException($"OverlapArgmin: costs has {costs.Length} elements, needs [{sequences} × {groups}]", nameof(costs));
        if (overlaps.Length < sequences || best.Length < sequences)
            throw new ArgumentException($"OverlapArgmin: overlaps/best need {sequences} elements", nameof(overlaps));
        if (sequences == 0)
            return;
        kernel(stream ?? device.Accelerator.DefaultStream, sequences, costs, overlaps, best, new Params(groups));
    }

    public readonly struct Params(int groups)
    {
        public readonly int Groups = groups;
    }

    internal static void Kernel(Index1D b, ArrayView<float> costs, ArrayView<int> overlaps, ArrayView<float> best, Params p)
    {
        long row = (long)b.X * p.Groups;
        float bv = costs[row];
        int bi = 0;
        for (int g = 1; g < p.Groups; g++)
        {
            float c = costs[row + g];
            if (c < bv)
            {
                bv = c;
                bi = g;
            }
        }
        overlaps[b] = bi;
        best[b] = bv;
    }
}
