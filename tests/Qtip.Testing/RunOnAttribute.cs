using Qtip.Kernels.Runtime;

namespace Qtip.Testing;

/// <summary>
/// Restricts the backends an abstract <see cref="BackendTest"/> class runs on. Without it a class runs on every backend:
/// the per-backend test classes generator (tests/Qtip.Testing.Generators) emits <c>{Class}Cpu</c>, <c>{Class}Cuda</c> and
/// <c>{Class}OpenCL</c> for it. With it only the backends listed; with an empty list none (an abstract intermediate base).
/// </summary>
[AttributeUsage(AttributeTargets.Class, Inherited = false)]
public sealed class RunOnAttribute(params BackendKind[] backends) : Attribute
{
    public IReadOnlyList<BackendKind> Backends { get; } = backends;
}
