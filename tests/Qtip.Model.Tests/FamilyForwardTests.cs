using Qtip.Kernels.Runtime;
using Qtip.Model.Checkpoint;
using Qtip.Model.Families;
using Qtip.Model.Llama;
using Qtip.Testing;
using Xunit;

namespace Qtip.Model.Tests;

/// <summary>
/// Each family (Llama-3 style, Mistral, Qwen2) through the model against the plain double-precision forward of
/// <see cref="FamilyCheckpoints"/> on tiny random checkpoints: prefill logits at every position, decode steps against
/// the prefill in both kernel styles, and checks that the family's feature (window, biases) changes the result.
/// </summary>
[RunOn(BackendKind.Cpu, BackendKind.Cuda)]
public abstract class FamilyForwardTests(BackendKind backend) : BackendTest(backend), IDisposable
{
    /// <summary>fp32 model vs the double reference on logits of a few units.</summary>
    private const double LogitTolerance = 1e-3;

    private readonly string work = Fixtures.TempDir("families");

    /// <summary>Twelve positions: past Mistral's window of 4 several times over.</summary>
    private static readonly int[] Ids = [1, 5, 9, 33, 17, 60, 2, 41, 8, 8, 23, 50];

    public void Dispose()
    {
        if (Directory.Exists(work))
            Directory.Delete(work, recursive: true);
        GC.SuppressFinalize(this);
    }

    private string Checkpoint(string name) => FamilyCheckpoints.Write(Path.Combine(work, name), name);

    [Theory]
    [InlineData("llama3")]
    [InlineData("mistral")]
    [InlineData("qwen2")]
    public void Prefill_MatchesPlainReference(string name)
    {
        using var ckpt = LlamaCheckpoint.Open(Checkpoint(name));
        using var m = LlamaModel.Load(Device, ckpt, new ModelOptions { Precision = WeightPrecision.Float32, MaxContext = 32 });
        m.Prefill(Ids);
        var want = FamilyCheckpoints.ReferenceLogits(ckpt, Ids);
        for (int r = 0; r < Ids.Length; r++)
        {
            var got = m.ReadLogits(r);
            for (int j = 0; j < got.Length; j++)
                Assert.True(Math.Abs(got[j] - want[r][j]) < LogitTolerance, $"{name} pos {r} logit {j}: {got[j]} vs {want[r][j]}");
        }
        Assert.True(want.SelectMany(v => v).Max(Math.Abs) > 1, "logits far from zero");
    }

    [Theory]
    [InlineData("llama3", false)]
    [InlineData("mistral", false)]
    [InlineData("mistral", true)]
    [InlineData("qwen2", false)]
    [InlineData("qwen2", true)]
    public void DecodeSteps_MatchPrefill(string name, bool grouped)
    {
        using var styles = KernelStyles.Grouped(Device, grouped);
        using var ckpt = LlamaCheckpoint.Open(Checkpoint(name));
        using var m = LlamaModel.Load(Device, ckpt, new ModelOptions { Precision = WeightPrecision.Float32, MaxContext = 32 });
        ReferenceModelTests.CheckDecodeAgainstPrefill(m, Ids, LogitTolerance);
    }

    /// <summary>Mistral's window changes the logits past position 4 (else the tests above could not tell it from full attention).</summary>
    [Fact]
    public void Mistral_WindowChangesTheResult()
    {
        using var ckpt = LlamaCheckpoint.Open(Checkpoint("mistral"));
        Assert.Equal(4, ckpt.Config.SlidingWindow);
        var windowed = FamilyCheckpoints.ReferenceLogits(ckpt, Ids);
        var full = FamilyCheckpoints.ReferenceLogits(ckpt, Ids, ckpt.Config with { SlidingWindow = 0 });
        for (int r = 0; r < 4; r++)
            Assert.Equal(full[r], windowed[r]);
        Assert.True(Enumerable.Range(4, Ids.Length - 4).All(r => full[r].Zip(windowed[r]).Max(p => Math.Abs(p.First - p.Second)) > 1e-2));
    }

    /// <summary>Qwen2: the biases are stored and used (a model without them differs), and the embeddings are tied.</summary>
    [Fact]
    public void Qwen2_BiasesAndTiedEmbeddings()
    {
        using var ckpt = LlamaCheckpoint.Open(Checkpoint("qwen2"));
        Assert.True(ckpt.TiedEmbeddings);
        Assert.Equal([true, true, true, false, false, false, false], ckpt.Config.Family.Linears.Select(l => l.Bias));
        Assert.True(ckpt.Tensors.Contains("model.layers.1.self_attn.k_proj.bias"));
        var with = FamilyCheckpoints.ReferenceLogits(ckpt, Ids);
        var without = FamilyCheckpoints.ReferenceLogits(ckpt, Ids, ckpt.Config with { Family = Qwen2Without });
        Assert.True(with[3].Zip(without[3]).Max(p => Math.Abs(p.First - p.Second)) > 1e-2);
        using var m = LlamaModel.Load(Device, ckpt, new ModelOptions { Precision = WeightPrecision.Float32, MaxContext = 32 });
        Assert.IsType<BiasedLinear>(m.GetLinear(0, LinearKind.Q));
        Assert.IsType<DenseLinear>(m.GetLinear(0, LinearKind.O));
    }

    private static readonly ModelFamily Qwen2Without = Qwen2Family.Spec with { Linears = Qwen2Family.Spec.Linears.Select(l => l with { Bias = false }).ToArray() };
}
