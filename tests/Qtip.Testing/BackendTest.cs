using Qtip.Kernels.Runtime;
using Xunit;

namespace Qtip.Testing;

/// <summary>
/// Base of every kernel test class. A test class is written once against <see cref="Device"/>; one sealed
/// subclass per backend runs it (CPU always; CUDA and OpenCL subclasses carry <c>[Trait("Category", "Gpu")]</c>
/// so CI filters them out). A backend without a usable device skips its tests and says why.
/// </summary>
public abstract class BackendTest(BackendKind backend)
{
    public BackendKind Backend { get; } = backend;

    /// <summary>The device for this class's backend; skips the calling test when there is none.</summary>
    protected QtipDevice Device
    {
        get
        {
            var (device, reason) = TestDevices.Get(Backend);
            if (device is null)
                Assert.Skip($"backend {Backend.Name()} unavailable: {reason}");
            return device!;
        }
    }

    /// <summary>True on the slow CPU simulator, where tests use their smallest sizes.</summary>
    protected bool IsCpu => Backend == BackendKind.Cpu;
}
