namespace Qtip.Kernels.Runtime;

/// <summary>Which ILGPU accelerator family to run on. <see cref="Auto"/>: CUDA if present, else a usable OpenCL
/// device, else the CPU accelerator (a correct but slow GPU simulator).</summary>
public enum BackendKind
{
    Auto,
    Cuda,
    OpenCL,
    Cpu,
}

public static class BackendKindParser
{
    /// <summary>Parses "cuda", "opencl", "cpu" or "auto" (case-insensitive).</summary>
    public static BackendKind Parse(string text) => text.Trim().ToLowerInvariant() switch
    {
        "auto" => BackendKind.Auto,
        "cuda" => BackendKind.Cuda,
        "opencl" or "cl" => BackendKind.OpenCL,
        "cpu" => BackendKind.Cpu,
        _ => throw new ArgumentException($"unknown backend '{text}': expected cuda, opencl, cpu or auto", nameof(text)),
    };

    public static string Name(this BackendKind kind) => kind switch
    {
        BackendKind.Cuda => "cuda",
        BackendKind.OpenCL => "opencl",
        BackendKind.Cpu => "cpu",
        _ => "auto",
    };
}
