using System.Text.Json;
using System.Text.Json.Serialization;
using Spectre.Console;

namespace Qtip.Tool.Cli;

/// <summary>Console output: Spectre tables on a terminal, plain aligned text when stdout is redirected. Under
/// <c>--json -</c> the JSON report is the only thing on stdout: tables and lines go to stderr, as plain text.</summary>
public static class Output
{
    /// <summary>The <c>--json</c> value that means standard output.</summary>
    public const string StdoutName = "-";

    public static bool Plain => Console.IsOutputRedirected || CliConsole.JsonOnStdout;

    /// <summary>True when <paramref name="file"/> is <c>--json -</c> (standard output).</summary>
    public static bool IsStdout(FileInfo? file) => file is not null && file.ToString() == StdoutName;

    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>Prints a table: header row, then rows, as a Spectre table or as aligned plain text.</summary>
    public static void Table(string? title, IReadOnlyList<string> headers, IEnumerable<IReadOnlyList<string>> rows)
    {
        var data = rows.ToList();
        if (Plain)
        {
            var w = CliConsole.Human;
            if (title is not null)
                w.WriteLine(title);
            var widths = headers.Select(h => h.Length).ToArray();
            foreach (var r in data)
            {
                for (int i = 0; i < widths.Length && i < r.Count; i++)
                    widths[i] = Math.Max(widths[i], r[i].Length);
            }
            w.WriteLine(string.Join("  ", headers.Select((h, i) => h.PadRight(widths[i]))).TrimEnd());
            foreach (var r in data)
                w.WriteLine(string.Join("  ", r.Select((c, i) => c.PadRight(widths[i]))).TrimEnd());
            return;
        }
        var table = new Table().RoundedBorder();
        if (title is not null)
            table.Title(Markup.Escape(title));
        foreach (var h in headers)
            table.AddColumn(Markup.Escape(h));
        foreach (var r in data)
            table.AddRow(r.Select(c => new Text(c)).ToArray());
        AnsiConsole.Write(table);
    }

    public static void Line(string text) => CliConsole.Human.WriteLine(text);

    /// <summary>Writes <paramref name="value"/> as indented snake_case JSON to <paramref name="file"/>, if given
    /// (<c>-</c>: to stdout).</summary>
    public static void WriteJson<T>(FileInfo? file, T value)
    {
        if (file is null)
            return;
        if (IsStdout(file))
        {
            CliConsole.Out.WriteLine(JsonSerializer.Serialize(value, JsonOptions));
            CliConsole.Out.Flush();
            return;
        }
        file.Directory?.Create();
        File.WriteAllText(file.FullName, JsonSerializer.Serialize(value, JsonOptions));
    }

    /// <summary>Reads a report this tool wrote with <see cref="WriteJson"/> (snake_case JSON); an
    /// <see cref="Qtip.Kernels.InvalidInputException"/> naming the file when it is missing or not such a report.</summary>
    public static T ReadJson<T>(string path)
    {
        Qtip.Model.Checkpoint.InputFiles.RequireRegular(path, "report");
        try
        {
            return JsonSerializer.Deserialize<T>(File.ReadAllBytes(path), JsonOptions)
                ?? throw new Qtip.Kernels.InvalidInputException($"{path}: empty report");
        }
        catch (Exception e) when (e is JsonException or NotSupportedException)
        {
            throw new Qtip.Kernels.InvalidInputException($"{path}: not a {typeof(T).Name} report of qtip ({e.Message})", e);
        }
        catch (FileNotFoundException)
        {
            throw new Qtip.Kernels.InvalidInputException($"{path}: file not found");
        }
    }

    /// <summary>Refuses a --json target that exists but is not a regular file (writing to a FIFO would block; to a
    /// directory, fail after all the work). Returns <see cref="ExitCodes.Ok"/>.</summary>
    public static int CheckJsonTarget(FileInfo file)
    {
        if (IsStdout(file))
            return ExitCodes.Ok;
        if (Directory.Exists(file.FullName))
            throw new Qtip.Kernels.InvalidInputException($"--json {file.FullName} is a directory");
        if (file.Exists || file.LinkTarget is not null)
            Qtip.Model.Checkpoint.InputFiles.RequireRegular(file.FullName, "--json");
        return ExitCodes.Ok;
    }

    public static string Bytes(long bytes) => bytes switch
    {
        >= 1L << 30 => $"{bytes / (double)(1L << 30):F1} GiB",
        >= 1L << 20 => $"{bytes / (double)(1L << 20):F1} MiB",
        >= 1L << 10 => $"{bytes / (double)(1L << 10):F1} KiB",
        _ => $"{bytes} B",
    };
}
