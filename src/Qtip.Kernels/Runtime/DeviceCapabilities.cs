using ILGPU.Runtime;
using ILGPU.Runtime.OpenCL;
using Qtip.Kernels.Llama;

namespace Qtip.Kernels.Runtime;

/// <summary>
/// What kernels may use on one device, decided once when the device opens (<see cref="For"/>) and never changed.
/// Kernel sets ask for the capability they need (<c>device.Capabilities.WarpShuffles</c>) instead of testing the
/// backend kind; the backend kind is only read here and where devices are surveyed and created. Facts behind each
/// answer (ILGPU 1.5.3, measured, see design/ilgpu.md):
/// <list type="bullet">
/// <item>CUDA: everything, native fp16, inline PTX (<c>CudaAsm</c>: tensor-core <c>mma.sync</c>), the grouped style.</item>
/// <item>CPU accelerator: a correct, multithreaded GPU simulator (~2 µs per simulated thread, an OS-thread rendezvous per
/// group and barrier): shuffles and dynamic shared memory work, but kernels pick few one-thread groups, serial loops and
/// the serial style.</item>
/// <item>OpenCL: no warp shuffles (only <c>Warp.Broadcast</c> is emitted), dynamic local memory wrong across
/// work-groups (a static buffer instead, <see cref="StaticSharedFloats"/>), fp16 only with <c>cl_khr_fp16</c>; the
/// device Qtip runs there is pocl's CPU device, so the serial style.</item>
/// </list>
/// </summary>
public sealed record DeviceCapabilities
{
    /// <summary>Warp shuffles (<c>Warp.Shuffle*</c>) compile and run: CUDA and the CPU accelerator, not OpenCL.</summary>
    public required bool WarpShuffles { get; init; }

    /// <summary>Dynamic shared memory (<c>SharedMemoryConfig.RequestDynamic</c>) is correct; where false, kernels take a
    /// static shared buffer (<see cref="StaticSharedFloats"/>, <see cref="LargeStaticSharedFloats"/>) and launch with
    /// <c>SharedMemoryConfig.Empty</c> (OpenCL).</summary>
    public required bool DynamicSharedMemory { get; init; }

    /// <summary>fp16 (<c>ILGPU.Half</c>) data and arithmetic. In ILGPU 1.5.3 only OpenCL reports the capability
    /// (<see cref="CLCapabilityContext.Float16"/>, i.e. <c>cl_khr_fp16</c>); CUDA and the CPU accelerator always have it.
    /// pocl's CPU device (Ubuntu 24.04) lacks it.</summary>
    public required bool Float16 { get; init; }

    /// <summary>The CPU accelerator, a slow simulator: every simulated group and barrier costs an OS-thread rendezvous,
    /// so kernels launch one one-thread group per core, loop serially and plan for their smallest shapes.</summary>
    public required bool Simulator { get; init; }

    /// <summary>Inline PTX (<c>ILGPU.Runtime.Cuda.CudaAsm</c>: tensor-core <c>mma.sync</c>, <c>ldmatrix</c>): CUDA only.</summary>
    public required bool InlinePtx { get; init; }

    /// <summary>The kernel style launchers start with: grouped on a GPU with shuffles, serial on the simulator and on
    /// OpenCL (see <see cref="KernelStyle"/>).</summary>
    public required KernelStyle DefaultStyle { get; init; }

    /// <summary>Warp (sub-group) width: CUDA 32, the CPU accelerator 4 by default, pocl 8. Never assume 32.</summary>
    public required int WarpSize { get; init; }

    /// <summary>Whether group reductions should use warp shuffles by default: where they are native (a GPU with
    /// shuffles), not on the simulator, where each shuffle is a round of thread switches.</summary>
    public bool PreferWarpShuffles => WarpShuffles && !Simulator;

    /// <summary>The capabilities of <paramref name="accelerator"/>, opened for <paramref name="kind"/>.</summary>
    public static DeviceCapabilities For(BackendKind kind, Accelerator accelerator)
    {
        ArgumentNullException.ThrowIfNull(accelerator);
        return For(kind, accelerator.WarpSize, accelerator.Capabilities is not CLCapabilityContext cl || cl.Float16);
    }

    /// <summary>The table itself: <paramref name="openClFloat16"/> is whether an OpenCL device has <c>cl_khr_fp16</c>
    /// (ignored elsewhere).</summary>
    internal static DeviceCapabilities For(BackendKind kind, int warpSize, bool openClFloat16) => kind switch
    {
        BackendKind.Cuda => new()
        {
            WarpShuffles = true,
            DynamicSharedMemory = true,
            Float16 = true,
            Simulator = false,
            InlinePtx = true,
            DefaultStyle = KernelStyle.Grouped,
            WarpSize = warpSize,
        },
        BackendKind.Cpu => new()
        {
            WarpShuffles = true,
            DynamicSharedMemory = true,
            Float16 = true,
            Simulator = true,
            InlinePtx = false,
            DefaultStyle = KernelStyle.Serial,
            WarpSize = warpSize,
        },
        BackendKind.OpenCL => new()
        {
            WarpShuffles = false,
            DynamicSharedMemory = false,
            Float16 = openClFloat16,
            Simulator = false,
            InlinePtx = false,
            DefaultStyle = KernelStyle.Serial,
            WarpSize = warpSize,
        },
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "capabilities exist for an opened backend (cuda, opencl, cpu), not auto"),
    };
}
