using Qtip.Testing;
using Xunit;

namespace Qtip.Kernels.Tests;

/// <summary>The per-backend test classes of this assembly are the generator's (tests/Qtip.Testing.Generators), one set per
/// abstract BackendTest class, none missing and none written by hand.</summary>
public sealed class GeneratedBackendClassesTests
{
    /// <summary>Abstract BackendTest classes in this assembly when the generator came in; more is fine, fewer means the
    /// scan lost some.</summary>
    private const int AbstractClassesAtLeast = 17;

    [Fact]
    public void EveryAbstractBackendTest_HasItsGeneratedBackendClasses()
    {
        var (bases, problems) = BackendTestCoverage.Check(typeof(GeneratedBackendClassesTests).Assembly);
        Assert.Contains(typeof(Qtip.Kernels.Tests.HadamardTests), bases);
        Assert.True(bases.Count >= AbstractClassesAtLeast, $"found {bases.Count} abstract BackendTest classes, expected at least {AbstractClassesAtLeast}");
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }
}
