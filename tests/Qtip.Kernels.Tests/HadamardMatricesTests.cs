using Qtip.Kernels;
using Xunit;

namespace Qtip.Kernels.Tests;

public sealed class HadamardMatricesTests
{
    public static TheoryData<int> SmallOrders => [.. HadamardMatrices.Orders];

    [Theory]
    [MemberData(nameof(SmallOrders))]
    public void StoredMatrix_IsHadamard(int k)
    {
        var h = HadamardMatrices.Get(k);
        Assert.Equal(k, h.GetLength(0));
        for (int i = 0; i < k; i++)
        {
            for (int j = 0; j < k; j++)
            {
                int dot = 0;
                for (int c = 0; c < k; c++)
                    dot += h[i, c] * h[j, c];
                Assert.Equal(i == j ? k : 0, dot);
            }
        }
    }

    [Theory]
    [InlineData(128, 1)]
    [InlineData(256, 1)]
    [InlineData(4096, 1)]
    [InlineData(16384, 1)]
    [InlineData(384, 12)]
    [InlineData(1376, 172)]
    [InlineData(3072, 12)]
    [InlineData(5120, 20)]
    [InlineData(11008, 172)]
    [InlineData(13824, 108)]
    [InlineData(14336, 28)]
    [InlineData(28672, 28)]
    [InlineData(53248, 52)]
    [InlineData(22016, 172)]
    [InlineData(12288, 12)]
    public void SmallFactor_CoversLlamaSizes(int n, int k)
    {
        Assert.Equal(k, HadamardMatrices.SmallFactor(n));
        var plan = HadamardPlan.For(n);
        Assert.Equal(n, plan.SmallFactor * plan.Pow2);
        Assert.True(plan.Chunk <= Hadamard.MaxChunk);
    }

    [Theory]
    [InlineData(100)]
    [InlineData(1000)]
    [InlineData(4095)]
    [InlineData(88)]
    [InlineData(44)]
    [InlineData(0)]
    public void SmallFactor_RejectsOtherSizes(int n)
    {
        var e = Assert.ThrowsAny<ArgumentException>(() => HadamardMatrices.SmallFactor(n));
        Assert.Contains(n.ToString(System.Globalization.CultureInfo.InvariantCulture), e.Message, StringComparison.Ordinal);
        Assert.False(HadamardMatrices.IsSupported(n));
    }

    [Fact]
    public void Sylvester_IsNaturalOrder()
    {
        var h = HadamardMatrices.Sylvester(4);
        sbyte[,] expected = { { 1, 1, 1, 1 }, { 1, -1, 1, -1 }, { 1, 1, -1, -1 }, { 1, -1, -1, 1 } };
        Assert.Equal(expected, h);
    }

    [Fact]
    public void Rounds_CoverEveryBitOnce()
    {
        for (int log2 = 0; log2 <= 13; log2++)
        {
            long packed = Hadamard.Rounds(log2);
            int count = (int)(packed >> 56);
            var covered = new bool[log2];
            for (int r = 0; r < count; r++)
            {
                int code = (int)((packed >> (8 * r)) & 0xFF);
                for (int b = code >> 2; b < (code >> 2) + (code & 3); b++)
                {
                    Assert.False(covered[b]);
                    covered[b] = true;
                }
            }
            Assert.All(covered, Assert.True);
        }
    }
}
