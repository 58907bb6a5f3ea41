using System.Reflection;
using ILGPU;
using ILGPU.Backends;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.OpenCL;
using ILGPU.Runtime;
using ILGPU.Runtime.OpenCL;

namespace Qtip.Kernels.Runtime;

/// <summary>
/// Loads an explicitly grouped kernel and returns its typed launcher
/// (<c>Action&lt;AcceleratorStream, KernelConfig, …&gt;</c>). Every Qtip kernel set loads through here.
///
/// OpenCL fix-up: ILGPU 1.5.3 lowers <c>Group.Barrier()</c> to <c>work_group_barrier(CLK_GLOBAL_MEM_FENCE)</c>,
/// which by the OpenCL memory model does not order local (shared) memory; pocl then returns wrong results for
/// kernels that exchange data through shared memory. On OpenCL we compile the kernel, add
/// <c>CLK_LOCAL_MEM_FENCE</c> to every barrier in the generated source, and load the patched program.
/// </summary>
public static class KernelLoader
{
    private const string GlobalFence = "CLK_GLOBAL_MEM_FENCE";
    private const string BothFences = "CLK_GLOBAL_MEM_FENCE | CLK_LOCAL_MEM_FENCE";

    public static TDelegate Load<TDelegate>(Accelerator accelerator, Delegate kernel) where TDelegate : Delegate
    {
        var method = kernel.Method;
        Kernel loaded = accelerator is CLAccelerator ? LoadPatchedOpenCL(accelerator, method) : accelerator.LoadKernel(method);
        return loaded.CreateLauncherDelegate<TDelegate>();
    }

    private static Kernel LoadPatchedOpenCL(Accelerator accelerator, MethodInfo method)
    {
        var entry = EntryPointDescription.FromExplicitlyGroupedKernel(method);
        var compiled = (CLCompiledKernel)accelerator.CompileKernel(entry);
        var entryPoint = typeof(CompiledKernel).GetProperty("EntryPoint", BindingFlags.Instance | BindingFlags.NonPublic | BindingFlags.Public)?.GetValue(compiled)
            as SeparateViewEntryPoint
            ?? throw new InvalidOperationException("ILGPU changed: CompiledKernel.EntryPoint not found; the OpenCL barrier fix-up needs updating");
        var source = PatchBarriers(compiled.Source);
        var patched = new CLCompiledKernel(compiled.Context, entryPoint, compiled.Info, source, compiled.CVersion);
        return accelerator.LoadKernel(patched);
    }

    /// <summary>Adds the local-memory fence to every work-group barrier of ILGPU's OpenCL C output.</summary>
    internal static string PatchBarriers(string source)
    {
        var lines = source.Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            if (lines[i].Contains("work_group_barrier", StringComparison.Ordinal) && !lines[i].Contains("CLK_LOCAL_MEM_FENCE", StringComparison.Ordinal))
                lines[i] = lines[i].Replace(GlobalFence, BothFences, StringComparison.Ordinal);
        }
        return string.Join('\n', lines);
    }
}
