using System.CommandLine;
using System.Diagnostics;
using Qtip.Kernels.Runtime;
using Qtip.Kernels.Trellis;
using Qtip.Model.Quantized;
using Qtip.Tool.Cli;
using Spectre.Console;

namespace Qtip.Tool.Commands;

/// <summary><c>qtip quantize</c>: a Hugging Face Llama directory in, a QTIP-quantized directory out (docs/FORMAT.md).</summary>
public static class QuantizeCommand
{
    public static Command Create()
    {
        var model = new Option<DirectoryInfo>("--model") { Description = "Hugging Face Llama directory (config.json, safetensors, tokenizer).", Required = true };
        var output = new Option<DirectoryInfo>("--out") { Description = "Output directory (refused if it exists, unless --force).", Required = true };
        var bits = new Option<int>("--bits") { Description = "Bits per weight K: 2, 3 or 4.", DefaultValueFactory = _ => 2 };
        var code = new Option<string>("--code") { Description = "Trellis code: hyb (V=2, 512-entry LUT), 3inst or 1mad (V=1, computed).", DefaultValueFactory = _ => "hyb" };
        var l = new Option<int>("--L") { Description = "Trellis state bits L (16 in every paper result; smaller is faster, e.g. 12 on the CPU backend).", DefaultValueFactory = _ => 16 };
        var calib = new Option<FileInfo?>("--calib") { Description = "Calibration text (UTF-8, documents separated by blank lines). Default: calib.txt in the model folder, else data/corpus/calib.txt of the Qtip repository." };
        var calibCtx = new Option<int>("--calib-ctx") { Description = "Tokens per calibration window.", DefaultValueFactory = _ => 512 };
        var calibWindows = new Option<int>("--calib-windows") { Description = "Calibration windows (the first ones of the text); 0 = all. On llama-small all 511 windows of calib.txt give 24.40 at HYB 2-bit vs 24.80 with 64 (the proxy error measured on the calibration data itself overfits with few).", DefaultValueFactory = _ => 0 };
        var method = new Option<string>("--method") { Description = "qtip, or rtn (per-output-channel round-to-nearest baseline, written as a dense checkpoint).", DefaultValueFactory = _ => "qtip" };
        var sequential = new Option<bool>("--sequential") { Description = "Collect each layer's Hessians from the model whose earlier layers are already quantized (default: all from the full-precision model)." };
        var noHessian = new Option<bool>("--no-hessian") { Description = "Ablation: H = I (no calibration data, no LDLQ feedback)." };
        var noRht = new Option<bool>("--no-rht") { Description = "Ablation: no random Hadamard transform (writes a dense checkpoint of the reconstruction)." };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the sign vectors SU/SV.", DefaultValueFactory = _ => 0UL };
        var sigma = new Option<double>("--sigma-reg") { Description = "Hessian damping σ: H + σ·mean(diag H)·I.", DefaultValueFactory = _ => 0.01 };
        var scaleOverride = new Option<double>("--scale-override") { Description = "Wscale = RMS(Wr)/(RMS(code)·this); default 0.95 at 2 bits, 0.9 (the reference's) at 3 and 4 bits.", DefaultValueFactory = _ => 0 };
        var resume = new Option<bool>("--resume") { Description = "Continue an interrupted run from its last completed layer (same options)." };
        var force = new Option<bool>("--force") { Description = "Replace an existing output directory." };
        var backend = CommonOptions.Backend();
        var device = CommonOptions.Device();
        var json = CommonOptions.Json();
        var command = new Command("quantize", "Quantize a Llama checkpoint with QTIP: Hessians → RHT → BlockLDLQ with the tail-biting trellis → quantized directory.")
        {
            model, output, bits, code, l, calib, calibCtx, calibWindows, method, sequential, noHessian, noRht, seed, sigma, scaleOverride,
            resume, force, backend, device, json,
        };
        command.SetAction(parse => CommandRunner.Run(() =>
        {
            var kind = CommonOptions.ParseBackend(parse.GetValue(backend)!);
            var modelDir = Path.GetFullPath(Locations.ResolveModel(parse.GetValue(model)!.ToString(), Locations.Note));
            if (parse.GetValue(sequential) && parse.GetValue(noHessian))
                throw new UsageException("--sequential and --no-hessian exclude each other");
            var opts = new QuantizeOptions
            {
                ModelDir = modelDir,
                OutDir = parse.GetValue(output)!.FullName,
                Bits = parse.GetValue(bits),
                Code = ParseCode(parse.GetValue(code)!),
                L = parse.GetValue(l),
                Method = parse.GetValue(method)!.ToLowerInvariant() switch
                {
                    "qtip" => QuantizeMethod.Qtip,
                    "rtn" => QuantizeMethod.Rtn,
                    var other => throw new UsageException($"--method '{other}': expected qtip or rtn"),
                },
                Hessian = parse.GetValue(noHessian) ? HessianSource.Identity : parse.GetValue(sequential) ? HessianSource.Sequential : HessianSource.FullPrecision,
                NoRht = parse.GetValue(noRht),
                CalibrationFile = ResolveCalibration(parse.GetValue(calib), modelDir),
                CalibrationContext = parse.GetValue(calibCtx),
                CalibrationWindows = parse.GetValue(calibWindows),
                Seed = parse.GetValue(seed),
                SigmaReg = parse.GetValue(sigma),
                ScaleOverride = parse.GetValue(scaleOverride),
                Resume = parse.GetValue(resume),
                Force = parse.GetValue(force),
            };
            try
            {
                opts.Validate();
            }
            catch (ArgumentException e)
            {
                throw new UsageException(e.Message);
            }
            return Execute(kind, parse.GetValue(device), opts, parse.GetValue(json));
        }));
        return command;
    }

    public static TrellisCodeKind ParseCode(string text) => text.ToLowerInvariant() switch
    {
        "hyb" => TrellisCodeKind.Hyb,
        "3inst" => TrellisCodeKind.ThreeInst,
        "1mad" => TrellisCodeKind.OneMad,
        _ => throw new UsageException($"--code '{text}': expected hyb, 3inst or 1mad"),
    };

    /// <summary>--calib, else calib.txt in the model folder, else data/corpus/calib.txt above the working or app directory.</summary>
    public static string ResolveCalibration(FileInfo? given, string modelDir)
    {
        if (given is not null)
            return given.FullName;
        var inModel = Path.Combine(modelDir, "calib.txt");
        if (File.Exists(inModel))
            return inModel;
        foreach (var start in new[] { Environment.CurrentDirectory, AppContext.BaseDirectory, modelDir })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                var candidate = Path.Combine(dir.FullName, "data", "corpus", "calib.txt");
                if (File.Exists(candidate))
                    return candidate;
            }
        }
        throw new UsageException("no calibration text found: pass --calib FILE");
    }

    internal static int Execute(BackendKind kind, int deviceIndex, QuantizeOptions opts, FileInfo? json)
    {
        using var device = Backends.Open(kind, deviceIndex);
        Output.Line($"device: {device}");
        Notices.CpuBackend(device);
        if (opts.WritesTrellis)
            Notices.HybTable(device, opts.Code);
        var wall = Stopwatch.StartNew();
        QuantizeReport report;
        if (Output.Plain)
        {
            report = new QuantizePipeline(device, opts, new PlainProgress()).Run();
        }
        else
        {
            report = null!;
            AnsiConsole.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn(), new SpinnerColumn())
                .Start(ctx =>
                {
                    var p = new SpectreProgress(ctx);
                    report = new QuantizePipeline(device, opts, p).Run();
                    p.Finish();
                });
        }
        Summary(report, opts, wall.Elapsed.TotalSeconds);
        var jsonReport = QuantizePipeline.ReportJson(report, opts);
        jsonReport["device"] = device.ToString();
        jsonReport["wall_seconds"] = wall.Elapsed.TotalSeconds;
        Output.WriteJson(json, jsonReport);
        return ExitCodes.Ok;
    }

    private static void Summary(QuantizeReport r, QuantizeOptions o, double wall)
    {
        var perKind = r.Matrices.GroupBy(m => m.Name.Split('.')[^2])
            .Select(g => (IReadOnlyList<string>)[g.Key, g.Count().ToString(), $"{g.First().M}×{g.First().N}", Fmt(g.Average(x => x.ProxyError)), Fmt(g.Max(x => x.ProxyError))]);
        Output.Table("proxy error tr(ΔW H ΔWᵀ)/tr(W H Wᵀ) per matrix kind", ["matrix", "count", "shape", "mean", "max"], perKind);
        var rows = new List<IReadOnlyList<string>>
        {
            new[] { "method", o.Method == QuantizeMethod.Rtn ? $"RTN {o.Bits}-bit per channel" : $"QTIP {o.CodeName.ToUpperInvariant()} K={o.Bits} L={o.L}{(o.NoRht ? " (no RHT)" : "")}" },
            new[] { "hessian", o.Method == QuantizeMethod.Rtn ? "-" : o.Hessian.ToString() },
            new[] { "bits/weight (linears, incl. SU/SV/LUT)", r.BitsPerWeight.ToString("F4") },
            new[] { "quantized weights", r.QuantizedWeights.ToString("N0") },
            new[] { "model file", Output.Bytes(r.ModelBytes) },
            new[] { "mean proxy error", Fmt(r.MeanProxyError) },
            new[] { "calibration tokens", r.CalibrationTokens.ToString("N0") },
            new[] { "layers resumed", r.LayersResumed.ToString() },
        };
        foreach (var (stage, seconds) in r.StageSeconds)
            rows.Add([$"time: {stage}", $"{seconds:F1} s"]);
        rows.Add(["time: wall", $"{wall:F1} s"]);
        rows.Add(["output", r.OutDir]);
        Output.Table("qtip quantize", ["", "value"], rows);
    }

    private static string Fmt(double v) => double.IsNaN(v) ? "-" : v.ToString("F5");

    private sealed class PlainProgress : IQuantizeProgress
    {
        private readonly Stopwatch sw = Stopwatch.StartNew();
        private int layers;

        public void Stage(string name) => Console.WriteLine($"[{sw.Elapsed.TotalSeconds,7:F1} s] {name}");

        public void Layer(int layer, int count)
        {
            layers = count;
            string eta = layer == 0 ? "" : $", ETA {sw.Elapsed.TotalSeconds / layer * (count - layer):F0} s";
            Console.WriteLine($"[{sw.Elapsed.TotalSeconds,7:F1} s] layer {layer + 1}/{count}{eta}");
        }

        public void Matrix(MatrixReport r) =>
            Console.WriteLine($"            {r.Name} {r.M}×{r.N}: proxy {Fmt(r.ProxyError)}{(r.Sigma > 0.0101 ? $" (damping raised to σ = {r.Sigma})" : "")}, {r.Seconds:F2} s");

        public override string ToString() => $"{layers} layers";
    }

    private sealed class SpectreProgress(ProgressContext ctx) : IQuantizeProgress
    {
        private ProgressTask? stage;
        private ProgressTask? layers;

        public void Stage(string name)
        {
            stage?.StopTask();
            stage = ctx.AddTask(name, maxValue: 1).IsIndeterminate();
        }

        public void Layer(int layer, int count)
        {
            stage?.StopTask();
            stage = null;
            layers ??= ctx.AddTask("layers", maxValue: count);
            layers.Value = layer;
            layers.Description = $"layer {layer + 1}/{count}";
        }

        public void Matrix(MatrixReport r)
        {
            if (layers is not null)
                layers.Description = $"layer {r.Layer + 1}: {r.Name.Split('.')[^2]} proxy {Fmt(r.ProxyError)}";
        }

        public void Finish()
        {
            if (layers is not null)
                layers.Value = layers.MaxValue;
            stage?.StopTask();
        }
    }
}
