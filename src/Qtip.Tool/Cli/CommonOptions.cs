using System.CommandLine;
using Qtip.Kernels.Runtime;

namespace Qtip.Tool.Cli;

/// <summary>Options shared by many commands.</summary>
public static class CommonOptions
{
    public static Option<string> Backend() => new("--backend")
    {
        Description = "Accelerator: cuda, opencl, cpu or auto (CUDA, else a usable OpenCL device, else the CPU simulator).",
        DefaultValueFactory = _ => "auto",
        HelpName = "cuda|opencl|cpu|auto",
    };

    public static Option<int> Device() => new("--device")
    {
        Description = "Index among the usable devices of the chosen backend.",
        DefaultValueFactory = _ => 0,
    };

    public static Option<FileInfo?> Json() => new("--json")
    {
        Description = "Also write the results as JSON to this file; - writes the JSON to stdout (the tables, progress and any generated text then go to stderr).",
        HelpName = "FILE",
    };

    public static BackendKind ParseBackend(string text)
    {
        try
        {
            return BackendKindParser.Parse(text);
        }
        catch (ArgumentException e)
        {
            throw UsageException.From(e);
        }
    }
}

/// <summary>A command-line value that parsed but makes no sense; exit code 1.</summary>
public sealed class UsageException : Exception
{
    /// <summary>A usage error from a library's <see cref="ArgumentException"/>: its message without the
    /// " (Parameter 'Name')" suffix .NET appends (the message already names the option).</summary>
    public static UsageException From(ArgumentException e) => new(CleanMessage(e), e);

    /// <summary>The message of <paramref name="e"/> without .NET's " (Parameter '…')" suffix and, for an
    /// <see cref="ArgumentOutOfRangeException"/>, without the "Actual value was …" line.</summary>
    public static string CleanMessage(Exception e)
    {
        var text = e.Message;
        if (e is ArgumentException { ParamName: { } name })
        {
            text = text.Replace($" (Parameter '{name}')", "", StringComparison.Ordinal);
            if (e is ArgumentOutOfRangeException { ActualValue: { } actual })
                text = text.Replace($"{Environment.NewLine}Actual value was {actual}.", $" (got {actual})", StringComparison.Ordinal);
        }
        return text;
    }

    public UsageException() { }

    public UsageException(string message) : base(message) { }

    public UsageException(string message, Exception inner) : base(message, inner) { }
}
