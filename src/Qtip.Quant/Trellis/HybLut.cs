using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;
using Qtip.Kernels.Trellis;

namespace Qtip.Quant.Trellis;

/// <summary>
/// The HYB LUT (spec §2): k-means with 2^Q = 512 centroids on 2^20 seeded 2-D N(0, I) samples, starting from 512
/// N(0, I) draws, stopping like scipy's <c>kmeans</c> when the mean distance improves by ≤ 1e-5; then every
/// coordinate is scaled by one factor so the population std of all 1024 numbers is √(15/16). The assignment pass
/// (2^20 × 512 distances per iteration) is the <see cref="KMeans2D"/> kernel; the update is 512 divisions on the
/// host. Integer fixed-point sums make each iteration independent of thread order, so a seed gives the same LUT
/// on a given backend. Results are cached on disk (<see cref="CacheDirectory"/>); a checkpoint's own LUT should be
/// used instead whenever there is one (it is rounded to the model's dtype; golden README, disagreement 1).
/// </summary>
public static class HybLut
{
    public const int DefaultSamples = 1 << 20;
    public const int DefaultSeed = 0;
    public const int DefaultMaxIterations = 1000;

    /// <summary>scipy kmeans' default threshold on the change of the mean distance.</summary>
    public const double DefaultThreshold = 1e-5;

    /// <summary>√(15/16): the population std of the final LUT's 1024 numbers.</summary>
    public static readonly double TargetStd = Math.Sqrt(15.0 / 16.0);

    /// <summary>Environment variable overriding the cache folder.</summary>
    public const string CacheVariable = "QTIP_CACHE_DIR";

    private const string Magic = "QTIPHYB1";

    /// <summary>$QTIP_CACHE_DIR, else $XDG_CACHE_HOME/qtip, else ~/.cache/qtip.</summary>
    public static string CacheDirectory()
    {
        var explicitDir = Environment.GetEnvironmentVariable(CacheVariable);
        if (!string.IsNullOrWhiteSpace(explicitDir))
            return explicitDir;
        var xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        var root = !string.IsNullOrWhiteSpace(xdg) ? xdg : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        return Path.Combine(root, "qtip");
    }

    /// <summary>The cache file for a (seed, samples, centroids) recipe.</summary>
    public static string CachePath(int seed, int samples, int centroids, string? cacheDir = null) =>
        Path.Combine(cacheDir ?? CacheDirectory(), $"hyb-lut-k{centroids}-n{samples}-seed{seed}.bin");

    /// <summary>The LUT [centroids × 2] for this recipe: read from the cache, or computed on <paramref name="device"/> and cached.</summary>
    public static float[] GetOrCreate(QtipDevice device, int seed = DefaultSeed, int samples = DefaultSamples, int centroids = HybCode.Rows, string? cacheDir = null)
    {
        var path = CachePath(seed, samples, centroids, cacheDir);
        var cached = TryRead(path, centroids);
        if (cached is not null)
            return cached;
        var lut = Compute(device, seed, samples, centroids);
        Write(path, lut);
        return lut;
    }

    /// <summary>Runs the recipe (no cache). Returns [centroids × 2], row-major.</summary>
    public static float[] Compute(
        QtipDevice device, int seed = DefaultSeed, int samples = DefaultSamples, int centroids = HybCode.Rows,
        int maxIterations = DefaultMaxIterations, double threshold = DefaultThreshold)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(samples, 1);
        if (centroids < 1 || centroids > KMeans2D.MaxCentroids)
            throw new ArgumentOutOfRangeException(nameof(centroids), centroids, $"centroids must be in [1, {KMeans2D.MaxCentroids}]");
        var draws = GaussianSource.Fill((2 * samples) + (2 * centroids), seed);
        var data = draws.AsSpan(0, 2 * samples).ToArray();
        var c = draws.AsSpan(2 * samples, 2 * centroids).ToArray();
        var centroidsOut = Lloyd(device, data, samples, c, centroids, maxIterations, threshold);
        return Rescale(centroidsOut);
    }

    /// <summary>Lloyd iterations from the given start; stops when the mean distance improves by ≤ threshold.</summary>
    internal static float[] Lloyd(QtipDevice device, float[] data, int samples, float[] start, int k, int maxIterations, double threshold)
    {
        var acc = device.Accelerator;
        var km = device.Get<KMeans2D>();
        using var x = device.Allocate1D(data);
        using var cd = device.Allocate1D(start);
        using var sums = device.Allocate1D<long>(KMeans2D.SumsLength(k));
        var c = (float[])start.Clone();
        double previous = double.PositiveInfinity;
        for (int it = 0; it < maxIterations; it++)
        {
            cd.View.CopyFromCPU(c);
            km.Assign(x.View, samples, cd.View, k, sums.View);
            var s = sums.GetAsArray1D();
            double meanDistance = s[3 * k] / KMeans2D.FixedScale / samples;
            if (previous - meanDistance <= threshold)
                break;
            previous = meanDistance;
            for (int j = 0; j < k; j++)
            {
                long members = s[(2 * k) + j];
                if (members == 0)
                    continue; // an empty cluster keeps its centroid
                c[2 * j] = (float)(s[j] / KMeans2D.FixedScale / members);
                c[(2 * j) + 1] = (float)(s[k + j] / KMeans2D.FixedScale / members);
            }
        }
        return c;
    }

    /// <summary>Scales all numbers by one factor so their population std (float64) is √(15/16).</summary>
    internal static float[] Rescale(float[] lut)
    {
        double mean = 0;
        foreach (var v in lut)
            mean += v;
        mean /= lut.Length;
        double var = 0;
        foreach (var v in lut)
            var += (v - mean) * (v - mean);
        double std = Math.Sqrt(var / lut.Length);
        double f = TargetStd / std;
        return lut.Select(v => (float)(v * f)).ToArray();
    }

    private static float[]? TryRead(string path, int centroids)
    {
        try
        {
            if (!File.Exists(path))
                return null;
            using var reader = new BinaryReader(File.OpenRead(path));
            if (new string(reader.ReadChars(Magic.Length)) != Magic || reader.ReadInt32() != 2 * centroids)
                return null;
            var lut = new float[2 * centroids];
            for (int i = 0; i < lut.Length; i++)
                lut[i] = reader.ReadSingle();
            return lut.All(float.IsFinite) && reader.BaseStream.Position == reader.BaseStream.Length ? lut : null;
        }
        catch (Exception e) when (e is IOException or EndOfStreamException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static void Write(string path, float[] lut)
    {
        try
        {
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            var tmp = $"{path}.{Environment.ProcessId}.tmp";
            using (var writer = new BinaryWriter(File.Create(tmp)))
            {
                writer.Write(Magic.ToCharArray());
                writer.Write(lut.Length);
                foreach (var v in lut)
                    writer.Write(v);
            }
            File.Move(tmp, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // An unwritable cache only costs a recomputation next time.
        }
    }
}
