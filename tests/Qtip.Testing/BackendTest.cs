using Qtip.Kernels.Llama;
using Qtip.Kernels.Runtime;
using Xunit;

namespace Qtip.Testing;

/// <summary>
/// Base of every kernel test class. A test class is written once, abstract, against <see cref="Device"/>; the
/// per-backend test classes generator (tests/Qtip.Testing.Generators) writes one sealed class per backend that runs it
/// (<c>XTestsCpu</c>; <c>XTestsCuda</c> and <c>XTestsOpenCL</c> with <c>[Trait("Category", "Gpu")]</c>, which CI filters
/// out; <see cref="RunOnAttribute"/> restricts the backends). A backend without a usable device skips its tests and says
/// why. Tests ask <see cref="Capabilities"/> what the device can do, not <see cref="Backend"/>.
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

    /// <summary>Skips the calling test when <paramref name="needed"/> and the device has no fp16 (an OpenCL device without
    /// cl_khr_fp16, e.g. pocl's CPU device): fp16 variants refuse to load there.</summary>
    protected void SkipWithoutFloat16(bool needed = true)
    {
        if (needed && !Capabilities.Float16)
            Assert.Skip($"fp16 case: {Device} has no fp16 (ILGPU Float16 capability)");
    }

    /// <summary>What the device of this class's backend may use (<see cref="QtipDevice.Capabilities"/>); skips the calling test
    /// when there is no device.</summary>
    protected DeviceCapabilities Capabilities => Device.Capabilities;

    /// <summary>Skips the calling test when it forces the grouped style on a device without warp shuffles (OpenCL: ILGPU
    /// 1.5.3 cannot emit them there), which runs the serial style.</summary>
    protected void SkipUnsupportedStyle(KernelStyle style)
    {
        if (style == KernelStyle.Grouped && !Capabilities.WarpShuffles)
            Assert.Skip($"grouped-style case: {Device} has no warp shuffles (ILGPU 1.5.3's OpenCL backend cannot emit them); it runs the serial style");
    }

    /// <summary>True on the slow CPU simulator (<see cref="DeviceCapabilities.Simulator"/>), where tests use their smallest
    /// sizes.</summary>
    protected bool IsCpu => Capabilities.Simulator;
}
