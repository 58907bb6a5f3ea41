namespace Qtip.Kernels.Runtime;

/// <summary>One device seen while surveying the backends: what it is and whether Qtip can use it.</summary>
/// <param name="Backend">Its backend family.</param>
/// <param name="Index">Index within that backend (the n of <c>--device n</c>).</param>
/// <param name="Name">Device name as the driver reports it.</param>
/// <param name="MemoryBytes">Device memory in bytes (host memory for the CPU accelerator).</param>
/// <param name="ComputeUnits">Multiprocessors / compute units.</param>
/// <param name="WarpSize">Warp (sub-group) width; 0 when the driver does not say before an accelerator exists.</param>
/// <param name="MaxGroupSize">Largest thread group.</param>
/// <param name="SharedMemoryPerGroup">Shared memory per group in bytes.</param>
/// <param name="Usable">Whether Qtip can run its kernels there.</param>
/// <param name="Reason">Why not, when <paramref name="Usable"/> is false.</param>
public sealed record DeviceReport(
    BackendKind Backend,
    int Index,
    string Name,
    long MemoryBytes,
    int ComputeUnits,
    int WarpSize,
    int MaxGroupSize,
    int SharedMemoryPerGroup,
    bool Usable,
    string? Reason)
{
    public string Describe() => Usable
        ? $"{Backend.Name()} device {Index} '{Name}': usable"
        : $"{Backend.Name()} device {Index} '{Name}': {Reason}";
}
