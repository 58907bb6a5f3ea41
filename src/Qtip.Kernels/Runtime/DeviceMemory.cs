using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace Qtip.Kernels.Runtime;

/// <summary>
/// The device-memory accountant of one <see cref="QtipDevice"/>: every buffer allocated through
/// <see cref="QtipDevice.Allocate1D{T}(long)"/> is recorded with its size until it is disposed, so the live and peak
/// bytes are known on every backend (the CPU accelerator included, where tests check them). The peak can only rise at an
/// allocation, so it is updated there: live bytes = the sum over recorded buffers that are still valid. On CUDA each
/// allocation also samples the driver's used memory (<c>cuMemGetInfo</c>: context, kernels and any buffer not allocated
/// through here), as a cross-check of the accounted figure.
/// </summary>
public sealed class DeviceMemory
{
    private readonly Lock gate = new();
    private readonly List<(Func<bool> Alive, long Bytes)> live = [];
    private readonly bool cuda;
    private long liveBytes;
    private long peakBytes;
    private long driverPeakBytes;

    internal DeviceMemory(BackendKind kind) => cuda = kind == BackendKind.Cuda;

    /// <summary>Bytes of the recorded buffers not yet disposed.</summary>
    public long LiveBytes
    {
        get
        {
            lock (gate)
            {
                Prune();
                return liveBytes;
            }
        }
    }

    /// <summary>The most bytes that were live at once since the device opened or the last <see cref="ResetPeak"/>.</summary>
    public long PeakBytes
    {
        get
        {
            lock (gate)
                return peakBytes;
        }
    }

    /// <summary>CUDA only: the most device memory the driver reported in use at an allocation (0 elsewhere).</summary>
    public long DriverPeakBytes
    {
        get
        {
            lock (gate)
                return driverPeakBytes;
        }
    }

    /// <summary>Buffers recorded and still live.</summary>
    public int LiveBuffers
    {
        get
        {
            lock (gate)
            {
                Prune();
                return live.Count;
            }
        }
    }

    /// <summary>Starts a new peak from the bytes live now.</summary>
    public void ResetPeak()
    {
        lock (gate)
        {
            Prune();
            peakBytes = liveBytes;
            driverPeakBytes = 0;
        }
    }

    /// <summary>Records <paramref name="buffer"/> (its bytes count until it is disposed) and returns it.</summary>
    public MemoryBuffer1D<T, Stride1D.Dense> Track<T>(MemoryBuffer1D<T, Stride1D.Dense> buffer) where T : unmanaged
    {
        lock (gate)
        {
            Prune();
            live.Add((() => buffer.IsValid, buffer.LengthInBytes));
            liveBytes += buffer.LengthInBytes;
            peakBytes = Math.Max(peakBytes, liveBytes);
            if (cuda && CudaAPI.CurrentAPI.GetMemoryInfo(out long free, out long total) == CudaError.CUDA_SUCCESS)
                driverPeakBytes = Math.Max(driverPeakBytes, total - free);
        }
        return buffer;
    }

    private void Prune()
    {
        for (int i = live.Count - 1; i >= 0; i--)
        {
            if (!live[i].Alive())
            {
                liveBytes -= live[i].Bytes;
                live[i] = live[^1];
                live.RemoveAt(live.Count - 1);
            }
        }
    }
}
