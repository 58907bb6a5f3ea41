using System.CommandLine;
using ILGPU;
using ILGPU.Runtime;
using Qtip.Quant.Trellis;
using Qtip.Kernels.Runtime;
using Qtip.Kernels.Trellis;
using Qtip.Model.Quantized;
using Qtip.Tool.Cli;

namespace Qtip.Tool.Commands;

/// <summary>
/// <c>qtip bench matvec</c>: the batch-1 trellis decode-matvec ỹ = Ŵ x̃ of random quantized matrices, per code, K and
/// shape. Reports the device time per product with the queue kept full (host launch cost hidden, as in a graph),
/// bytes read ÷ time and its ratio to a device copy (read + write) measured in the same run, and the whole quantized
/// linear (input RHT, matvec, output RHT) timed the same way. Each timed call reads another copy of the matrix, so
/// that the copies together exceed the L2 cache and the figure is DRAM's, not the cache's.
/// </summary>
public static class BenchMatVecCommand
{
    public sealed record Row(int M, int N, string Code, int K, long Bytes, double MatVecMicroseconds, double GBps, double RatioToCopy,
        double LinearMicroseconds, double CopyGBps);

    public static Command Create()
    {
        var backend = CommonOptions.Backend();
        var device = CommonOptions.Device();
        var json = CommonOptions.Json();
        var shapes = new Option<string>("--shapes") { Description = "Comma-separated m×n (written MxN).", DefaultValueFactory = _ => "4096x4096,11008x4096,4096x11008,28672x8192" };
        var codes = new Option<string>("--codes") { Description = "Comma-separated codes: hyb, 3inst, 1mad.", DefaultValueFactory = _ => "hyb,3inst,1mad" };
        var bits = new Option<string>("--bits", "-b") { Description = "Comma-separated K (each 2…4).", DefaultValueFactory = _ => "2,3,4" };
        var iterations = new Option<int>("--iterations") { Description = "Products per timed repeat.", DefaultValueFactory = _ => 20 };
        var megabytes = new Option<int>("--rotate-mib") { Description = "Copies of each matrix are made until they total this many MiB (beyond L2).", DefaultValueFactory = _ => 256 };
        var command = new Command("matvec", "Trellis decode-matvec bytes read ÷ time vs device copy bandwidth, per code, K and shape.")
        {
            backend, device, shapes, codes, bits, iterations, megabytes, json,
        };
        command.SetAction(parse => CommandRunner.Run(() => Execute(
            CommonOptions.ParseBackend(parse.GetValue(backend)!), parse.GetValue(device), parse.GetValue(shapes)!, parse.GetValue(codes)!, parse.GetValue(bits)!,
            parse.GetValue(iterations), parse.GetValue(megabytes), parse.GetValue(json))));
        return command;
    }

    private static int Execute(BackendKind kind, int deviceIndex, string shapeText, string codeText, string bitsText, int iterations, int rotateMib, FileInfo? json)
    {
        (int M, int N)[] shapes;
        int[] ks;
        try
        {
            shapes = shapeText.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(t => t.Split('x', 'X', '×')).Select(p => (int.Parse(p[0]), int.Parse(p[1]))).ToArray();
            ks = bitsText.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(int.Parse).ToArray();
        }
        catch (Exception e) when (e is FormatException or IndexOutOfRangeException)
        {
            throw new UsageException($"--shapes '{shapeText}' / --bits '{bitsText}': expected e.g. 4096x4096,11008x4096 and 2,3,4");
        }
        var codes = codeText.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(c => QuantizeCommand.ParseCode(c, "--codes")).ToArray();
        if (ks.Any(k => k is < 2 or > 4) || iterations < 1 || rotateMib < 1)
            throw new UsageException("--bits must be in 2…4, --iterations and --rotate-mib at least 1");
        using var device = Backends.Open(kind, deviceIndex);
        Output.Line($"device: {device}");
        var acc = device.Accelerator;
        long fillCount = device.Kind == BackendKind.Cpu ? 1L << 20 : 64L << 20;
        using var fa = acc.Allocate1D<float>(fillCount);
        using var fb = acc.Allocate1D<float>(fillCount);
        fa.MemSetToZero();
        ArrayView<float> fsrc = fa.View, fdst = fb.View;
        double copyGBps = 2.0 * fillCount * sizeof(float) / DeviceTimer.QueuedSeconds(device, () => fsrc.CopyTo(fdst), () => fsrc.CopyTo(fdst), 10) / 1e9;
        void Filler()
        {
            for (int i = 0; i < 8; i++)
                fsrc.CopyTo(fdst);
        }
        var rows = new List<Row>();
        foreach (var (m, n) in shapes)
        {
            using var x = acc.Allocate1D(Enumerable.Range(0, n).Select(i => (float)Math.Sin(i)).ToArray());
            using var y = acc.Allocate1D<float>(m);
            foreach (var code in codes)
            {
                // A code's table (HYB: 512×2): uniform in [−1, 1), seeded; decode speed does not depend on its values.
                var table = new float[code.TableLength(16)];
                var rng = new Random(3);
                for (int i = 0; i < table.Length; i++)
                    table[i] = (float)((rng.NextDouble() * 2) - 1);
                foreach (int k in ks)
                {
                    var spec = QtipCodeSpec.Default(code, 16, k);
                    long bytes = (long)m * n * k / 8;
                    int copies = (int)Math.Clamp(((long)rotateMib << 20) / bytes + 1, 2, 64);
                    var linears = new List<QtipLinear>();
                    try
                    {
                        for (int c = 0; c < copies; c++)
                            linears.Add(QtipLinear.CreateRandom(device, m, n, spec, table, (ulong)(c + 1)));
                        int next = 0;
                        var s = acc.DefaultStream;
                        double mv = DeviceTimer.QueuedSeconds(device, Filler, () => linears[next++ % copies].TransformedMatVec(x.View, y.View, s), iterations);
                        double full = DeviceTimer.QueuedSeconds(device, Filler, () => linears[next++ % copies].Forward(x.View, y.View, 1, s), iterations);
                        var r = new Row(m, n, code.Name.ToUpperInvariant(), k, bytes, mv * 1e6, bytes / mv / 1e9, bytes / mv / 1e9 / copyGBps, full * 1e6, copyGBps);
                        rows.Add(r);
                        Output.Line($"{m}×{n} {r.Code} K={k}: matvec {r.MatVecMicroseconds:F1} µs, {r.GBps:F0} GB/s ({r.RatioToCopy:P1} of copy {copyGBps:F0}); whole linear {r.LinearMicroseconds:F1} µs");
                    }
                    finally
                    {
                        acc.Synchronize();
                        foreach (var l in linears)
                            l.Dispose();
                    }
                }
            }
        }
        Output.Table("trellis decode-matvec, batch 1 (device time, queue kept full)", ["m×n", "code", "K", "MiB", "µs", "GB/s", "of copy", "linear µs (RHT incl.)"],
            rows.Select(r => (IReadOnlyList<string>)[$"{r.M}×{r.N}", r.Code, r.K.ToString(), (r.Bytes / 1048576.0).ToString("F1"), r.MatVecMicroseconds.ToString("F1"),
                r.GBps.ToString("F0"), r.RatioToCopy.ToString("P1"), r.LinearMicroseconds.ToString("F1")]));
        Output.WriteJson(json, rows);
        return ExitCodes.Ok;
    }
}
