using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;
using Qtip.Kernels.Trellis;
using Qtip.Quant.Trellis;
using Qtip.Testing;
using Xunit;

namespace Qtip.Quant.Tests.Trellis;

/// <summary>The k-means assignment kernel against a plain C# pass, and the HYB LUT recipe's determinism, scale and cache,
/// on a small recipe (the full 2^20 × 512 one is the bench's job).</summary>
public abstract class HybLutTests(BackendKind backend) : BackendTest(backend)
{
    private const int Samples = 1 << 12;
    private const int Centroids = 16;

    [Fact]
    public void Assign_MatchesPlainNearestCentroidPass()
    {
        var x = GaussianSource.Fill(2 * Samples, 3);
        var c = GaussianSource.Fill(2 * Centroids, 4);
        var acc = Device.Accelerator;
        using var xd = acc.Allocate1D(x);
        using var cd = acc.Allocate1D(c);
        using var sums = acc.Allocate1D<long>(KMeans2D.SumsLength(Centroids));
        Device.Get<KMeans2D>().Assign(xd.View, Samples, cd.View, Centroids, sums.View);
        var got = sums.GetAsArray1D();

        var count = new long[Centroids];
        var sx = new double[Centroids];
        var sy = new double[Centroids];
        double dist = 0;
        for (int i = 0; i < Samples; i++)
        {
            float best = float.PositiveInfinity;
            int arg = 0;
            for (int j = 0; j < Centroids; j++)
            {
                float dx = x[2 * i] - c[2 * j], dy = x[(2 * i) + 1] - c[(2 * j) + 1];
                float d = (dx * dx) + (dy * dy);
                if (d < best)
                {
                    best = d;
                    arg = j;
                }
            }
            count[arg]++;
            sx[arg] += x[2 * i];
            sy[arg] += x[(2 * i) + 1];
            dist += Math.Sqrt(best);
        }
        for (int j = 0; j < Centroids; j++)
        {
            Assert.Equal(count[j], got[(2 * Centroids) + j]);
            Assert.Equal(sx[j], got[j] / KMeans2D.FixedScale, 1e-6);
            Assert.Equal(sy[j], got[Centroids + j] / KMeans2D.FixedScale, 1e-6);
        }
        Assert.Equal(dist, got[3 * Centroids] / KMeans2D.FixedScale, 1e-3);
    }

    [Fact]
    public void Recipe_IsDeterministic_AndScaledToSqrt15Over16()
    {
        var a = HybLut.Compute(Device, seed: 1, samples: Samples, centroids: Centroids);
        var b = HybLut.Compute(Device, seed: 1, samples: Samples, centroids: Centroids);
        var c = HybLut.Compute(Device, seed: 2, samples: Samples, centroids: Centroids);
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
        double mean = a.Average(v => (double)v);
        double std = Math.Sqrt(a.Average(v => (v - mean) * (v - mean)));
        Assert.Equal(Math.Sqrt(15.0 / 16.0), std, 1e-6);
    }

    [Fact]
    public void Lloyd_LowersTheDistortion()
    {
        var draws = GaussianSource.Fill(2 * (Samples + Centroids), 5);
        var x = draws[..(2 * Samples)];
        var start = draws[(2 * Samples)..];
        double Distortion(float[] c) => Enumerable.Range(0, Samples).Average(i =>
            Enumerable.Range(0, Centroids).Min(j => Math.Pow(x[2 * i] - c[2 * j], 2) + Math.Pow(x[(2 * i) + 1] - c[(2 * j) + 1], 2)));
        var one = HybLut.Lloyd(Device, x, Samples, start, Centroids, maxIterations: 1, threshold: 1e-5);
        var many = HybLut.Lloyd(Device, x, Samples, start, Centroids, maxIterations: 200, threshold: 1e-5);
        Assert.True(Distortion(one) < Distortion(start));
        Assert.True(Distortion(many) < Distortion(one));
    }

    [Fact]
    public void Cache_IsWrittenRead_AndRebuiltWhenCorrupt()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"qtip-lut-{Environment.ProcessId}-{Backend}");
        try
        {
            var first = HybLut.GetOrCreate(Device, seed: 3, samples: Samples, centroids: Centroids, cacheDir: dir);
            var path = HybLut.CachePath(3, Samples, Centroids, dir);
            Assert.True(File.Exists(path));
            var stamp = File.GetLastWriteTimeUtc(path);
            Assert.Equal(first, HybLut.GetOrCreate(Device, seed: 3, samples: Samples, centroids: Centroids, cacheDir: dir));
            Assert.Equal(stamp, File.GetLastWriteTimeUtc(path));
            File.WriteAllBytes(path, [1, 2, 3]);
            Assert.Equal(first, HybLut.GetOrCreate(Device, seed: 3, samples: Samples, centroids: Centroids, cacheDir: dir));
            Assert.True(new FileInfo(path).Length > 100);
        }
        finally
        {
            if (Directory.Exists(dir))
                Directory.Delete(dir, recursive: true);
        }
    }
}
