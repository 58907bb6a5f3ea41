namespace Qtip.Testing;

/// <summary>Seeded random test data.</summary>
public static class Rng
{
    public static float[] Gaussian(int count, int seed)
    {
        var r = new Random(seed);
        var x = new float[count];
        for (int i = 0; i < count; i++)
        {
            double u1 = 1.0 - r.NextDouble(), u2 = r.NextDouble();
            x[i] = (float)(Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
        }
        return x;
    }

    public static float[] Signs(int count, int seed)
    {
        var r = new Random(seed);
        var s = new float[count];
        for (int i = 0; i < count; i++)
            s[i] = r.Next(2) == 0 ? 1f : -1f;
        return s;
    }

    public static double MaxAbsDiff(ReadOnlySpan<float> a, ReadOnlySpan<double> b)
    {
        double m = 0;
        for (int i = 0; i < a.Length; i++)
            m = Math.Max(m, Math.Abs(a[i] - b[i]));
        return m;
    }

    public static double MaxAbsDiff(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double m = 0;
        for (int i = 0; i < a.Length; i++)
            m = Math.Max(m, Math.Abs((double)a[i] - b[i]));
        return m;
    }
}
