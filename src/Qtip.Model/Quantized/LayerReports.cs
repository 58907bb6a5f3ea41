using System.Text.Json;
using Qtip.Kernels;
using Qtip.Model.Checkpoint;

namespace Qtip.Model.Quantized;

/// <summary>
/// The per-layer report a finished layer file of a quantize run carries in its safetensors metadata
/// (<c>qtip_layer_reports</c>: the layer's <see cref="MatrixReport"/>s as JSON). <see cref="Read"/> is what
/// <c>--resume</c> trusts, so it checks it: present, valid JSON, one report per linear of the layer.
/// </summary>
public static class LayerReports
{
    public const string MetadataKey = "qtip_layer_reports";

    private static readonly JsonSerializerOptions Json = new()
    {
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>The reports of layer <paramref name="layer"/> stored in <paramref name="file"/>; an
    /// <see cref="InvalidInputException"/> naming the file when they are missing or garbled.</summary>
    public static List<MatrixReport> Read(SafeTensorsFile file, int layer, int linearsPerLayer)
    {
        string redo = $"delete it to redo layer {layer}, or run without --resume";
        if (!file.Metadata.TryGetValue(MetadataKey, out var text))
            throw new InvalidInputException($"{file.Path}: the layer file has no {MetadataKey} metadata; {redo}");
        List<MatrixReport>? reports;
        try
        {
            reports = JsonSerializer.Deserialize<List<MatrixReport>>(text, Json);
        }
        catch (Exception e) when (e is JsonException or NotSupportedException or InvalidOperationException)
        {
            throw new InvalidInputException($"{file.Path}: the layer's {MetadataKey} metadata is not a valid report ({e.Message}); {redo}", e);
        }
        int want = linearsPerLayer;
        if (reports is null || reports.Count != want || reports.Any(r => r is null || r.Layer != layer || string.IsNullOrEmpty(r.Name)))
            throw new InvalidInputException($"{file.Path}: the layer's {MetadataKey} metadata does not hold the {want} reports of layer {layer}; {redo}");
        return reports;
    }
}
