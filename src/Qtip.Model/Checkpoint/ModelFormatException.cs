using Qtip.Kernels;

namespace Qtip.Model.Checkpoint;

/// <summary>
/// A checkpoint file that Qtip cannot use: missing, truncated, a malformed header, a tensor whose dtype, shape or
/// byte count does not add up, an unsupported configuration. The message names the file and, where there is one,
/// the tensor and its shape. A subclass of <see cref="InvalidInputException"/>, so the CLI exits with code 3.
/// </summary>
public sealed class ModelFormatException : InvalidInputException
{
    public ModelFormatException() { }

    public ModelFormatException(string message) : base(message) { }

    public ModelFormatException(string message, Exception inner) : base(message, inner) { }

    public ModelFormatException(string file, string? tensor, string problem, Exception? inner = null)
        : base(Compose(file, tensor, problem), inner!)
    {
        File = file;
        Tensor = tensor;
    }

    /// <summary>The file at fault.</summary>
    public string? File { get; }

    /// <summary>The tensor at fault, if any.</summary>
    public string? Tensor { get; }

    private static string Compose(string file, string? tensor, string problem) =>
        tensor is null ? $"{file}: {problem}" : $"{file}: tensor '{tensor}': {problem}";
}
