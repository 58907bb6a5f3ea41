using ILGPU;
using ILGPU.Runtime;

namespace Qtip.Kernels.Runtime;

/// <summary>Typed kernel loading for explicitly grouped kernels: <c>device.LoadKernel(MyKernel)</c> returns the launcher
/// <c>Action&lt;AcceleratorStream, KernelConfig, …&gt;</c>. Goes through <see cref="KernelLoader"/> (OpenCL barrier fix-up).</summary>
public sealed partial class QtipDevice
{
    public Action<AcceleratorStream, KernelConfig, T1> LoadKernel<T1>(Action<T1> kernel)
        where T1 : struct =>
        KernelLoader.Load<Action<AcceleratorStream, KernelConfig, T1>>(Accelerator, kernel);

    public Action<AcceleratorStream, KernelConfig, T1, T2> LoadKernel<T1, T2>(Action<T1, T2> kernel)
        where T1 : struct where T2 : struct =>
        KernelLoader.Load<Action<AcceleratorStream, KernelConfig, T1, T2>>(Accelerator, kernel);

    public Action<AcceleratorStream, KernelConfig, T1, T2, T3> LoadKernel<T1, T2, T3>(Action<T1, T2, T3> kernel)
        where T1 : struct where T2 : struct where T3 : struct =>
        KernelLoader.Load<Action<AcceleratorStream, KernelConfig, T1, T2, T3>>(Accelerator, kernel);

    public Action<AcceleratorStream, KernelConfig, T1, T2, T3, T4> LoadKernel<T1, T2, T3, T4>(Action<T1, T2, T3, T4> kernel)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct =>
        KernelLoader.Load<Action<AcceleratorStream, KernelConfig, T1, T2, T3, T4>>(Accelerator, kernel);

    public Action<AcceleratorStream, KernelConfig, T1, T2, T3, T4, T5> LoadKernel<T1, T2, T3, T4, T5>(Action<T1, T2, T3, T4, T5> kernel)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct =>
        KernelLoader.Load<Action<AcceleratorStream, KernelConfig, T1, T2, T3, T4, T5>>(Accelerator, kernel);

    public Action<AcceleratorStream, KernelConfig, T1, T2, T3, T4, T5, T6> LoadKernel<T1, T2, T3, T4, T5, T6>(Action<T1, T2, T3, T4, T5, T6> kernel)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct =>
        KernelLoader.Load<Action<AcceleratorStream, KernelConfig, T1, T2, T3, T4, T5, T6>>(Accelerator, kernel);

    public Action<AcceleratorStream, KernelConfig, T1, T2, T3, T4, T5, T6, T7> LoadKernel<T1, T2, T3, T4, T5, T6, T7>(Action<T1, T2, T3, T4, T5, T6, T7> kernel)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct =>
        KernelLoader.Load<Action<AcceleratorStream, KernelConfig, T1, T2, T3, T4, T5, T6, T7>>(Accelerator, kernel);

    public Action<AcceleratorStream, KernelConfig, T1, T2, T3, T4, T5, T6, T7, T8> LoadKernel<T1, T2, T3, T4, T5, T6, T7, T8>(Action<T1, T2, T3, T4, T5, T6, T7, T8> kernel)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct where T8 : struct =>
        KernelLoader.Load<Action<AcceleratorStream, KernelConfig, T1, T2, T3, T4, T5, T6, T7, T8>>(Accelerator, kernel);

    public Action<AcceleratorStream, KernelConfig, T1, T2, T3, T4, T5, T6, T7, T8, T9> LoadKernel<T1, T2, T3, T4, T5, T6, T7, T8, T9>(Action<T1, T2, T3, T4, T5, T6, T7, T8, T9> kernel)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct where T8 : struct where T9 : struct =>
        KernelLoader.Load<Action<AcceleratorStream, KernelConfig, T1, T2, T3, T4, T5, T6, T7, T8, T9>>(Accelerator, kernel);

    public Action<AcceleratorStream, KernelConfig, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10> LoadKernel<T1, T2, T3, T4, T5, T6, T7, T8, T9, T10>(Action<T1, T2, T3, T4, T5, T6, T7, T8, T9, T10> kernel)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct where T8 : struct where T9 : struct where T10 : struct =>
        KernelLoader.Load<Action<AcceleratorStream, KernelConfig, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10>>(Accelerator, kernel);

    public Action<AcceleratorStream, KernelConfig, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11> LoadKernel<T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11>(Action<T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11> kernel)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct where T8 : struct where T9 : struct where T10 : struct where T11 : struct =>
        KernelLoader.Load<Action<AcceleratorStream, KernelConfig, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11>>(Accelerator, kernel);

    public Action<AcceleratorStream, KernelConfig, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12> LoadKernel<T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12>(Action<T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12> kernel)
        where T1 : struct where T2 : struct where T3 : struct where T4 : struct where T5 : struct where T6 : struct where T7 : struct where T8 : struct where T9 : struct where T10 : struct where T11 : struct where T12 : struct =>
        KernelLoader.Load<Action<AcceleratorStream, KernelConfig, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12>>(Accelerator, kernel);
}
