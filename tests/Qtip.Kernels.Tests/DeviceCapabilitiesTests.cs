using Qtip.Kernels.Llama;
using Qtip.Kernels.Runtime;
using Qtip.Testing;
using Xunit;

namespace Qtip.Kernels.Tests;

/// <summary>The capability table: the decisions kernels took from the backend kind before, now asked by capability.</summary>
public sealed class DeviceCapabilitiesTests
{
    [Theory]
    [InlineData(BackendKind.Cuda, true, true, false, true, KernelStyle.Grouped, true)]
    [InlineData(BackendKind.Cpu, true, true, true, false, KernelStyle.Serial, false)]
    [InlineData(BackendKind.OpenCL, false, false, false, false, KernelStyle.Serial, false)]
    public void For_GivesEachBackendItsFacts(BackendKind kind, bool shuffles, bool dynamicShared, bool simulator, bool inlinePtx,
        KernelStyle style, bool preferShuffles)
    {
        var c = DeviceCapabilities.For(kind, warpSize: 8, openClFloat16: true);
        Assert.Equal(shuffles, c.WarpShuffles);
        Assert.Equal(dynamicShared, c.DynamicSharedMemory);
        Assert.Equal(simulator, c.Simulator);
        Assert.Equal(inlinePtx, c.InlinePtx);
        Assert.Equal(style, c.DefaultStyle);
        Assert.Equal(preferShuffles, c.PreferWarpShuffles);
        Assert.Equal(8, c.WarpSize);
    }

    [Fact]
    public void Float16_FollowsTheOpenClExtension_AndIsAlwaysOnElsewhere()
    {
        Assert.False(DeviceCapabilities.For(BackendKind.OpenCL, 8, openClFloat16: false).Float16);
        Assert.True(DeviceCapabilities.For(BackendKind.OpenCL, 8, openClFloat16: true).Float16);
        Assert.True(DeviceCapabilities.For(BackendKind.Cuda, 32, openClFloat16: false).Float16);
        Assert.True(DeviceCapabilities.For(BackendKind.Cpu, 4, openClFloat16: false).Float16);
    }

    [Fact]
    public void For_Auto_Throws() =>
        Assert.Throws<ArgumentOutOfRangeException>(() => DeviceCapabilities.For(BackendKind.Auto, 32, true));

    [Fact]
    public void CpuDevice_IsTheSimulator_WithTheSerialDefaultStyle()
    {
        var (device, reason) = TestDevices.Get(BackendKind.Cpu);
        Assert.True(device is not null, reason);
        var c = device.Capabilities;
        Assert.Equal(DeviceCapabilities.For(BackendKind.Cpu, device.Accelerator.WarpSize, true), c);
        Assert.Same(c, device.Capabilities);
        Assert.Equal(device.Accelerator.WarpSize, device.WarpSize);
        // The style kernel sets start with (not read from a shared kernel set: the grouped-style test classes switch those).
        Assert.Equal(KernelStyle.Serial, Check.DefaultStyle(device));
        Assert.Equal(1, device.LoopGroupSize(256));
    }
}
