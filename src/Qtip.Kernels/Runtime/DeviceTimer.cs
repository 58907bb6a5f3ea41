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

    /// <summary>
    /// Device time per call of <paramref name="op"/> when calls run back to back with the queue kept full: a long
    /// <paramref name="filler"/> (≥ about a millisecond of device work) is queued first so that the host enqueues the
    /// timed calls while the device is still busy, then device markers bracket <paramref name="iterations"/> calls.
    /// Launch overhead on the host is therefore hidden, as in a CUDA graph; what remains is each kernel's run time plus
    /// the gap between kernels. Median over <paramref name="repeats"/>.
    /// </summary>
    public static double QueuedSeconds(QtipDevice device, Action filler, Action op, int iterations = 20, int repeats = 5, int warmup = 2)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(iterations, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(repeats, 1);
        var stream = device.Accelerator.DefaultStream;
        for (int i = 0; i < warmup; i++)
            op();
        device.Synchronize();
        var times = new double[repeats];
        for (int r = 0; r < repeats; r++)
        {
            filler();
            using var start = stream.AddProfilingMarker();
            for (int i = 0; i < iterations; i++)
                op();
            using var end = stream.AddProfilingMarker();
            end.Synchronize();
            times[r] = end.MeasureFrom(start).TotalSeconds / iterations;
        }
        Array.Sort(times);
        return times[repeats / 2];
    }
}
