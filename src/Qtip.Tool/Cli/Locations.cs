using Qtip.Kernels;

namespace Qtip.Tool.Cli;

/// <summary>
/// Where the defaults and models come from. The bundled llama-nano and the corpus texts (<c>models/llama-nano</c>,
/// <c>data/corpus/*.txt</c>) are found, in order: relative to the working directory, in the Qtip repository above it
/// (a checkout), and next to the tool (the installed tool package carries them). A model given as a Hugging Face
/// name (<c>org/name</c>) that is not a folder is looked up in the local Hugging Face cache.
/// </summary>
public static class Locations
{
    public const string NanoModel = "models/llama-nano";
    public const string ValidText = "data/corpus/valid.txt";
    public const string CalibText = "data/corpus/calib.txt";

    /// <summary>One line for --help: where defaults come from.</summary>
    public const string DefaultsHelp =
        "Defaults (models/llama-nano, data/corpus/*.txt) are taken from the working directory, else the Qtip repository above it, else the copies installed with the tool.";

    /// <summary>The folder the tool runs from (where the tool package puts models/ and data/).</summary>
    public static string ToolDirectory => AppContext.BaseDirectory;

    /// <summary>
    /// <paramref name="path"/> as given when it exists; when it is the built-in default (<paramref name="defaultPath"/>)
    /// and not here, the repository's or the tool's copy. A path the user gave is never replaced.
    /// </summary>
    public static string ResolveDefault(string path, string defaultPath)
    {
        if (File.Exists(path) || Directory.Exists(path) || !SamePath(path, defaultPath))
            return path;
        return FindBundled(defaultPath) ?? path;
    }

    /// <summary>The bundled file or folder <paramref name="relative"/> (repository above the working directory, then next to
    /// the tool), or null.</summary>
    public static string? FindBundled(string relative)
    {
        for (var dir = new DirectoryInfo(Environment.CurrentDirectory); dir is not null; dir = dir.Parent)
        {
            var p = Path.Combine(dir.FullName, relative);
            if ((File.Exists(p) || Directory.Exists(p)) && File.Exists(Path.Combine(dir.FullName, "models", "llama-nano", "config.json")))
                return p;
        }
        var tool = Path.Combine(ToolDirectory, relative);
        return File.Exists(tool) || Directory.Exists(tool) ? tool : null;
    }

    /// <summary>
    /// The model folder for <paramref name="model"/>: the folder itself; the bundled nano for the default; or, for a
    /// Hugging Face name (<c>org/name</c>) that is not a folder, its snapshot in the local cache
    /// (<c>$HF_HUB_CACHE</c>, else <c>$HF_HOME/hub</c>, else <c>~/.cache/huggingface/hub</c>:
    /// <c>models--org--name/snapshots/&lt;rev&gt;/</c>, the revision of <c>refs/main</c> or else the newest). Otherwise an
    /// error saying that Qtip reads local folders.
    /// </summary>
    public static string ResolveModel(string model, Action<string>? note = null)
    {
        if (Directory.Exists(model))
            return model;
        var bundled = ResolveDefault(model, NanoModel);
        if (Directory.Exists(bundled))
            return bundled;
        if (!LooksLikeHubName(model))
            return model; // the checkpoint loader says "model folder not found"
        var snapshot = FindInHubCache(model);
        if (snapshot is not null)
        {
            note?.Invoke($"{model}: not a folder; using the Hugging Face cache snapshot {snapshot}");
            return snapshot;
        }
        throw new InvalidInputException(
            $"{model}: not a folder; Qtip reads local folders (e.g. from `huggingface-cli download {model} --local-dir DIR`), " +
            $"and it is not in the Hugging Face cache ({HubCache()})");
    }

    /// <summary>org/name: exactly one '/', no leading '.', '/' or '~', and no backslash.</summary>
    public static bool LooksLikeHubName(string s)
    {
        var parts = s.Split('/');
        return parts.Length == 2 && parts.All(p => p.Length > 0 && p != "." && p != "..") && s[0] is not ('.' or '~') && !s.Contains('\\', StringComparison.Ordinal);
    }

    /// <summary>The hub cache folder: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub.</summary>
    public static string HubCache()
    {
        if (Environment.GetEnvironmentVariable("HF_HUB_CACHE") is { Length: > 0 } hub)
            return hub;
        if (Environment.GetEnvironmentVariable("HF_HOME") is { Length: > 0 } home)
            return Path.Combine(home, "hub");
        return Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "huggingface", "hub");
    }

    /// <summary>The snapshot folder of <paramref name="name"/> in the hub cache, or null.</summary>
    public static string? FindInHubCache(string name)
    {
        var repo = Path.Combine(HubCache(), "models--" + name.Replace("/", "--", StringComparison.Ordinal));
        var snapshots = Path.Combine(repo, "snapshots");
        if (!Directory.Exists(snapshots))
            return null;
        var refMain = Path.Combine(repo, "refs", "main");
        if (File.Exists(refMain))
        {
            var rev = File.ReadAllText(refMain).Trim();
            var dir = Path.Combine(snapshots, rev);
            if (rev.Length > 0 && Directory.Exists(dir))
                return dir;
        }
        return new DirectoryInfo(snapshots).GetDirectories().OrderByDescending(d => d.LastWriteTimeUtc).FirstOrDefault()?.FullName;
    }

    /// <summary>Prints a note about where something was found (stdout, with the other progress lines; stderr holds
    /// only the one line of a failure).</summary>
    public static void Note(string text) => Output.Line($"qtip: note: {text}");

    private static bool SamePath(string a, string b) =>
        string.Equals(a.Replace('\\', '/').TrimEnd('/'), b, StringComparison.Ordinal);
}
