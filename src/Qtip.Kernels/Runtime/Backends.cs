using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using ILGPU.Runtime.OpenCL;

namespace Qtip.Kernels.Runtime;

/// <summary>What one backend family looked like when surveyed.</summary>
/// <param name="Backend">The family.</param>
/// <param name="Note">Why the family has no devices at all (driver missing, …), or null.</param>
/// <param name="Devices">Every device seen, usable or not.</param>
public sealed record BackendStatus(BackendKind Backend, string? Note, IReadOnlyList<DeviceReport> Devices);

/// <summary>
/// The one place that creates ILGPU contexts and accelerators. <see cref="Survey"/> lists every device of every
/// backend with the reason it is or is not usable; <see cref="Open"/> opens one, failing with a
/// <see cref="BackendUnavailableException"/> (one line, every device seen) when it cannot.
/// </summary>
public static class Backends
{
    /// <summary>Environment variable that selects the CPU accelerator's simulated shape: "default" (warp 4,
    /// 16 threads per group, one multiprocessor per core), "nvidia" (warp 32, 1024 per group) or "wide" (warp 4, 64 per
    /// group).</summary>
    public const string CpuShapeVariable = "QTIP_CPU_SHAPE";

    /// <summary>Surveys CUDA, OpenCL and the CPU accelerator. Never throws for a missing driver.</summary>
    public static IReadOnlyList<BackendStatus> Survey() =>
        [SurveyCuda(), SurveyOpenCL(), SurveyCpu()];

    /// <summary>Opens a device. <paramref name="deviceIndex"/> picks among the usable devices of the family
    /// (ignored for the CPU). Throws <see cref="BackendUnavailableException"/> with every device seen when the
    /// request cannot be met.</summary>
    public static QtipDevice Open(BackendKind kind = BackendKind.Auto, int deviceIndex = 0)
    {
        NativeLibraries.EnsureRegistered();
        switch (kind)
        {
            case BackendKind.Auto:
                {
                    var cuda = SurveyCuda();
                    if (cuda.Devices.Any(d => d.Usable))
                        return OpenCuda(cuda, deviceIndex);
                    var cl = SurveyOpenCL();
                    if (cl.Devices.Any(d => d.Usable))
                        return OpenOpenCL(cl, deviceIndex);
                    return OpenCpu();
                }
            case BackendKind.Cuda:
                return OpenCuda(SurveyCuda(), deviceIndex);
            case BackendKind.OpenCL:
                return OpenOpenCL(SurveyOpenCL(), deviceIndex);
            case BackendKind.Cpu:
                return OpenCpu();
            default:
                throw new ArgumentOutOfRangeException(nameof(kind), kind, "unknown backend");
        }
    }

    private static Context.Builder Configure(Context.Builder builder) =>
        builder.Optimize(OptimizationLevel.O2).Math(MathMode.Default).EnableAlgorithms().Profiling(); // profiling: device-timed markers (DeviceTimer.QueuedSeconds)

    private static QtipDevice OpenCuda(BackendStatus status, int deviceIndex)
    {
        var usable = status.Devices.Where(d => d.Usable).ToList();
        if (usable.Count == 0 || deviceIndex < 0 || deviceIndex >= usable.Count)
            throw Unavailable(BackendKind.Cuda, status, deviceIndex, usable.Count);
        var context = Context.Create(b => Configure(b.Cuda()));
        try
        {
            var device = context.GetCudaDevices()[usable[deviceIndex].Index];
            var accelerator = device.CreateCudaAccelerator(context);
            return new QtipDevice(BackendKind.Cuda, context, accelerator);
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    private static QtipDevice OpenOpenCL(BackendStatus status, int deviceIndex)
    {
        var usable = status.Devices.Where(d => d.Usable).ToList();
        if (usable.Count == 0 || deviceIndex < 0 || deviceIndex >= usable.Count)
            throw Unavailable(BackendKind.OpenCL, status, deviceIndex, usable.Count);
        var context = Context.Create(b => Configure(b.OpenCL(IsUsable)));
        try
        {
            var devices = context.GetCLDevices();
            if (deviceIndex >= devices.Count)
                throw Unavailable(BackendKind.OpenCL, status, deviceIndex, devices.Count);
            var accelerator = devices[deviceIndex].CreateCLAccelerator(context);
            return new QtipDevice(BackendKind.OpenCL, context, accelerator);
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    private static QtipDevice OpenCpu()
    {
        var cpu = CpuDevice();
        var context = Context.Create(b => Configure(b.CPU(cpu)));
        try
        {
            var accelerator = context.GetCPUDevice(0).CreateCPUAccelerator(context);
            return new QtipDevice(BackendKind.Cpu, context, accelerator);
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    /// <summary>The simulated CPU device. The default shape keeps groups small (fast on 2 cores) and has one
    /// multiprocessor per core: the accelerator runs the groups of a launch on its multiprocessors side by side, one
    /// group at a time each, so with one multiprocessor a grid of one-thread groups (the Viterbi's CPU plan) used one
    /// core (measured on 2 cores: HYB L = 12 Viterbi 137 → 245 sequences/s with two). Kernels size their groups from
    /// <c>MaxNumThreadsPerGroup</c> and never assume a warp width.</summary>
    internal static CPUDevice CpuDevice()
    {
        var shape = Environment.GetEnvironmentVariable(CpuShapeVariable)?.Trim().ToLowerInvariant();
        return shape switch
        {
            "nvidia" => CPUDevice.Nvidia,
            "wide" => new CPUDevice(4, 16, 1),
            _ => new CPUDevice(4, 4, Math.Max(1, Environment.ProcessorCount)),
        };
    }

    private static BackendUnavailableException Unavailable(BackendKind kind, BackendStatus status, int index, int usableCount)
    {
        string detail = status.Note
            ?? (usableCount == 0 ? "no usable device" : $"device index {index} out of range, {usableCount} usable");
        return new BackendUnavailableException(kind, status.Devices, detail);
    }

    private static bool IsUsable(CLDevice device) => device.Capabilities.GenericAddressSpace;

    private static BackendStatus SurveyCuda()
    {
        NativeLibraries.EnsureRegistered();
        try
        {
            var devices = CudaDevice.GetDevices(_ => true);
            if (devices.Length == 0)
                return new BackendStatus(BackendKind.Cuda, "no CUDA driver or no NVIDIA GPU (libcuda.so.1 not found or no device)", []);
            var reports = new List<DeviceReport>();
            for (int i = 0; i < devices.Length; i++)
            {
                var d = (CudaDevice)devices[i];
                string? reason = d.Architecture is null || d.InstructionSet is null
                    ? "compute capability or driver not supported by ILGPU 1.5.3"
                    : null;
                reports.Add(new DeviceReport(BackendKind.Cuda, i, d.Name, d.MemorySize, d.NumMultiprocessors,
                    d.WarpSize, d.MaxNumThreadsPerGroup, d.MaxSharedMemoryPerGroup, reason is null, reason));
            }
            return new BackendStatus(BackendKind.Cuda, null, reports);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or TypeInitializationException or InvalidOperationException)
        {
            return new BackendStatus(BackendKind.Cuda, $"CUDA driver unusable: {FirstLine(e)}", []);
        }
    }

    private static BackendStatus SurveyOpenCL()
    {
        NativeLibraries.EnsureRegistered();
        try
        {
            var devices = CLDevice.GetDevices(_ => true);
            if (devices.Length == 0)
                return new BackendStatus(BackendKind.OpenCL, "no OpenCL platform (libOpenCL.so.1 or ICD not found)", []);
            var reports = new List<DeviceReport>();
            int usableIndex = 0;
            for (int i = 0; i < devices.Length; i++)
            {
                var d = (CLDevice)devices[i];
                string? reason = IsUsable(d)
                    ? null
                    : $"no generic address space (ILGPU needs OpenCL C 2.0+; the device offers OpenCL C {d.CVersion.ToString().Replace("CL", "", StringComparison.Ordinal)})";
                int index = reason is null ? usableIndex++ : i;
                reports.Add(new DeviceReport(BackendKind.OpenCL, index, d.Name, d.MemorySize, d.NumMultiprocessors,
                    d.WarpSize, d.MaxNumThreadsPerGroup, d.MaxSharedMemoryPerGroup, reason is null, reason));
            }
            return new BackendStatus(BackendKind.OpenCL, null, reports);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or TypeInitializationException or InvalidOperationException)
        {
            return new BackendStatus(BackendKind.OpenCL, $"OpenCL runtime unusable: {FirstLine(e)}", []);
        }
    }

    private static BackendStatus SurveyCpu()
    {
        var d = CpuDevice();
        var report = new DeviceReport(BackendKind.Cpu, 0, $"ILGPU CPU accelerator (simulator, {Environment.ProcessorCount} cores)",
            GC.GetGCMemoryInfo().TotalAvailableMemoryBytes, d.NumMultiprocessors, d.WarpSize,
            d.MaxNumThreadsPerGroup, d.MaxSharedMemoryPerGroup, true, null);
        return new BackendStatus(BackendKind.Cpu, null, [report]);
    }

    private static string FirstLine(Exception e)
    {
        var text = (e.InnerException ?? e).Message;
        int nl = text.IndexOf('\n', StringComparison.Ordinal);
        return nl < 0 ? text : text[..nl];
    }
}
