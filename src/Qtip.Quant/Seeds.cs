namespace Qtip.Quant;

/// <summary>
/// Deterministic, platform-independent random streams (SplitMix64) for sign vectors and synthetic data: the same
/// seed gives the same bits on every machine and .NET version, which <see cref="System.Random"/> does not promise.
/// </summary>
public sealed class SplitMix64(ulong seed)
{
    private ulong state = seed;

    /// <summary>A seed derived from a base seed and a label (e.g. "layer 3 q_proj SU"), stable across runs.</summary>
    public static ulong Derive(ulong baseSeed, string label)
    {
        ulong h = 0xcbf29ce484222325UL ^ baseSeed;
        foreach (char c in label)
        {
            h ^= c;
            h *= 0x100000001b3UL;
        }
        return Mix(h);
    }

    public ulong Next()
    {
        state += 0x9E3779B97F4A7C15UL;
        return Mix(state);
    }

    /// <summary>Uniform in [0, 1) with 53 bits.</summary>
    public double NextDouble() => (Next() >> 11) * (1.0 / (1UL << 53));

    /// <summary>±1 signs, each with probability 1/2.</summary>
    public float[] Signs(int count)
    {
        var s = new float[count];
        for (int i = 0; i < count; i++)
            s[i] = (Next() >> 63) == 0 ? 1f : -1f;
        return s;
    }

    /// <summary>Standard normal draws (Box–Muller on 53-bit uniforms).</summary>
    public float[] Gaussian(int count)
    {
        var x = new float[count];
        for (int i = 0; i < count; i += 2)
        {
            double u1 = 1.0 - NextDouble(), u2 = NextDouble();
            double r = Math.Sqrt(-2.0 * Math.Log(u1));
            x[i] = (float)(r * Math.Cos(2 * Math.PI * u2));
            if (i + 1 < count)
                x[i + 1] = (float)(r * Math.Sin(2 * Math.PI * u2));
        }
        return x;
    }

    private static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
