using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using Qtip.Quant.Trellis;
using Qtip.Kernels.Runtime;
using Qtip.Kernels.Trellis;
using Qtip.Model.Checkpoint;
using Qtip.Model.Llama;
using Qtip.Model.Quantized;
using Qtip.Model.Tokenization;
using Qtip.Tool.Cli;
using Qtip.Tool.Sweep;

namespace Qtip.Tool.Commands;

/// <summary>
/// <c>qtip sweep</c>: quantize a model with each code at each bit width (and RTN with <c>--rtn</c>), evaluate every
/// result against the full-precision model on the same windows (perplexity, KL divergence, top-1 agreement), and
/// write the table (sweep.md, sweep.json) and the picture (sweep.png, sweep.svg: bits/weight against perplexity and
/// against KLD, one line per method, FP as a horizontal line) into <c>--out</c>.
/// </summary>
public static class SweepCommand
{
    public sealed record Row(string Method, string? Code, int Bits, int? L, double BitsPerWeight, double BitsPerWeightAll, double Perplexity,
        double KldMean, double KldMedian, double KldP99, double Top1Agreement, double QuantizeSeconds, double EvalSeconds);

    public sealed record Result(string Model, string Data, string Device, int Ctx, int Windows, long Tokens, double FpPerplexity,
        IReadOnlyList<Row> Rows, string Table, string Png, string Svg, double Seconds);

    public static Command Create()
    {
        var model = new Option<string>("--model", "-m") { Description = "Full-precision Hugging Face Llama folder. " + Locations.DefaultsHelp, DefaultValueFactory = _ => Locations.NanoModel, HelpName = "DIR" };
        var codes = new Option<string>("--codes") { Description = "Trellis codes to sweep, comma-separated: hyb, 3inst, 1mad.", DefaultValueFactory = _ => "hyb,3inst,1mad" };
        var bits = new Option<string>("--bits", "-b") { Description = "Bit widths K to sweep, comma-separated (each 2…4).", DefaultValueFactory = _ => "2,3,4" };
        var rtn = new Option<bool>("--rtn") { Description = "Also round-to-nearest (per output channel) at each bit width, as a baseline." };
        var l = new Option<int>("--L") { Description = "Trellis state bits (8…16).", DefaultValueFactory = _ => 16 };
        var output = new Option<string?>("--out", "-o") { Description = "Folder for sweep.md, sweep.json, sweep.png, sweep.svg (default: out/sweep-<model folder name>).", HelpName = "DIR" };
        var data = new Option<string>("--data") { Description = "Evaluation text (documents separated by blank lines).", DefaultValueFactory = _ => Locations.ValidText, HelpName = "FILE" };
        var ctx = new Option<int>("--ctx") { Description = "Evaluation window in tokens.", DefaultValueFactory = _ => 512 };
        var maxWindows = new Option<int?>("--max-windows") { Description = "Score only the first N windows (default: all)." };
        var calib = new Option<FileInfo?>("--calib") { Description = "Calibration text (default: as qtip quantize)." };
        var calibCtx = new Option<int>("--calib-ctx") { Description = "Tokens per calibration window.", DefaultValueFactory = _ => 512 };
        var calibWindows = new Option<int>("--calib-windows") { Description = "Calibration windows; 0 = all.", DefaultValueFactory = _ => 0 };
        var replot = new Option<string?>("--replot") { Description = "Only draw the picture again (sweep.png, sweep.svg) from a sweep.json this command wrote, into its folder or --out: e.g. after a sweep on a machine without fonts. No device work.", HelpName = "FILE" };
        var keep = new Option<bool>("--keep-models") { Description = "Keep the quantized checkpoints under <out>/models (default: each is deleted after its evaluation)." };
        var backend = CommonOptions.Backend();
        var device = CommonOptions.Device();
        var json = CommonOptions.Json();
        var command = new Command("sweep", "Quantize with several codes and bit widths, evaluate each against the full-precision model (perplexity, KLD), write a table and a plot (PNG, SVG). " +
            "On the CPU simulator keep it small: --codes 1mad --bits 2,3 --L 8 --calib-ctx 64 --calib-windows 2 --ctx 64 --max-windows 2.")
        {
            model, codes, bits, rtn, l, output, data, ctx, maxWindows, calib, calibCtx, calibWindows, keep, replot, backend, device, json,
        };
        command.SetAction(parse => CommandRunner.Run(() =>
        {
            if (parse.GetValue(replot) is { } saved)
                return Replot(Path.GetFullPath(saved), parse.GetValue(output));
            var modelDir = Path.GetFullPath(Locations.ResolveModel(parse.GetValue(model)!, Locations.Note));
            var codeList = ParseList(parse.GetValue(codes)!, "--codes").Select(c => QuantizeCommand.ParseCode(c, "--codes")).Distinct().ToList();
            var bitList = ParseList(parse.GetValue(bits)!, "--bits").Select(b => int.TryParse(b, CultureInfo.InvariantCulture, out int k) && k is >= 2 and <= 4
                ? k : throw new UsageException($"--bits '{b}': expected 2, 3 or 4")).Distinct().Order().ToList();
            var settings = new Settings(modelDir, codeList, bitList, parse.GetValue(rtn), parse.GetValue(l),
                Path.GetFullPath(parse.GetValue(output) ?? Path.Combine("out", "sweep-" + new DirectoryInfo(modelDir).Name)),
                Locations.ResolveDefault(parse.GetValue(data)!, Locations.ValidText), parse.GetValue(ctx), parse.GetValue(maxWindows),
                QuantizeCommand.ResolveCalibration(parse.GetValue(calib), modelDir), parse.GetValue(calibCtx), parse.GetValue(calibWindows), parse.GetValue(keep));
            if (settings.Ctx < 2)
                throw new UsageException($"--ctx must be at least 2 (got {settings.Ctx})");
            if (settings.MaxWindows is < 1)
                throw new UsageException($"--max-windows must be at least 1 (got {settings.MaxWindows})");
            return Execute(CommonOptions.ParseBackend(parse.GetValue(backend)!), parse.GetValue(device), settings, parse.GetValue(json));
        }));
        return command;
    }

    private sealed record Settings(string ModelDir, List<TrellisCodeInfo> Codes, List<int> Bits, bool Rtn, int L, string OutDir, string Data, int Ctx,
        int? MaxWindows, string Calib, int CalibCtx, int CalibWindows, bool KeepModels);

    private static List<string> ParseList(string text, string option)
    {
        var items = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList();
        return items.Count > 0 ? items : throw new UsageException($"{option}: empty list");
    }

    private static int Execute(BackendKind kind, int deviceIndex, Settings s, FileInfo? json)
    {
        var wall = Stopwatch.StartNew();
        if (!File.Exists(s.Data))
            throw new Qtip.Kernels.InvalidInputException($"{Path.GetFullPath(s.Data)}: data file not found");
        using var fpCkpt = LlamaCheckpoint.Open(s.ModelDir);
        if (fpCkpt.Quip is not null)
            throw new Qtip.Kernels.InvalidInputException($"{s.ModelDir}: already quantized; sweep needs the full-precision model");
        var tokenizer = Tokenizers.Load(fpCkpt.Folder, fpCkpt.Config.BosTokenId, fpCkpt.Config.EosTokenIds[0]);
        var stream = Perplexity.BuildStream(File.ReadAllText(s.Data), tokenizer);
        using var device = Backends.Open(kind, deviceIndex);
        Notices.CpuBackend(device);
        Output.Line($"device: {device}; model {s.ModelDir}; tokenizer: {tokenizer.Description}");
        Directory.CreateDirectory(s.OutDir);
        var modelsDir = Path.Combine(s.OutDir, "models");

        var configs = new List<(string Method, TrellisCodeInfo? Code, int Bits)>();
        foreach (var code in s.Codes)
        {
            foreach (var k in s.Bits)
                configs.Add((code.Name, code, k));
        }
        if (s.Rtn)
        {
            foreach (var k in s.Bits)
                configs.Add(("rtn", null, k));
        }
        foreach (var code in s.Codes)
            Notices.HybTable(device, code);

        // Bits/weight with embeddings, head and norms: the method's nominal storage of the decoder linears (the quantize
        // report's, as for RTN, whose checkpoint stores the rounded weights densely) plus the FP checkpoint's other tensors.
        var fpSize = StorageSummary.Of(fpCkpt);
        var options = new ModelOptions { Precision = ModelOptions.DefaultPrecision(device), MaxContext = s.Ctx, MaxPrefillRows = s.Ctx };
        using var fpModel = LlamaModel.Load(device, fpCkpt, options);
        var rows = new List<Row>();
        double fpPpl = double.NaN;
        int windows = 0;
        long tokens = 0;
        for (int i = 0; i < configs.Count; i++)
        {
            var (method, code, k) = configs[i];
            string label = code is null ? $"RTN {k}-bit" : $"QTIP {method.ToUpperInvariant()} K={k} L={s.L}";
            var qopts = new QuantizeOptions
            {
                ModelDir = s.ModelDir,
                OutDir = Path.Combine(modelsDir, $"{method}-{k}bit"),
                Bits = k,
                Code = code ?? TrellisCodes.Hyb,
                L = s.L,
                Method = code is null ? QuantizeMethod.Rtn : QuantizeMethod.Qtip,
                CalibrationFile = s.Calib,
                CalibrationContext = s.CalibCtx,
                CalibrationWindows = s.CalibWindows,
                Force = true,
            };
            try
            {
                qopts.Validate();
            }
            catch (ArgumentException e)
            {
                Output.Line($"[{i + 1}/{configs.Count}] {label}: skipped ({UsageException.CleanMessage(e)})");
                continue;
            }
            Output.Line($"[{i + 1}/{configs.Count}] {label}: quantize");
            var qsw = Stopwatch.StartNew();
            var report = new QuantizePipeline(device, qopts).Run();
            double qSeconds = qsw.Elapsed.TotalSeconds;
            ComparisonResult cmp;
            double bpwAll = (double)(report.QuantizedBits + fpSize.TotalBits - fpSize.DecoderBits) / fpSize.Parameters;
            var esw = Stopwatch.StartNew();
            using (var qCkpt = LlamaCheckpoint.Open(qopts.OutDir))
            {
                using var qModel = LlamaModel.Load(device, qCkpt, options);
                Output.Line($"[{i + 1}/{configs.Count}] {label}: evaluate against FP");
                cmp = EvalCommand.RunWithProgress(Math.Min(stream.Length / s.Ctx, s.MaxWindows ?? int.MaxValue),
                    report => ModelComparison.Evaluate(qModel, fpModel, stream, s.Ctx, s.MaxWindows, report));
            }
            if (!s.KeepModels)
                Directory.Delete(qopts.OutDir, recursive: true);
            fpPpl = cmp.Reference.Perplexity;
            windows = cmp.Model.Windows;
            tokens = cmp.Tokens;
            var row = new Row(method, code is null ? null : method, k, code is null ? null : s.L, report.BitsPerWeight, bpwAll, cmp.Model.Perplexity,
                cmp.MeanKld, cmp.MedianKld, cmp.P99Kld, cmp.Top1Agreement, qSeconds, esw.Elapsed.TotalSeconds);
            rows.Add(row);
            Output.Line($"     {row.BitsPerWeight:F3} bits/weight, ppl {row.Perplexity:F4} (FP {fpPpl:F4}), KLD {row.KldMean:F5}, top-1 {row.Top1Agreement * 100:F2} %, {qSeconds:F1} s + {row.EvalSeconds:F1} s");
        }
        if (!s.KeepModels && Directory.Exists(modelsDir) && !Directory.EnumerateFileSystemEntries(modelsDir).Any())
            Directory.Delete(modelsDir);
        if (rows.Count == 0)
            throw new UsageException("no valid (code, bits) combination to sweep");

        string name = new DirectoryInfo(s.ModelDir).Name;
        var tablePath = Path.Combine(s.OutDir, "sweep.md");
        var png = Path.Combine(s.OutDir, "sweep.png");
        var svg = Path.Combine(s.OutDir, "sweep.svg");
        File.WriteAllText(tablePath, Markdown(name, device.ToString(), s, windows, tokens, fpPpl, fpSize, rows));
        Plot(name, rows, fpPpl, png, svg);
        Output.Table($"sweep of {name}: {windows} windows of {s.Ctx} tokens, FP perplexity {fpPpl:F4}",
            ["method", "K", "bits/weight", "bits/weight all", "ppl", "KLD mean", "KLD median", "KLD p99", "top-1"],
            rows.Select(r => (IReadOnlyList<string>)[r.Method, r.Bits.ToString(), r.BitsPerWeight.ToString("F3"), r.BitsPerWeightAll.ToString("F3"),
                r.Perplexity.ToString("F4"), r.KldMean.ToString("F5"), r.KldMedian.ToString("F5"), r.KldP99.ToString("F5"), $"{r.Top1Agreement * 100:F2} %"]));
        Output.Line($"wrote {tablePath}, {png}, {svg}");
        var result = new Result(s.ModelDir, Path.GetFullPath(s.Data), device.ToString(), s.Ctx, windows, tokens, fpPpl, rows, tablePath, png, svg, wall.Elapsed.TotalSeconds);
        Output.WriteJson(new FileInfo(Path.Combine(s.OutDir, "sweep.json")), result);
        Output.WriteJson(json, result);
        return ExitCodes.Ok;
    }

    private static void Plot(string name, IEnumerable<Row> rows, double fpPpl, string png, string svg)
    {
        if (!SweepPlot.HasFonts)
            Output.Line("note: no fonts on this machine, so the picture has no text; install fonts (e.g. Debian's fonts-dejavu-core) " +
                "or draw it again elsewhere with: qtip sweep --replot sweep.json");
        SweepPlot.Save(name, [.. rows.Select(r => new SweepPoint(r.Method, r.Bits, r.BitsPerWeight, r.Perplexity, r.KldMean))], fpPpl, png, svg);
    }

    /// <summary><c>--replot</c>: the picture of a saved sweep.json, drawn again (no device, no model).</summary>
    private static int Replot(string jsonPath, string? outDir)
    {
        var saved = Output.ReadJson<Result>(jsonPath);
        if (saved.Rows is not { Count: > 0 } || saved.Rows.Any(r => r is null || string.IsNullOrEmpty(r.Method)) || string.IsNullOrEmpty(saved.Model))
            throw new Qtip.Kernels.InvalidInputException($"{jsonPath}: no sweep rows (not a sweep.json of qtip sweep)");
        string dir = Path.GetFullPath(outDir ?? Path.GetDirectoryName(jsonPath)!);
        Directory.CreateDirectory(dir);
        string png = Path.Combine(dir, "sweep.png"), svg = Path.Combine(dir, "sweep.svg");
        Plot(new DirectoryInfo(saved.Model).Name, saved.Rows, saved.FpPerplexity, png, svg);
        Output.Line($"wrote {png}, {svg} from {jsonPath}");
        return ExitCodes.Ok;
    }

    private static string Markdown(string name, string device, Settings s, int windows, long tokens, double fpPpl, StorageSummary fp, List<Row> rows)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"# qtip sweep: {name}");
        sb.AppendLine();
        sb.AppendLine($"Device {device}; evaluation {Path.GetFileName(s.Data)}, {windows} windows of {s.Ctx} tokens ({tokens:N0} scored); " +
            $"calibration {Path.GetFileName(s.Calib)}, {(s.CalibWindows == 0 ? "all" : s.CalibWindows.ToString())} windows of {s.CalibCtx}; L = {s.L}. " +
            $"Full-precision perplexity {fpPpl:F4}. KLD = KL(P_FP ‖ P_quantized) per scored token, nats.");
        sb.AppendLine();
        sb.AppendLine("| method | K | bits/weight (decoder) | bits/weight (all) | ppl | KLD mean | KLD median | KLD p99 | top-1 agreement |");
        sb.AppendLine("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        foreach (var r in rows)
            sb.AppendLine($"| {r.Method} | {r.Bits} | {r.BitsPerWeight:F3} | {r.BitsPerWeightAll:F3} | {r.Perplexity:F4} | {r.KldMean:F5} | {r.KldMedian:F5} | {r.KldP99:F5} | {r.Top1Agreement * 100:F2} % |");
        sb.AppendLine($"| FP | | {fp.DecoderBitsPerWeight:F3} | {fp.TotalBitsPerWeight:F3} | {fpPpl:F4} | 0 | 0 | 0 | 100 % |");
        return sb.ToString();
    }
}
