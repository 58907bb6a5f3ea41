using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Llama;
using Qtip.Kernels.Runtime;
using Qtip.Testing;
using Xunit;

namespace Qtip.Kernels.Tests.Llama;

public abstract class RopeTests(BackendKind backend) : BackendTest(backend)
{
    [Fact]
    public void RotatesQAndK_WritesCache()
    {
        int rows = 3, pos0 = 2, heads = 4, kvHeads = 2, hd = 8, half = hd / 2;
        int qDim = heads * hd, kvDim = kvHeads * hd, maxPos = 8;
        var q = Rng.Gaussian(rows * qDim, seed: 1);
        var k = Rng.Gaussian(rows * kvDim, seed: 2);
        var v = Rng.Gaussian(rows * kvDim, seed: 3);
        var inv = RopeTable.DefaultFrequencies(hd, 10000.0);
        var (cos, sin) = RopeTable.Build(inv, maxPos);
        var acc = Device.Accelerator;
        using var qd = acc.Allocate1D(q);
        using var kd = acc.Allocate1D(k);
        using var vd = acc.Allocate1D(v);
        using var kc = acc.Allocate1D<float>(maxPos * kvDim);
        using var vc = acc.Allocate1D<float>(maxPos * kvDim);
        kc.MemSetToZero();
        vc.MemSetToZero();
        using var cd = acc.Allocate1D(cos);
        using var sd = acc.Allocate1D(sin);
        Device.Get<Rope>().Apply(qd.View, qDim, kd.View, kvDim, vd.View, kvDim, kc.View, vc.View, cd.View, sd.View, rows, pos0, heads, kvHeads, hd);
        var qo = qd.GetAsArray1D();
        var kco = kc.GetAsArray1D();
        var vco = vc.GetAsArray1D();
        for (int r = 0; r < rows; r++)
        {
            int t = pos0 + r;
            void CheckHead(float[] src, int srcBase, float[] dst, int dstBase)
            {
                for (int j = 0; j < half; j++)
                {
                    double angle = (float)(t * inv[j]);
                    double c = Math.Cos(angle), s = Math.Sin(angle);
                    double x0 = src[srcBase + j], x1 = src[srcBase + j + half];
                    Assert.True(Math.Abs((x0 * c) - (x1 * s) - dst[dstBase + j]) <= LlamaTolerances.Dot, $"pair {j} at t={t}");
                    Assert.True(Math.Abs((x1 * c) + (x0 * s) - dst[dstBase + j + half]) <= LlamaTolerances.Dot, $"pair {j}+half at t={t}");
                }
            }
            for (int h = 0; h < heads; h++)
                CheckHead(q, (r * qDim) + (h * hd), qo, (r * qDim) + (h * hd));
            for (int h = 0; h < kvHeads; h++)
                CheckHead(k, (r * kvDim) + (h * hd), kco, (t * kvDim) + (h * hd));
            for (int d = 0; d < kvDim; d++)
                Assert.Equal(v[(r * kvDim) + d], vco[(t * kvDim) + d]);
        }
        Assert.All(kco[..(pos0 * kvDim)], x => Assert.Equal(0f, x));
    }

    [Fact]
    public void Llama3Scaling_KeepsHighAndDividesLowFrequencies()
    {
        var inv = RopeTable.DefaultFrequencies(128, 500000.0);
        var scaled = RopeTable.Llama3(inv, 8, 1, 4, 8192);
        for (int j = 0; j < inv.Length; j++)
        {
            double wavelen = 2 * Math.PI / inv[j];
            if (wavelen < 8192 / 4.0)
                Assert.Equal(inv[j], scaled[j]);
            else if (wavelen > 8192 / 1.0)
                Assert.Equal(inv[j] / 8.0, scaled[j], 1e-12);
            else
            {
                double smooth = (8192 / wavelen - 1) / 3;
                Assert.Equal(((1 - smooth) * inv[j] / 8) + (smooth * inv[j]), scaled[j], 1e-9);
            }
        }
        Assert.Contains(inv.Zip(scaled), p => p.First == p.Second);
        Assert.Contains(inv.Zip(scaled), p => p.First != p.Second);
    }
}

public abstract class AttentionTests(BackendKind backend, KernelStyle style = KernelStyle.Grouped) : BackendTest(backend)
{
    private Attention AttentionOp
    {
        get
        {
            var op = Device.Get<Attention>();
            SkipUnsupportedStyle(style);
            op.Style = style;
            return op;
        }
    }

    [Theory]
    [InlineData(3, 2, 4, 2, 8)] // prefill rows continuing a cache
    [InlineData(1, 6, 4, 1, 16)] // one decode row, multi-query
    [InlineData(5, 0, 2, 2, 32)] // a window from position 0
    public void MatchesLoops(int rows, int pos0, int heads, int kvHeads, int hd) => CheckAgainstLoops(rows, pos0, heads, kvHeads, hd);

    /// <summary>
    /// Sliding-window attention (Mistral): row i sees keys i − w &lt; t ≤ i. Prefill rows whose windows start at 0 and
    /// past it, windows of 1 (only itself) and wider than the context (full attention), and decode rows over many
    /// positions (the grouped decode kernel is handed the caches from the window's first position, split or not).
    /// </summary>
    [Theory]
    [InlineData(12, 0, 4, 2, 8, 5)]   // prefill: rows 0..4 see all, later rows a moving window
    [InlineData(3, 6, 2, 1, 16, 4)]   // prefill continuing a cache
    [InlineData(5, 2, 2, 2, 8, 1)]    // each row sees only itself
    [InlineData(4, 0, 2, 2, 8, 100)]  // a window wider than the context: full attention
    [InlineData(1, 39, 4, 2, 16, 8)]  // decode at position 39 with window 8: positions 32..39
    [InlineData(1, 69, 4, 4, 32, 30)] // decode split over several chunks of the window
    [InlineData(1, 20, 2, 1, 6, 7)]   // headDim 6: the general kernel for one row
    public void SlidingWindow_MatchesLoops(int rows, int pos0, int heads, int kvHeads, int hd, int window) =>
        CheckAgainstLoops(rows, pos0, heads, kvHeads, hd, window);

    /// <summary>The window must change the result, or the test above could not tell it from full attention.</summary>
    [Fact]
    public void SlidingWindow_DiffersFromFullAttention()
    {
        int heads = 2, hd = 8, rows = 1, pos0 = 20;
        var full = Run(rows, pos0, heads, heads, hd, 0).Output;
        var windowed = Run(rows, pos0, heads, heads, hd, 4).Output;
        Assert.Contains(full.Zip(windowed), p => Math.Abs(p.First - p.Second) > 1e-3);
    }

    private (float[] Q, float[] K, float[] V, float[] Output) Run(int rows, int pos0, int heads, int kvHeads, int hd, int window)
    {
        int qDim = heads * hd, kvDim = kvHeads * hd, positions = pos0 + rows;
        var q = Rng.Gaussian(rows * qDim, seed: 11);
        var kc = Rng.Gaussian(positions * kvDim, seed: 12);
        var vc = Rng.Gaussian(positions * kvDim, seed: 13);
        var acc = Device.Accelerator;
        using var qd = acc.Allocate1D(q);
        using var kd = acc.Allocate1D(kc);
        using var vd = acc.Allocate1D(vc);
        using var od = acc.Allocate1D<float>(rows * qDim);
        AttentionOp.Apply(qd.View, qDim, kd.View, vd.View, od.View, rows, pos0, heads, kvHeads, hd, window: window);
        return (q, kc, vc, od.GetAsArray1D());
    }

    /// <summary>
    /// One decode row over many positions: the grouped style splits them into chunks (several per group when the split
    /// limit is low, several groups per head merged by the last one when it is high); headDim 12 has three quads (idle
    /// threads, clamped loads), 6 is not a multiple of 4 (the general kernel). The expected split counts are those of
    /// the default CPU simulator shape (warp 4, groups of 16); other shapes check the values only.
    /// </summary>
    [Theory]
    [InlineData(4, 2, 16, 40, 0, 0)]
    [InlineData(4, 2, 16, 40, 1, 1)]
    [InlineData(4, 2, 16, 40, 2, 2)]
    [InlineData(4, 4, 32, 70, 64, 9)]
    [InlineData(2, 1, 12, 33, 3, 3)]
    [InlineData(2, 2, 8, 5, 4, 1)]
    [InlineData(2, 1, 6, 17, 4, 1)]
    [InlineData(2, 1, 128, 50, 2, 0)]
    public void Decode_SplitsOverPositions(int heads, int kvHeads, int hd, int positions, int splitLimit, int expectedSplits)
    {
        var op = AttentionOp;
        int old = op.DecodeSplitLimit;
        op.DecodeSplitLimit = splitLimit;
        try
        {
            CheckAgainstLoops(1, positions - 1, heads, kvHeads, hd);
            // Twice: the per-head counters must be back at zero after a launch.
            CheckAgainstLoops(1, positions - 1, heads, kvHeads, hd);
            if (style == KernelStyle.Grouped && expectedSplits > 0 && Device.WarpSize == 4 && Device.MaxGroupSize == 16)
                Assert.Equal(expectedSplits, op.LastDecodeSplits);
        }
        finally
        {
            op.DecodeSplitLimit = old;
        }
    }

    /// <summary>The plain reference: double sums over the visible positions max(0, i − window + 1) ≤ t ≤ i (all t ≤ i when window is 0).</summary>
    private void CheckAgainstLoops(int rows, int pos0, int heads, int kvHeads, int hd, int window = 0)
    {
        int qDim = heads * hd, kvDim = kvHeads * hd;
        var (q, kc, vc, o) = Run(rows, pos0, heads, kvHeads, hd, window);
        int group = heads / kvHeads;
        for (int r = 0; r < rows; r++)
        {
            int last = pos0 + r;
            int first = window > 0 ? Math.Max(0, last - window + 1) : 0;
            for (int h = 0; h < heads; h++)
            {
                int g = h / group;
                var s = Enumerable.Repeat(double.NegativeInfinity, last + 1).ToArray();
                for (int t = first; t <= last; t++)
                {
                    double dot = 0;
                    for (int d = 0; d < hd; d++)
                        dot += (double)q[(r * qDim) + (h * hd) + d] * kc[(t * kvDim) + (g * hd) + d];
                    s[t] = dot / Math.Sqrt(hd);
                }
                double m = s.Max();
                var e = s.Select(z => Math.Exp(z - m)).ToArray();
                double sum = e.Sum();
                for (int d = 0; d < hd; d++)
                {
                    double want = 0;
                    for (int t = first; t <= last; t++)
                        want += e[t] / sum * vc[(t * kvDim) + (g * hd) + d];
                    float got = o[(r * qDim) + (h * hd) + d];
                    Assert.True(Math.Abs(got - want) <= LlamaTolerances.Dot, $"out[{r},{h},{d}] = {got}, want {want}");
                }
            }
        }
    }

    [Fact]
    public void Apply_ThrowsForIndivisibleHeads()
    {
        var acc = Device.Accelerator;
        using var b = acc.Allocate1D<float>(64);
        var e = Assert.Throws<ArgumentException>(() => AttentionOp.Apply(b.View, 12, b.View, b.View, b.View, 1, 0, 3, 2, 4));
        Assert.Contains("heads 3", e.Message, StringComparison.Ordinal);
    }
}
