using System.CommandLine;
using System.Diagnostics;
using Qtip.Quant.Trellis;
using Qtip.Kernels.Runtime;
using Qtip.Kernels.Trellis;
using Qtip.Model.Checkpoint;
using Qtip.Model.Quantized;
using Qtip.Tool.Cli;
using Spectre.Console;

namespace Qtip.Tool.Commands;

/// <summary><c>qtip quantize</c>: a Hugging Face Llama directory in, a QTIP-quantized directory out (docs/FORMAT.md).</summary>
public static class QuantizeCommand
{
    public static Command Create()
    {
        var model = new Option<DirectoryInfo>("--model", "-m") { Description = "Hugging Face Llama directory (config.json, safetensors, tokenizer).", Required = true };
        var output = new Option<DirectoryInfo>("--out", "-o") { Description = "Output directory (refused if it exists, unless --force; never the --model folder, inside it or above it). <out>.lock is held while the run lasts.", Required = true };
        var bits = BitsOption();
        var code = new Option<string>("--code") { Description = "Trellis code: " + CodeHelp() + ".", DefaultValueFactory = _ => TrellisCodes.Hyb.Name };
        var l = new Option<int>("--L") { Description = "Trellis state bits L, 8…16 (16 in every paper result; smaller is faster, e.g. 12 on the CPU backend).", DefaultValueFactory = _ => 16 };
        var calib = new Option<FileInfo?>("--calib") { Description = "Calibration text (UTF-8, documents separated by blank lines). Default: calib.txt in the model folder, else data/corpus/calib.txt of the Qtip repository." };
        var calibCtx = new Option<int>("--calib-ctx") { Description = "Tokens per calibration window.", DefaultValueFactory = _ => 512 };
        var calibWindows = new Option<int>("--calib-windows") { Description = "Calibration windows (the first ones of the text); 0 = all. On llama-small all 511 windows of calib.txt give 24.40 at HYB 2-bit vs 24.80 with 64 (the proxy error measured on the calibration data itself overfits with few).", DefaultValueFactory = _ => 0 };
        var method = new Option<string>("--method") { Description = "qtip, or rtn (per-output-channel round-to-nearest baseline, written as a dense checkpoint).", DefaultValueFactory = _ => "qtip" };
        var sequential = new Option<bool>("--sequential") { Description = "Collect each layer's Hessians from the model whose earlier layers are already quantized (default: all from the full-precision model)." };
        var noHessian = new Option<bool>("--no-hessian") { Description = "Ablation: H = I (no calibration data, no LDLQ feedback)." };
        var noRht = new Option<bool>("--no-rht") { Description = "Ablation: no random Hadamard transform (writes a dense checkpoint of the reconstruction)." };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the sign vectors SU/SV.", DefaultValueFactory = _ => 0UL };
        var sigma = new Option<double>("--sigma-reg") { Description = "Hessian damping σ: H + σ·mean(diag H)·I.", DefaultValueFactory = _ => 0.01 };
        var scaleOverride = new Option<double?>("--scale-override") { Description = "Wscale = RMS(Wr)/(RMS(code)·this), > 0. Default: auto, 0.95 at 2 bits and 0.9 (the reference's) at 3 and 4 bits." };
        var resume = new Option<bool>("--resume") { Description = "Continue an interrupted run from its last completed layer (same options). An interrupted run (SIGINT/SIGTERM) keeps its completed layers in <out>.partial with or without --resume; a run without --resume starts afresh." };
        var layers = new Option<string?>("--layers") { Description = "Quantize only decoder layers A-B (0-based, inclusive) into <out>.partial: a shard of a run spread over machines (each recomputes its activations from the full-precision model). Then --assemble writes the checkpoint." };
        var assemble = new Option<bool>("--assemble") { Description = "Write the checkpoint from the layer files the --layers shards left in <out>.partial (quantizing any layer still missing)." };
        var batchMb = new Option<int>("--batch-mb") { Description = "Device memory (MiB) for the prepared matrices of one BlockLDLQ batch; 0 = a quarter of the device's memory, at most 8 GiB.", DefaultValueFactory = _ => 0 };
        var forward = ForwardOption();
        var groupLayers = new Option<int>("--group-layers") { Description = "Most decoder layers quantized together (their matrices share trellis batches); bounds the Hessians held at once.", DefaultValueFactory = _ => 2 };
        var force = new Option<bool>("--force") { Description = "Replace an existing output directory, if qtip wrote it (it has qtip-report.json or our quantization_config) or it is empty; any other directory is refused." };
        var backend = CommonOptions.Backend();
        var device = CommonOptions.Device();
        var json = CommonOptions.Json();
        var command = new Command("quantize", "Quantize a Llama checkpoint with QTIP: Hessians → RHT → BlockLDLQ with the tail-biting trellis → quantized directory.")
        {
            model, output, bits, code, l, calib, calibCtx, calibWindows, method, sequential, noHessian, noRht, seed, sigma, scaleOverride,
            resume, layers, assemble, batchMb, groupLayers, forward, force, backend, device, json,
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
                ScaleOverride = parse.GetValue(scaleOverride) is { } so ? (so > 0 ? so : throw new UsageException($"--scale-override must be > 0 (got {so}); leave it out for the default")) : 0,
                Resume = parse.GetValue(resume),
                Force = parse.GetValue(force),
                Layers = parse.GetValue(layers),
                Assemble = parse.GetValue(assemble),
                BatchBytes = (long)parse.GetValue(batchMb) << 20,
                MaxGroupLayers = parse.GetValue(groupLayers),
                ForwardPrecision = ParseForward(parse.GetValue(forward)!),
            };
            try
            {
                opts.Validate();
            }
            catch (ArgumentException e)
            {
                throw UsageException.From(e);
            }
            return Execute(kind, parse.GetValue(device), opts, parse.GetValue(json));
        }));
        return command;
    }

    /// <summary><c>-b/--bits</c> (as in exllamav3): bits per weight K of a QTIP checkpoint, 2…4.</summary>
    internal static Option<int> BitsOption() => new("--bits", "-b")
    {
        Description = "Bits per weight K: 2, 3 or 4 (1 is refused: the kernels have K = 1 paths, used by bench distortion, but no 1-bit checkpoint is tested end to end).",
        DefaultValueFactory = _ => 2,
        HelpName = "2|3|4",
    };

    internal static Option<string> ForwardOption() => new("--forward")
    {
        Description = "Weights of the calibration forward: fp32 (default: the Hessians of the fp32 model, bit for bit) or fp16 (tensor cores on CUDA, activations rounded to fp16 inside each product; the 7B prefill product measured ~4× faster on an H100).",
        DefaultValueFactory = _ => "fp32",
    };

    internal static Qtip.Model.Llama.WeightPrecision ParseForward(string text) => text.ToLowerInvariant() switch
    {
        "fp32" => Qtip.Model.Llama.WeightPrecision.Float32,
        "fp16" => Qtip.Model.Llama.WeightPrecision.Float16,
        _ => throw new UsageException($"--forward '{text}': expected fp32 or fp16"),
    };

    /// <summary>A code a checkpoint can be made of (<see cref="TrellisCodeInfo.Quantizable"/>), by its name; a usage error listing them otherwise.</summary>
    public static TrellisCodeInfo ParseCode(string text, string option = "--code") =>
        TrellisCodes.Find(text) is { Quantizable: true } row
            ? row
            : throw new UsageException($"{option} '{text}': expected {TrellisCodes.Names(c => c.Quantizable, " or ")}");

    /// <summary>The checkpoint codes for help texts: "hyb (V=2, 512-entry table), 3inst (V=1, computed), 1mad (V=1, computed)".</summary>
    public static string CodeHelp() => string.Join(", ", TrellisCodes.All.Where(c => c.Quantizable)
        .Select(c => $"{c.Name} (V={c.V}, {(c.TableRows(16) > 0 ? $"{c.TableRows(16)}-entry table" : "computed")})"));

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
        using var guard = CheckBeforeWork(opts);
        using var device = Backends.Open(kind, deviceIndex);
        Output.Line($"device: {device}");
        Notices.CpuBackend(device);
        if (opts.WritesTrellis)
            Notices.HybTable(device, opts.Code);
        var wall = Stopwatch.StartNew();
        QuantizeReport report;
        using var interruption = new Interruption();
        if (Output.Plain)
        {
            report = new QuantizePipeline(device, opts, new PlainQuantizeProgress(), interruption.Token).Run();
        }
        else
        {
            report = null!;
            AnsiConsole.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn(), new SpinnerColumn())
                .Start(ctx =>
                {
                    var p = new SpectreQuantizeProgress(ctx);
                    report = new QuantizePipeline(device, opts, p, interruption.Token).Run();
                    p.Finish();
                });
        }
        Summary(report, opts, wall.Elapsed.TotalSeconds);
        var jsonReport = report.ToJson(opts);
        jsonReport["device"] = device.ToString();
        jsonReport["wall_seconds"] = wall.Elapsed.TotalSeconds;
        Output.WriteJson(json, jsonReport);
        return ExitCodes.Ok;
    }

    /// <summary>Everything that can be refused before a device is opened: the calibration file, --calib-ctx against
    /// the model's positions, and the output location (<see cref="OutputGuard"/>, whose lock the run then holds).</summary>
    private static OutputGuard CheckBeforeWork(QuantizeOptions opts)
    {
        bool usesCalibration = opts.Method == QuantizeMethod.Qtip && opts.Hessian != HessianSource.Identity;
        if (usesCalibration)
            InputFiles.RequireRegular(opts.CalibrationFile, "--calib");
        using var checkpoint = LlamaCheckpoint.Open(opts.ModelDir);
        int positions = checkpoint.Config.MaxPositionEmbeddings;
        if (usesCalibration && opts.CalibrationContext > positions)
            throw new UsageException($"--calib-ctx {opts.CalibrationContext} exceeds the model's {positions} positions (max_position_embeddings)");
        return OutputGuard.Acquire(opts, checkpoint);
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

    private static string Fmt(double v) => PlainQuantizeProgress.Fmt(v);
}
