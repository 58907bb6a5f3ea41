using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels;
using Qtip.Kernels.Llama;
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

    /// <summary>The trellis search of a batch of matrices (of layers <paramref name="layers"/>) finished column block <paramref name="step"/> of <paramref name="steps"/>.</summary>
    void Block(string layers, int step, int steps) { }
}

/// <summary>A run stopped by a signal (SIGINT/SIGTERM) between or inside layers; every completed layer file is kept.</summary>
public sealed class QuantizeInterruptedException(int layersDone, int layers, string partialDir)
    : Exception($"interrupted after layer {layersDone}/{layers}; rerun with --resume")
{
    public int LayersDone { get; } = layersDone;

    public int Layers { get; } = layers;

    /// <summary>Where the completed layers wait for <c>--resume</c>.</summary>
    public string PartialDir { get; } = partialDir;
}

/// <summary>
/// <c>qtip quantize</c>: HF Llama directory in → Hessians from calibration text → per linear: RHT, block LDL,
/// BlockLDLQ with the tail-biting trellis → an HF-style quantized directory out (docs/FORMAT.md).
/// <para>Layer streaming: the calibration activations (windows × ctx × dim, fp32) stay on the device, and the decoder
/// layers go through one (or a small group) at a time: load the layer's weights from the memory-mapped checkpoint, run
/// the activations through it while collecting its four input Hessians, quantize its seven linears (BlockLDLQ batches
/// bounded by <see cref="QuantizeOptions.BatchBytes"/>), save its layer file atomically under <c>&lt;out&gt;.partial</c>,
/// free everything of it, move on. Device memory is the activations + one layer's weights, Hessians and prepared
/// matrices, whatever the depth. With full-precision Hessians the activations go through the FP layer; with
/// <c>--sequential</c> through its quantized reconstruction.</para>
/// <para>Interruption (<paramref name="cancel"/>) is checked between calibration windows, matrices and trellis column
/// blocks; the run then throws <see cref="QuantizeInterruptedException"/> and keeps every completed layer file (and the
/// run fingerprint), with or without <see cref="QuantizeOptions.Resume"/>, so a later <c>--resume</c> continues
/// byte-identically.</para>
/// </summary>
public sealed class QuantizePipeline(QtipDevice device, QuantizeOptions options, IQuantizeProgress? progress = null, CancellationToken cancel = default)
{
    /// <summary>Quantization order inside a decoder layer, as the reference.</summary>
    public static readonly LinearKind[] Order = [LinearKind.V, LinearKind.Q, LinearKind.K, LinearKind.O, LinearKind.Up, LinearKind.Gate, LinearKind.Down];

    private const string ToolVersion = "qtip 0.1.0";
    private readonly Dictionary<string, double> stages = [];

    private QtipDevice Dev => device;

    private QuantizeOptions Options => options;

    private CancellationToken Cancel => cancel;

    private IQuantizeProgress? Progress => progress;

    public QuantizeReport Run()
    {
        options.Validate();
        var outDir = Path.GetFullPath(options.OutDir);
        var partialDir = outDir + ".partial";
        if (Directory.Exists(outDir) && !options.Force)
            throw new InvalidInputException($"output directory {outDir} exists; pass --force to replace it");
        if (!options.KeepsPartial && Directory.Exists(partialDir))
            Directory.Delete(partialDir, recursive: true);

        var total = Stopwatch.StartNew();
        var sw = Stopwatch.StartNew();
        progress?.Stage("load");
        using var checkpoint = LlamaCheckpoint.Open(options.ModelDir);
        var config = checkpoint.Config;
        CheckShapes(config);
        var (first, last) = options.LayerRange(config.NumHiddenLayers);
        var tokenizer = Tokenizers.Load(options.ModelDir, config.BosTokenId, config.EosTokenIds[0]);
        // Loaded (tokenized) even when every layer is done (--assemble): the checkpoint records it. The activations are
        // made only when a layer needs Hessians.
        var calib = options.Hessian == HessianSource.Identity || options.Method == QuantizeMethod.Rtn
            ? null
            : CalibrationSet.Load(options.CalibrationFile, tokenizer, options.CalibrationContext, options.CalibrationWindows);
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
            WriteOrCheckFingerprint(partialDir, config);
            var (reports, resumed) = QuantizeLayers(new CheckpointWeights(device, checkpoint), calib, partialDir, first, last);
            if (options.Layers is not null)
            {
                // A shard: its layer files are the result; --assemble writes the checkpoint once every shard is done.
                stages["total"] = total.Elapsed.TotalSeconds;
                return Summarize(partialDir, reports, 0, calib, resumed, config);
            }

            sw.Restart();
            progress?.Stage("write");
            long modelBytes = WriteCheckpoint(outDir, partialDir, checkpoint, config, calib, code: options.WritesTrellis ? CodeSpec() : null, reports);
            stages["write"] = sw.Elapsed.TotalSeconds;
            stages["total"] = total.Elapsed.TotalSeconds;
            var report = Summarize(outDir, reports, modelBytes, calib, resumed, config);
            File.WriteAllText(Path.Combine(outDir, "qtip-report.json"), ReportJson(report, options).ToJsonString(JsonOptions));
            Directory.Delete(partialDir, recursive: true);
            RemoveStaleTemps(outDir);
            return report;
        }
        catch (OperationCanceledException) when (cancel.IsCancellationRequested)
        {
            // Keep every completed layer (and run.json): --resume continues from here, whether or not this run had it.
            int done = Enumerable.Range(0, config.NumHiddenLayers).TakeWhile(l => File.Exists(LayerFile(partialDir, l))).Count();
            throw new QuantizeInterruptedException(done, config.NumHiddenLayers, partialDir);
        }
        catch when (!options.KeepsPartial)
        {
            // Without --resume the per-layer state of a failed run is of no use to anyone: leave nothing behind.
            if (Directory.Exists(partialDir))
                Directory.Delete(partialDir, recursive: true);
            throw;
        }
    }

    /// <summary>
    /// <c>qtip bench quantize</c>: the same layer-streaming run on seeded random weights made on the device (nothing
    /// read from disk), calibration windows of random ids; layer files go to <paramref name="workDir"/> (deleted after).
    /// </summary>
    public QuantizeReport RunSynthetic(LlamaConfig config, CalibrationSet? calib, string workDir)
    {
        options.Validate();
        var total = Stopwatch.StartNew();
        CheckShapes(config);
        Directory.CreateDirectory(workDir);
        try
        {
            var (reports, _) = QuantizeLayers(new RandomWeights(device, config, options.Seed + 1), calib, workDir, 0, config.NumHiddenLayers - 1);
            stages["total"] = total.Elapsed.TotalSeconds;
            return Summarize(workDir, reports, 0, calib, 0, config);
        }
        catch (OperationCanceledException) when (cancel.IsCancellationRequested)
        {
            int done = Enumerable.Range(0, config.NumHiddenLayers).TakeWhile(l => File.Exists(LayerFile(workDir, l))).Count();
            throw new QuantizeInterruptedException(done, config.NumHiddenLayers, workDir);
        }
        finally
        {
            Directory.Delete(workDir, recursive: true);
        }
    }

    private QuantizeReport Summarize(string dir, List<MatrixReport> reports, long modelBytes, CalibrationSet? calib, int resumed, LlamaConfig config)
    {
        long weights = 0, bits = 0;
        foreach (var r in reports)
        {
            weights += (long)r.M * r.N;
            bits += StorageBits(r.M, r.N, config);
        }
        return new QuantizeReport(dir, reports, weights, bits, modelBytes, new Dictionary<string, double>(stages), calib?.Tokens ?? 0, resumed);
    }

    private QtipCodeSpec CodeSpec() => new(options.Code, options.L, options.Bits, options.V, QtipCodeSpec.DefaultLayout(options.Code, options.L, options.V));

    /// <summary>Deletes <c>&lt;out&gt;.tmp-&lt;pid&gt;</c> directories of runs whose process is gone (a SIGKILL during the final rename).</summary>
    private static void RemoveStaleTemps(string outDir)
    {
        var parent = Path.GetDirectoryName(outDir);
        if (parent is null || !Directory.Exists(parent))
            return;
        foreach (var dir in Directory.EnumerateDirectories(parent, Path.GetFileName(outDir) + ".tmp-*"))
        {
            if (!int.TryParse(dir[(outDir.Length + ".tmp-".Length)..], out int pid) || pid == Environment.ProcessId)
                continue;
            bool alive;
            try
            {
                using var p = Process.GetProcessById(pid);
                alive = !p.HasExited;
            }
            catch (ArgumentException)
            {
                alive = false;
            }
            if (!alive)
                Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>
    /// The layer loop: layers first..last, each resumed from its file or quantized (in groups that share the trellis
    /// batches) and saved. The calibration activations are advanced lazily: only when a layer needs Hessians are they
    /// run up to it (through the FP layers, or with --sequential the quantized reconstructions in the layer files).
    /// </summary>
    private (List<MatrixReport> Reports, int Resumed) QuantizeLayers(IWeightSource source, CalibrationSet? calib, string partialDir, int first, int last)
    {
        var config = source.Config;
        using var code = options.Method == QuantizeMethod.Qtip ? CodeSetup.Create(device, options, config) : null;
        var lq = new LinearQuantizer(device, new LinearQuantizeOptions(options.SigmaReg, options.EffectiveScaleOverride, Rotate: !options.NoRht));
        var reports = new List<MatrixReport>();
        int resumed = 0;
        using var acts = calib is not null && options.Hessian != HessianSource.Identity ? new Activations(this, source, calib) : null;
        int layer = first;
        while (layer <= last)
        {
            cancel.ThrowIfCancellationRequested();
            progress?.Layer(layer, config.NumHiddenLayers);
            var layerFile = LayerFile(partialDir, layer);
            if (options.KeepsPartial && File.Exists(layerFile))
            {
                var saved = ReadLayerReports(layerFile, layer);
                reports.AddRange(saved);
                foreach (var r in saved)
                    progress?.Matrix(r);
                resumed++;
                layer++;
                continue;
            }
            // Layers whose Hessians come from the FP model are quantized together (one trellis call per column block
            // for all of them) while their prepared matrices fit the batch budget, at most MaxGroupLayers; sequential
            // Hessians need the previous layer quantized first, so one at a time.
            var group = new List<int> { layer };
            if (options.Hessian != HessianSource.Sequential)
            {
                long budget = BatchBudget(), used = LayerBytes(config);
                while (group.Count < options.MaxGroupLayers && group[^1] + 1 <= last && used + LayerBytes(config) <= budget
                    && !(options.KeepsPartial && File.Exists(LayerFile(partialDir, group[^1] + 1))))
                {
                    group.Add(group[^1] + 1);
                    used += LayerBytes(config);
                }
            }
            HessianCollector? hessians = null;
            DecoderLayer? sequentialLayer = null;
            try
            {
                if (acts is not null)
                {
                    var sw = Stopwatch.StartNew();
                    progress?.Stage($"hessians, layer {group[0] + 1}{(group.Count > 1 ? $"–{group[^1] + 1}" : "")}");
                    acts.AdvanceTo(group[0], partialDir, code);
                    hessians = new HessianCollector(device, group);
                    foreach (int l in group)
                    {
                        if (options.Hessian == HessianSource.Sequential)
                        {
                            // Hessians of the FP layer l from the quantized layers before it; the activations advance
                            // through the quantized layer l after it is done.
                            sequentialLayer = source.Layer(l, options.ForwardPrecision);
                            acts.Observe(sequentialLayer, hessians);
                        }
                        else
                        {
                            using var w = source.Layer(l, options.ForwardPrecision);
                            acts.Advance(w, hessians);
                        }
                    }
                    device.Synchronize();
                    Add("hessians", sw.Elapsed.TotalSeconds);
                }
                reports.AddRange(QuantizeGroup(group, source, hessians, code, lq, partialDir, sequentialLayer));
                if (sequentialLayer is not null)
                {
                    var sw = Stopwatch.StartNew();
                    acts!.Advance(sequentialLayer, null);
                    Add("hessians", sw.Elapsed.TotalSeconds);
                }
            }
            finally
            {
                hessians?.Dispose();
                sequentialLayer?.Dispose();
            }
            layer = group[^1] + 1;
        }
        return (reports, resumed);
    }

    /// <summary>
    /// The calibration activations x (windows × ctx × dim, fp32) on the device and the layer they are at: made from the
    /// embedding on first use, then advanced layer by layer with <see cref="LayerForward"/>.
    /// </summary>
    private sealed class Activations(QuantizePipeline owner, IWeightSource source, CalibrationSet calib) : IDisposable
    {
        private readonly QtipDevice device = owner.Dev;
        private readonly int dim = source.Config.HiddenSize;
        private MemoryBuffer1D<float, Stride1D.Dense>? x;
        private MemoryBuffer1D<float, Stride1D.Dense>? scratch;
        private LayerForward? forward;

        /// <summary>The next layer to run: x holds the input of this layer.</summary>
        public int Layer { get; private set; }

        private int Rows => calib.Context;

        private ArrayView<float> Window(int w) => x!.View.SubView((long)w * Rows * dim, (long)Rows * dim);

        private void Ensure()
        {
            if (x is not null)
                return;
            forward = new LayerForward(device, source.Config, Rows, Math.Max(Rows, 16));
            x = device.Allocate1D<float>((long)calib.Windows.Count * Rows * dim);
            using var table = source.Embedding();
            using var ids = device.Allocate1D<int>(Rows);
            var embed = device.Get<Embedding>();
            for (int w = 0; w < calib.Windows.Count; w++)
            {
                Embedding.CheckIds(calib.Windows[w], source.Config.VocabSize);
                ids.View.CopyFromCPU(calib.Windows[w]);
                embed.Apply(table.View, source.Config.VocabSize, dim, ids.View, Window(w), Rows);
            }
            device.Synchronize();
            Layer = 0;
        }

        /// <summary>Runs x up to the input of <paramref name="layer"/> through the layers before it.</summary>
        public void AdvanceTo(int layer, string partialDir, CodeSetup? code)
        {
            Ensure();
            while (Layer < layer)
            {
                using var w = source.Layer(Layer, owner.Options.ForwardPrecision);
                if (owner.Options.Hessian == HessianSource.Sequential)
                    owner.LoadReconstruction(LayerFile(partialDir, Layer), w, code);
                Advance(w, null);
            }
        }

        /// <summary>x ← layer w(x) for every window, with the taps of <paramref name="observer"/>.</summary>
        public void Advance(DecoderLayer w, IActivationObserver? observer)
        {
            Ensure();
            if (w.Index != Layer)
                throw new InvalidOperationException($"the activations are at layer {Layer}, not {w.Index}");
            for (int i = 0; i < calib.Windows.Count; i++)
            {
                owner.Cancel.ThrowIfCancellationRequested();
                forward!.Run(w, Window(i), Rows, observer);
                if (owner.Dev.Kind != BackendKind.Cpu && (i & 7) == 7)
                    device.Synchronize(); // keeps cancellation responsive (the launches are asynchronous)
            }
            device.Synchronize();
            Layer++;
        }

        /// <summary>Runs every window through w for its taps only: x is left as it is.</summary>
        public void Observe(DecoderLayer w, IActivationObserver observer)
        {
            Ensure();
            scratch ??= device.Allocate1D<float>((long)Rows * dim);
            for (int i = 0; i < calib.Windows.Count; i++)
            {
                owner.Cancel.ThrowIfCancellationRequested();
                Window(i).CopyTo(device.Accelerator.DefaultStream, scratch.View);
                forward!.Run(w, scratch.View, Rows, observer);
                if (owner.Dev.Kind != BackendKind.Cpu && (i & 7) == 7)
                    device.Synchronize();
            }
            device.Synchronize();
        }

        public void Dispose()
        {
            forward?.Dispose();
            x?.Dispose();
            scratch?.Dispose();
        }
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

    /// <summary>Device memory for prepared matrices in one trellis batch: <see cref="QuantizeOptions.BatchBytes"/>, else
    /// a quarter of the device's memory capped at 8 GiB (the CPU: 2 GiB). A matrix larger than this is a batch on its own.</summary>
    private long BatchBudget() =>
        options.BatchBytes > 0 ? options.BatchBytes
        : device.Kind == BackendKind.Cpu ? 2L << 30 : Math.Clamp(device.Accelerator.MemorySize / 4, 1L << 30, 8L << 30);

    /// <summary>
    /// Quantizes the linears of <paramref name="layers"/> in <see cref="Order"/>: each matrix prepared (damping, RHT,
    /// block LDL) as soon as its Hessian is known, the prepared ones run through BlockLDLQ in batches that fit
    /// <see cref="BatchBudget"/> (one trellis call per column block for the whole batch), each Hessian freed once its
    /// last matrix is prepared; each layer's file is written as soon as its seven matrices are finished. With
    /// <paramref name="sequential"/>, its linears are replaced by the reconstructions (for the next layer's Hessians).
    /// </summary>
    private List<MatrixReport> QuantizeGroup(List<int> layers, IWeightSource source, HessianCollector? hessians, CodeSetup? code,
        LinearQuantizer lq, string partialDir, DecoderLayer? sequential)
    {
        var config = source.Config;
        var reports = new List<MatrixReport>();
        var writers = layers.ToDictionary(l => l, _ => new SafeTensorsWriter());
        var layerReports = layers.ToDictionary(l => l, _ => new List<MatrixReport>());
        var pending = layers.ToDictionary(l => l, _ => Order.Length);
        var batch = new List<(int Layer, LinearKind Kind, string Name, PreparedMatrix Prepared, double Seconds)>();
        long batchBytes = 0, budget = BatchBudget();
        string label = layers.Count == 1 ? $"layer {layers[0] + 1}" : $"layers {layers[0] + 1}–{layers[^1] + 1}";
        try
        {
            var jobs = layers.SelectMany(l => Order.Select(k => (Layer: l, Kind: k))).ToList();
            for (int ji = 0; ji < jobs.Count; ji++)
            {
                cancel.ThrowIfCancellationRequested();
                var (layer, kind) = jobs[ji];
                var sw = Stopwatch.StartNew();
                string name = LlamaNames.Linear(layer, kind);
                var (m, n) = LlamaNames.LinearShape(config, kind);
                if (options.Method == QuantizeMethod.Rtn)
                {
                    float[] w;
                    using (var wd = source.Linear(layer, kind))
                        w = wd.GetAsArray1D();
                    var rec = RoundToNearest.Quantize(w, m, n, options.Bits);
                    writers[layer].AddFloat32(name, rec, [m, n]);
                    var r = new MatrixReport(layer, name, m, n, double.NaN, 1, 0, sw.Elapsed.TotalSeconds);
                    Done(r);
                    continue;
                }
                var su = options.NoRht ? Ones(n) : new SplitMix64(SplitMix64.Derive(options.Seed, SignLabel(layer, kind, "SU"))).Signs(n);
                var sv = options.NoRht ? Ones(m) : new SplitMix64(SplitMix64.Derive(options.Seed, SignLabel(layer, kind, "SV"))).Signs(m);
                long bytes = PreparedMatrix.DeviceBytes(m, n);
                if (batch.Count > 0 && batchBytes + bytes > budget)
                {
                    Flush();
                    sw.Restart(); // the flushed batch's time is its own (BlockLDLQ, finish), not this matrix's preparation
                }
                using (var wb = source.Linear(layer, kind))
                using (var identity = hessians is null ? IdentityHessian(n) : null)
                {
                    var h = identity?.View ?? hessians!.Hessian(layer, InputOf(kind));
                    batch.Add((layer, kind, name, lq.Prepare(wb.View, m, n, h, su, sv, code!.CodeRms), sw.Elapsed.TotalSeconds));
                }
                batchBytes += bytes;
                // A Hessian no later matrix of this layer reads is freed now.
                if (hessians is not null && !jobs.Skip(ji + 1).Any(j => j.Layer == layer && InputOf(j.Kind) == InputOf(kind)))
                    hessians.Release(layer, InputOf(kind));
                Add("prepare (damping, RHT, block LDL)", sw.Elapsed.TotalSeconds);
            }
            Flush();
        }
        finally
        {
            foreach (var j in batch)
                j.Prepared.Dispose();
        }
        return reports;

        void Flush()
        {
            if (batch.Count == 0)
                return;
            var acc = device.Accelerator;
            var sw = Stopwatch.StartNew();
            var blockProgress = new BlockProgress(this, label);
            var words = new BlockLdlq(device).RunMany(batch.Select(j => j.Prepared).ToList(), code!.Sequence, blockProgress);
            double ldlqSeconds = sw.Elapsed.TotalSeconds;
            Add("BlockLDLQ (trellis search)", ldlqSeconds);
            for (int i = 0; i < batch.Count; i++)
            {
                cancel.ThrowIfCancellationRequested();
                sw.Restart();
                var (layer, kind, name, p, prepSeconds) = batch[i];
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
                    if (sequential is not null)
                        reconstruction = Reconstruct(m, n, code, stored, ModelDTypeRound(q.Su, config), q.Sv);
                }
                else
                {
                    reconstruction = rec.GetAsArray1D();
                    writer.AddFloat32(name, reconstruction, [m, n]);
                }
                if (sequential is not null && reconstruction is not null)
                    sequential[kind] = DenseLinear.FromHost(device, reconstruction, m, n, WeightPrecision.Float32);
                p.Dispose();
                Add("finish (proxy error, write)", sw.Elapsed.TotalSeconds);
                // A matrix's time: its own preparation and finish plus its share of the joint BlockLDLQ.
                Done(new MatrixReport(layer, name, m, n, q.ProxyError, q.Wscale, q.SigmaUsed,
                    prepSeconds + sw.Elapsed.TotalSeconds + (ldlqSeconds / batch.Count)));
            }
            batch.Clear();
            batchBytes = 0;
        }

        void Done(MatrixReport r)
        {
            layerReports[r.Layer].Add(r);
            progress?.Matrix(r);
            if (--pending[r.Layer] > 0)
                return;
            // The layer is complete: its file now, so an interruption or a full disk loses at most the layers in flight.
            var sw = Stopwatch.StartNew();
            var ordered = layerReports[r.Layer];
            writers[r.Layer].Metadata["qtip_layer_reports"] = JsonSerializer.Serialize(ordered, CompactJson);
            writers[r.Layer].Write(LayerFile(partialDir, r.Layer));
            writers.Remove(r.Layer);
            reports.AddRange(ordered);
            Add("write layer files", sw.Elapsed.TotalSeconds);
        }
    }

    /// <summary>Per column block of a trellis batch: waits for the device (so the report is true), reports, and checks for interruption.</summary>
    private sealed class BlockProgress(QuantizePipeline owner, string label) : IProgress<(int Step, int Steps)>
    {
        private long lastTicks;

        public void Report((int Step, int Steps) value)
        {
            owner.Cancel.ThrowIfCancellationRequested();
            if (owner.Progress is null)
                return;
            long now = Stopwatch.GetTimestamp();
            // At most ~10 reports a second (each waits for the device).
            if (value.Step != value.Steps && Stopwatch.GetElapsedTime(lastTicks, now) < TimeSpan.FromMilliseconds(100))
                return;
            owner.Dev.Synchronize();
            lastTicks = now;
            owner.Progress.Block(label, value.Step, value.Steps);
        }
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

    /// <summary>The reports a completed layer file carries (its metadata).</summary>
    private static List<MatrixReport> ReadLayerReports(string file, int layer)
    {
        using var f = SafeTensorsFile.Open(file);
        return LayerReports.Read(f, layer);
    }

    /// <summary>Replaces the linears of <paramref name="w"/> by the reconstructions stored in its completed layer file (--sequential).</summary>
    private void LoadReconstruction(string file, DecoderLayer w, CodeSetup? code)
    {
        using var f = SafeTensorsFile.Open(file);
        foreach (var kind in Order)
        {
            string name = LlamaNames.Linear(w.Index, kind);
            string prefix = name[..^".weight".Length];
            var (m, n) = (w[kind].OutFeatures, w[kind].InFeatures);
            float[] rec = options.WritesTrellis
                ? Reconstruct(m, n, code!, f.ReadAs<short>(f[prefix + ".trellis"], SafeTensorsDType.I16), f.ReadFloat32(f[prefix + ".SU"]), f.ReadFloat32(f[prefix + ".SV"]))
                : f.ReadFloat32(f[name]);
            w[kind] = DenseLinear.FromHost(device, rec, m, n, WeightPrecision.Float32);
        }
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
            forward = options.ForwardPrecision == WeightPrecision.Float32 ? null : "fp16",
        });
        var path = Path.Combine(partialDir, "run.json");
        if (options.KeepsPartial && File.Exists(path))
        {
            if (File.ReadAllText(path) != fingerprint)
                throw new InvalidInputException($"{partialDir} holds a run with other settings; resume it with the same options or delete it");
            return;
        }
        // Atomically: shards starting together on a shared filesystem may write (the same) fingerprint at once.
        var temp = $"{path}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp";
        File.WriteAllText(temp, fingerprint);
        File.Move(temp, path, overwrite: true);
    }

    private long WriteCheckpoint(string outDir, string partialDir, LlamaCheckpoint checkpoint, LlamaConfig config,
        CalibrationSet? calib, QtipCodeSpec? code, List<MatrixReport> reports)
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
                ["layout"] = code?.Layout == TileLayoutKind.Kernel ? "kernel" : "generic",
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
            if (options.ForwardPrecision != WeightPrecision.Float32 && calib is not null)
                cfg["quantization_config"]!["calibration"]!["forward"] = "fp16";
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
