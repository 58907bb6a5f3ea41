using System.Text.Json;

namespace Qtip.Model.Checkpoint;

/// <summary>
/// The tensors of a checkpoint folder: one <c>model.safetensors</c>, or the shards named by
/// <c>model.safetensors.index.json</c> ("weight_map": tensor → shard file). Every shard is opened (and validated)
/// once; every tensor the index names must be in its shard. Lookup by Hugging Face name.
/// </summary>
public sealed class TensorStore : IDisposable
{
    public const string SingleFile = "model.safetensors";
    public const string IndexFile = "model.safetensors.index.json";

    private readonly Dictionary<string, (SafeTensorsFile File, TensorInfo Info)> byName;
    private readonly List<SafeTensorsFile> files;

    private TensorStore(List<SafeTensorsFile> files, Dictionary<string, (SafeTensorsFile, TensorInfo)> byName)
    {
        this.files = files;
        this.byName = byName;
    }

    public IReadOnlyList<SafeTensorsFile> Files => files;

    /// <summary>Every tensor, in file then header order.</summary>
    public IEnumerable<TensorInfo> Tensors => byName.Values.Select(v => v.Info);

    public bool Contains(string name) => byName.ContainsKey(name);

    public TensorInfo Info(string name) => Lookup(name).Info;

    public SafeTensorsFile FileOf(string name) => Lookup(name).File;

    /// <summary>A tensor as float32 (F32, F16 and BF16 are converted).</summary>
    public float[] ReadFloat32(string name)
    {
        var (f, t) = Lookup(name);
        return f.ReadFloat32(t);
    }

    public void CopyFloat32(string name, Span<float> destination)
    {
        var (f, t) = Lookup(name);
        f.CopyFloat32(t, destination);
    }

    public void CopyFloat16(string name, Span<Half> destination)
    {
        var (f, t) = Lookup(name);
        f.CopyFloat16(t, destination);
    }

    private (SafeTensorsFile File, TensorInfo Info) Lookup(string name) =>
        byName.TryGetValue(name, out var v)
            ? v
            : throw new ModelFormatException(files.Count == 1 ? files[0].Path : "checkpoint", name, "tensor not found");

    /// <summary>Opens the tensors of <paramref name="folder"/>.</summary>
    public static TensorStore Open(string folder)
    {
        folder = Path.GetFullPath(folder);
        var index = Path.Combine(folder, IndexFile);
        var single = Path.Combine(folder, SingleFile);
        if (File.Exists(index))
            return OpenSharded(folder, index);
        if (File.Exists(single))
        {
            var f = SafeTensorsFile.Open(single);
            var map = f.Tensors.ToDictionary(t => t.Name, t => (f, t), StringComparer.Ordinal);
            return new TensorStore([f], map);
        }
        throw new ModelFormatException(folder, null, $"no {SingleFile} and no {IndexFile} in the folder");
    }

    private static TensorStore OpenSharded(string folder, string index)
    {
        Dictionary<string, string> weightMap;
        using (var doc = InputFiles.ParseJson(index))
        {
            try
            {
                weightMap = ReadWeightMap(index, doc);
            }
            catch (InvalidOperationException e)
            {
                throw new ModelFormatException(index, null, $"holds a string that is not valid text: {e.Message}", e);
            }
        }

        var files = new List<SafeTensorsFile>();
        var opened = new Dictionary<string, SafeTensorsFile>(StringComparer.Ordinal);
        try
        {
            var byName = new Dictionary<string, (SafeTensorsFile, TensorInfo)>(StringComparer.Ordinal);
            foreach (var shard in weightMap.Values.Distinct().Order(StringComparer.Ordinal))
            {
                var f = SafeTensorsFile.Open(Path.Combine(folder, shard));
                opened[shard] = f;
                files.Add(f);
            }
            foreach (var (name, shard) in weightMap)
            {
                var f = opened[shard];
                if (!f.Contains(name))
                    throw new ModelFormatException(f.Path, name, $"named in {IndexFile} but missing from this shard");
                byName[name] = (f, f[name]);
            }
            return new TensorStore(files, byName);
        }
        catch
        {
            foreach (var f in files)
                f.Dispose();
            throw;
        }
    }

    private static Dictionary<string, string> ReadWeightMap(string index, JsonDocument doc)
    {
        if (doc.RootElement.ValueKind != JsonValueKind.Object
            || !doc.RootElement.TryGetProperty("weight_map", out var wm) || wm.ValueKind != JsonValueKind.Object)
            throw new ModelFormatException(index, null, "no \"weight_map\" object");
        var weightMap = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var p in wm.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.String)
                throw new ModelFormatException(index, p.Name, "weight_map value is not a file name");
            var shard = p.Value.GetString()!;
            if (shard.Length == 0 || shard is "." or ".." || shard.Any(c => c is '/' or '\\' || char.IsControl(c)))
                throw new ModelFormatException(index, p.Name, $"shard name '{Printable(shard)}' is not a plain file name");
            weightMap[p.Name] = shard;
        }
        if (weightMap.Count == 0)
            throw new ModelFormatException(index, null, "weight_map is empty: the index names no tensors");
        return weightMap;
    }

    /// <summary>A name with control characters (NUL, newlines) shown as \uXXXX escapes.</summary>
    private static string Printable(string s) =>
        string.Concat(s.Select(c => char.IsControl(c) ? $"\\u{(int)c:X4}" : c.ToString()));

    public void Dispose()
    {
        foreach (var f in files)
            f.Dispose();
    }
}
