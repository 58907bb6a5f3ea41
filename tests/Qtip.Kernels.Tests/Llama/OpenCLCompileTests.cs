using System.Reflection;
using ILGPU;
using ILGPU.Runtime.OpenCL;
using Qtip.Kernels.Llama;
using Qtip.Testing;
using Xunit;

namespace Qtip.Kernels.Tests.Llama;

/// <summary>
/// Every Llama kernel an OpenCL device loads — the serial style and fp32 weights, on a device like pocl's CPU device
/// (generic address space, no cl_khr_fp16) — compiles to OpenCL C with ILGPU's OpenCL backend (no device needed, so
/// this runs in CI). The capability context leaves out fp16 and sub-groups, so a kernel that needs either fails here;
/// the fp16 variants are checked to fail that way (kernel sets must not load them on such a device).
/// </summary>
public sealed class OpenCLCompileTests
{
    /// <summary>What a device without fp16 and without sub-groups offers (the rest as pocl's CPU device).</summary>
    private static CLCapabilityContext NoFloat16() =>
        new(float16: false, float64: true, int64_Atomics: true, subGroups: false, genericAddressSpace: true);

    /// <summary>The kernels of the Llama namespace an OpenCL device runs: implicitly grouped ones (elementwise, RoPE) and the
    /// serial style of the others, closed over the given weight element (and both matrix–vector inputs).</summary>
    private static List<MethodInfo> SerialKernels(Type element, Type loader)
    {
        var kernels = new List<MethodInfo>();
        foreach (var type in typeof(MatVec).Assembly.GetTypes().Where(t => t.Namespace == typeof(MatVec).Namespace && t.IsClass))
        {
            foreach (var method in type.GetMethods(BindingFlags.NonPublic | BindingFlags.Static | BindingFlags.DeclaredOnly)
                .Where(m => m.Name.EndsWith("Kernel", StringComparison.Ordinal)))
            {
                bool implicitly = method.GetParameters()[0].ParameterType == typeof(Index1D);
                if (!implicitly && !method.Name.EndsWith("SerialKernel", StringComparison.Ordinal))
                    continue;
                if (method.Name == nameof(HalfToFloat.ConvertKernel) || method.Name == "FillF16Kernel")
                    continue; // fp16 only
                if (!method.IsGenericMethodDefinition)
                    kernels.Add(method);
                else if (method.GetGenericArguments().Length == 2)
                    kernels.Add(method.MakeGenericMethod(element, loader));
                else
                    kernels.AddRange([method.MakeGenericMethod(element, loader, typeof(PlainInput)), method.MakeGenericMethod(element, loader, typeof(NormedInput))]);
            }
        }
        return kernels;
    }

    private static (int Compiled, List<string> Failures) CompileAll(IEnumerable<MethodInfo> kernels) =>
        OpenCLSource.CompileAll(kernels, NoFloat16());

    [Fact]
    public void SerialFp32Kernels_CompileWithoutFloat16OrSubGroups()
    {
        var kernels = SerialKernels(typeof(float), typeof(F32));
        var (compiled, failures) = CompileAll(kernels);
        Assert.True(failures.Count == 0, string.Join("\n", failures));
        // Embedding, RandomFill (f32), Rope, SwiGlu, RmsNorm, Softmax, CrossEntropy, Attention, MatMul, MatVec ×2, Argmax, Sample.
        Assert.True(compiled >= 13, $"only {compiled} kernels: {string.Join(", ", kernels.Select(k => k.Name))}");
    }

    [Fact]
    public void Fp16Kernels_NeedTheFloat16Capability()
    {
        var kernels = SerialKernels(typeof(ILGPU.Half), typeof(F16)).Where(k => k.IsGenericMethod).ToList();
        var (_, failures) = CompileAll(kernels);
        Assert.Equal(kernels.Count, failures.Count);
        Assert.All(failures, f => Assert.Contains("CapabilityNotSupportedException", f, StringComparison.Ordinal));
    }
}
