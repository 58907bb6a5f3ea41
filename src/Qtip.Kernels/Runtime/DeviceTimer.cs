using System.Diagnostics;

namespace Qtip.Kernels.Runtime;

/// <summary>Wall-clock timing of device work: warm up, then the median over repeats of (n launches + one
/// synchronize) / n. Launches are asynchronous, so the synchronize is what makes the clock honest.</summary>
public static class DeviceTimer
{
    public static double MedianSeconds(QtipDevice device, Action op, int iterations = 20, int repeats = 5, int warmup = 2)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(iterations, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(repeats, 1);
        for (int i = 0; i < warmup; i++)
            op();
        device.Synchronize();
        var times = new double[repeats];
        for (int r = 0; r < repeats; r++)
        {
            var sw = Stopwatch.StartNew();
            for (int i = 0; i < iterations; i++)
                op();
            device.Synchronize();
            times[r] = sw.Elapsed.TotalSeconds / iterations;
        }
        Array.Sort(times);
        return times[repeats / 2];
    }
}
