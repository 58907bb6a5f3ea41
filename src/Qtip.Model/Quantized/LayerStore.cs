using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization;
using Qtip.Kernels;
using Qtip.Model.Checkpoint;

namespace Qtip.Model.Quantized;

/// <summary>
/// The state a quantize run keeps next to its output, in <c>&lt;out&gt;.partial</c>: one safetensors file per finished
/// decoder layer (<c>layer-NNN.safetensors</c>: the layer's stored tensors, and its <see cref="MatrixReport"/>s in the
/// <see cref="LayerReports.MetadataKey"/> metadata) and <c>run.json</c>, the fingerprint of the settings that made them.
/// A layer file is written only once the layer is complete, so <c>--resume</c>, shards (<c>--layers</c>) and
/// <c>--assemble</c> trust any layer file whose fingerprint matches.
/// </summary>
internal sealed class LayerStore(string dir)
{
    /// <summary>Compact JSON for the per-layer metadata (NaN proxy errors of RTN layers allowed).</summary>
    private static readonly JsonSerializerOptions CompactJson = new()
    {
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public string Dir => dir;

    public string FileOf(int layer) => Path.Combine(dir, $"layer-{layer:D3}.safetensors");

    public bool Has(int layer) => File.Exists(FileOf(layer));

    /// <summary>Layers 0, 1, … whose files are complete, counted up to the first missing one.</summary>
    public int CompletedPrefix(int layers) => Enumerable.Range(0, layers).TakeWhile(Has).Count();

    public SafeTensorsFile Open(int layer) => SafeTensorsFile.Open(FileOf(layer));

    /// <summary>The reports a completed layer file carries (its metadata), checked.</summary>
    public List<MatrixReport> Reports(int layer, int linearsPerLayer)
    {
        using var f = Open(layer);
        return LayerReports.Read(f, layer, linearsPerLayer);
    }

    /// <summary>Writes a completed layer: its tensors and, as metadata, its reports.</summary>
    public void Save(int layer, SafeTensorsWriter writer, IReadOnlyList<MatrixReport> reports)
    {
        writer.Metadata[LayerReports.MetadataKey] = JsonSerializer.Serialize(reports, CompactJson);
        writer.Write(FileOf(layer));
    }

    /// <summary>
    /// Writes <c>run.json</c>, or, when <paramref name="keep"/> (the layer files are to be reused) and one is there,
    /// refuses a run whose settings differ from the one that wrote the layer files.
    /// </summary>
    public void WriteOrCheckFingerprint(string fingerprint, bool keep)
    {
        var path = Path.Combine(dir, "run.json");
        if (keep && File.Exists(path))
        {
            if (File.ReadAllText(path) != fingerprint)
                throw new InvalidInputException($"{dir} holds a run with other settings; resume it with the same options or delete it");
            return;
        }
        // Atomically: shards starting together on a shared filesystem may write (the same) fingerprint at once.
        var temp = $"{path}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp";
        File.WriteAllText(temp, fingerprint);
        File.Move(temp, path, overwrite: true);
    }

    /// <summary>Deletes <c>&lt;out&gt;.tmp-&lt;pid&gt;</c> directories of runs whose process is gone (a SIGKILL during the final rename).</summary>
    public static void RemoveStaleTemps(string outDir)
    {
        var parent = Path.GetDirectoryName(outDir);
        if (parent is null || !Directory.Exists(parent))
            return;
        foreach (var d in Directory.EnumerateDirectories(parent, Path.GetFileName(outDir) + ".tmp-*"))
        {
            if (!int.TryParse(d[(outDir.Length + ".tmp-".Length)..], out int pid) || pid == Environment.ProcessId)
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
                Directory.Delete(d, recursive: true);
        }
    }
}
