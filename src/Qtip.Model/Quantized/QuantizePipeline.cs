using System.Diagnostics;
using System.Text.Json;
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
    private readonly Dictionary<string, double> stages = [];

    private QtipDevice Dev => device;

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
            var store = new LayerStore(partialDir);
            store.WriteOrCheckFingerprint(Fingerprint(config), options.KeepsPartial);
            var (reports, resumed) = QuantizeLayers(new CheckpointWeights(device, checkpoint), calib, store, first, last);
            if (options.Layers is not null)
            {
                // A shard: its layer files are the result; --assemble writes the checkpoint once every shard is done.
                stages["total"] = total.Elapsed.TotalSeconds;
                return Summarize(partialDir, reports, 0, calib, resumed, config);
            }

            sw.Restart();
            progress?.Stage("write");
            long modelBytes = WriteCheckpoint(outDir, store, checkpoint, config, calib);
            stages["write"] = sw.Elapsed.TotalSeconds;
            stages["total"] = total.Elapsed.TotalSeconds;
            var report = Summarize(outDir, reports, modelBytes, calib, resumed, config);
            File.WriteAllText(Path.Combine(outDir, "qtip-report.json"), report.ToJson(options).ToJsonString(QuantizeReport.JsonOptions));
            Directory.Delete(partialDir, recursive: true);
            LayerStore.RemoveStaleTemps(outDir);
            return report;
        }
        catch (OperationCanceledException) when (cancel.IsCancellationRequested)
        {
            // Keep every completed layer (and run.json): --resume continues from here, whether or not this run had it.
            throw new QuantizeInterruptedException(new LayerStore(partialDir).CompletedPrefix(config.NumHiddenLayers), config.NumHiddenLayers, partialDir);
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
            var (reports, _) = QuantizeLayers(new RandomWeights(device, config, options.Seed + 1), calib, new LayerStore(workDir), 0, config.NumHiddenLayers - 1);
            stages["total"] = total.Elapsed.TotalSeconds;
            return Summarize(workDir, reports, 0, calib, 0, config);
        }
        catch (OperationCanceledException) when (cancel.IsCancellationRequested)
        {
            throw new QuantizeInterruptedException(new LayerStore(workDir).CompletedPrefix(config.NumHiddenLayers), config.NumHiddenLayers, workDir);
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

    /// <summary>
    /// The layer loop: layers first..last, each resumed from its file or quantized (in groups that share the trellis
    /// batches) and saved. The calibration activations are advanced lazily: only when a layer needs Hessians are they
    /// run up to it (through the FP layers, or with --sequential the quantized reconstructions in the layer files).
    /// </summary>
    private (List<MatrixReport> Reports, int Resumed) QuantizeLayers(IWeightSource source, CalibrationSet? calib, LayerStore store, int first, int last)
    {
        var config = source.Config;
        using var code = options.Method == QuantizeMethod.Qtip ? CodeSetup.Create(device, options, config) : null;
        var lq = new LinearQuantizer(device, new LinearQuantizeOptions(options.SigmaReg, options.EffectiveScaleOverride, Rotate: !options.NoRht));
        var reports = new List<MatrixReport>();
        int resumed = 0;
        Action<DecoderLayer>? reconstruct = options.Hessian == HessianSource.Sequential ? w => LoadReconstruction(store, w, code, config) : null;
        using var acts = calib is not null && options.Hessian != HessianSource.Identity
            ? new CalibrationActivations(device, source, calib, options.ForwardPrecision, reconstruct, cancel)
            : null;
        int layer = first;
        while (layer <= last)
        {
            cancel.ThrowIfCancellationRequested();
            progress?.Layer(layer, config.NumHiddenLayers);
            if (options.KeepsPartial && store.Has(layer))
            {
                var saved = store.Reports(layer, config.Family.Linears.Count);
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
                    && !(options.KeepsPartial && store.Has(group[^1] + 1)))
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
                    acts.AdvanceTo(group[0]);
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
                reports.AddRange(QuantizeGroup(group, source, hessians, code, lq, store, sequentialLayer));
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

    private void Add(string stage, double seconds) => stages[stage] = stages.GetValueOrDefault(stage) + seconds;

    /// <summary>Storage bits of one matrix as written: trellis + SU + SV + LUT for QTIP, or the RTN grid.</summary>
    private long StorageBits(int m, int n, LlamaConfig config)
    {
        if (options.Method == QuantizeMethod.Rtn)
            return RoundToNearest.StorageBits(m, n, options.Bits);
        return QtipFormat.StorageBits(m, n, options.Bits, options.Code.TableLength(options.L), config.TorchDtype);
    }

    private void CheckShapes(LlamaConfig c)
    {
        foreach (var kind in QuantizedLinears.All(c))
        {
            var (m, n) = QuantizedLinears.Shape(c, kind);
            if (m % 16 != 0 || n % 16 != 0)
                throw new InvalidInputException($"{QuantizedLinears.Name(c, 0, kind)} is {m}×{n}: QTIP needs both dimensions to be multiples of 16");
            if (options.WritesTrellis && (!HadamardMatrices.IsSupported(m) || !HadamardMatrices.IsSupported(n)))
                throw new InvalidInputException($"{QuantizedLinears.Name(c, 0, kind)} is {m}×{n}: no Hadamard transform of size {(!HadamardMatrices.IsSupported(m) ? m : n)} (sizes must be 2^p or K·2^p with K in {{{string.Join(", ", HadamardMatrices.Orders)}}})");
            if (options.WritesTrellis && options.Code.DefaultLayout(options.L) == TileLayoutKind.Kernel && (m % 32 != 0 || n % 32 != 0))
                throw new InvalidInputException($"{QuantizedLinears.Name(c, 0, kind)} is {m}×{n}: the {options.Code.Name.ToUpperInvariant()} kernel layout needs multiples of 32");
        }
    }

    private string SignLabel(int layer, LinearKind kind, string which) => $"layer {layer} {kind} {which}";

    /// <summary>Device bytes one layer's seven prepared matrices hold while they wait for BlockLDLQ.</summary>
    private static long LayerBytes(LlamaConfig config) =>
        QuantizedLinears.All(config).Sum(k => { var (m, n) = QuantizedLinears.Shape(config, k); return PreparedMatrix.DeviceBytes(m, n); });

    /// <summary>Device memory for prepared matrices in one trellis batch: <see cref="QuantizeOptions.BatchBytes"/>, else
    /// a quarter of the device's memory capped at 8 GiB (the CPU: 2 GiB). A matrix larger than this is a batch on its own.</summary>
    private long BatchBudget() =>
        options.BatchBytes > 0 ? options.BatchBytes
        : device.Capabilities.Simulator ? 2L << 30 : Math.Clamp(device.Accelerator.MemorySize / 4, 1L << 30, 8L << 30);

    /// <summary>
    /// Quantizes the linears of <paramref name="layers"/> in the family's order (<see cref="QuantizedLinears.Order"/>): each matrix prepared (damping, RHT,
    /// block LDL) as soon as its Hessian is known, the prepared ones run through BlockLDLQ in batches that fit
    /// <see cref="BatchBudget"/> (one trellis call per column block for the whole batch), each Hessian freed once its
    /// last matrix is prepared; each layer's file is written as soon as its seven matrices are finished. With
    /// <paramref name="sequential"/>, its linears are replaced by the reconstructions (for the next layer's Hessians).
    /// </summary>
    private List<MatrixReport> QuantizeGroup(List<int> layers, IWeightSource source, HessianCollector? hessians, CodeSetup? code,
        LinearQuantizer lq, LayerStore store, DecoderLayer? sequential)
    {
        var config = source.Config;
        var reports = new List<MatrixReport>();
        var writers = layers.ToDictionary(l => l, _ => new SafeTensorsWriter());
        var layerReports = layers.ToDictionary(l => l, _ => new List<MatrixReport>());
        var order = QuantizedLinears.Order(config);
        var pending = layers.ToDictionary(l => l, _ => order.Count);
        var batch = new List<(int Layer, LinearKind Kind, string Name, PreparedMatrix Prepared, double Seconds)>();
        long batchBytes = 0, budget = BatchBudget();
        string label = layers.Count == 1 ? $"layer {layers[0] + 1}" : $"layers {layers[0] + 1}–{layers[^1] + 1}";
        try
        {
            var jobs = layers.SelectMany(l => order.Select(k => (Layer: l, Kind: k))).ToList();
            for (int ji = 0; ji < jobs.Count; ji++)
            {
                cancel.ThrowIfCancellationRequested();
                var (layer, kind) = jobs[ji];
                var sw = Stopwatch.StartNew();
                string name = QuantizedLinears.Name(config, layer, kind);
                var (m, n) = QuantizedLinears.Shape(config, kind);
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
                    var h = identity?.View ?? hessians!.Hessian(layer, QuantizedLinears.InputOf(config, kind));
                    batch.Add((layer, kind, name, lq.Prepare(wb.View, m, n, h, su, sv, code!.CodeRms), sw.Elapsed.TotalSeconds));
                }
                batchBytes += bytes;
                // A Hessian no later matrix of this layer reads is freed now.
                var input = QuantizedLinears.InputOf(config, kind);
                if (hessians is not null && !jobs.Skip(ji + 1).Any(j => j.Layer == layer && QuantizedLinears.InputOf(config, j.Kind) == input))
                    hessians.Release(layer, input);
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
                string prefix = QuantizedLinears.Prefix(config, layer, kind);
                var writer = writers[layer];
                using var rec = device.Allocate1D<float>((long)m * n);
                var q = lq.Finish(p, words[i], options.WritesTrellis ? null : rec.View);
                float[]? reconstruction = null;
                if (options.WritesTrellis)
                {
                    var stored = code.ToStoredLayout(q.Words, m, n);
                    QtipFormat.AddLinear(writer, prefix, m, n, options.Bits, stored, q.Su, q.Sv, code.Lut, code.Spec.Code.TableRows(options.L), config.TorchDtype);
                    if (sequential is not null)
                        reconstruction = Reconstruct(m, n, code, stored, QtipFormat.RoundToValueDType(q.Su, config.TorchDtype), q.Sv);
                }
                else
                {
                    reconstruction = rec.GetAsArray1D();
                    writer.AddFloat32(name, reconstruction, [m, n]);
                }
                if (sequential is not null && reconstruction is not null)
                    sequential.ReplaceProduct(kind, DenseLinear.FromHost(device, reconstruction, m, n, WeightPrecision.Float32)); // its bias stays
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
            store.Save(r.Layer, writers[r.Layer], ordered);
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
        return linear.DecodeWeight();
    }

    /// <summary>Replaces the linears of <paramref name="w"/> by the reconstructions stored in its completed layer file (--sequential).</summary>
    private void LoadReconstruction(LayerStore store, DecoderLayer w, CodeSetup? code, LlamaConfig config)
    {
        using var f = store.Open(w.Index);
        foreach (var kind in QuantizedLinears.Order(config))
        {
            var (m, n) = (w[kind].OutFeatures, w[kind].InFeatures);
            float[] rec;
            if (options.WritesTrellis)
            {
                var stored = QtipFormat.ReadLinear(f, QuantizedLinears.Prefix(config, w.Index, kind), hasTable: false);
                rec = Reconstruct(m, n, code!, stored.Trellis, stored.Su, stored.Sv);
            }
            else
            {
                rec = f.ReadFloat32(f[QuantizedLinears.Name(config, w.Index, kind)]);
            }
            w.ReplaceProduct(kind, DenseLinear.FromHost(device, rec, m, n, WeightPrecision.Float32)); // its bias stays
        }
    }

    /// <summary>The settings that decide a layer file's bytes: a resumed run must have the same.</summary>
    private string Fingerprint(LlamaConfig config) => JsonSerializer.Serialize(new
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

    /// <summary>The output folder (<see cref="QtipFormat.WriteFolder"/>) from the source checkpoint and every layer file.</summary>
    private long WriteCheckpoint(string outDir, LayerStore store, LlamaCheckpoint checkpoint, LlamaConfig config, CalibrationSet? calib)
    {
        var layout = options.WritesTrellis ? options.Code.DefaultLayout(options.L) : (TileLayoutKind?)null;
        var quip = options.WritesTrellis ? QtipFormat.QuipParamsJson(QuipParams.For(options.Code, options.L, options.Bits)) : null;
        var layerFiles = Enumerable.Range(0, config.NumHiddenLayers).Select(store.FileOf).ToList();
        return QtipFormat.WriteFolder(outDir, options.ModelDir, checkpoint.Tensors, QuantizedLinears.AllNames(config), layerFiles,
            quip, QtipFormat.QuantizationConfigJson(options, calib, layout));
    }
}
