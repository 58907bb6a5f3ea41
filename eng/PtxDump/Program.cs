using System.Reflection;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

// Usage: PtxDump OUTDIR [AssemblyPath] — writes one .ptx per static method named *Kernel in Qtip.Kernels (or the given assembly).
var outDir = args.Length > 0 ? args[0] : "ptx";
Directory.CreateDirectory(outDir);
var assembly = args.Length > 1 ? Assembly.LoadFrom(args[1]) : typeof(Qtip.Kernels.Hadamard).Assembly;
using var context = Context.Create(b => b.Optimize(OptimizationLevel.O2).EnableAlgorithms());
var arch = CudaArchitecture.SM_90;
var backend = new PTXBackend(context, new CudaCapabilityContext(arch), arch, CudaInstructionSet.ISA_80, null);
var clBackend = new ILGPU.Backends.OpenCL.CLBackend(context, new ILGPU.Runtime.OpenCL.CLCapabilityContext(true, true, true, true, true),
    ILGPU.Runtime.OpenCL.CLDeviceVendor.Other, ILGPU.Backends.OpenCL.CLCVersion.CL20);
foreach (var type in assembly.GetTypes())
{
    foreach (var method in type.GetMethods(BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
    {
        if (!method.Name.EndsWith("Kernel", StringComparison.Ordinal))
            continue;
        var target = method;
        if (method.IsGenericMethodDefinition)
        {
            var dyn = typeof(Qtip.Kernels.Runtime.DynamicSharedFloats);
            if (method.GetGenericArguments().Length != 1)
                continue;
            try { target = method.MakeGenericMethod(dyn); } catch (ArgumentException) { continue; }
        }
        var parameters = target.GetParameters();
        bool implicitGroup = parameters.Length > 0 && parameters[0].ParameterType.Name.StartsWith("Index", StringComparison.Ordinal);
        var entry = implicitGroup ? EntryPointDescription.FromImplicitlyGroupedKernel(target) : EntryPointDescription.FromExplicitlyGroupedKernel(target);
        try
        {
            var compiled = (PTXCompiledKernel)backend.Compile(entry, default(KernelSpecialization));
            var file = Path.Combine(outDir, $"{type.Name}.{method.Name}.ptx");
            File.WriteAllText(file, compiled.PTXAssembly);
            Console.WriteLine($"{file}: {compiled.PTXAssembly.Length} chars");
            var cl = (ILGPU.Backends.OpenCL.CLCompiledKernel)clBackend.Compile(entry, default(KernelSpecialization));
            File.WriteAllText(Path.Combine(outDir, $"{type.Name}.{method.Name}.cl"), cl.Source);
        }
        catch (Exception e)
        {
            Console.WriteLine($"{type.Name}.{method.Name}: {e.GetType().Name}: {e.Message}");
        }
    }
}
