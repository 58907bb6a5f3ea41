namespace Qtip.Kernels.Trellis;

// The compile-time switches of the Viterbi kernel (struct type arguments; see Viterbi<TCode>).

/// <summary>How the per-state error is evaluated inside the Viterbi: a compile-time switch (struct type argument).</summary>
public interface ICostMode
{
    /// <summary>True: per step, tabulate the error of every symbol in shared memory, then one lookup per state.</summary>
    bool Table { get; }
}

/// <summary>Per step, E[y] = ‖Value(y) − x_t‖² for all 2^b symbols in shared memory; per state one hash + one load.
/// Used when the code has ≤ 2^10 symbols (1MAD, HYB, LUT with L ≤ 10).</summary>
public readonly struct TableCost : ICostMode
{
    public bool Table => true;
}

/// <summary>Per state, decode the values and form the error (3INST, large LUTs).</summary>
public readonly struct DirectCost : ICostMode
{
    public bool Table => false;
}

/// <summary>Where the group minima of one step live and how they are stored (see <see cref="Viterbi{TCode}"/>).</summary>
public enum MinimaLayout
{
    /// <summary>fp32, double-buffered (2G floats) in shared memory.</summary>
    Shared = 0,

    /// <summary>fp32, double-buffered in a per-slot global buffer (L1/L2-resident): when nothing else fits.</summary>
    Global = 1,

    /// <summary>fp32, one buffer of G floats in shared memory, updated in place in butterfly order.</summary>
    InPlace = 2,

    /// <summary>16-bit fixed point (units of 2^−12 relative to the previous step's minimum), one buffer of G in shared
    /// memory, updated in place in butterfly order: G = 16384 (V = 1, K = 2, L = 16) takes 32 KB.</summary>
    FixedPoint = 3,
}

/// <summary>Where the group minima live: a compile-time switch (struct type argument), one struct per <see cref="MinimaLayout"/>.</summary>
public interface IMinimaStore
{
    /// <summary>A per-slot global buffer (else shared memory).</summary>
    bool Global { get; }

    /// <summary>One buffer updated in place in butterfly order (else double-buffered).</summary>
    bool InPlace { get; }

    /// <summary>16-bit fixed point (in place only).</summary>
    bool Fixed { get; }
}

/// <summary><see cref="MinimaLayout.Shared"/>.</summary>
public readonly struct SharedMinima : IMinimaStore
{
    public bool Global => false;

    public bool InPlace => false;

    public bool Fixed => false;
}

/// <summary><see cref="MinimaLayout.Global"/>.</summary>
public readonly struct GlobalMinima : IMinimaStore
{
    public bool Global => true;

    public bool InPlace => false;

    public bool Fixed => false;
}

/// <summary><see cref="MinimaLayout.InPlace"/>.</summary>
public readonly struct InPlaceMinima : IMinimaStore
{
    public bool Global => false;

    public bool InPlace => true;

    public bool Fixed => false;
}

/// <summary><see cref="MinimaLayout.FixedPoint"/>.</summary>
public readonly struct FixedPointMinima : IMinimaStore
{
    public bool Global => false;

    public bool InPlace => true;

    public bool Fixed => true;
}

/// <summary>What one Viterbi launch computes per item.</summary>
public enum ViterbiMode
{
    /// <summary>One unconstrained pass: the optimal walk, not tail-biting.</summary>
    Plain = 0,

    /// <summary>Spec §1 Algorithm 4: pass 1 on the target rotated right by h = ⌊T/2V⌋·V, its state at step h/V fixes the
    /// overlap ov, pass 2 on the target restricted to s_0 ≫ KV = ov and s_{N−1} mod 2^(L−KV) = ov.</summary>
    TwoPass = 1,

    /// <summary>One pass with the overlap given per sequence (<c>overlaps[b]</c>): the best walk with that overlap.</summary>
    FixedOverlap = 2,

    /// <summary>Item i = (sequence i / G, overlap i mod G): only the constrained optimum's cost (sum of squared errors)
    /// is written to <c>result[i]</c>; no back-pointers, no states. The exact tail-biting mode is the argmin over these.</summary>
    OverlapCost = 3,
}
