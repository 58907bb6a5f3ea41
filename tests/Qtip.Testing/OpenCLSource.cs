using System.Reflection;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.OpenCL;
using ILGPU.Runtime;
using ILGPU.Runtime.OpenCL;

namespace Qtip.Testing;

/// <summary>
/// Compiles kernels to OpenCL C with ILGPU's OpenCL backend (OpenCL C 2.0, the given capabilities) without a device,
/// so CI checks what an OpenCL device would load. A kernel whose first parameter is an Index type is implicitly grouped.
/// A generated source that uses sub-group functions counts as a failure (the devices we accept lack them).
/// </summary>
public static class OpenCLSource
{
    /// <summary>Every capability: fp16, fp64, 64-bit atomics, sub-groups, the generic address space.</summary>
    public static CLCapabilityContext AllCapabilities() => new(true, true, true, true, true);

    /// <summary>(kernels compiled, one line per failure naming the kernel, its type arguments and the innermost error).</summary>
    public static (int Compiled, List<string> Failures) CompileAll(IEnumerable<MethodInfo> kernels, CLCapabilityContext capabilities)
    {
        using var context = Context.Create(b => b.Optimize(OptimizationLevel.O2).EnableAlgorithms());
        var backend = new CLBackend(context, capabilities, CLDeviceVendor.Other, CLCVersion.CL20);
        var failures = new List<string>();
        int compiled = 0;
        foreach (var kernel in kernels)
        {
            var parameters = kernel.GetParameters();
            bool implicitlyGrouped = parameters.Length > 0 && parameters[0].ParameterType.Name.StartsWith("Index", StringComparison.Ordinal);
            var entry = implicitlyGrouped ? EntryPointDescription.FromImplicitlyGroupedKernel(kernel) : EntryPointDescription.FromExplicitlyGroupedKernel(kernel);
            string name = $"{kernel.DeclaringType!.Name}.{kernel.Name}<{string.Join(", ", kernel.GetGenericArguments().Select(a => a.Name))}>";
            try
            {
                var result = (CLCompiledKernel)backend.Compile(entry, new KernelSpecialization(1024, null));
                if (result.Source.Contains("sub_group", StringComparison.Ordinal))
                    failures.Add($"{name}: uses sub-group functions");
                compiled++;
            }
            catch (Exception e)
            {
                var inner = e;
                while (inner.InnerException is not null)
                    inner = inner.InnerException;
                failures.Add($"{name}: {inner.GetType().Name}: {inner.Message.Split('\n')[0]}");
            }
        }
        return (compiled, failures);
    }
}
