using ILGPU;

namespace Qtip.Kernels.Runtime;

/// <summary>
/// Where a kernel's shared-memory float buffer comes from, as a type parameter. CUDA and the CPU use dynamic
/// shared memory sized per launch (<see cref="DynamicSharedFloats"/>). On OpenCL, ILGPU 1.5.3's dynamic local
/// memory gave wrong results as soon as a launch had more than one work-group (pocl, measured on the GPU machine,
/// 2026-11-22: single-group launches passed, multi-group launches failed), so OpenCL kernels get a fixed static
/// allocation of <see cref="StaticSharedFloats.Capacity"/> floats instead.
/// </summary>
public interface ISharedFloats
{
    ArrayView<float> Get();
}

/// <summary>Dynamic shared memory (size given by the launch's <c>SharedMemoryConfig</c>).</summary>
public readonly struct DynamicSharedFloats : ISharedFloats
{
    public ArrayView<float> Get() => SharedMemory.GetDynamic<float>();
}

/// <summary>A static 36 KiB shared allocation (for OpenCL); launches must not need more.</summary>
public readonly struct StaticSharedFloats : ISharedFloats
{
    public const int Capacity = 9216;

    public ArrayView<float> Get() => SharedMemory.Allocate<float>(Capacity);
}
