using System.CommandLine;
using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels;
using Qtip.Kernels.Runtime;
using Qtip.Tool.Cli;

namespace Qtip.Tool.Commands;

/// <summary>
/// <c>qtip bench hadamard</c>: Had_nᵀ(s ⊙ x) on every row of a [rows × n] fp32 matrix, in place. Reports GB/s as
/// (bytes read + bytes written) / time with each element read and written once, and the ratio to a device-to-device
/// copy of the same buffer measured in the same run.
/// </summary>
public static class BenchHadamardCommand
{
    public sealed record Result(int N, int Rows, int SmallFactor, int Passes, double Microseconds, double GbPerSecond, double CopyGbPerSecond, double RatioToCopy, double MaxAbsError);

    public static Command Create()
    {
        var backend = CommonOptions.Backend();
        var device = CommonOptions.Device();
        var json = CommonOptions.Json();
        var sizes = new Option<string>("--sizes") { Description = "Comma-separated row lengths n.", DefaultValueFactory = _ => "4096,11008,14336,28672" };
        var rows = new Option<int>("--rows") { Description = "Rows transformed per launch.", DefaultValueFactory = _ => 4096 };
        var iterations = new Option<int>("--iterations") { Description = "Launches per timed repeat.", DefaultValueFactory = _ => 20 };
        var command = new Command("hadamard", "Throughput of the batched randomized Hadamard transform vs device copy bandwidth.")
        {
            backend, device, sizes, rows, iterations, json,
        };
        command.SetAction(parse => CommandRunner.Run(() => Execute(
            CommonOptions.ParseBackend(parse.GetValue(backend)!), parse.GetValue(device), ParseSizes(parse.GetValue(sizes)!),
            parse.GetValue(rows), parse.GetValue(iterations), parse.GetValue(json))));
        return command;
    }

    private static int[] ParseSizes(string text)
    {
        try
        {
            return text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(int.Parse).ToArray();
        }
        catch (FormatException)
        {
            throw new UsageException($"--sizes '{text}' is not a comma-separated list of integers");
        }
    }

    private static int Execute(BackendKind kind, int deviceIndex, int[] sizes, int rows, int iterations, FileInfo? json)
    {
        if (rows < 1)
            throw new UsageException($"--rows must be at least 1 (got {rows})");
        foreach (int n in sizes)
            HadamardMatrices.SmallFactor(n);
        using var device = Backends.Open(kind, deviceIndex);
        Output.Line($"device: {device}");
        var had = device.Get<Hadamard>();
        var results = new List<Result>();
        foreach (int n in sizes)
        {
            var plan = HadamardPlan.For(n);
            long count = (long)rows * n;
            var host = new float[count];
            var rng = new Random(1);
            for (long i = 0; i < count; i++)
                host[i] = (float)((rng.NextDouble() * 2) - 1);
            var signs = new float[n];
            for (int i = 0; i < n; i++)
                signs[i] = rng.Next(2) == 0 ? 1f : -1f;
            using var data = device.Allocate1D(host);
            using var copy = device.Allocate1D<float>(count);
            using var sign = device.Allocate1D(signs);

            // Correctness spot check on row 0 before timing: float64 reference of one row.
            had.Apply(data.View, rows, n, transpose: true, inSign: sign.View);
            var row0 = data.View.SubView(0, n).GetAsArray1D();
            double err = MaxErrorRow0(host, signs, row0, n);
            data.View.CopyFromCPU(host);

            double t = DeviceTimer.MedianSeconds(device, () => had.Apply(data.View, rows, n, transpose: true, inSign: sign.View), iterations);
            double tc = DeviceTimer.MedianSeconds(device, () => data.View.CopyTo(copy.View), iterations);
            double bytes = 2.0 * count * sizeof(float);
            int passes = (plan.Chunk > 1 ? 1 : 0) + (plan.MixOrder > 1 ? 1 : 0);
            var r = new Result(n, rows, plan.SmallFactor, Math.Max(1, passes), t * 1e6, bytes / t / 1e9, bytes / tc / 1e9, tc / t, err);
            results.Add(r);
        }
        Output.Table($"Hadamard transform, {rows} rows, fp32, in place (GB/s = read + write once)",
            ["n", "K", "passes", "µs", "GB/s", "copy GB/s", "of copy", "max |err| row 0"],
            results.Select(r => (IReadOnlyList<string>)[
                r.N.ToString(), r.SmallFactor.ToString(), r.Passes.ToString(), r.Microseconds.ToString("F1"), r.GbPerSecond.ToString("F0"),
                r.CopyGbPerSecond.ToString("F0"), r.RatioToCopy.ToString("P0"), r.MaxAbsError.ToString("E1")]));
        Output.WriteJson(json, new { device = device.ToString(), backend = device.Kind.Name(), date = DateTime.UtcNow.ToString("u"), results });
        return ExitCodes.Ok;
    }

    private static double MaxErrorRow0(float[] x, float[] s, float[] got, int n)
    {
        int k = HadamardMatrices.SmallFactor(n);
        int p = n / k;
        var v = new double[n];
        for (int i = 0; i < n; i++)
            v[i] = x[i] * s[i];
        // Had_nᵀ = (H_Kᵀ ⊗ H_P)/√n: FWHT each contiguous chunk of P, then mix the K chunks with H_Kᵀ.
        for (int a = 0; a < k; a++)
        {
            var chunk = v.AsSpan(a * p, p);
            for (int h = 1; h < p; h <<= 1)
            {
                for (int i = 0; i < p; i += h << 1)
                {
                    for (int j = i; j < i + h; j++)
                        (chunk[j], chunk[j + h]) = (chunk[j] + chunk[j + h], chunk[j] - chunk[j + h]);
                }
            }
        }
        var hk = HadamardMatrices.Get(k);
        double norm = 1.0 / Math.Sqrt(n), maxErr = 0;
        for (int a = 0; a < k; a++)
        {
            for (int r = 0; r < p; r++)
            {
                double acc = 0;
                for (int b = 0; b < k; b++)
                    acc += hk[b, a] * v[(b * p) + r];
                maxErr = Math.Max(maxErr, Math.Abs((acc * norm) - got[(a * p) + r]));
            }
        }
        return maxErr;
    }
}
