using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

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
    internal static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>Bits per quantized-linear weight, counting the trellis, SU, SV and the LUT.</summary>
    public double BitsPerWeight => QuantizedWeights == 0 ? 0 : (double)QuantizedBits / QuantizedWeights;

    public double MeanProxyError => Matrices.Count == 0 ? double.NaN : Matrices.Average(m => m.ProxyError);

    /// <summary>The run's report as written to <c>qtip-report.json</c> (snake_case); the CLI's <c>--json</c> adds to it.</summary>
    public JsonObject ToJson(QuantizeOptions options) =>
        JsonSerializer.SerializeToNode(new
        {
            out_dir = OutDir,
            method = options.Method.ToString().ToLowerInvariant(),
            code = options.CodeName,
            bits = options.Bits,
            l = options.L,
            hessian = options.Hessian.ToString(),
            no_rht = options.NoRht,
            seed = options.Seed,
            bits_per_weight = BitsPerWeight,
            quantized_weights = QuantizedWeights,
            model_bytes = ModelBytes,
            mean_proxy_error = MeanProxyError,
            calibration_tokens = CalibrationTokens,
            layers_resumed = LayersResumed,
            stage_seconds = StageSeconds,
            matrices = Matrices,
        }, JsonOptions)!.AsObject();
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
