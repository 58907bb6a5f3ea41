namespace Qtip.Kernels;

/// <summary>
/// Input that Qtip cannot use: a malformed or truncated file, a tensor of the wrong shape, an unsupported
/// configuration. The message names the file, the tensor and the shape where they exist; the CLI prints it as one
/// line and exits with code 3.
/// </summary>
public class InvalidInputException : Exception
{
    public InvalidInputException() { }

    public InvalidInputException(string message) : base(message) { }

    public InvalidInputException(string message, Exception inner) : base(message, inner) { }
}
