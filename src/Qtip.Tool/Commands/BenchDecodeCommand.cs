using System.CommandLine;
using System.Diagnostics;
using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;
using Qtip.Kernels.Trellis;
using Qtip.Model.Checkpoint;
using Qtip.Model.Llama;
using Qtip.Model.Quantized;
using Qtip.Quant.Trellis;
using Qtip.Tool.Cli;

namespace Qtip.Tool.Commands;

/// <summary>
/// <c>qtip bench decode</c>: batch-1 decode speed of a synthetic Llama with random fp16 weights generated on the
/// device (default: the Llama-2-7B shape), or with <c>--code hyb|3inst|1mad --bits 2|3|4</c> random quantized decoder
/// linears made on the device in the stored layout (no quantize run). Reports tokens/s, the bandwidth bound (weight bytes per token ÷ a
/// device-to-device copy measured in the same run), host launch time per token, each op kind timed alone (where the
/// time goes), and prefill tokens/s of the evaluation path.
/// </summary>
public static class BenchDecodeCommand
{
    public sealed record Shape(string Name, int Layers, int Hidden, int Intermediate, int Heads, int KvHeads, int Vocab);

    public sealed record OpRow(string Op, int LaunchesPerToken, double MicrosecondsPerLaunch, double MicrosecondsPerToken, double GBps);

    public sealed record Result(string Device, string Backend, string Date, Shape Shape, string Weights, int PromptTokens, int DecodeTokens,
        long WeightBytesPerToken, int LaunchesPerToken, double TokensPerSecond, double MillisecondsPerToken, double CopyGBps,
        double BoundTokensPerSecond, double RatioToBound, double HostLaunchMicrosecondsPerToken, double SumOfOpsMicrosecondsPerToken,
        IReadOnlyList<OpRow> Ops, int PrefillContext, double PrefillTokensPerSecond);

    /// <summary>The synthetic model shapes of the bench commands (decode, quantize).</summary>
    internal static readonly Shape[] Shapes =
    [
        new("llama2-7b", 32, 4096, 11008, 32, 32, 32000),
        new("llama2-70b", 80, 8192, 28672, 64, 8, 32000),
        new("llama-small", 6, 384, 1376, 6, 2, 8192),
        new("llama-nano", 2, 128, 384, 4, 2, 8192),
    ];

    public static Command Create()
    {
        var shape = new Option<string>("--shape") { Description = "Synthetic model shape: llama2-7b, llama2-70b, llama-small or llama-nano.", DefaultValueFactory = _ => "llama2-7b" };
        var code = new Option<string?>("--code") { Description = $"Quantize the decoder linears with random trellis words of this code: {TrellisCodes.Names(c => c.Quantizable, " or ")} (L = 16; default: fp16/fp32 dense)." };
        var bits = new Option<int>("--bits", "-b") { Description = "Bits per weight K of --code: 2, 3 or 4.", DefaultValueFactory = _ => 2 };
        var layers = new Option<int?>("--layers") { Description = "Override the number of layers (e.g. fewer for a quick run)." };
        var tokens = new Option<int>("--tokens") { Description = "Decode steps timed.", DefaultValueFactory = _ => 128 };
        var prompt = new Option<int>("--prompt-tokens") { Description = "Prompt length before decoding.", DefaultValueFactory = _ => 16 };
        var prefill = new Option<int>("--prefill-ctx") { Description = "Window for the prefill (eval-path) measurement; 0 skips it.", DefaultValueFactory = _ => 512 };
        var iterations = new Option<int>("--iterations") { Description = "Launches per timed repeat in the per-op table.", DefaultValueFactory = _ => 50 };
        var weights = RuntimeCli.WeightsOption();
        var backend = CommonOptions.Backend();
        var device = CommonOptions.Device();
        var json = CommonOptions.Json();
        var command = new Command("decode", "Batch-1 decode tokens/s of a synthetic Llama (random fp16 weights made on the device) vs the bandwidth bound.")
        {
            shape, code, bits, layers, tokens, prompt, prefill, iterations, weights, backend, device, json,
        };
        command.SetAction(parse => CommandRunner.Run(() => Execute(parse.GetValue(shape)!, parse.GetValue(code), parse.GetValue(bits), parse.GetValue(layers), parse.GetValue(tokens), parse.GetValue(prompt),
            parse.GetValue(prefill), parse.GetValue(iterations), RuntimeCli.ParseWeights(parse.GetValue(weights)),
            CommonOptions.ParseBackend(parse.GetValue(backend)!), parse.GetValue(device), parse.GetValue(json))));
        return command;
    }

    /// <summary>The shape named by --shape, with --layers (if given) replacing its depth; a usage error otherwise.</summary>
    internal static Shape FindShape(string? name, int? layers)
    {
        var shape = Shapes.FirstOrDefault(s => s.Name == name)
            ?? throw new UsageException($"--shape '{name}': expected {string.Join(", ", Shapes.Select(s => s.Name))}");
        if (layers is { } l)
        {
            if (l < 1)
                throw new UsageException($"--layers must be at least 1 (got {l})");
            shape = shape with { Layers = l };
        }
        return shape;
    }

    private static int Execute(string shapeName, string? codeName, int bits, int? layers, int tokens, int promptTokens, int prefillCtx, int iterations, WeightPrecision? requestedPrecision,
        BackendKind kind, int deviceIndex, FileInfo? json)
    {
        var shape = FindShape(shapeName, layers);
        if (tokens < 2 || promptTokens < 1 || prefillCtx < 0 || iterations < 1)
            throw new UsageException("--tokens must be ≥ 2, --prompt-tokens ≥ 1, --prefill-ctx ≥ 0, --iterations ≥ 1");
        QtipCodeSpec? spec = null;
        if (codeName is not null)
        {
            var code = QuantizeCommand.ParseCode(codeName);
            if (bits is < 2 or > 4)
                throw new UsageException($"--bits must be 2, 3 or 4 (got {bits})");
            spec = QtipCodeSpec.Default(code, 16, bits);
        }
        var config = LlamaModel.SyntheticConfig(shape.Layers, shape.Hidden, shape.Intermediate, shape.Heads, shape.KvHeads, shape.Vocab);
        using var device = Backends.Open(kind, deviceIndex);
        var precision = RuntimeCli.ResolveWeights(device, requestedPrecision);
        string weightsName = spec is null ? RuntimeCli.WeightsName(precision)
            : $"{spec.Code.Name.ToUpperInvariant()} {spec.K}-bit (L = 16, {spec.Layout} layout; {RuntimeCli.WeightsName(precision)} embedding and lm_head)";
        Output.Line($"device: {device}; synthetic {shape.Name}: {shape.Layers} layers, hidden {shape.Hidden}, MLP {shape.Intermediate}, " +
            $"heads {shape.Heads}/{shape.KvHeads}, vocab {shape.Vocab}, {weightsName} weights");
        int context = Math.Max(promptTokens + tokens + 1, prefillCtx);
        using var model = LlamaModel.CreateRandom(device, config, new ModelOptions
        {
            Precision = precision,
            MaxContext = context,
            MaxPrefillRows = Math.Max(promptTokens, prefillCtx),
        }, linearFactory: spec is null ? null : RandomQuantized(device, spec));
        var rng = new Random(7);
        var prompt = Enumerable.Range(0, promptTokens).Select(_ => rng.Next(3, shape.Vocab)).ToArray();

        // Warm-up: compiles every kernel.
        model.Prefill(prompt, 0, LogitsMode.Last);
        model.SelectNext(0, 0, 1, 0);
        model.DecodeStep(promptTokens);
        model.SelectNext(0, 0, 1, 0);
        model.ReadNextToken();

        // Decode: the id stays on the device (argmax → next embedding); one synchronize at the end.
        model.Prefill(prompt, 0, LogitsMode.Last);
        model.SelectNext(0, 0, 1, 0);
        device.Synchronize();
        var sw = Stopwatch.StartNew();
        for (int t = 0; t < tokens; t++)
        {
            model.DecodeStep(promptTokens + t);
            model.SelectNext(0, 0, 1, 0);
        }
        device.Synchronize();
        double seconds = sw.Elapsed.TotalSeconds;
        double tokPerS = tokens / seconds;

        // Host time to enqueue one step (the queue never fills in one step), median of 9, device idle before each.
        var host = new double[9];
        for (int i = 0; i < host.Length; i++)
        {
            device.Synchronize();
            var h = Stopwatch.StartNew();
            model.DecodeStep(promptTokens + tokens - 1);
            model.SelectNext(0, 0, 1, 0);
            host[i] = h.Elapsed.TotalSeconds * 1e6;
            device.Synchronize();
        }
        Array.Sort(host);
        double hostUs = host[host.Length / 2];

        double copyGBps = CopyBandwidth(device);
        long bytes = model.DecodeWeightBytes;
        double bound = copyGBps * 1e9 / bytes;
        var ops = model.ProfileDecodeOps(promptTokens + (tokens / 2), iterations)
            .Select(o => new OpRow(o.Op, o.LaunchesPerToken, o.MicrosecondsPerLaunch, o.MicrosecondsPerToken, o.GBps)).ToList();
        double sumOps = ops.Sum(o => o.MicrosecondsPerToken);

        double prefillTps = 0;
        if (prefillCtx >= 2)
        {
            var window = Enumerable.Range(0, prefillCtx).Select(_ => rng.Next(3, shape.Vocab)).ToArray();
            model.WindowNll(window);
            var p = Stopwatch.StartNew();
            int reps = device.Kind == BackendKind.Cpu ? 1 : 3;
            for (int i = 0; i < reps; i++)
                model.WindowNll(window);
            prefillTps = reps * prefillCtx / p.Elapsed.TotalSeconds;
        }

        var result = new Result(device.ToString(), device.Kind.Name(), DateTime.UtcNow.ToString("u"), shape, weightsName, promptTokens, tokens,
            bytes, model.DecodeLaunchesPerToken, tokPerS, 1e3 / tokPerS, copyGBps, bound, tokPerS / bound, hostUs, sumOps, ops, prefillCtx, prefillTps);
        Output.Table("decode, batch 1", ["tokens/s", "ms/token", "weights/token", "copy GB/s", "bound tok/s", "of bound", "launches/token", "host µs/token", "Σ ops µs/token"],
        [
            [tokPerS.ToString("F1"), (1e3 / tokPerS).ToString("F2"), Output.Bytes(bytes), copyGBps.ToString("F0"), bound.ToString("F1"),
                (tokPerS / bound).ToString("P1"), model.DecodeLaunchesPerToken.ToString(), hostUs.ToString("F0"), sumOps.ToString("F0")],
        ]);
        Output.Table("where the time goes (each op timed alone, back to back)", ["op", "launches/token", "µs/launch", "µs/token", "share", "GB/s"],
            ops.Select(o => (IReadOnlyList<string>)[o.Op, o.LaunchesPerToken.ToString(), o.MicrosecondsPerLaunch.ToString("F1"), o.MicrosecondsPerToken.ToString("F0"),
                (o.MicrosecondsPerToken / sumOps).ToString("P1"), o.GBps > 0 ? o.GBps.ToString("F0") : ""]));
        if (prefillCtx >= 2)
            Output.Line($"prefill (eval path, window {prefillCtx}, logits + NLL): {prefillTps:F0} tokens/s");
        Output.WriteJson(json, result);
        return ExitCodes.Ok;
    }

    /// <summary>
    /// Makes each decoder linear a random quantized linear of <paramref name="spec"/> on the device (random trellis
    /// words in the stored layout, random signs). A code with a table (HYB: 512×2) gets a seeded Gaussian one at the HYB LUT's target scale:
    /// decode speed does not depend on the table's values.
    /// </summary>
    private static Func<int, LinearKind, int, int, ILinearLayer> RandomQuantized(QtipDevice device, QtipCodeSpec spec)
    {
        float[] table = [];
        if (spec.Code.TableLength(spec.L) > 0)
        {
            var rng = new Random(11);
            table = new float[spec.Code.TableLength(spec.L)];
            for (int i = 0; i < table.Length; i++)
            {
                double u = 1 - rng.NextDouble(), w = rng.NextDouble();
                table[i] = (float)(HybLut.TargetStd * Math.Sqrt(-2 * Math.Log(u)) * Math.Cos(2 * Math.PI * w));
            }
        }
        return (layer, kind, o, i) => QtipLinear.CreateRandom(device, o, i, spec, table, (ulong)((layer * 16) + (int)kind + 1000));
    }

    /// <summary>Device-to-device copy bandwidth (read + write) of a 256 MiB buffer (16 MiB on the CPU simulator).</summary>
    private static double CopyBandwidth(QtipDevice device)
    {
        long count = device.Kind == BackendKind.Cpu ? 4L << 20 : 64L << 20;
        using var a = device.Accelerator.Allocate1D<float>(count);
        using var b = device.Accelerator.Allocate1D<float>(count);
        a.MemSetToZero();
        ArrayView<float> src = a.View, dst = b.View;
        double t = DeviceTimer.MedianSeconds(device, () => src.CopyTo(dst), iterations: 10, repeats: 5);
        return 2.0 * count * sizeof(float) / t / 1e9;
    }
}
