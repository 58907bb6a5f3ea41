namespace Qtip.Testing;

/// <summary>Named tolerances, so every comparison says what precision it expects and why.</summary>
public static class Tolerances
{
    /// <summary>fp32 kernel vs float64 reference for sums of O(log n) terms of unit size (Hadamard, small GEMV).</summary>
    public const double Fp32Transform = 2e-5;

    /// <summary>Relative ‖a−b‖/‖b‖ for fp32 kernels against a float64 reference.</summary>
    public const double Fp32Relative = 1e-5;

    /// <summary>Agreement with the reference implementation's own float32 outputs (golden vectors, ≤ 1.7e-6 from exact).</summary>
    public const double GoldenFp32 = 4e-6;
}
