using Qtip.Kernels.Trellis;
using Qtip.Quant.Trellis;

namespace Qtip.Quant.Tests.Trellis;

/// <summary>
/// Plain C# references for the trellis kernels: an exhaustive dynamic program over all 2^L states per step in
/// float64 (no group trick, full predecessor states), the two-pass Algorithm 4 and the exact tail-biting optimum
/// built on it, and the bit-level packing of spec §1 written from the text.
/// </summary>
internal static class TrellisReference
{
    /// <summary>Decoded values of all 2^L states: [2^L × V].</summary>
    public static double[] Codebook(TrellisCodeInfo code, int l, int v, float[]? table)
    {
        var cb = new double[(1 << l) * v];
        for (uint s = 0; s < 1u << l; s++)
        {
            code.Decode(s, table, out float v0, out float v1);
            cb[s * v] = v0;
            if (v == 2)
                cb[(s * v) + 1] = v1;
        }
        return cb;
    }

    /// <summary>
    /// Optimal walk for x (length T, read as x[(i − rot) mod T]) with optional start/end constraint on the overlap:
    /// s_0 ≫ KV = ov and s_{N−1} mod 2^(L−KV) = ov. Returns the states and the sum of squared errors (float64).
    /// </summary>
    public static (uint[] States, double Sse) Viterbi(double[] cb, int l, int k, int v, ReadOnlySpan<float> x, int rot = 0, int ov = -1)
    {
        int t = x.Length, n = t / v, kv = k * v, states = 1 << l, g = 1 << (l - kv);
        var cost = new double[states];
        var next = new double[states];
        var back = new uint[n, states];
        var xs = x.ToArray();
        double Err(uint s, int step)
        {
            double e = 0;
            for (int j = 0; j < v; j++)
            {
                double d = cb[(s * v) + j] - xs[(((step * v) + j - rot) % t + t) % t];
                e += d * d;
            }
            return e;
        }
        for (uint s = 0; s < states; s++)
            cost[s] = ov >= 0 && (s >> kv) != ov ? double.PositiveInfinity : Err(s, 0);
        for (int step = 1; step < n; step++)
        {
            for (uint s = 0; s < states; s++)
            {
                double best = double.PositiveInfinity;
                uint arg = 0;
                for (uint d = 0; d < 1u << kv; d++)
                {
                    uint pred = (s >> kv) + (d << (l - kv));
                    if (cost[pred] < best)
                    {
                        best = cost[pred];
                        arg = pred;
                    }
                }
                back[step, s] = arg;
                next[s] = best + Err(s, step);
            }
            (cost, next) = (next, cost);
        }
        double bestEnd = double.PositiveInfinity;
        uint end = 0;
        for (uint s = 0; s < states; s++)
        {
            if (ov >= 0 && (s & (uint)(g - 1)) != ov)
                continue;
            if (cost[s] < bestEnd)
            {
                bestEnd = cost[s];
                end = s;
            }
        }
        var walk = new uint[n];
        walk[n - 1] = end;
        for (int step = n - 1; step > 0; step--)
            walk[step - 1] = back[step, walk[step]];
        return (walk, bestEnd);
    }

    /// <summary>Spec §1 Algorithm 4 in float64.</summary>
    public static (uint[] States, double Sse, int Overlap) TwoPass(double[] cb, int l, int k, int v, ReadOnlySpan<float> x)
    {
        int t = x.Length;
        int h = t / (2 * v) * v;
        var (pass1, _) = Viterbi(cb, l, k, v, x, rot: h);
        int ov = (int)(pass1[h / v] >> (k * v));
        var (walk, sse) = Viterbi(cb, l, k, v, x, ov: ov);
        return (walk, sse, ov);
    }

    /// <summary>The exact tail-biting optimum: the best constrained walk over every overlap.</summary>
    public static (uint[] States, double Sse) Exact(double[] cb, int l, int k, int v, ReadOnlySpan<float> x)
    {
        (uint[], double) best = ([], double.PositiveInfinity);
        for (int ov = 0; ov < 1 << (l - (k * v)); ov++)
        {
            var r = Viterbi(cb, l, k, v, x, ov: ov);
            if (r.Sse < best.Item2)
                best = r;
        }
        return best;
    }

    /// <summary>Squared error of a walk against x, float64.</summary>
    public static double Sse(double[] cb, int v, uint[] walk, ReadOnlySpan<float> x)
    {
        double e = 0;
        for (int i = 0; i < walk.Length; i++)
        {
            for (int j = 0; j < v; j++)
            {
                double d = cb[(walk[i] * v) + j] - x[(i * v) + j];
                e += d * d;
            }
        }
        return e;
    }

    /// <summary>Whether consecutive states overlap by L−KV bits and the walk bites its tail.</summary>
    public static bool IsWalk(uint[] walk, int l, int kv, bool tailBiting)
    {
        uint low = (1u << (l - kv)) - 1u;
        for (int i = 1; i < walk.Length; i++)
        {
            if ((walk[i] >> kv) != (walk[i - 1] & low))
                return false;
        }
        return !tailBiting || (walk[0] >> kv) == (walk[^1] & low);
    }

    /// <summary>Spec §1 reference packing, bit by bit: s_0's L bits, the low KV bits of s_1…s_{N−1}, drop the last L−KV, 16-bit words MSB first.</summary>
    public static short[] Pack(uint[] walk, int l, int kv, int k, int t)
    {
        var bits = new List<int>();
        for (int b = l - 1; b >= 0; b--)
            bits.Add((int)((walk[0] >> b) & 1));
        for (int i = 1; i < walk.Length; i++)
        {
            for (int b = kv - 1; b >= 0; b--)
                bits.Add((int)((walk[i] >> b) & 1));
        }
        bits.RemoveRange(k * t, bits.Count - (k * t));
        var words = new short[k * t / 16];
        for (int w = 0; w < words.Length; w++)
        {
            int u = 0;
            for (int j = 0; j < 16; j++)
                u = (u << 1) | bits[(16 * w) + j];
            words[w] = unchecked((short)u);
        }
        return words;
    }

    /// <summary>A random tail-biting walk: the circular windows of a random K·T-bit stream.</summary>
    public static uint[] RandomWalk(Random rng, int l, int kv, int k, int t)
    {
        int total = k * t;
        var bits = new int[total];
        for (int i = 0; i < total; i++)
            bits[i] = rng.Next(2);
        var walk = new uint[total / kv];
        for (int i = 0; i < walk.Length; i++)
        {
            uint s = 0;
            for (int j = 0; j < l; j++)
                s = (s << 1) | (uint)bits[((i * kv) + j) % total];
            walk[i] = s;
        }
        return walk;
    }
}

/// <summary>Golden-data helpers.</summary>
internal static class GoldenJson
{
    /// <summary>All numbers of a (possibly nested) JSON array, depth-first, as float32.</summary>
    public static float[] Flat(System.Text.Json.JsonElement e)
    {
        var list = new List<float>();
        void Walk(System.Text.Json.JsonElement x)
        {
            if (x.ValueKind == System.Text.Json.JsonValueKind.Array)
            {
                foreach (var y in x.EnumerateArray())
                    Walk(y);
            }
            else
            {
                list.Add((float)x.GetDouble());
            }
        }
        Walk(e);
        return [.. list];
    }
}
