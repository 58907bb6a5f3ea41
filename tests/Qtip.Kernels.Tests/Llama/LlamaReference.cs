using Half = ILGPU.Half;

namespace Qtip.Kernels.Tests.Llama;

/// <summary>Named tolerances of the Llama-op tests (fp32 kernels vs float64 loops).</summary>
internal static class LlamaTolerances
{
    /// <summary>Dot products of up to a few hundred unit-size terms in fp32.</summary>
    public const double Dot = 2e-5;

    /// <summary>exp/log-based results (softmax, NLL, silu) in fp32 with fast device exp.</summary>
    public const double Transcendental = 1e-5;
}

/// <summary>Plain double-precision references for the Llama ops, and fp16 helpers.</summary>
internal static class LlamaReference
{
    public static Half[] ToHalf(float[] x) => x.Select(v => (Half)v).ToArray();

    public static float[] RoundHalf(float[] x) => x.Select(v => (float)(Half)v).ToArray();

    /// <summary>y (m) = W (m×n) · x (n).</summary>
    public static double[] MatVec(float[] w, float[] x, int m, int n)
    {
        var y = new double[m];
        for (int i = 0; i < m; i++)
        {
            double acc = 0;
            for (int k = 0; k < n; k++)
                acc += (double)w[(i * n) + k] * x[k];
            y[i] = acc;
        }
        return y;
    }

    public static double Silu(double g) => g / (1 + Math.Exp(-g));

    public static double[] RmsNorm(float[] x, float[] w, int rows, int n, double eps)
    {
        var y = new double[rows * n];
        for (int r = 0; r < rows; r++)
        {
            double ss = 0;
            for (int i = 0; i < n; i++)
                ss += (double)x[(r * n) + i] * x[(r * n) + i];
            double scale = 1 / Math.Sqrt((ss / n) + eps);
            for (int i = 0; i < n; i++)
                y[(r * n) + i] = x[(r * n) + i] * scale * w[i];
        }
        return y;
    }
}
