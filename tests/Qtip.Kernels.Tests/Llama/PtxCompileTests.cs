using System.Reflection;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime.Cuda;
using Qtip.Kernels.Llama;
using Qtip.Kernels.Runtime;
using Xunit;

namespace Qtip.Kernels.Tests.Llama;

/// <summary>
/// Compiles every Llama kernel to PTX (sm_80, as ILGPU targets on Hopper) with ILGPU's PTX backend, which needs no
/// GPU: the CPU accelerator runs kernels as .NET code, so without this a construct that ILGPU cannot compile for
/// CUDA would only show on the GPU machine. Also checks that the decode matrix–vector product reads fp16 weights with
/// 16-byte vector loads.
/// </summary>
public sealed class PtxCompileTests
{
    private static readonly Lazy<Dictionary<string, string>> Ptx = new(CompileAll);

    private static Dictionary<string, string> CompileAll()
    {
        using var context = Context.Create(b => b.Cuda().Optimize(OptimizationLevel.O2).Math(MathMode.Default).EnableAlgorithms());
        using var backend = new PTXBackend(context, CudaArchitecture.SM_80, CudaInstructionSet.ISA_80, null!);
        var result = new Dictionary<string, string>();
        foreach (var type in typeof(MatVec).Assembly.GetTypes().Where(t => t.Namespace == "Qtip.Kernels.Llama"))
        {
            foreach (var method in type.GetMethods(BindingFlags.NonPublic | BindingFlags.Static | BindingFlags.DeclaredOnly).Where(m => m.Name.EndsWith("Kernel", StringComparison.Ordinal)))
            {
                var variants = !method.IsGenericMethodDefinition ? [method] : method.GetGenericArguments().Length switch
                {
                    1 => new[] { method.MakeGenericMethod(typeof(DynamicSharedFloats)), method.MakeGenericMethod(typeof(StaticSharedFloats)) },
                    2 => [method.MakeGenericMethod(typeof(ILGPU.Half), typeof(F16)), method.MakeGenericMethod(typeof(float), typeof(F32))],
                    _ when method.GetGenericArguments()[2].GetGenericParameterConstraints().Contains(typeof(IMatVecInput)) =>
                    [
                        method.MakeGenericMethod(typeof(ILGPU.Half), typeof(F16), typeof(PlainInput)), method.MakeGenericMethod(typeof(ILGPU.Half), typeof(F16), typeof(NormedInput)),
                        method.MakeGenericMethod(typeof(float), typeof(F32), typeof(PlainInput)), method.MakeGenericMethod(typeof(float), typeof(F32), typeof(NormedInput)),
                    ],
                    _ => [method.MakeGenericMethod(typeof(ILGPU.Half), typeof(F16), typeof(DynamicSharedFloats)), method.MakeGenericMethod(typeof(float), typeof(F32), typeof(StaticSharedFloats))],
                };
                foreach (var m in variants)
                {
                    bool implicitly = m.GetParameters()[0].ParameterType == typeof(Index1D);
                    var entry = implicitly ? EntryPointDescription.FromImplicitlyGroupedKernel(m) : EntryPointDescription.FromExplicitlyGroupedKernel(m);
                    var compiled = (PTXCompiledKernel)backend.Compile(entry, default);
                    result[$"{type.Name}.{m.Name}{(m.IsGenericMethod ? "<" + string.Join(",", m.GetGenericArguments().Select(a => a.Name)) + ">" : "")}"] = compiled.PTXAssembly;
                }
            }
        }
        return result;
    }

    [Fact]
    public void EveryLlamaKernel_CompilesToPtx()
    {
        Assert.True(Ptx.Value.Count >= 24, $"only {Ptx.Value.Count} kernels found");
        Assert.All(Ptx.Value, kv => Assert.Contains(".entry", kv.Value, StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("MatVec.MatVecKernel<Half,F16,PlainInput>")]
    [InlineData("MatVec.MatVecKernel<Half,F16,NormedInput>")]
    public void MatVecF16_Uses16ByteLoadsAndNativeConversion(string kernel)
    {
        var ptx = Ptx.Value[kernel];
        Assert.Contains("ld.global.v4.b32", ptx, StringComparison.Ordinal);
        Assert.Contains("ld.global.v4.f32", ptx, StringComparison.Ordinal);
        Assert.Contains("cvt.f32.f16", ptx, StringComparison.Ordinal);
        Assert.Contains("shfl", ptx, StringComparison.Ordinal);
    }

    /// <summary>
    /// The unrolled steps of the decode product: the one-row loop issues four 16-byte fp16 weight loads in one basic
    /// block (no branch between them, the tail masked by selects), so the PTX compiler can keep them in flight together.
    /// </summary>
    [Fact]
    public void MatVecF16_IssuesFourWeightLoadsPerStep()
    {
        var ptx = Ptx.Value["MatVec.MatVecKernel<Half,F16,PlainInput>"];
        var blocks = ptx.Split('\n').Aggregate(new List<List<string>> { new() }, (list, line) =>
        {
            if (line.TrimStart().StartsWith("L_", StringComparison.Ordinal) || line.Contains("bra", StringComparison.Ordinal))
                list.Add([]);
            list[^1].Add(line);
            return list;
        });
        Assert.Contains(blocks, b => b.Count(l => l.Contains("ld.global.v4.b32", StringComparison.Ordinal)) >= 4);
        Assert.Contains("selp", ptx, StringComparison.Ordinal);
    }

    [Fact]
    public void AttentionDecode_UsesVectorLoadsAndAFencedCounter()
    {
        var ptx = Ptx.Value["Attention.AttentionDecodeKernel<DynamicSharedFloats>"];
        Assert.Contains("ld.global.v4.f32", ptx, StringComparison.Ordinal);
        Assert.Contains("membar.gl", ptx, StringComparison.Ordinal);
        Assert.Contains("atom.add.global", ptx, StringComparison.Ordinal);
    }

    [Fact]
    public void RmsNorm_UsesVectorLoads()
    {
        Assert.Contains("ld.global.v4.f32", Ptx.Value["RmsNorm.RmsNormKernel"], StringComparison.Ordinal);
    }

    /// <summary>The tensor-core prefill product: eight m16n8k16 MMAs per k16 step, X packed to half2 by one cvt per pair (ILGPU passes the accumulators through local slots around each asm; ptxas keeps them in registers).</summary>
    [Fact]
    public void MatMulMma_IssuesTensorCoreMmas()
    {
        var ptx = Ptx.Value["MatMulMma.MatMulMmaKernel"];
        var dump = Environment.GetEnvironmentVariable("QTIP_PTX_DUMP");
        if (!string.IsNullOrEmpty(dump))
            File.WriteAllText(dump, ptx);
        Assert.Equal(8, ptx.Split("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32").Length - 1);
        Assert.Contains("cvt.rn.f16x2.f32", ptx, StringComparison.Ordinal);
    }
}
