using System.Reflection;
using Qtip.Kernels.Runtime;
using Qtip.Kernels.Trellis;
using Qtip.Testing;
using Xunit;

namespace Qtip.Quant.Tests.Trellis;

/// <summary>
/// Every trellis kernel, in every variant an OpenCL device can be given, compiles to OpenCL C with ILGPU's OpenCL
/// backend (OpenCL C 2.0, all capabilities; no device needed, so this runs in CI). ILGPU 1.5.3 rejects warp shuffles
/// there (<c>InvalidCodeGenerationException</c> from <c>CLCodeGenerator.GenerateCode(WarpShuffle)</c>), which is why the
/// Viterbi reduces with <see cref="SharedReduction"/> on OpenCL; the generated sources must not use sub-group functions.
/// </summary>
public sealed class OpenCLCompileTests
{
    /// <summary>The struct types of the kernel assembly that may close a type parameter on OpenCL (shuffle reductions cannot).</summary>
    private static readonly Type[] Structs = typeof(QtipDevice).Assembly.GetTypes()
        .Where(t => t.IsValueType && !t.IsGenericTypeDefinition && !t.IsEnum && t != typeof(WarpReduction))
        .ToArray();

    private static (int Compiled, List<string> Failures) CompileAll(IEnumerable<MethodInfo> kernels) =>
        OpenCLSource.CompileAll(kernels, OpenCLSource.AllCapabilities());

    /// <summary>Every closing of <paramref name="parameters"/> by the structs that satisfy their interface constraints.</summary>
    private static IEnumerable<Type[]> Closings(Type[] parameters)
    {
        IEnumerable<Type[]> closings = [[]];
        foreach (var parameter in parameters)
        {
            var constraints = parameter.GetGenericParameterConstraints().Where(c => c.IsInterface).ToArray();
            var candidates = Structs.Where(s => constraints.All(c => c.IsAssignableFrom(s))).ToArray();
            closings = closings.SelectMany(prefix => candidates.Select(c => (Type[])[.. prefix, c])).ToList();
        }
        return closings;
    }

    [Fact]
    public void Viterbi_EveryOpenCLVariant_Compiles()
    {
        // What an OpenCL device loads: its static shared buffer and shared-memory reductions, for every code, cost mode
        // and minima layout.
        var kernels = new List<MethodInfo>();
        foreach (var code in Structs.Where(typeof(ITrellisCode).IsAssignableFrom))
        {
            var kernel = typeof(Viterbi<>).MakeGenericType(code).GetMethod("Kernel", BindingFlags.Static | BindingFlags.NonPublic)!;
            foreach (var mode in new[] { typeof(DirectCost), typeof(TableCost) })
            {
                foreach (var store in new[] { typeof(SharedMinima), typeof(GlobalMinima), typeof(InPlaceMinima), typeof(FixedPointMinima) })
                    kernels.Add(kernel.MakeGenericMethod(code, mode, store, typeof(LargeStaticSharedFloats), typeof(SharedReduction)));
            }
        }
        var (compiled, failures) = CompileAll(kernels);
        Assert.True(failures.Count == 0, string.Join("\n", failures));
        Assert.Equal(5 * 2 * 4, compiled);
    }

    [Fact]
    public void EveryOtherTrellisKernel_Compiles()
    {
        // Pack, decode, relayout, gather/scatter, k-means, overlap argmin, finite check: every static *Kernel method of
        // the Trellis namespace outside the Viterbi, closed over every struct its type parameters accept.
        var kernels = new List<MethodInfo>();
        var types = typeof(QtipDevice).Assembly.GetTypes()
            .Where(t => t.Namespace == typeof(Viterbi<>).Namespace && t.IsClass && !t.IsNested && t != typeof(Viterbi<>));
        foreach (var type in types)
        {
            var closedTypes = type.IsGenericTypeDefinition ? Closings(type.GetGenericArguments()).Select(type.MakeGenericType) : [type];
            foreach (var closed in closedTypes)
            {
                foreach (var method in closed.GetMethods(BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly)
                    .Where(m => m.Name.EndsWith("Kernel", StringComparison.Ordinal)))
                {
                    kernels.AddRange(method.IsGenericMethodDefinition
                        ? Closings(method.GetGenericArguments()).Select(method.MakeGenericMethod)
                        : [method]);
                }
            }
        }
        var (compiled, failures) = CompileAll(kernels);
        Assert.True(failures.Count == 0, string.Join("\n", failures));
        Assert.True(compiled >= 10, $"only {compiled} kernels found");
    }
}
