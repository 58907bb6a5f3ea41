using Qtip.Kernels;

namespace Qtip.Kernels.Tests;

/// <summary>Plain float64 references: the dense Had_n matrix and y = so ⊙ (Had (si ⊙ x)) by obvious loops.</summary>
internal static class HadamardReference
{
    /// <summary>Had_n = (H_K ⊗ H_{n/K}) / √n as a dense double matrix.</summary>
    public static double[,] Dense(int n)
    {
        int k = HadamardMatrices.SmallFactor(n);
        var h = HadamardMatrices.Kronecker(HadamardMatrices.Get(k), HadamardMatrices.Sylvester(n / k));
        var d = new double[n, n];
        double s = 1.0 / Math.Sqrt(n);
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j < n; j++)
                d[i, j] = h[i, j] * s;
        }
        return d;
    }

    /// <summary>Each row x of [rows × n]: so ⊙ (Had x') with x' = si ⊙ x (Hadᵀ when transpose).</summary>
    public static double[] Apply(float[] x, int rows, int n, bool transpose, float[]? si, float[]? so, double[,]? dense = null)
    {
        dense ??= Dense(n);
        var y = new double[rows * n];
        var xi = new double[n];
        for (int r = 0; r < rows; r++)
        {
            for (int j = 0; j < n; j++)
                xi[j] = x[(r * n) + j] * (si?[j] ?? 1f);
            for (int i = 0; i < n; i++)
            {
                double acc = 0;
                for (int j = 0; j < n; j++)
                    acc += (transpose ? dense[j, i] : dense[i, j]) * xi[j];
                y[(r * n) + i] = acc * (so?[i] ?? 1f);
            }
        }
        return y;
    }

    /// <summary>Fast float64 FWHT (natural order, unnormalised) for large power-of-two checks.</summary>
    public static void Fwht(Span<double> v)
    {
        for (int h = 1; h < v.Length; h <<= 1)
        {
            for (int i = 0; i < v.Length; i += h << 1)
            {
                for (int j = i; j < i + h; j++)
                {
                    double a = v[j], b = v[j + h];
                    v[j] = a + b;
                    v[j + h] = a - b;
                }
            }
        }
    }
}
