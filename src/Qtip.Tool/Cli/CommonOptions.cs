using System.CommandLine;
using Qtip.Kernels.Runtime;

namespace Qtip.Tool.Cli;

/// <summary>Options shared by many commands.</summary>
public static class CommonOptions
{
    public static Option<string> Backend() => new("--backend", "-b")
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
        Description = "Also write the results as JSON to this file.",
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
            throw new UsageException(e.Message);
        }
    }
}

/// <summary>A command-line value that parsed but makes no sense; exit code 1.</summary>
public sealed class UsageException : Exception
{
    public UsageException() { }

    public UsageException(string message) : base(message) { }

    public UsageException(string message, Exception inner) : base(message, inner) { }
}
