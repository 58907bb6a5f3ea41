using Qtip.Kernels.Runtime;
using Xunit;

namespace Qtip.Kernels.Tests;

public sealed class BackendsTests
{
    [Fact]
    public void Survey_ListsCpuAsUsable()
    {
        var survey = Backends.Survey();
        Assert.Equal([BackendKind.Cuda, BackendKind.OpenCL, BackendKind.Cpu], survey.Select(s => s.Backend));
        var cpu = Assert.Single(survey.Single(s => s.Backend == BackendKind.Cpu).Devices);
        Assert.True(cpu.Usable);
    }

    [Fact]
    public void Survey_GivesAReasonForEveryUnusableDevice()
    {
        foreach (var status in Backends.Survey())
        {
            Assert.True(status.Devices.Count > 0 || status.Note is not null, $"{status.Backend}: no devices and no note");
            foreach (var d in status.Devices.Where(d => !d.Usable))
                Assert.False(string.IsNullOrWhiteSpace(d.Reason));
        }
    }

    [Fact]
    public void Open_UnavailableBackend_ListsWhatItSaw()
    {
        var survey = Backends.Survey();
        var cl = survey.Single(s => s.Backend == BackendKind.OpenCL);
        if (cl.Devices.Any(d => d.Usable))
            return; // a machine with a usable OpenCL device cannot show this failure
        var e = Assert.Throws<BackendUnavailableException>(() => Backends.Open(BackendKind.OpenCL));
        Assert.StartsWith("backend 'opencl' is not available", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', e.Message);
        foreach (var d in cl.Devices)
            Assert.Contains(d.Name, e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("cuda", BackendKind.Cuda)]
    [InlineData("OpenCL", BackendKind.OpenCL)]
    [InlineData("cpu", BackendKind.Cpu)]
    [InlineData("auto", BackendKind.Auto)]
    public void Parse_KnownNames(string text, BackendKind kind) => Assert.Equal(kind, BackendKindParser.Parse(text));

    [Fact]
    public void Parse_Unknown_Throws() =>
        Assert.Contains("vulkan", Assert.Throws<ArgumentException>(() => BackendKindParser.Parse("vulkan")).Message, StringComparison.Ordinal);

    [Fact]
    public void Dispose_AfterAZeroLengthBuffer_DoesNotThrow()
    {
        // Issue 11: in ILGPU 1.5.3 allocating a zero-length buffer throws NullReferenceException half-way, leaving a
        // broken child object behind, and Accelerator.Dispose then throws again; inside a `using` that second exception
        // replaced the first. QtipDevice.Dispose must not throw (the loaders refuse zero-length tensors before this).
        var device = Backends.Open(BackendKind.Cpu, 0);
        Assert.Throws<NullReferenceException>(() => ILGPU.Runtime.ArrayViewExtensions.Allocate1D(device.Accelerator, System.Array.Empty<short>()));
        device.Dispose();
    }
}
