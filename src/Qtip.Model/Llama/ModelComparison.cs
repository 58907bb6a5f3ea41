using System.Diagnostics;
using ILGPU;
using ILGPU.Runtime;

namespace Qtip.Model.Llama;

/// <summary>What <see cref="ModelComparison.Evaluate"/> measured: both perplexities, and for every scored token the
/// KL divergence KL(P_ref ‖ P_model) of the next-token distributions and whether their top-1 tokens agree.</summary>
public sealed record ComparisonResult(
    PerplexityResult Model,
    PerplexityResult Reference,
    long Tokens,
    double MeanKld,
    double MedianKld,
    double P99Kld,
    double MaxKld,
    double Top1Agreement);

/// <summary>
/// A model against its reference (the full-precision checkpoint), as llama.cpp's <c>--kl-divergence</c>: the same
/// windows as <see cref="Perplexity"/> run through both; at every scored position t (predicting window[t+1]) the
/// logits rows of both are turned into log-probabilities on the host in double, giving each model's NLL, the KL
/// divergence Σ p_ref·(log p_ref − log p_model) and the agreement of the argmaxes. Identical logits give KL exactly 0
/// and agreement 1. Host-side: each window copies ctx × vocab logits of both models to the host.
/// </summary>
public static class ModelComparison
{
    public static ComparisonResult Evaluate(LlamaModel model, LlamaModel reference, int[] stream, int context, int? maxWindows = null, Action<EvalProgress>? progress = null)
    {
        if (model.Config.VocabSize != reference.Config.VocabSize)
            throw new Qtip.Kernels.InvalidInputException($"the model's vocabulary ({model.Config.VocabSize}) differs from the reference's ({reference.Config.VocabSize}): KL divergence needs the same tokens");
        int windows = Perplexity.Windows(model, stream, context, maxWindows);
        Perplexity.Windows(reference, stream, context, maxWindows);
        int vocab = model.Config.VocabSize;
        int n = context - 1;
        var logitsRef = new float[(long)n * vocab];
        var logitsModel = new float[(long)n * vocab];
        var kld = new double[(long)windows * n];
        var nllModel = new double[n];
        var nllRef = new double[n];
        var agree = new bool[n];
        double sumModel = 0, sumRef = 0;
        long agreements = 0;
        var sw = Stopwatch.StartNew();
        var swRef = new Stopwatch();
        for (int w = 0; w < windows; w++)
        {
            var window = stream.AsSpan(w * context, context);
            swRef.Start();
            ReadRows(reference, window, logitsRef, n, vocab);
            swRef.Stop();
            ReadRows(model, window, logitsModel, n, vocab);
            var targets = window[1..].ToArray();
            int offset = w * n;
            Parallel.For(0, n, t =>
            {
                var r = logitsRef.AsSpan(t * vocab, vocab);
                var q = logitsModel.AsSpan(t * vocab, vocab);
                var (lseR, argR) = LogSumExp(r);
                var (lseQ, argQ) = LogSumExp(q);
                double kl = 0;
                for (int i = 0; i < vocab; i++)
                {
                    double lr = r[i] - lseR;
                    double lq = q[i] - lseQ;
                    kl += Math.Exp(lr) * (lr - lq);
                }
                kld[offset + t] = Math.Max(kl, 0); // rounding can leave −1e-17 where the distributions agree
                nllRef[t] = lseR - r[targets[t]];
                nllModel[t] = lseQ - q[targets[t]];
                agree[t] = argR == argQ;
            });
            double windowModel = 0, windowRef = 0;
            for (int t = 0; t < n; t++)
            {
                windowModel += nllModel[t];
                windowRef += nllRef[t];
            }
            Perplexity.RequireFinite(windowRef, w, context);
            Perplexity.RequireFinite(windowModel, w, context);
            for (int t = 0; t < n; t++)
            {
                sumModel += nllModel[t];
                sumRef += nllRef[t];
                agreements += agree[t] ? 1 : 0;
            }
            long done = (long)(w + 1) * n;
            progress?.Invoke(new EvalProgress(w + 1, windows, sumModel / done, sw.Elapsed.TotalSeconds));
        }
        long count = (long)windows * n;
        double seconds = sw.Elapsed.TotalSeconds;
        var sorted = (double[])kld.Clone();
        Array.Sort(sorted);
        return new ComparisonResult(
            new PerplexityResult(context, windows, count, stream.Length, sumModel / count, seconds - swRef.Elapsed.TotalSeconds),
            new PerplexityResult(context, windows, count, stream.Length, sumRef / count, swRef.Elapsed.TotalSeconds),
            count,
            kld.Average(),
            Quantile(sorted, 0.5),
            Quantile(sorted, 0.99),
            sorted[^1],
            (double)agreements / count);
    }

    /// <summary>Runs the window and copies logits rows 0..n−1 (n·vocab floats) to <paramref name="host"/>.</summary>
    private static void ReadRows(LlamaModel m, ReadOnlySpan<int> window, float[] host, int n, int vocab)
    {
        m.Prefill(window, 0, LogitsMode.All);
        m.Stream.Synchronize();
        m.Logits.SubView(0, (long)n * vocab).CopyToCPU(host);
    }

    /// <summary>log Σ exp(x) in double, and the index of the largest x (the first among equals).</summary>
    internal static (double Lse, int Argmax) LogSumExp(ReadOnlySpan<float> x)
    {
        int arg = 0;
        float max = x[0];
        for (int i = 1; i < x.Length; i++)
        {
            if (x[i] > max)
            {
                max = x[i];
                arg = i;
            }
        }
        double s = 0;
        foreach (float v in x)
            s += Math.Exp(v - (double)max);
        return (max + Math.Log(s), arg);
    }

    /// <summary>The q-quantile of sorted values, linearly interpolated (numpy's default).</summary>
    internal static double Quantile(double[] sorted, double q)
    {
        double pos = q * (sorted.Length - 1);
        int lo = (int)Math.Floor(pos);
        int hi = Math.Min(lo + 1, sorted.Length - 1);
        return sorted[lo] + ((pos - lo) * (sorted[hi] - sorted[lo]));
    }
}
