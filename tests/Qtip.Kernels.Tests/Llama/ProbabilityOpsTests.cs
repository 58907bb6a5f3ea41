using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Llama;
using Qtip.Kernels.Runtime;
using Qtip.Testing;
using Xunit;

namespace Qtip.Kernels.Tests.Llama;

public abstract class SoftmaxAndCrossEntropyTests(BackendKind backend, KernelStyle style = KernelStyle.Grouped) : BackendTest(backend)
{
    private Softmax SoftmaxOp
    {
        get
        {
            var op = Device.Get<Softmax>();
            SkipUnsupportedStyle(style);
            op.Style = style;
            return op;
        }
    }

    private CrossEntropy CrossEntropyOp
    {
        get
        {
            var op = Device.Get<CrossEntropy>();
            SkipUnsupportedStyle(style);
            op.Style = style;
            return op;
        }
    }

    private static double LogSumExp(float[] x, int b, int n, double invT = 1)
    {
        double m = double.NegativeInfinity;
        for (int i = 0; i < n; i++)
            m = Math.Max(m, x[b + i] * invT);
        double s = 0;
        for (int i = 0; i < n; i++)
            s += Math.Exp((x[b + i] * invT) - m);
        return m + Math.Log(s);
    }

    [Theory]
    [InlineData(false, 1f)]
    [InlineData(true, 1f)]
    [InlineData(false, 0.7f)]
    public void Softmax_MatchesLoops(bool log, float temperature)
    {
        int rows = 3, n = 50;
        var x = Rng.Gaussian(rows * n, seed: 4).Select(v => v * 3).ToArray();
        using var xd = Device.Accelerator.Allocate1D(x);
        SoftmaxOp.Apply(xd.View, rows, n, log, temperature);
        var y = xd.GetAsArray1D();
        for (int r = 0; r < rows; r++)
        {
            double lse = LogSumExp(x, r * n, n, 1.0 / temperature);
            for (int i = 0; i < n; i++)
            {
                double z = x[(r * n) + i] / (double)temperature - lse;
                double want = log ? z : Math.Exp(z);
                Assert.True(Math.Abs(y[(r * n) + i] - want) <= LlamaTolerances.Transcendental * (1 + Math.Abs(want)), $"[{r},{i}] = {y[(r * n) + i]}, want {want}");
            }
        }
    }

    [Fact]
    public void CrossEntropy_MatchesLoops()
    {
        int rows = 4, vocab = 70;
        var logits = Rng.Gaussian(rows * vocab, seed: 8).Select(v => v * 5).ToArray();
        int[] targets = [0, 69, 13, 13];
        var acc = Device.Accelerator;
        using var ld = acc.Allocate1D(logits);
        using var td = acc.Allocate1D(targets);
        using var nd = acc.Allocate1D<float>(rows);
        CrossEntropyOp.Apply(ld.View, td.View, nd.View, rows, vocab);
        var nll = nd.GetAsArray1D();
        for (int r = 0; r < rows; r++)
        {
            double want = LogSumExp(logits, r * vocab, vocab) - logits[(r * vocab) + targets[r]];
            Assert.True(Math.Abs(nll[r] - want) <= LlamaTolerances.Transcendental * (1 + want), $"nll[{r}] = {nll[r]}, want {want}");
        }
    }
}

public abstract class ArgmaxAndSampleTests(BackendKind backend, KernelStyle style = KernelStyle.Grouped) : BackendTest(backend)
{
    private Argmax ArgmaxOp
    {
        get
        {
            var op = Device.Get<Argmax>();
            SkipUnsupportedStyle(style);
            op.Style = style;
            return op;
        }
    }

    private Sample SampleOp
    {
        get
        {
            var op = Device.Get<Sample>();
            SkipUnsupportedStyle(style);
            op.Style = style;
            return op;
        }
    }

    [Fact]
    public void Argmax_FindsFirstMaximum()
    {
        var x = Rng.Gaussian(1000, seed: 3);
        x[417] = 10f;
        x[801] = 10f;
        var acc = Device.Accelerator;
        using var xd = acc.Allocate1D(x);
        using var rd = acc.Allocate1D<int>(3);
        ArgmaxOp.Apply(xd.View, 1000, rd.View, outIndex: 2);
        Assert.Equal(417, rd.GetAsArray1D()[2]);
    }

    /// <summary>Hugging Face order: temperature, top-k, top-p over the sorted distribution, then the inverse CDF in id order.</summary>
    private static int Reference(float[] logits, double temperature, int topK, double topP, double u)
    {
        double m = logits.Max();
        var p = logits.Select(l => Math.Exp((l - m) / temperature)).ToArray();
        var order = Enumerable.Range(0, p.Length).OrderByDescending(i => p[i]).ThenBy(i => i).ToArray();
        int keep = topK > 0 ? Math.Min(topK, p.Length) : p.Length;
        double massK = order.Take(keep).Sum(i => p[i]);
        if (topP < 1)
        {
            double run = 0;
            int needed = 0;
            foreach (int i in order.Take(keep))
            {
                run += p[i];
                needed++;
                if (run >= topP * massK)
                    break;
            }
            keep = needed;
        }
        var kept = order.Take(keep).Order().ToArray();
        double total = kept.Sum(i => p[i]);
        double goal = u * total, acc = 0;
        foreach (int i in kept)
        {
            acc += p[i];
            if (goal < acc)
                return i;
        }
        return kept[^1];
    }

    [Theory]
    [InlineData(1.0, 0, 1.0)]
    [InlineData(0.8, 5, 1.0)]
    [InlineData(1.3, 0, 0.6)]
    [InlineData(1.0, 20, 0.9)]
    [InlineData(0.5, 1, 1.0)]
    public void Sample_MatchesSortedReference(double temperature, int topK, double topP)
    {
        int n = 300;
        // Well-separated logits (distinct multiples of 0.05), so fp32 sums cannot flip a boundary.
        var perm = Enumerable.Range(0, n).OrderBy(i => (i * 7919) % n).ToArray();
        var logits = perm.Select(i => (float)(i * 0.02)).ToArray();
        var acc = Device.Accelerator;
        using var ld = acc.Allocate1D(logits);
        using var rd = acc.Allocate1D<int>(1);
        var sample = SampleOp;
        foreach (double u in new[] { 0.0, 0.013, 0.25, 0.5, 0.77, 0.9999 })
        {
            sample.Apply(ld.View, n, (float)temperature, topK, (float)topP, (float)u, rd.View);
            int got = rd.GetAsArray1D()[0];
            int want = Reference(logits, temperature, topK, topP, u);
            Assert.True(got == want, $"u={u}: sampled {got} (logit {logits[got]}), reference {want} (logit {logits[want]})");
        }
    }

    [Fact]
    public void Sample_RejectsZeroTemperature()
    {
        using var b = Device.Accelerator.Allocate1D<float>(4);
        using var r = Device.Accelerator.Allocate1D<int>(1);
        Assert.Throws<ArgumentOutOfRangeException>(() => SampleOp.Apply(b.View, 4, 0f, 0, 1f, 0.5f, r.View));
    }
}
