namespace Qtip.Kernels.Runtime;

/// <summary>The requested backend has no usable device. The message is one line that names every device seen
/// and why each was rejected; the CLI maps this exception to exit code 2.</summary>
public sealed class BackendUnavailableException : Exception
{
    public BackendUnavailableException(BackendKind requested, IReadOnlyList<DeviceReport> seen, string? detail = null)
        : base(BuildMessage(requested, seen, detail))
    {
        Requested = requested;
        Seen = seen;
    }

    public BackendUnavailableException() : this(BackendKind.Auto, []) { }

    public BackendUnavailableException(string message) : base(message) { Seen = []; }

    public BackendUnavailableException(string message, Exception inner) : base(message, inner) { Seen = []; }

    public BackendKind Requested { get; }

    public IReadOnlyList<DeviceReport> Seen { get; }

    private static string BuildMessage(BackendKind requested, IReadOnlyList<DeviceReport> seen, string? detail)
    {
        var devices = seen.Count == 0
            ? "no devices seen"
            : string.Join("; ", seen.Select(d => d.Describe()));
        var extra = detail is null ? "" : $" ({detail})";
        return $"backend '{requested.Name()}' is not available{extra}: {devices}";
    }
}
