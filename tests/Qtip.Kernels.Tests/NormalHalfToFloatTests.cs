using Qtip.Kernels.Trellis;
using Xunit;

namespace Qtip.Kernels.Tests;

/// <summary>3INST's bit-moving fp16 widening against .NET's System.Half for every normal fp16 pattern.</summary>
public sealed class NormalHalfToFloatTests
{
    [Fact]
    public void EveryNormalHalf_WidensExactly()
    {
        int checkedCount = 0;
        for (uint h = 0; h < 0x10000; h++)
        {
            uint exponent = (h >> 10) & 0x1F;
            if (exponent == 0 || exponent == 31)
                continue; // zero/subnormal, inf/NaN: never produced by 3INST's mask and pattern
            float want = (float)BitConverter.UInt16BitsToHalf((ushort)h);
            Assert.Equal(BitConverter.SingleToInt32Bits(want), BitConverter.SingleToInt32Bits(ThreeInstCode.NormalHalfToFloat(h)));
            checkedCount++;
        }
        Assert.Equal(2 * 30 * 1024, checkedCount);
    }
}
