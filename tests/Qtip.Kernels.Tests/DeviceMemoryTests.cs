using Qtip.Kernels.Runtime;
using Xunit;

namespace Qtip.Kernels.Tests;

/// <summary>The device-memory accountant: live bytes follow allocations and disposals, the peak is the most live at once.</summary>
public sealed class DeviceMemoryTests
{
    [Fact]
    public void LiveAndPeakBytes_FollowAllocationsAndDisposals()
    {
        // A device of its own: tests of other classes may allocate on the shared one meanwhile.
        using var device = Backends.Open(BackendKind.Cpu, 0);
        var memory = device.Memory;
        memory.ResetPeak();
        long before = memory.LiveBytes;
        var a = device.Allocate1D<float>(1000);
        var b = device.Allocate1D<double>(500);
        Assert.Equal(before + 8000, memory.LiveBytes);
        a.Dispose();
        Assert.Equal(before + 4000, memory.LiveBytes);
        var c = device.Allocate1D(new int[250]);
        Assert.Equal(before + 5000, memory.LiveBytes);
        Assert.Equal(before + 8000, memory.PeakBytes);
        b.Dispose();
        c.Dispose();
        Assert.Equal(before, memory.LiveBytes);
        memory.ResetPeak();
        Assert.Equal(before, memory.PeakBytes);
    }
}
