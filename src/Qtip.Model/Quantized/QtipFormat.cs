using System.Text.Json;
using System.Text.Json.Nodes;
using Qtip.Kernels;
using Qtip.Kernels.Trellis;
using Qtip.Model.Checkpoint;
using Qtip.Model.Llama;

namespace Qtip.Model.Quantized;

/// <summary>The tensors of one quantized linear as stored (trellis words in the stored layout, SU, SV, the code's table).</summary>
public sealed record StoredLinear(short[] Trellis, float[] Su, float[] Sv, float[] Table, TensorInfo TrellisInfo);

/// <summary>
/// The QTIP checkpoint format (docs/FORMAT.md, spec §6), written by the quantize pipeline and read by
/// <see cref="QtipLinear.FromCheckpoint"/>: an HF folder whose config.json carries <c>quip_params</c> (the reference's
/// block, parsed by <see cref="QuipParams"/>) and <c>quantization_config</c> (ours), and whose safetensors hold, per
/// quantized linear <c>P</c> (the weight name without <c>.weight</c>):
/// <code>
/// P.trellis  I16                 [(m/16)(n/16), 16K]   stored layout (kernel layout for HYB at L = 16)
/// P.SU       storage dtype       [n]                   input signs
/// P.SV       F32                 [m]                   output signs · Wscale
/// P.tlut     table dtype         [rows, V]             codes with a table only
/// P.rcp      I64 0, P.tp_rank I64 8   []               the reference's tensor-parallel fields
/// </code>
/// <para>The one storage dtype rule: the model's dtype (<see cref="ValueDType"/>: config.json <c>torch_dtype</c> float16 →
/// F16, float32 → F32, anything else → BF16) is the precision of every value the reference keeps in the model dtype — SU,
/// and the code's table, which the quantizer rounds to it before the search (spec §12.1); SV is F32; the table is always
/// stored as F16, the dtype the reference reads (bf16-rounded HYB values are exact in F16; a float32 model's table is
/// rounded to F16 before the search, so the stored table is the searched one and the reference reads the same values).
/// The quantizer searches with exactly the stored table (<see cref="RoundTable"/>), so a reload decodes what it chose.</para>
/// </summary>
public static class QtipFormat
{
    public const string TrellisSuffix = ".trellis";
    public const string SuSuffix = ".SU";
    public const string SvSuffix = ".SV";
    public const string TableSuffix = ".tlut";
    public const string ToolVersion = "qtip 0.1.0";

    /// <summary>The dtype of values kept in the model's precision (SU; the table's values): see the class remarks.</summary>
    public static SafeTensorsDType ValueDType(string? torchDtype) => torchDtype switch
    {
        "float16" => SafeTensorsDType.F16,
        "float32" => SafeTensorsDType.F32,
        _ => SafeTensorsDType.BF16,
    };

    /// <summary>The dtype of the <c>tlut</c> tensor: F16 for every model (the reference stores and reads the table as fp16
    /// [spec §6]; an F32 table would be rounded by its loader, away from the values searched with).</summary>
    public const SafeTensorsDType TableDType = SafeTensorsDType.F16;

    /// <summary><paramref name="values"/> rounded to <see cref="ValueDType"/> (what a reload reads back for SU).</summary>
    public static float[] RoundToValueDType(float[] values, string? torchDtype) => RoundTo(values, ValueDType(torchDtype));

    /// <summary>
    /// The code's table as the quantizer searches with it and the checkpoint stores it: rounded to the model's precision
    /// (<see cref="ValueDType"/>), then to <see cref="TableDType"/> (exact for the HYB LUT's bf16 values), so a reload
    /// decodes exactly the values the search chose from.
    /// </summary>
    public static float[] RoundTable(float[] table, string? torchDtype) =>
        RoundTo(RoundTo(table, ValueDType(torchDtype)), TableDType);

    private static float[] RoundTo(float[] values, SafeTensorsDType dtype) => dtype switch
    {
        SafeTensorsDType.BF16 => values.Select(v => BFloat16.ToSingle(BFloat16.FromSingle(v))).ToArray(),
        SafeTensorsDType.F16 => values.Select(v => (float)(Half)v).ToArray(),
        _ => values,
    };

    /// <summary>Storage bits of one quantized linear: trellis + SU + SV + the table.</summary>
    public static long StorageBits(int m, int n, int k, int tableLength, string? torchDtype)
    {
        long trellis = (long)m * n * k;
        long su = (long)n * (ValueDType(torchDtype) == SafeTensorsDType.F32 ? 32 : 16);
        long sv = 32L * m;
        long table = tableLength * 16L; // TableDType
        return trellis + su + sv + table;
    }

    /// <summary>The tensors a reader requires of a quantized m×n linear of a <paramref name="quip"/> checkpoint: suffix, dtype
    /// (null: any float dtype) and shape.</summary>
    public static IEnumerable<(string Suffix, SafeTensorsDType? DType, long[] Shape)> LinearTensors(QuipParams quip, int m, int n)
    {
        yield return (TrellisSuffix, SafeTensorsDType.I16, [(long)(m / 16) * (n / 16), 16 * quip.K]);
        yield return (SuSuffix, null, [n]);
        yield return (SvSuffix, null, [m]);
        if (quip.TableRows > 0)
            yield return (TableSuffix, null, [quip.TableRows, quip.V]);
    }

    /// <summary>Adds the tensors of the quantized linear <paramref name="prefix"/> (m×n, K bits) to <paramref name="writer"/>.</summary>
    public static void AddLinear(SafeTensorsWriter writer, string prefix, int m, int n, int k, short[] storedWords, float[] su, float[] sv,
        float[]? table, int tableRows, string? torchDtype)
    {
        writer.AddInt16(prefix + TrellisSuffix, storedWords, [(long)(m / 16) * (n / 16), 16 * k]);
        writer.AddFloat32(prefix + SuSuffix, su, [n], ValueDType(torchDtype));
        writer.AddFloat32(prefix + SvSuffix, sv, [m]);
        if (table is not null)
            writer.AddFloat32(prefix + TableSuffix, table, [tableRows, table.Length / tableRows], TableDType);
        writer.AddInt64(prefix + ".rcp", [0L], []);
        writer.AddInt64(prefix + ".tp_rank", [8L], []);
    }

    /// <summary>The stored tensors of the quantized linear <paramref name="prefix"/> in a checkpoint (finite values checked).</summary>
    public static StoredLinear ReadLinear(TensorStore store, string prefix, bool hasTable) =>
        ReadLinear(name => (store.FileOf(name), store.Info(name)), prefix, hasTable);

    /// <summary>The stored tensors of the quantized linear <paramref name="prefix"/> in one safetensors file (a layer file).</summary>
    public static StoredLinear ReadLinear(SafeTensorsFile file, string prefix, bool hasTable) =>
        ReadLinear(name => (file, file[name]), prefix, hasTable);

    private static StoredLinear ReadLinear(Func<string, (SafeTensorsFile File, TensorInfo Info)> find, string prefix, bool hasTable)
    {
        var (tf, trellisInfo) = find(prefix + TrellisSuffix);
        var words = tf.ReadAs<short>(trellisInfo, SafeTensorsDType.I16);
        float[] Floats(string suffix)
        {
            var (f, info) = find(prefix + suffix);
            var values = f.ReadFloat32(info);
            FiniteWeights.Check(values, info);
            return values;
        }
        var table = hasTable ? Floats(TableSuffix) : [];
        var su = Floats(SuSuffix);
        var sv = Floats(SvSuffix);
        return new StoredLinear(words, su, sv, table, trellisInfo);
    }

    /// <summary>config.json's <c>quip_params</c> block for a trellis-coded checkpoint (the reference's keys).</summary>
    public static JsonObject QuipParamsJson(QuipParams p) => new()
    {
        ["codebook"] = "bitshift",
        ["codebook_version"] = 0,
        ["L"] = p.L,
        ["K"] = p.K,
        ["V"] = p.V,
        ["tlut_bits"] = p.TlutBits,
        ["decode_mode"] = p.DecodeMode,
        ["td_x"] = p.TdX,
        ["td_y"] = p.TdY,
        ["split_for_tp"] = false,
        ["skip_list"] = null,
    };

    /// <summary>config.json's <c>quantization_config</c> block: how the checkpoint was made.</summary>
    public static JsonObject QuantizationConfigJson(QuantizeOptions options, CalibrationSet? calib, TileLayoutKind? layout)
    {
        var qc = new JsonObject
        {
            ["quant_method"] = options.Method == QuantizeMethod.Rtn ? "rtn" : options.NoRht ? "qtip-no-rht-dense" : "qtip",
            ["code"] = options.Method == QuantizeMethod.Rtn ? null : options.CodeName,
            ["K"] = options.Bits,
            ["L"] = options.Method == QuantizeMethod.Rtn ? null : options.L,
            ["V"] = options.V,
            ["Q"] = options.Code.TableBits(options.L) is > 0 and var q ? q : null,
            ["layout"] = layout == TileLayoutKind.Kernel ? "kernel" : "generic",
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
            qc["calibration"]!["forward"] = "fp16";
        return qc;
    }

    /// <summary>
    /// Writes the quantized checkpoint folder atomically (a <c>.tmp-&lt;pid&gt;</c> sibling renamed at the end):
    /// model.safetensors = the source checkpoint's tensors except <paramref name="quantizedNames"/>, in name order, then
    /// every layer file's tensors in layer order; config.json = the source's with <paramref name="quipParams"/> (when
    /// trellis-coded) and <paramref name="quantizationConfig"/>; the tokenizer and generation files copied. Returns the
    /// size of model.safetensors.
    /// </summary>
    public static long WriteFolder(string outDir, string modelDir, TensorStore source, IReadOnlySet<string> quantizedNames,
        IReadOnlyList<string> layerFiles, JsonObject? quipParams, JsonObject quantizationConfig)
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
            foreach (var t in source.Tensors.OrderBy(t => t.Name, StringComparer.Ordinal))
            {
                if (!quantizedNames.Contains(t.Name))
                    writer.AddFrom(source.FileOf(t.Name), t.Name);
            }
            var opened = new List<SafeTensorsFile>();
            try
            {
                foreach (var path in layerFiles)
                {
                    var f = SafeTensorsFile.Open(path);
                    opened.Add(f);
                    foreach (var t in f.Tensors.OrderBy(t => t.Name, StringComparer.Ordinal))
                        writer.AddFrom(f, t.Name);
                }
                writer.Write(Path.Combine(temp, "model.safetensors"));
            }
            finally
            {
                foreach (var f in opened)
                    f.Dispose();
            }

            var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(modelDir, "config.json")))!.AsObject();
            if (quipParams is not null)
                cfg["quip_params"] = quipParams;
            cfg["quantization_config"] = quantizationConfig;
            File.WriteAllText(Path.Combine(temp, "config.json"), cfg.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            foreach (var extra in new[] { "generation_config.json", "tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json" })
            {
                var src = Path.Combine(modelDir, extra);
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
}
