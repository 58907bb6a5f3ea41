using System.CommandLine;
using System.Diagnostics;
using Qtip.Quant.Trellis;
using Qtip.Kernels.Runtime;
using Qtip.Model.Llama;
using Qtip.Model.Quantized;
using Qtip.Tool.Cli;

namespace Qtip.Tool.Commands;

/// <summary>
/// <c>qtip bench quantize</c>: the layer-streaming quantize pipeline on a synthetic Llama whose weights are made on the
/// device tensor by tensor (nothing on disk), with random-id calibration windows. Reports the time of every stage, the
/// time per layer, and peak device memory from the tool's own accounting (<see cref="DeviceMemory"/>: every buffer
/// Qtip allocates) and peak host memory (the process's VmHWM), so depth-independence of memory can be checked on any
/// backend: run it with two --layers values.
/// </summary>
public static class BenchQuantizeCommand
{
    public sealed record Result(string Device, string Backend, string Date, string Shape, int Layers, int Hidden, int Intermediate,
        string Code, int Bits, int L, int CalibrationWindows, int CalibrationContext, double WallSeconds, double SecondsPerLayer,
        IReadOnlyDictionary<string, double> StageSeconds, long PeakDeviceBytes, long DriverPeakDeviceBytes, long PeakHostBytes,
        double MeanProxyError, double BitsPerWeight);

    public static Command Create()
    {
        var shape = new Option<string>("--shape") { Description = "Synthetic model shape: llama2-7b, llama2-70b, llama-small or llama-nano.", DefaultValueFactory = _ => "llama2-7b" };
        var layers = new Option<int?>("--layers") { Description = "Override the number of layers (peak memory should not depend on it; time should be linear in it)." };
        var code = new Option<string>("--code") { Description = $"Trellis code: {TrellisCodes.Names(c => c.Quantizable, " or ")}.", DefaultValueFactory = _ => TrellisCodes.Hyb.Name };
        var bits = QuantizeCommand.BitsOption();
        var l = new Option<int>("--L") { Description = "Trellis state bits L, 8…16.", DefaultValueFactory = _ => 16 };
        var windows = new Option<int>("--calib-windows") { Description = "Calibration windows (random ids).", DefaultValueFactory = _ => 16 };
        var ctx = new Option<int>("--calib-ctx") { Description = "Tokens per calibration window.", DefaultValueFactory = _ => 512 };
        var sequential = new Option<bool>("--sequential") { Description = "Hessians from the model with the earlier layers quantized." };
        var batchMb = new Option<int>("--batch-mb") { Description = "Device MiB for one BlockLDLQ batch; 0 = auto.", DefaultValueFactory = _ => 0 };
        var groupLayers = new Option<int>("--group-layers") { Description = "Most layers quantized together.", DefaultValueFactory = _ => 2 };
        var forward = QuantizeCommand.ForwardOption();
        var backend = CommonOptions.Backend();
        var device = CommonOptions.Device();
        var json = CommonOptions.Json();
        var command = new Command("quantize", "Quantize a synthetic Llama (random weights made on the device): time per stage and per layer, peak device and host memory.")
        {
            shape, layers, code, bits, l, windows, ctx, sequential, batchMb, groupLayers, forward, backend, device, json,
        };
        command.SetAction(parse => CommandRunner.Run(() =>
        {
            var s = BenchDecodeCommand.FindShape(parse.GetValue(shape), parse.GetValue(layers));
            var opts = new QuantizeOptions
            {
                ModelDir = "(synthetic)",
                OutDir = Path.Combine(Path.GetTempPath(), $"qtip-bench-quantize-{Environment.ProcessId}"),
                CalibrationFile = "(random ids)",
                Code = QuantizeCommand.ParseCode(parse.GetValue(code)!),
                Bits = parse.GetValue(bits),
                L = parse.GetValue(l),
                CalibrationContext = parse.GetValue(ctx),
                CalibrationWindows = parse.GetValue(windows),
                Hessian = parse.GetValue(sequential) ? HessianSource.Sequential : HessianSource.FullPrecision,
                BatchBytes = (long)parse.GetValue(batchMb) << 20,
                MaxGroupLayers = parse.GetValue(groupLayers),
                ForwardPrecision = QuantizeCommand.ParseForward(parse.GetValue(forward)!),
            };
            try
            {
                opts.Validate();
            }
            catch (ArgumentException e)
            {
                throw UsageException.From(e);
            }
            if (opts.CalibrationWindows < 1)
                throw new UsageException("--calib-windows must be at least 1");
            return Execute(s, opts, CommonOptions.ParseBackend(parse.GetValue(backend)!), parse.GetValue(device), parse.GetValue(json));
        }));
        return command;
    }

    private static int Execute(BenchDecodeCommand.Shape shape, QuantizeOptions opts, BackendKind kind, int deviceIndex, FileInfo? json)
    {
        var config = LlamaModel.SyntheticConfig(shape.Layers, shape.Hidden, shape.Intermediate, shape.Heads, shape.KvHeads, shape.Vocab);
        using var device = Backends.Open(kind, deviceIndex);
        Output.Line($"device: {device}; synthetic {shape.Name}: {shape.Layers} layers, hidden {shape.Hidden}, MLP {shape.Intermediate}, " +
            $"heads {shape.Heads}/{shape.KvHeads}; {opts.CodeName.ToUpperInvariant()} K={opts.Bits} L={opts.L}; calibration {opts.CalibrationWindows}×{opts.CalibrationContext} random ids");
        var calib = CalibrationSet.Random(config.VocabSize, opts.CalibrationContext, opts.CalibrationWindows, opts.Seed + 7);
        device.Memory.ResetPeak();
        var wall = Stopwatch.StartNew();
        using var interruption = new Interruption();
        IQuantizeProgress progress = Output.Plain ? new PlainQuantizeProgress() : new SilentProgress();
        var report = new QuantizePipeline(device, opts, progress, interruption.Token).RunSynthetic(config, calib, opts.OutDir);
        double seconds = wall.Elapsed.TotalSeconds;
        long hostPeak = PeakHostBytes();
        var result = new Result(device.ToString(), device.Kind.Name(), DateTime.UtcNow.ToString("u"), shape.Name, shape.Layers, shape.Hidden, shape.Intermediate,
            opts.CodeName, opts.Bits, opts.L, opts.CalibrationWindows, opts.CalibrationContext, seconds, seconds / shape.Layers,
            report.StageSeconds, device.Memory.PeakBytes, device.Memory.DriverPeakBytes, hostPeak, report.MeanProxyError, report.BitsPerWeight);
        var rows = new List<IReadOnlyList<string>>();
        foreach (var (stage, s) in report.StageSeconds)
            rows.Add([$"time: {stage}", $"{s:F2} s"]);
        rows.Add(["time: wall", $"{seconds:F2} s"]);
        rows.Add(["time per layer", $"{seconds / shape.Layers:F2} s"]);
        rows.Add(["peak device memory (accounted)", Output.Bytes(result.PeakDeviceBytes)]);
        if (result.DriverPeakDeviceBytes > 0)
            rows.Add(["peak device memory (driver, at allocations)", Output.Bytes(result.DriverPeakDeviceBytes)]);
        rows.Add(["peak host memory (VmHWM)", Output.Bytes(hostPeak)]);
        rows.Add(["mean proxy error", result.MeanProxyError.ToString("F5")]);
        rows.Add(["bits/weight", result.BitsPerWeight.ToString("F4")]);
        Output.Table($"bench quantize: {shape.Name}, {shape.Layers} layers", ["", "value"], rows);
        Output.WriteJson(json, result);
        return ExitCodes.Ok;
    }

    /// <summary>Peak resident set of this process (Linux VmHWM; elsewhere the peak working set .NET reports).</summary>
    internal static long PeakHostBytes()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/status"))
            {
                if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                    return long.Parse(line.AsSpan(6).Trim().ToString().Split(' ')[0]) * 1024;
            }
        }
        catch (IOException)
        {
        }
        using var p = Process.GetCurrentProcess();
        return p.PeakWorkingSet64;
    }

    private sealed class SilentProgress : IQuantizeProgress
    {
        public void Stage(string name)
        {
        }

        public void Layer(int layer, int layers) => CliConsole.Error.Write($"\rlayer {layer + 1}/{layers}   ");

        public void Matrix(MatrixReport report)
        {
        }
    }
}
