using ILGPU;
using ILGPU.Runtime;

namespace Qtip.Kernels.Runtime;

/// <summary>Device-to-device copies between plain <see cref="ArrayView{T}"/>s (ILGPU only defines them on 1-D dense views).</summary>
public static class ViewCopy
{
    /// <summary>Copies all of <paramref name="source"/> into <paramref name="target"/> (same length) on <paramref name="stream"/>.</summary>
    public static void CopyTo<T>(this ArrayView<T> source, AcceleratorStream stream, ArrayView<T> target) where T : unmanaged
    {
        if (source.Length != target.Length)
            throw new ArgumentException($"copy: source has {source.Length} elements, target {target.Length}", nameof(target));
        ArrayView1D<T, Stride1D.Dense> s = source;
        ArrayView1D<T, Stride1D.Dense> t = target;
        s.CopyTo(stream, t);
    }
}
