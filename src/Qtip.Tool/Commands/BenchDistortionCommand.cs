using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;
using Qtip.Kernels.Trellis;
using Qtip.Quant.Trellis;
using Qtip.Tool.Cli;

namespace Qtip.Tool.Commands;

/// <summary>
/// <c>qtip bench distortion</c>: quantizes N i.i.d. N(0, 1) sequences of length T = 256 with a trellis code and reports
/// the MSE, its gap to the rate–distortion bound D(R) = 2^(−2K) in dB, and throughput (sequences/s, with the share of
/// the time spent in the Viterbi kernel). A code is used at a scale s (reconstruction = s · code value; the quantizer
/// sees x / s), as the pipeline's Wscale does: <c>--scale rms</c> (s = 1/RMS of the code), a number, or
/// <c>search</c> (golden-section search on a subset, then the full run at the best s).
/// </summary>
public static class BenchDistortionCommand
{
    public sealed record PlanInfo(int Threads, int GroupsPerThread, int BackPointerBits, int TableSymbols, string Minima, bool Shuffles, bool Interleaved, int SharedBytes, int Slots, long ScratchBytes);

    public sealed record Result(
        string Device, string Backend, string Date, string Code, int K, int L, int V, int T, int Sequences, int Seed,
        string TailBiting, string ScaleMode, double Scale, double CodeRms, double Mse, double MseStdError, double Bound,
        double GapDb, double SecondsTotal, double SecondsKernel, double SequencesPerSecond, double KernelSequencesPerSecond,
        double KernelShare, PlanInfo Plan, string Command);

    public static Command Create()
    {
        var backend = CommonOptions.Backend();
        var device = CommonOptions.Device();
        var json = CommonOptions.Json();
        var code = new Option<string>("--code") { Description = $"Trellis code: {TrellisCodes.Names(last: " or ")} (lut: a random Gaussian table; --V picks 1 or 2 values per state).", DefaultValueFactory = _ => TrellisCodes.Hyb.Name, HelpName = string.Join("|", TrellisCodes.All.Select(c => c.Name).Distinct()) };
        var bits = new Option<int>("--bits", "-b", "-K") { Description = "K: bits per weight (1…4).", DefaultValueFactory = _ => 2 };
        var l = new Option<int>("--L") { Description = "L: state bits (2…16).", DefaultValueFactory = _ => 16 };
        var v = new Option<int>("--V") { Description = "V: values per state, for --code lut (1 or 2); 1MAD/3INST are 1, HYB is 2.", DefaultValueFactory = _ => 1 };
        var sequences = new Option<int>("--sequences", "-n") { Description = "N: sequences of T = 256 i.i.d. N(0,1) values.", DefaultValueFactory = _ => 4096 };
        var seed = new Option<int>("--seed") { Description = "Seed of the source (and of the LUT for --code lut).", DefaultValueFactory = _ => 0 };
        var tail = new Option<string>("--tail-biting") { Description = "approx (two-pass Algorithm 4), exact (best of all 2^(L−KV) overlaps; small L), none.", DefaultValueFactory = _ => "approx", HelpName = "approx|exact|none" };
        var scale = new Option<string>("--scale") { Description = "Reconstruction scale s: 'rms' (1/RMS of the code), a number, or 'search'.", DefaultValueFactory = _ => "rms", HelpName = "rms|X|search" };
        var searchSequences = new Option<int>("--search-sequences") { Description = "Sequences used by --scale search.", DefaultValueFactory = _ => 256 };
        var lutSeed = new Option<int>("--lut-seed") { Description = "Seed of the HYB k-means LUT (cached on disk).", DefaultValueFactory = _ => HybLut.DefaultSeed };
        var threads = new Option<int>("--threads") { Description = "Cap on Viterbi threads per group (0: device maximum, ≤ 1024).", DefaultValueFactory = _ => 0 };
        var memory = new Option<int>("--memory-mb") { Description = "Device scratch budget for back-pointers (MiB).", DefaultValueFactory = _ => 512 };
        var command = new Command("distortion", "Trellis quantizer on an i.i.d. Gaussian source: MSE, gap to D(R), sequences/s.")
        {
            backend, device, code, bits, l, v, sequences, seed, tail, scale, searchSequences, lutSeed, threads, memory, json,
        };
        command.SetAction(parse => CommandRunner.Run(() => Execute(new Options(
            CommonOptions.ParseBackend(parse.GetValue(backend)!), parse.GetValue(device), parse.GetValue(code)!, parse.GetValue(bits),
            parse.GetValue(l), parse.GetValue(v), parse.GetValue(sequences), parse.GetValue(seed), parse.GetValue(tail)!,
            parse.GetValue(scale)!, parse.GetValue(searchSequences), parse.GetValue(lutSeed), parse.GetValue(threads),
            parse.GetValue(memory), parse.GetValue(json)), string.Join(' ', parse.Tokens.Select(t => t.Value)))));
        return command;
    }

    private sealed record Options(
        BackendKind Backend, int Device, string Code, int K, int L, int V, int Sequences, int Seed, string TailBiting,
        string Scale, int SearchSequences, int LutSeed, int Threads, int MemoryMb, FileInfo? Json);

    private const int T = 256;

    private static int Execute(Options o, string commandLine)
    {
        var mode = o.TailBiting.ToLowerInvariant() switch
        {
            "approx" => TailBiting.Approx,
            "exact" => TailBiting.Exact,
            "none" => TailBiting.None,
            _ => throw new UsageException($"--tail-biting '{o.TailBiting}': expected approx, exact or none"),
        };
        var row = TrellisCodes.Find(o.Code) ?? throw new UsageException($"--code '{o.Code}': expected {TrellisCodes.Names(last: " or ")}");
        string codeName = row.Name;
        // Codes that share a name differ in V (lut: 1 or 2): --V picks one; a code alone under its name has its own V.
        bool vChoosable = TrellisCodes.All.Count(c => c.Name == row.Name) > 1;
        if (vChoosable)
            row = TrellisCodes.Find(o.Code, o.V) ?? throw new UsageException($"--V {o.V}: --code {codeName} has V = {string.Join(" or ", TrellisCodes.All.Where(c => c.Name == codeName).Select(c => c.V))}");
        int v = row.V;
        if (!vChoosable && o.V != 1 && o.V != v)
            throw new UsageException($"--V {o.V} applies to --code {string.Join(", ", TrellisCodes.All.GroupBy(c => c.Name).Where(g => g.Count() > 1).Select(g => g.Key))} only ({codeName} has V = {v})");
        TrellisShape.Validate(o.L, o.K, v, T);
        if (o.Sequences < 1)
            throw new UsageException($"--sequences must be at least 1 (got {o.Sequences})");
        if (o.SearchSequences < 1)
            throw new UsageException($"--search-sequences must be at least 1 (got {o.SearchSequences})");
        if (o.MemoryMb < 1)
            throw new UsageException($"--memory-mb must be at least 1 (got {o.MemoryMb})");
        string scaleMode = o.Scale.ToLowerInvariant();
        double fixedScale = 0;
        if (scaleMode is not ("rms" or "search") && (!double.TryParse(o.Scale, NumberStyles.Float, CultureInfo.InvariantCulture, out fixedScale) || !(fixedScale > 0) || !double.IsFinite(fixedScale)))
            throw new UsageException($"--scale '{o.Scale}': expected rms, search or a positive number");

        using var device = Backends.Open(o.Backend, o.Device);
        Output.Line($"device: {device}");
        // The table: HYB's k-means LUT (of --lut-seed), a code's own table maker, or (the lut baselines) a seeded Gaussian one.
        var codebook = row.TableRows(o.L) == 0 ? TrellisCodebook.For(row)
            : row == TrellisCodes.Hyb ? TrellisCodebook.Hyb(HybLut.GetOrCreate(device, o.LutSeed))
            : row.MakeTable is { } make ? TrellisCodebook.For(row, make(device, o.L), o.L)
            : TrellisCodebook.For(row, GaussianSource.Fill(row.TableLength(o.L), o.Seed + 1_000_003), o.L);
        double rms = codebook.Rms(o.L);
        var options = new TrellisQuantizerOptions(MemoryBudgetBytes: (long)o.MemoryMb << 20, MaxThreads: o.Threads);
        using var q = new TrellisQuantizer(device, codebook, o.L, o.K, T, options);
        var x = GaussianSource.Fill(o.Sequences * T, o.Seed);
        var acc = device.Accelerator;
        using var xd = device.Allocate1D(x);
        using var td = device.Allocate1D<float>(x.Length);
        using var states = device.Allocate1D<uint>((long)o.Sequences * q.Steps);
        using var recon = device.Allocate1D<float>(x.Length);
        using var mse = device.Allocate1D<float>(o.Sequences);
        using var packed = device.Allocate1D<short>((long)o.Sequences * q.WordsPerSequence);

        double Evaluate(double s, int count)
        {
            Scale(x, td, count, 1 / s);
            q.Quantize(td.View, count, mode, states.View, recon.View, mse.View, default);
            device.Synchronize();
            return DistortionOf(x, recon.View.SubView(0, (long)count * T).GetAsArray1D(), s).Mean;
        }

        double scaleUsed = scaleMode switch
        {
            "rms" => 1 / rms,
            "search" => Search(s => Evaluate(s, Math.Min(o.SearchSequences, o.Sequences)), 0.5 / rms, 1.5 / rms),
            _ => fixedScale,
        };
        Scale(x, td, o.Sequences, 1 / scaleUsed);

        // Warm-up on one sequence (kernel compilation), then the timed runs: the Viterbi alone, then the full call
        // (target validation + Viterbi + packing + results back to the host).
        var warm = new TrellisQuantizer(device, codebook, o.L, o.K, T, options with { ValidateTargets = false });
        using (warm)
        {
            warm.Quantize(td.View, 1, mode, states.View, recon.View, mse.View, mode == TailBiting.None ? default : packed.View);
            device.Synchronize();
            var sw = Stopwatch.StartNew();
            warm.Quantize(td.View, o.Sequences, mode, states.View, recon.View, mse.View, default);
            device.Synchronize();
            double kernelSeconds = sw.Elapsed.TotalSeconds;

            sw.Restart();
            q.Quantize(td.View, o.Sequences, mode, states.View, recon.View, mse.View, mode == TailBiting.None ? default : packed.View);
            device.Synchronize();
            var reconHost = recon.GetAsArray1D();
            _ = mse.GetAsArray1D();
            double totalSeconds = sw.Elapsed.TotalSeconds;

            var (mean, stdErr) = DistortionOf(x, reconHost, scaleUsed);
            double bound = Math.Pow(2, -2 * o.K);
            var plan = q.Plan;
            var result = new Result(
                device.ToString(), device.Kind.Name(), DateTime.UtcNow.ToString("u"), codeName, o.K, o.L, v, T, o.Sequences, o.Seed,
                o.TailBiting.ToLowerInvariant(), scaleMode is "rms" or "search" ? scaleMode : "fixed", scaleUsed, rms, mean, stdErr, bound,
                10 * Math.Log10(mean / bound), totalSeconds, kernelSeconds, o.Sequences / totalSeconds, o.Sequences / kernelSeconds,
                kernelSeconds / totalSeconds,
                new PlanInfo(plan.Threads, plan.GroupsPerThread, plan.BackPointerBits, plan.TableSymbols, plan.Minima.ToString(), plan.Shuffles, plan.Interleaved, plan.SharedBytes, plan.Slots, plan.ScratchBytes),
                "qtip bench distortion " + commandLine);
            Print(result);
            Output.WriteJson(o.Json, result);
        }
        return ExitCodes.Ok;
    }

    private static void Scale(float[] x, MemoryBuffer1D<float, Stride1D.Dense> target, int count, double factor)
    {
        var scaled = new float[count * T];
        for (int i = 0; i < scaled.Length; i++)
            scaled[i] = (float)(x[i] * factor);
        target.View.SubView(0, scaled.Length).CopyFromCPU(scaled);
    }

    /// <summary>Mean over sequences of the per-sequence MSE of s·recon vs x (float64), and its standard error.</summary>
    private static (double Mean, double StdErr) DistortionOf(float[] x, float[] recon, double s)
    {
        int count = recon.Length / T;
        var per = new double[count];
        for (int b = 0; b < count; b++)
        {
            double e = 0;
            for (int i = 0; i < T; i++)
            {
                double d = (s * recon[(b * T) + i]) - x[(b * T) + i];
                e += d * d;
            }
            per[b] = e / T;
        }
        double mean = per.Average();
        double var = count > 1 ? per.Sum(p => (p - mean) * (p - mean)) / (count - 1) : 0;
        return (mean, Math.Sqrt(var / count));
    }

    /// <summary>Golden-section search for the minimum of a unimodal f on [a, b] (14 evaluations: ~0.2% of the interval).</summary>
    internal static double Search(Func<double, double> f, double a, double b)
    {
        double phi = (Math.Sqrt(5) - 1) / 2;
        double c = b - (phi * (b - a)), d = a + (phi * (b - a));
        double fc = f(c), fd = f(d);
        for (int i = 0; i < 12; i++)
        {
            if (fc <= fd)
            {
                b = d;
                d = c;
                fd = fc;
                c = b - (phi * (b - a));
                fc = f(c);
            }
            else
            {
                a = c;
                c = d;
                fc = fd;
                d = a + (phi * (b - a));
                fd = f(d);
            }
        }
        return fc <= fd ? c : d;
    }

    private static string MinimaText(string layout) => layout switch
    {
        nameof(MinimaLayout.Shared) => "fp32 minima in shared memory",
        nameof(MinimaLayout.Global) => "fp32 minima in global memory",
        nameof(MinimaLayout.InPlace) => "fp32 minima in place in shared memory",
        nameof(MinimaLayout.FixedPoint) => "16-bit fixed-point minima in place in shared memory",
        _ => layout,
    };

    private static void Print(Result r)
    {
        var plan = r.Plan;
        Output.Table($"Trellis distortion: {r.Code} K={r.K} L={r.L} V={r.V} T={r.T}, {r.Sequences} N(0,1) sequences (seed {r.Seed}), tail-biting {r.TailBiting}",
            ["quantity", "value"],
            [
                ["MSE", $"{r.Mse:F5} ± {r.MseStdError:F5}"],
                ["D(R) = 2^(−2K)", $"{r.Bound:F5}"],
                ["gap to D(R)", $"{r.GapDb:F3} dB"],
                ["scale (recon = s·code)", $"{r.Scale:F4} ({r.ScaleMode}; code RMS {r.CodeRms:F4})"],
                ["throughput, full call", $"{r.SequencesPerSecond:F1} sequences/s ({r.SecondsTotal:F3} s)"],
                ["throughput, Viterbi only", $"{r.KernelSequencesPerSecond:F1} sequences/s ({r.SecondsKernel:F3} s, {r.KernelShare:P0} of the call)"],
                ["Viterbi launch", $"{plan.Threads} threads, R = {plan.GroupsPerThread}, {plan.BackPointerBits}-bit back-pointers, " +
                    $"{(plan.TableSymbols > 0 ? $"{plan.TableSymbols}-entry error table" : "direct decode")}, {MinimaText(plan.Minima)}{(plan.Interleaved ? " (interleaved groups)" : "")}, " +
                    $"{(plan.Shuffles ? "warp-shuffle" : "shared-memory")} reductions, " +
                    $"{plan.SharedBytes} B shared, {plan.Slots} groups, {Output.Bytes(plan.ScratchBytes)} scratch"],
            ]);
    }
}
