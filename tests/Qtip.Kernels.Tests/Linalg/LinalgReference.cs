namespace Qtip.Kernels.Tests.Linalg;

/// <summary>Plain float64 references for the linear-algebra kernels.</summary>
internal static class LinalgReference
{
    public static double[] Gram(float[] x, int rows, int n)
    {
        var g = new double[n * n];
        for (int t = 0; t < rows; t++)
        {
            for (int i = 0; i < n; i++)
            {
                double xi = x[(t * n) + i];
                for (int j = 0; j < n; j++)
                    g[(i * n) + j] += xi * x[(t * n) + j];
            }
        }
        return g;
    }

    /// <summary>Lower Cholesky factor C of h (h = C Cᵀ).</summary>
    public static double[] Cholesky(double[] h, int n)
    {
        var c = new double[n * n];
        for (int j = 0; j < n; j++)
        {
            double d = h[(j * n) + j];
            for (int k = 0; k < j; k++)
                d -= c[(j * n) + k] * c[(j * n) + k];
            c[(j * n) + j] = Math.Sqrt(d);
            for (int i = j + 1; i < n; i++)
            {
                double v = h[(i * n) + j];
                for (int k = 0; k < j; k++)
                    v -= c[(i * n) + k] * c[(j * n) + k];
                c[(i * n) + j] = v / c[(j * n) + j];
            }
        }
        return c;
    }

    /// <summary>A = C·blockdiag(C_JJ⁻¹) − I restricted to strictly-lower 16-blocks (zero elsewhere).</summary>
    public static double[] FeedbackMatrix(double[] h, int n, int b = 16)
    {
        var c = Cholesky(h, n);
        var a = new double[n * n];
        for (int bj = 0; bj < n / b; bj++)
        {
            int j0 = bj * b;
            // Inverse of the lower-triangular diagonal block.
            var inv = new double[b * b];
            for (int col = 0; col < b; col++)
            {
                for (int r = 0; r < b; r++)
                {
                    double v = r == col ? 1 : 0;
                    for (int t = 0; t < r; t++)
                        v -= c[((j0 + r) * n) + j0 + t] * inv[(t * b) + col];
                    inv[(r * b) + col] = v / c[((j0 + r) * n) + j0 + r];
                }
            }
            for (int i = j0 + b; i < n; i++)
            {
                for (int col = 0; col < b; col++)
                {
                    double v = 0;
                    for (int t = 0; t < b; t++)
                        v += c[(i * n) + j0 + t] * inv[(t * b) + col];
                    a[(i * n) + j0 + col] = v;
                }
            }
        }
        return a;
    }

    public static double[] RandomSpd(int n, int seed, double ridge = 0.1)
    {
        var x = Qtip.Testing.Rng.Gaussian(3 * n * n, seed);
        int rows = 3 * n;
        var h = Gram(x, rows, n);
        for (int i = 0; i < n * n; i++)
            h[i] /= rows;
        for (int i = 0; i < n; i++)
            h[(i * n) + i] += ridge;
        return h;
    }
}
