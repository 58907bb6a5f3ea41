using Qtip.Kernels.Runtime;
using Qtip.Kernels.Trellis;
using Qtip.Quant.Trellis;

namespace Qtip.Tool.Cli;

/// <summary>One-time notes (stdout, with the progress lines; stderr holds only the one line of a failure): the CPU backend is a slow simulator; HYB's LUT is built once and cached.</summary>
public static class Notices
{
    private static bool cpuSaid;

    /// <summary>On the CPU backend, says once that it simulates a GPU slowly and which settings keep a run short.
    /// <paramref name="toStderr"/>: for <c>generate</c>, whose stdout is the generated text alone.</summary>
    public static void CpuBackend(QtipDevice device, bool toStderr = false)
    {
        if (device.Kind != BackendKind.Cpu || cpuSaid)
            return;
        cpuSaid = true;
        const string text = "qtip: note: the cpu backend is ILGPU's CPU simulator of a GPU: correct but slow (minutes where a GPU takes seconds). " +
            "Short runs: eval --ctx 128 --max-windows 4; quantize --code 1mad --L 8 --calib-ctx 64 --calib-windows 2; demo --windows 1.";
        if (toStderr)
            CliConsole.Error.WriteLine(text);
        else
            Output.Line(text);
    }

    /// <summary>Before a HYB quantization: says that the LUT is built once (k-means, minutes on the CPU) unless cached, and where.</summary>
    public static void HybTable(QtipDevice device, TrellisCodeInfo code)
    {
        if (code != TrellisCodes.Hyb)
            return;
        var path = HybLut.CachePath(HybLut.DefaultSeed, HybLut.DefaultSamples, HybCode.Rows);
        if (File.Exists(path))
            return;
        Output.Line($"qtip: note: HYB needs its 512-entry LUT: built once by k-means on 2^20 points " +
            $"({(device.Kind == BackendKind.Cpu ? "minutes on the CPU simulator" : "seconds on a GPU")}) and cached at {path} (${HybLut.CacheVariable} moves the cache).");
    }
}
