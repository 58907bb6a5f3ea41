using System.Runtime.CompilerServices;
using ILGPU;

namespace Qtip.Kernels.Trellis;

/// <summary>
/// How the threads of one Viterbi group combine values: a compile-time switch (struct type argument), chosen per
/// device when the kernels are loaded. <see cref="WarpReduction"/> reduces inside each warp with shuffles first
/// (CUDA); <see cref="SharedReduction"/> uses shared memory and barriers only, because ILGPU 1.5.3's OpenCL backend
/// cannot generate <c>Warp.ShuffleXor</c>/<c>ShuffleDown</c>/<c>Shuffle</c> (only <c>Warp.Broadcast</c>), and because
/// on the CPU accelerator every shuffle is an OS-thread barrier. Every operation is called by all threads of the
/// group (uniform control flow) and returns the same value to each.
/// <para>Scratch: <c>sh[red … red + 2·slots]</c> where slots is <see cref="Slots"/> (one float per warp for the warp
/// strategy, one per thread for the shared one); <c>sh[red + 2·slots]</c> carries results.</para>
/// </summary>
public interface IGroupReduction
{
    /// <summary>True when reductions start with warp shuffles (and interleaved ownership is worth planning).</summary>
    bool Shuffles { get; }

    /// <summary>Sum of <paramref name="v"/> over the group.</summary>
    float Sum(ArrayView<float> sh, int red, int slots, float v);

    /// <summary>Index of the least value over the group, ties to the smaller index.</summary>
    int ArgMin(ArrayView<float> sh, int red, int slots, float v, int i);

    /// <summary>Atomically lowers <c>cells[cell]</c> to the group's least <paramref name="v"/> (visible after the next barrier).</summary>
    void MinInto(ArrayView<int> cells, int cell, int v);

    /// <summary>OR of <paramref name="word"/> over the aligned run of <paramref name="lanes"/> consecutive threads
    /// (a power of two, at most the warp size) that contains this thread.</summary>
    uint OrLanes(ArrayView<uint> bits, int red, uint word, int lanes);
}

/// <summary>Warp shuffles, then one value per warp through shared memory (CUDA).</summary>
public readonly struct WarpReduction : IGroupReduction
{
    public bool Shuffles => true;

    /// <summary>Reduction slots for a group of <paramref name="threads"/>: one per warp.</summary>
    public static int Slots(int threads, int warpSize) => Math.Max(1, threads / Math.Max(1, warpSize));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public float Sum(ArrayView<float> sh, int red, int slots, float v)
    {
        for (int off = Warp.WarpSize / 2; off > 0; off >>= 1)
            v += Warp.ShuffleXor(v, off);
        if (Warp.LaneIdx == 0)
            sh[red + (Group.IdxX / Warp.WarpSize)] = v;
        return SlotReduction.Sum(sh, red, slots, (Group.DimX + Warp.WarpSize - 1) / Warp.WarpSize);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int ArgMin(ArrayView<float> sh, int red, int slots, float v, int i)
    {
        for (int off = Warp.WarpSize / 2; off > 0; off >>= 1)
        {
            float ov = Warp.ShuffleXor(v, off);
            int oi = Warp.ShuffleXor(i, off);
            if (ov < v || (ov == v && oi < i))
            {
                v = ov;
                i = oi;
            }
        }
        int w = Group.IdxX / Warp.WarpSize;
        if (Warp.LaneIdx == 0)
        {
            sh[red + w] = v;
            sh[red + slots + w] = Interop.IntAsFloat((uint)i);
        }
        return SlotReduction.ArgMin(sh, red, slots, (Group.DimX + Warp.WarpSize - 1) / Warp.WarpSize);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void MinInto(ArrayView<int> cells, int cell, int v)
    {
        for (int off = Warp.WarpSize / 2; off > 0; off >>= 1)
            v = Math.Min(v, Warp.ShuffleXor(v, off));
        if (Warp.LaneIdx == 0 && v != int.MaxValue)
            Atomic.Min(ref cells[cell], v);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public uint OrLanes(ArrayView<uint> bits, int red, uint word, int lanes)
    {
        for (int off = 1; off < lanes; off <<= 1)
            word |= Warp.ShuffleXor(word, off);
        return word;
    }
}

/// <summary>Shared memory and barriers only: one slot per thread, combined by thread 0 (OpenCL, the CPU accelerator).</summary>
public readonly struct SharedReduction : IGroupReduction
{
    public bool Shuffles => false;

    /// <summary>Reduction slots for a group of <paramref name="threads"/>: one per thread.</summary>
    public static int Slots(int threads) => Math.Max(1, threads);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public float Sum(ArrayView<float> sh, int red, int slots, float v)
    {
        sh[red + Group.IdxX] = v;
        return SlotReduction.Sum(sh, red, slots, Group.DimX);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int ArgMin(ArrayView<float> sh, int red, int slots, float v, int i)
    {
        sh[red + Group.IdxX] = v;
        sh[red + slots + Group.IdxX] = Interop.IntAsFloat((uint)i);
        return SlotReduction.ArgMin(sh, red, slots, Group.DimX);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void MinInto(ArrayView<int> cells, int cell, int v)
    {
        if (v != int.MaxValue)
            Atomic.Min(ref cells[cell], v);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public uint OrLanes(ArrayView<uint> bits, int red, uint word, int lanes)
    {
        bits[red + Group.IdxX] = word;
        Group.Barrier();
        int first = Group.IdxX & ~(lanes - 1);
        uint all = 0;
        for (int k = 0; k < lanes; k++)
            all |= bits[red + first + k];
        Group.Barrier();
        return all;
    }
}

/// <summary>
/// The second stage both strategies share: after a barrier, thread 0 combines the first <c>count</c> slots written at
/// <c>sh[red …]</c> (values) and <c>sh[red + slots …]</c> (indices, as bits) and broadcasts the result through
/// <c>sh[red + 2·slots]</c>; every thread returns it. Called by all threads of the group.
/// </summary>
internal static class SlotReduction
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Sum(ArrayView<float> sh, int red, int slots, int count)
    {
        Group.Barrier();
        if (Group.IdxX == 0)
        {
            float s = 0f;
            for (int k = 0; k < count; k++)
                s += sh[red + k];
            sh[red + (2 * slots)] = s;
        }
        Group.Barrier();
        float total = sh[red + (2 * slots)];
        Group.Barrier();
        return total;
    }

    /// <summary>Index of the least value among the slots, ties to the smaller index.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int ArgMin(ArrayView<float> sh, int red, int slots, int count)
    {
        Group.Barrier();
        if (Group.IdxX == 0)
        {
            float bv = sh[red];
            uint bi = Interop.FloatAsInt(sh[red + slots]);
            for (int k = 1; k < count; k++)
            {
                float kv = sh[red + k];
                uint ki = Interop.FloatAsInt(sh[red + slots + k]);
                if (kv < bv || (kv == bv && ki < bi))
                {
                    bv = kv;
                    bi = ki;
                }
            }
            sh[red + (2 * slots)] = Interop.IntAsFloat(bi);
        }
        Group.Barrier();
        int result = (int)Interop.FloatAsInt(sh[red + (2 * slots)]);
        Group.Barrier();
        return result;
    }
}
