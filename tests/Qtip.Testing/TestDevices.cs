using System.Collections.Concurrent;
using Qtip.Kernels.Runtime;

namespace Qtip.Testing;

/// <summary>One device per backend for the whole test process (opening one and compiling kernels is slow).
/// A backend that cannot be opened is remembered with its reason, and tests on it are skipped saying so.</summary>
public static class TestDevices
{
    private static readonly ConcurrentDictionary<BackendKind, Lazy<(QtipDevice? Device, string? Reason)>> Devices = new();

    public static (QtipDevice? Device, string? Reason) Get(BackendKind kind) =>
        Devices.GetOrAdd(kind, k => new Lazy<(QtipDevice?, string?)>(() => Open(k))).Value;

    private static (QtipDevice?, string?) Open(BackendKind kind)
    {
        try
        {
            return (Backends.Open(kind), null);
        }
        catch (BackendUnavailableException e)
        {
            return (null, e.Message);
        }
    }
}
