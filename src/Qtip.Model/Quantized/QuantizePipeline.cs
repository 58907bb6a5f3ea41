using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels;
using Qtip.Kernels.Runtime;
using Qtip.Kernels.Trellis;
using Qtip.Model.Checkpoint;
using Qtip.Model.Llama;
using Qtip.Model.Tokenization;
using Qtip.Quant;
using Qtip.Quant.Ldlq;
using Qtip.Quant.Trellis;

namespace Qtip.Model.Quantized;

/// <summary>One quantized matrix in the run's report.</summary>
public sealed record MatrixReport(
    [property: JsonPropertyName("layer")] int Layer,
    [property: JsonPropertyName("name")] string Name,
    [property: JsonPropertyName("m")] int M,
    [property: JsonPropertyName("n")] int N,
    [property: JsonPropertyName("proxy_error")] double ProxyError,
    [property: JsonPropertyName("wscale")] double Wscale,
    [property: JsonPropertyName("sigma")] double Sigma,
    [property: JsonPropertyName("seconds")] double Seconds);

/// <summary>What a quantization run measured.</summary>
public sealed record QuantizeReport(
    string OutDir,
    IReadOnlyList<MatrixReport> Matrices,
    long QuantizedWeights,
    long QuantizedBits,
    long ModelBytes,
    IReadOnlyDictionary<string, double> StageSeconds,
    long CalibrationTokens,
    int LayersResumed)
{
    /// <summary>Bits per quantized-linear weight, counting the trellis, SU, SV and the LUT.</summary>
    public double BitsPerWeight => QuantizedWeights == 0 ? 0 : (double)QuantizedBits / QuantizedWeights;

    public double MeanProxyError => Matrices.Count == 0 ? double.NaN : Matrices.Average(m => m.ProxyError);
}

/// <summary>Progress of a run, for a progress bar; every method may be called from the pipeline's thread only.</summary>
public interface IQuantizeProgress
{
    void Stage(string name);

    void Layer(int layer, int layers);

    void Matrix(MatrixReport report);
}

/// <summary>
/// <c>qtip quantize</c>: HF Llama directory in → Hessians from calibration text → per linear: RHT, block LDL,
/// BlockLDLQ with the tail-biting trellis → an HF-style quantized directory out (docs/FORMAT.md). Layer by layer, each
/// finished layer saved atomically under <c>&lt;out&gt;.partial</c> so <see cref="QuantizeOptions.Resume"/> continues
/// an interrupted run and produces the same bytes.
/// </summary>
public sealed class QuantizePipeline(QtipDevice device, QuantizeOptions options, IQuantizeProgress? progress = null)
{
    /// <summary>Quantization order inside a decoder layer, as the reference.</summary>
    public static readonly LinearKind[] Order = [LinearKind.V, LinearKind.Q, LinearKind.K, LinearKind.O, LinearKind.Up, LinearKind.Gate, LinearKind.Down];

    private const string ToolVersion = "qtip 0.1.0";
    private readonly Dictionary<string, double> stages = [];

    public QuantizeReport Run()
    {
        options.Validate();
        var outDir = Path.GetFullPath(options.OutDir);
        var partialDir = outDir + ".partial";
        if (Directory.Exists(outDir) && !options.Force)
            throw new InvalidInputException($"output directory {outDir} exists; pass --force to replace it");
        if (!options.Resume && Directory.Exists(partialDir))
            Directory.Delete(partialDir, recursive: true);

        var total = Stopwatch.StartNew();
        var sw = Stopwatch.StartNew();
        progress?.Stage("load");
        using var checkpoint = LlamaCheckpoint.Open(options.ModelDir);
        var config = checkpoint.Config;
        CheckShapes(config);
        var tokenizer = Tokenizers.Load(options.ModelDir, config.BosTokenId, config.EosTokenIds[0]);
        var calib = options.Hessian == HessianSource.Identity || options.Method == QuantizeMethod.Rtn
            ? null
            : CalibrationSet.Load(options.CalibrationFile, tokenizer, options.CalibrationContext, options.CalibrationWindows);
        using var model = LlamaModel.Load(device, checkpoint, new ModelOptions
        {
            Precision = WeightPrecision.Float32,
            MaxContext = Math.Max(options.CalibrationContext, 16),
            MaxPrefillRows = Math.Max(options.CalibrationContext, 16),
        });
        stages["load"] = sw.Elapsed.TotalSeconds;

        try
        {
            Directory.CreateDirectory(partialDir);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InvalidInputException($"quantize: cannot write the run's state {partialDir} next to the output {outDir}: {e.Message}");
        }
        try
        {
            return RunLayers(outDir, partialDir, total, sw, checkpoint, config, calib, model);
        }
        catch when (!options.Resume)
        {
            // Without --resume the per-layer state is of no use to anyone: leave nothing behind.
            if (Directory.Exists(partialDir))
                Directory.Delete(partialDir, recursive: true);
            throw;
        }
    }

    private QuantizeReport RunLayers(string outDir, string partialDir, Stopwatch total, Stopwatch sw, LlamaCheckpoint checkpoint,
        LlamaConfig config, CalibrationSet? calib, LlamaModel model)
    {
        WriteOrCheckFingerprint(partialDir, config);

        using var code = options.Method == QuantizeMethod.Qtip ? CodeSetup.Create(device, options, config) : null;
        var lq = new LinearQuantizer(device, new LinearQuantizeOptions(options.SigmaReg, options.EffectiveScaleOverride, Rotate: !options.NoRht));
        var reports = new List<MatrixReport>();
        int resumed = 0;
        HessianCollector? all = null;
        try
        {
            if (calib is not null && options.Hessian == HessianSource.FullPrecision)
            {
                sw.Restart();
                progress?.Stage("hessians");
                all = Collect(model, calib, Enumerable.Range(0, config.NumHiddenLayers), throughLayer: config.NumHiddenLayers - 1);
                stages["hessians"] = sw.Elapsed.TotalSeconds;
            }

            int layer = 0;
            while (layer < config.NumHiddenLayers)
            {
                progress?.Layer(layer, config.NumHiddenLayers);
                var layerFile = LayerFile(partialDir, layer);
                if (options.Resume && File.Exists(layerFile))
                {
                    var saved = LoadLayer(layerFile, layer, model, config, code);
                    reports.AddRange(saved);
                    foreach (var r in saved)
                        progress?.Matrix(r);
                    resumed++;
                    all?.Release(layer);
                    layer++;
                    continue;
                }
                // Layers whose Hessians are already known are quantized together (one trellis call per column block
                // for all of them); sequential Hessians need the previous layer quantized first, so one at a time.
                var group = new List<int> { layer };
                if (options.Hessian != HessianSource.Sequential)
                {
                    long budget = GroupBudget(), used = LayerBytes(config);
                    while (group[^1] + 1 < config.NumHiddenLayers && used + LayerBytes(config) <= budget
                        && !(options.Resume && File.Exists(LayerFile(partialDir, group[^1] + 1))))
                    {
                        group.Add(group[^1] + 1);
                        used += LayerBytes(config);
                    }
                }
                HessianCollector? mine = null;
                if (calib is not null && options.Hessian == HessianSource.Sequential)
                {
                    sw.Restart();
                    mine = Collect(model, calib, [layer], throughLayer: layer);
                    Add("hessians", sw.Elapsed.TotalSeconds);
                }
                try
                {
                    reports.AddRange(QuantizeLayers(group, checkpoint, model, config, mine ?? all, code, lq, partialDir));
                }
                finally
                {
                    mine?.Dispose();
                    foreach (int l in group)
                        all?.Release(l);
                }
                layer = group[^1] + 1;
            }
        }
        finally
        {
            all?.Dispose();
        }

        sw.Restart();
        progress?.Stage("write");
        long modelBytes = WriteCheckpoint(outDir, partialDir, checkpoint, config, calib, code, reports, total.Elapsed.TotalSeconds);
        stages["write"] = sw.Elapsed.TotalSeconds;
        stages["total"] = total.Elapsed.TotalSeconds;

        long weights = 0, bits = 0;
        foreach (var r in reports)
        {
            weights += (long)r.M * r.N;
            bits += StorageBits(r.M, r.N, config);
        }
        var report = new QuantizeReport(outDir, reports, weights, bits, modelBytes, new Dictionary<string, double>(stages),
            calib?.Tokens ?? 0, resumed);
        File.WriteAllText(Path.Combine(outDir, "qtip-report.json"), ReportJson(report, options).ToJsonString(JsonOptions));
        Directory.Delete(partialDir, recursive: true);
        return report;
    }

    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>Compact JSON for the per-layer metadata (NaN proxy errors of RTN layers allowed).</summary>
    private static readonly JsonSerializerOptions CompactJson = new()
    {
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    private void Add(string stage, double seconds) => stages[stage] = stages.GetValueOrDefault(stage) + seconds;

    /// <summary>Storage bits of one matrix as written: trellis + SU + SV + LUT for QTIP, or the RTN grid.</summary>
    private long StorageBits(int m, int n, LlamaConfig config)
    {
        if (options.Method == QuantizeMethod.Rtn)
            return RoundToNearest.StorageBits(m, n, options.Bits);
        long trellis = (long)m * n * options.Bits;
        long su = (long)n * (ModelDType(config) == SafeTensorsDType.F32 ? 32 : 16);
        long sv = 32L * m;
        long lut = options.Code == TrellisCodeKind.Hyb ? 16L * 2 * HybCode.Rows : 0;
        return trellis + su + sv + lut;
    }

    private static SafeTensorsDType ModelDType(LlamaConfig config) => config.TorchDtype switch
    {
        "float16" => SafeTensorsDType.F16,
        "float32" => SafeTensorsDType.F32,
        _ => SafeTensorsDType.BF16,
    };

    private void CheckShapes(LlamaConfig c)
    {
        foreach (var kind in LlamaNames.LayerLinears)
        {
            var (m, n) = LlamaNames.LinearShape(c, kind);
            if (m % 16 != 0 || n % 16 != 0)
                throw new InvalidInputException($"{LlamaNames.Linear(0, kind)} is {m}×{n}: QTIP needs both dimensions to be multiples of 16");
            if (options.WritesTrellis && (!HadamardMatrices.IsSupported(m) || !HadamardMatrices.IsSupported(n)))
                throw new InvalidInputException($"{LlamaNames.Linear(0, kind)} is {m}×{n}: no Hadamard transform of size {(!HadamardMatrices.IsSupported(m) ? m : n)} (sizes must be 2^p or K·2^p with K in {{{string.Join(", ", HadamardMatrices.Orders)}}})");
            if (options.WritesTrellis && options.Code == TrellisCodeKind.Hyb && options.L == 16 && (m % 32 != 0 || n % 32 != 0))
                throw new InvalidInputException($"{LlamaNames.Linear(0, kind)} is {m}×{n}: the HYB kernel layout needs multiples of 32");
        }
    }

    private HessianCollector Collect(LlamaModel model, CalibrationSet calib, IEnumerable<int> layers, int throughLayer)
    {
        var collector = new HessianCollector(device, layers);
        model.Observer = collector;
        try
        {
            foreach (var window in calib.Windows)
                model.Prefill(window, 0, LogitsMode.None, throughLayer);
            device.Synchronize();
        }
        catch
        {
            collector.Dispose();
            throw;
        }
        finally
        {
            model.Observer = null;
        }
        return collector;
    }

    private static LinearInput InputOf(LinearKind kind) => kind switch
    {
        LinearKind.Q or LinearKind.K or LinearKind.V => LinearInput.Attention,
        LinearKind.O => LinearInput.AttentionOutput,
        LinearKind.Gate or LinearKind.Up => LinearInput.Mlp,
        LinearKind.Down => LinearInput.MlpHidden,
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "not a decoder-layer linear"),
    };

    private string SignLabel(int layer, LinearKind kind, string which) => $"layer {layer} {kind} {which}";

    private static string LayerFile(string partialDir, int layer) => Path.Combine(partialDir, $"layer-{layer:D3}.safetensors");

    /// <summary>Device bytes one layer's seven prepared matrices hold while they wait for BlockLDLQ.</summary>
    private static long LayerBytes(LlamaConfig config) =>
        LlamaNames.LayerLinears.Sum(k => { var (m, n) = LlamaNames.LinearShape(config, k); return PreparedMatrix.DeviceBytes(m, n); });

    /// <summary>Memory for prepared matrices: a quarter of the device's memory (the CPU: 2 GiB).</summary>
    private long GroupBudget() =>
        device.Kind == BackendKind.Cpu ? 2L << 30 : Math.Max(1L << 30, device.Accelerator.MemorySize / 4);

    private List<MatrixReport> QuantizeLayers(List<int> layers, LlamaCheckpoint checkpoint, LlamaModel model, LlamaConfig config,
        HessianCollector? hessians, CodeSetup? code, LinearQuantizer lq, string partialDir)
    {
        var acc = device.Accelerator;
        var reports = new List<MatrixReport>();
        var writers = layers.ToDictionary(l => l, _ => new SafeTensorsWriter());
        var layerReports = layers.ToDictionary(l => l, _ => new List<MatrixReport>());
        var jobs = new List<(int Layer, LinearKind Kind, string Name, PreparedMatrix Prepared, double Seconds)>();
        try
        {
            foreach (int layer in layers)
            {
                foreach (var kind in Order)
                {
                    var sw = Stopwatch.StartNew();
                    string name = LlamaNames.Linear(layer, kind);
                    var (m, n) = LlamaNames.LinearShape(config, kind);
                    var w = checkpoint.Tensors.ReadFloat32(name);
                    if (w.Any(v => !float.IsFinite(v)))
                        throw new InvalidInputException($"{checkpoint.Tensors.FileOf(name).Path}: tensor {name} [{m},{n}] holds NaN or infinite values");
                    if (options.Method == QuantizeMethod.Rtn)
                    {
                        var rec = RoundToNearest.Quantize(w, m, n, options.Bits);
                        writers[layer].AddFloat32(name, rec, [m, n]);
                        var r = new MatrixReport(layer, name, m, n, double.NaN, 1, 0, sw.Elapsed.TotalSeconds);
                        layerReports[layer].Add(r);
                        progress?.Matrix(r);
                        continue;
                    }
                    var su = options.NoRht ? Ones(n) : new SplitMix64(SplitMix64.Derive(options.Seed, SignLabel(layer, kind, "SU"))).Signs(n);
                    var sv = options.NoRht ? Ones(m) : new SplitMix64(SplitMix64.Derive(options.Seed, SignLabel(layer, kind, "SV"))).Signs(m);
                    using var wb = device.Allocate1D(w);
                    using var identity = hessians is null ? IdentityHessian(n) : null;
                    var h = identity?.View ?? hessians!.Hessian(layer, InputOf(kind));
                    jobs.Add((layer, kind, name, lq.Prepare(wb.View, m, n, h, su, sv, code!.CodeRms), sw.Elapsed.TotalSeconds));
                    Add("prepare (damping, RHT, block LDL)", sw.Elapsed.TotalSeconds);
                }
            }

            if (jobs.Count > 0)
            {
                var sw = Stopwatch.StartNew();
                var words = new BlockLdlq(device).RunMany(jobs.Select(j => j.Prepared).ToList(), code!.Sequence);
                double ldlqSeconds = sw.Elapsed.TotalSeconds;
                Add("BlockLDLQ (trellis search)", ldlqSeconds);
                for (int i = 0; i < jobs.Count; i++)
                {
                    sw.Restart();
                    var (layer, kind, name, p, prepSeconds) = jobs[i];
                    int m = p.M, n = p.N;
                    string prefix = LlamaNames.QuantizedPrefix(name);
                    var writer = writers[layer];
                    using var rec = device.Allocate1D<float>((long)m * n);
                    var q = lq.Finish(p, words[i], options.WritesTrellis ? null : rec.View);
                    float[]? reconstruction = null;
                    if (options.WritesTrellis)
                    {
                        var stored = code.ToStoredLayout(q.Words, m, n);
                        writer.AddInt16(prefix + ".trellis", stored, [(long)(m / 16) * (n / 16), 16 * options.Bits]);
                        writer.AddFloat32(prefix + ".SU", q.Su, [n], ModelDType(config));
                        writer.AddFloat32(prefix + ".SV", q.Sv, [m]);
                        if (code.Lut is { } lut)
                            writer.AddFloat32(prefix + ".tlut", lut, [HybCode.Rows, 2], SafeTensorsDType.F16);
                        writer.AddInt64(prefix + ".rcp", [0L], []);
                        writer.AddInt64(prefix + ".tp_rank", [8L], []);
                        if (options.Hessian == HessianSource.Sequential)
                            reconstruction = Reconstruct(m, n, code, stored, ModelDTypeRound(q.Su, config), q.Sv);
                    }
                    else
                    {
                        reconstruction = rec.GetAsArray1D();
                        writer.AddFloat32(name, reconstruction, [m, n]);
                    }
                    if (options.Hessian == HessianSource.Sequential && reconstruction is not null)
                        model.SetLinear(layer, kind, DenseLinear.FromHost(device, reconstruction, m, n, WeightPrecision.Float32));
                    Add("finish (proxy error, write)", sw.Elapsed.TotalSeconds);
                    // A matrix's time: its own preparation and finish plus its share of the joint BlockLDLQ.
                    var r = new MatrixReport(layer, name, m, n, q.ProxyError, q.Wscale, q.SigmaUsed,
                        prepSeconds + sw.Elapsed.TotalSeconds + (ldlqSeconds / jobs.Count));
                    layerReports[layer].Add(r);
                    progress?.Matrix(r);
                }
            }
        }
        finally
        {
            foreach (var j in jobs)
                j.Prepared.Dispose();
        }
        foreach (int layer in layers)
        {
            // Reports in the reference's quantization order, as the layer was processed.
            var ordered = layerReports[layer];
            writers[layer].Metadata["qtip_layer_reports"] = JsonSerializer.Serialize(ordered, CompactJson);
            writers[layer].Write(LayerFile(partialDir, layer));
            reports.AddRange(ordered);
        }
        return reports;
    }

    private static float[] Ones(int n)
    {
        var o = new float[n];
        Array.Fill(o, 1f);
        return o;
    }

    /// <summary>SU as the checkpoint stores it (rounded to the model dtype), so the reconstruction matches a reload.</summary>
    private static float[] ModelDTypeRound(float[] su, LlamaConfig config) => ModelDType(config) switch
    {
        SafeTensorsDType.BF16 => su.Select(v => BFloat16.ToSingle(BFloat16.FromSingle(v))).ToArray(),
        SafeTensorsDType.F16 => su.Select(v => (float)(System.Half)v).ToArray(),
        _ => su,
    };

    private MemoryBuffer1D<double, Stride1D.Dense> IdentityHessian(int n)
    {
        var h = new double[(long)n * n];
        for (int i = 0; i < n; i++)
            h[((long)i * n) + i] = 1.0;
        return device.Allocate1D(h);
    }

    /// <summary>W as a reload would see it: diag(SV)·Had_m·Ŵ·Had_nᵀ·diag(SU), from the stored trellis.</summary>
    private float[] Reconstruct(int m, int n, CodeSetup code, short[] storedWords, float[] su, float[] sv)
    {
        using var linear = new QtipLinear(device, m, n, code.Spec, storedWords, su, sv, code.Lut ?? []);
        var acc = device.Accelerator;
        using var dense = device.Allocate1D<float>((long)m * n);
        using var ones = device.Allocate1D<float>(n);
        linear.DecodeDense(dense.View, acc.DefaultStream);
        // Rows of Ŵ → W rows: W = diag(SV) Had_m Ŵ Had_nᵀ diag(SU); as in Rht.UnrotateWeight but with real-valued signs.
        using var suB = device.Allocate1D(su);
        using var svB = device.Allocate1D(sv);
        using var scratch = device.Allocate1D<float>((long)m * n);
        var had = device.Get<Hadamard>();
        var tr = device.Get<Transpose>();
        had.Apply(dense.View, m, n, transpose: false, outSign: suB.View);
        tr.Apply(dense.View, scratch.View, m, n);
        had.Apply(scratch.View, n, m, transpose: false, outSign: svB.View);
        tr.Apply(scratch.View, dense.View, n, m);
        return dense.GetAsArray1D();
    }

    private List<MatrixReport> LoadLayer(string file, int layer, LlamaModel model, LlamaConfig config, CodeSetup? code)
    {
        using var f = SafeTensorsFile.Open(file);
        var reports = JsonSerializer.Deserialize<List<MatrixReport>>(f.Metadata["qtip_layer_reports"], CompactJson)
            ?? throw new InvalidInputException($"{file}: layer report missing; delete it to redo layer {layer}");
        if (options.Hessian != HessianSource.Sequential)
            return reports;
        foreach (var kind in Order)
        {
            string name = LlamaNames.Linear(layer, kind);
            string prefix = name[..^".weight".Length];
            var (m, n) = LlamaNames.LinearShape(config, kind);
            float[] w = options.WritesTrellis
                ? Reconstruct(m, n, code!, f.ReadAs<short>(f[prefix + ".trellis"], SafeTensorsDType.I16), f.ReadFloat32(f[prefix + ".SU"]), f.ReadFloat32(f[prefix + ".SV"]))
                : f.ReadFloat32(f[name]);
            model.SetLinear(layer, kind, DenseLinear.FromHost(device, w, m, n, WeightPrecision.Float32));
        }
        return reports;
    }

    private void WriteOrCheckFingerprint(string partialDir, LlamaConfig config)
    {
        var fingerprint = JsonSerializer.Serialize(new
        {
            model = Path.GetFullPath(options.ModelDir),
            options.Bits,
            code = options.CodeName,
            options.L,
            method = options.Method.ToString(),
            hessian = options.Hessian.ToString(),
            options.NoRht,
            calib = Path.GetFullPath(options.CalibrationFile),
            options.CalibrationContext,
            options.CalibrationWindows,
            options.Seed,
            options.SigmaReg,
            scaleOverride = options.EffectiveScaleOverride,
            layers = config.NumHiddenLayers,
        });
        var path = Path.Combine(partialDir, "run.json");
        if (options.Resume && File.Exists(path))
        {
            if (File.ReadAllText(path) != fingerprint)
                throw new InvalidInputException($"{partialDir} holds a run with other settings; resume it with the same options or delete it");
            return;
        }
        File.WriteAllText(path, fingerprint);
    }

    private long WriteCheckpoint(string outDir, string partialDir, LlamaCheckpoint checkpoint, LlamaConfig config,
        CalibrationSet? calib, CodeSetup? code, List<MatrixReport> reports, double seconds)
    {
        var temp = outDir + $".tmp-{Environment.ProcessId}";
        if (Directory.Exists(temp))
            Directory.Delete(temp, recursive: true);
        Directory.CreateDirectory(temp);
        try
        {
            var writer = new SafeTensorsWriter();
            writer.Metadata["format"] = "pt";
            // Unquantized tensors first, in their stored order; then every layer's quantized tensors in layer order.
            var quantizedNames = new HashSet<string>(StringComparer.Ordinal);
            for (int l = 0; l < config.NumHiddenLayers; l++)
            {
                foreach (var kind in LlamaNames.LayerLinears)
                    quantizedNames.Add(LlamaNames.Linear(l, kind));
            }
            foreach (var t in checkpoint.Tensors.Tensors.OrderBy(t => t.Name, StringComparer.Ordinal))
            {
                if (!quantizedNames.Contains(t.Name))
                    writer.AddFrom(checkpoint.Tensors.FileOf(t.Name), t.Name);
            }
            var layerFiles = new List<SafeTensorsFile>();
            try
            {
                for (int l = 0; l < config.NumHiddenLayers; l++)
                {
                    var f = SafeTensorsFile.Open(Path.Combine(partialDir, $"layer-{l:D3}.safetensors"));
                    layerFiles.Add(f);
                    foreach (var t in f.Tensors.OrderBy(t => t.Name, StringComparer.Ordinal))
                        writer.AddFrom(f, t.Name);
                }
                writer.Write(Path.Combine(temp, "model.safetensors"));
            }
            finally
            {
                foreach (var f in layerFiles)
                    f.Dispose();
            }

            var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(options.ModelDir, "config.json")))!.AsObject();
            if (options.WritesTrellis)
            {
                cfg["quip_params"] = new JsonObject
                {
                    ["codebook"] = "bitshift",
                    ["codebook_version"] = 0,
                    ["L"] = options.L,
                    ["K"] = options.Bits,
                    ["V"] = options.V,
                    ["tlut_bits"] = options.Code == TrellisCodeKind.Hyb ? HybCode.Q : 0,
                    ["decode_mode"] = options.Code switch
                    {
                        TrellisCodeKind.Hyb => "quantlut_sym",
                        TrellisCodeKind.OneMad => "1mad",
                        TrellisCodeKind.ThreeInst => "3inst",
                        _ => "lut",
                    },
                    ["td_x"] = 16,
                    ["td_y"] = 16,
                    ["split_for_tp"] = false,
                    ["skip_list"] = null,
                };
            }
            cfg["quantization_config"] = new JsonObject
            {
                ["quant_method"] = options.Method == QuantizeMethod.Rtn ? "rtn" : options.NoRht ? "qtip-no-rht-dense" : "qtip",
                ["code"] = options.Method == QuantizeMethod.Rtn ? null : options.CodeName,
                ["K"] = options.Bits,
                ["L"] = options.Method == QuantizeMethod.Rtn ? null : options.L,
                ["V"] = options.V,
                ["Q"] = options.Code == TrellisCodeKind.Hyb ? HybCode.Q : null,
                ["layout"] = code?.Spec.Layout == TileLayoutKind.Kernel ? "kernel" : "generic",
                ["tile"] = new JsonArray(16, 16),
                ["seed"] = options.Seed,
                ["sigma_reg"] = options.SigmaReg,
                ["scale_override"] = options.EffectiveScaleOverride,
                ["hessian"] = options.Hessian switch
                {
                    HessianSource.Sequential => "sequential",
                    HessianSource.Identity => "identity",
                    _ => "full-precision",
                },
                ["calibration"] = calib is null ? null : new JsonObject
                {
                    ["file"] = Path.GetFileName(calib.File),
                    ["windows"] = calib.Windows.Count,
                    ["ctx"] = calib.Context,
                    ["tokens"] = calib.Tokens,
                },
                ["tool"] = ToolVersion,
            };
            File.WriteAllText(Path.Combine(temp, "config.json"), cfg.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            foreach (var extra in new[] { "generation_config.json", "tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json" })
            {
                var src = Path.Combine(options.ModelDir, extra);
                if (File.Exists(src))
                    File.Copy(src, Path.Combine(temp, extra));
            }
            if (Directory.Exists(outDir))
                Directory.Delete(outDir, recursive: true);
            Directory.Move(temp, outDir);
            return new FileInfo(Path.Combine(outDir, "model.safetensors")).Length;
        }
        catch
        {
            if (Directory.Exists(temp))
                Directory.Delete(temp, recursive: true);
            throw;
        }
    }

    /// <summary>The run's report as written to <c>qtip-report.json</c> (snake_case); the CLI's <c>--json</c> adds to it.</summary>
    public static JsonObject ReportJson(QuantizeReport r, QuantizeOptions options) =>
        JsonSerializer.SerializeToNode(ReportObject(r, options), JsonOptions)!.AsObject();

    private static object ReportObject(QuantizeReport r, QuantizeOptions options) => new
    {
        out_dir = r.OutDir,
        method = options.Method.ToString().ToLowerInvariant(),
        code = options.CodeName,
        bits = options.Bits,
        l = options.L,
        hessian = options.Hessian.ToString(),
        no_rht = options.NoRht,
        seed = options.Seed,
        bits_per_weight = r.BitsPerWeight,
        quantized_weights = r.QuantizedWeights,
        model_bytes = r.ModelBytes,
        mean_proxy_error = r.MeanProxyError,
        calibration_tokens = r.CalibrationTokens,
        layers_resumed = r.LayersResumed,
        stage_seconds = r.StageSeconds,
        matrices = r.Matrices,
    };
}

/// <summary>The code side of a QTIP run: codebook, trellis quantizer, the stored layout and the LUT to write.</summary>
internal sealed class CodeSetup : IDisposable
{
    private readonly QtipDevice device;
    private readonly TrellisQuantizer quantizer;

    private CodeSetup(QtipDevice device, QtipCodeSpec spec, TrellisQuantizer quantizer, float[]? lut, double codeRms)
    {
        this.device = device;
        Spec = spec;
        this.quantizer = quantizer;
        Lut = lut;
        CodeRms = codeRms;
        Sequence = new TrellisSequenceQuantizer(quantizer, spec.Layout);
    }

    public QtipCodeSpec Spec { get; }

    public float[]? Lut { get; }

    public double CodeRms { get; }

    public TrellisSequenceQuantizer Sequence { get; }

    public static CodeSetup Create(QtipDevice device, QuantizeOptions o, LlamaConfig config)
    {
        float[]? lut = null;
        TrellisCodebook book;
        switch (o.Code)
        {
            case TrellisCodeKind.Hyb:
                lut = HybLut.GetOrCreate(device);
                // Spec §12: the LUT is rounded to the model dtype before the search (bf16 values stored as fp16).
                lut = config.TorchDtype == "float16"
                    ? lut.Select(v => (float)(System.Half)v).ToArray()
                    : lut.Select(v => BFloat16.ToSingle(BFloat16.FromSingle(v))).ToArray();
                book = TrellisCodebook.Hyb(lut);
                break;
            case TrellisCodeKind.OneMad:
                book = TrellisCodebook.OneMad();
                break;
            case TrellisCodeKind.ThreeInst:
                book = TrellisCodebook.ThreeInst();
                break;
            default:
                throw new ArgumentException($"code {o.Code} cannot be written to a checkpoint");
        }
        var spec = new QtipCodeSpec(o.Code, o.L, o.Bits, o.V, QtipCodeSpec.DefaultLayout(o.Code, o.L, o.V));
        // The pipeline checks the weights for NaN/Inf once on the host; no per-call check (and sync) in the search.
        var q = new TrellisQuantizer(device, book, o.L, o.Bits, options: new TrellisQuantizerOptions(ValidateTargets: false));
        return new CodeSetup(device, spec, q, lut, book.Rms(o.L));
    }

    /// <summary>Generic tile-major words → the stored layout (kernel layout for HYB at L = 16).</summary>
    public short[] ToStoredLayout(short[] generic, int m, int n)
    {
        if (Spec.Layout == TileLayoutKind.Generic)
            return generic;
        var acc = device.Accelerator;
        using var g = device.Allocate1D(generic);
        using var k = device.Allocate1D<short>(generic.Length);
        device.Get<TrellisRelayout<GenericLayout, KernelLayout>>().Apply(g.View, m, n, Spec.K, k.View);
        return k.GetAsArray1D();
    }

    public void Dispose()
    {
        Sequence.Dispose();
        quantizer.Dispose();
    }
}
