using System.CodeDom.Compiler;
using System.Reflection;
using Qtip.Kernels.Llama;
using Qtip.Kernels.Runtime;
using Xunit;

namespace Qtip.Testing;

/// <summary>
/// Checks, by reflection over a test assembly, that the per-backend test classes generator covered every abstract
/// <see cref="BackendTest"/> class: each has exactly its expected sealed classes (<c>{Class}Cpu</c>, <c>{Class}Cuda</c>,
/// <c>{Class}OpenCL</c>, or the backends of <see cref="RunOnAttribute"/>; a class taking a <see cref="KernelStyle"/> also
/// <c>{Class}CpuGrouped</c>), written by the generator, running the backend their name says, with the GPU trait on
/// every backend but the CPU; and no concrete BackendTest class is written by hand.
/// </summary>
public static class BackendTestCoverage
{
    public const string Generator = "Qtip.Testing.Generators";

    /// <summary>The abstract BackendTest classes of <paramref name="assembly"/> and what is wrong with their generated
    /// classes (empty when all is well).</summary>
    public static (IReadOnlyList<Type> Abstract, IReadOnlyList<string> Problems) Check(Assembly assembly)
    {
        ArgumentNullException.ThrowIfNull(assembly);
        var types = assembly.GetTypes();
        var bases = types.Where(t => t.IsAbstract && !t.IsInterface && t.IsSubclassOf(typeof(BackendTest))).OrderBy(t => t.FullName).ToList();
        var problems = new List<string>();
        var expectedNames = new HashSet<string>();
        foreach (var b in bases)
        {
            foreach (var (backend, suffix) in Expected(b))
            {
                string name = $"{b.FullName}{suffix}";
                expectedNames.Add(name);
                var t = assembly.GetType(name);
                if (t is null)
                {
                    problems.Add($"{name}: missing (the generator should write it for {b.Name})");
                    continue;
                }
                if (t.BaseType != b || !t.IsSealed || !t.IsPublic)
                    problems.Add($"{name}: expected a public sealed class deriving from {b.Name}");
                if (!IsGenerated(t))
                    problems.Add($"{name}: written by hand; delete it, {Generator} writes it");
                bool gpu = t.GetCustomAttributes<TraitAttribute>().Any(a => a.Name == "Category" && a.Value == "Gpu");
                if (gpu != (backend != BackendKind.Cpu))
                    problems.Add($"{name}: Gpu trait {(gpu ? "present" : "absent")} on the {backend.Name()} backend");
                var actual = BackendOf(t);
                if (actual != backend)
                    problems.Add($"{name}: runs {actual?.Name() ?? "?"}, expected {backend.Name()}");
            }
        }
        foreach (var t in types.Where(t => !t.IsAbstract && t.IsSubclassOf(typeof(BackendTest)) && !expectedNames.Contains(t.FullName!)))
            problems.Add($"{t.FullName}: a BackendTest class the generator's rules do not produce{(IsGenerated(t) ? "" : " (written by hand)")}");
        return (bases, problems);
    }

    /// <summary>The generator's rules: every backend, or those of [RunOn]; a class taking a KernelStyle runs each backend's
    /// default style and the CPU's grouped style too.</summary>
    public static IEnumerable<(BackendKind Backend, string Suffix)> Expected(Type abstractClass)
    {
        ArgumentNullException.ThrowIfNull(abstractClass);
        var runOn = abstractClass.GetCustomAttribute<RunOnAttribute>(inherit: false);
        BackendKind[] all = [BackendKind.Cpu, BackendKind.Cuda, BackendKind.OpenCL];
        var backends = runOn is null ? all : all.Where(runOn.Backends.Contains).ToArray();
        bool styled = abstractClass.GetConstructors(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic)
            .Any(c => c.GetParameters() is [{ ParameterType: var p0 }, { ParameterType: var p1 }, ..] && p0 == typeof(BackendKind) && p1 == typeof(KernelStyle));
        foreach (var backend in backends)
        {
            yield return (backend, backend.ToString());
            if (styled && backend == BackendKind.Cpu)
                yield return (backend, "CpuGrouped");
        }
    }

    private static bool IsGenerated(Type t) => t.GetCustomAttribute<GeneratedCodeAttribute>()?.Tool == Generator;

    /// <summary>The backend an instance of <paramref name="t"/> runs (constructing a test class opens no device).</summary>
    private static BackendKind? BackendOf(Type t)
    {
        if (t.GetConstructor(Type.EmptyTypes) is null)
            return null;
        var instance = (BackendTest)Activator.CreateInstance(t)!;
        var backend = instance.Backend;
        (instance as IDisposable)?.Dispose();
        return backend;
    }
}
