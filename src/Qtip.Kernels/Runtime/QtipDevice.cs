using System.Collections.Concurrent;
using ILGPU;
using ILGPU.Runtime;

namespace Qtip.Kernels.Runtime;

/// <summary>A set of kernels for one op, loaded once per accelerator (compiling a kernel costs 30–400 ms).
/// <see cref="QtipDevice.Get{T}"/> creates it on first use and keeps it.</summary>
public interface IKernelSet<TSelf> where TSelf : class, IKernelSet<TSelf>
{
    static abstract TSelf Create(QtipDevice device);
}

/// <summary>An open ILGPU context + accelerator, and the kernel sets loaded on it. Dispose to free the device.</summary>
public sealed partial class QtipDevice : IDisposable
{
    private readonly ConcurrentDictionary<Type, object> kernelSets = new();
    private readonly Lock createLock = new();

    internal QtipDevice(BackendKind kind, Context context, Accelerator accelerator)
    {
        Kind = kind;
        Context = context;
        Accelerator = accelerator;
        Capabilities = DeviceCapabilities.For(kind, accelerator);
        Memory = new DeviceMemory(kind);
    }

    /// <summary>What kernels may use here (shuffles, dynamic shared memory, fp16, simulator, default style, …), decided
    /// once at creation. Kernel sets ask these, not <see cref="Kind"/>.</summary>
    public DeviceCapabilities Capabilities { get; }

    /// <summary>The accountant every device buffer of Qtip is allocated through (live and peak bytes).</summary>
    public DeviceMemory Memory { get; }

    /// <summary>A device buffer of <paramref name="length"/> elements, recorded by <see cref="Memory"/>.</summary>
    public MemoryBuffer1D<T, Stride1D.Dense> Allocate1D<T>(long length) where T : unmanaged =>
        Memory.Track(Accelerator.Allocate1D<T>(length));

    /// <summary>A device copy of <paramref name="data"/>, recorded by <see cref="Memory"/>.</summary>
    public MemoryBuffer1D<T, Stride1D.Dense> Allocate1D<T>(T[] data) where T : unmanaged =>
        Memory.Track(Accelerator.Allocate1D(data));

    public BackendKind Kind { get; }

    public Context Context { get; }

    public Accelerator Accelerator { get; }

    public string Name => Accelerator.Name;

    /// <summary>Threads per group that kernels may use: the accelerator's maximum, capped at 1024.</summary>
    public int MaxGroupSize => Math.Min(Accelerator.MaxNumThreadsPerGroup, 1024);

    /// <summary>
    /// Group size for a kernel that loops over its work with a group-stride loop (any size is correct): <paramref name="gpu"/>
    /// on a GPU, one thread on the CPU accelerator, where every simulated barrier costs a thread rendezvous and the
    /// groups of a launch already run one per core.
    /// </summary>
    public int LoopGroupSize(int gpu) => Capabilities.Simulator ? 1 : Math.Min(MaxGroupSize, gpu);

    /// <summary>
    /// Launch shape of a grid-stride loop over <paramref name="length"/> items: groups of <paramref name="gpuGroupSize"/>
    /// covering the items (at most <paramref name="maxGroups"/>) on a GPU; on the CPU accelerator one one-thread group per
    /// core, since each simulated group costs a thread rendezvous (Narrow of a 384×384 matrix was 9,216 groups of 16; with this
    /// and <see cref="LoopGroupSize"/>, the prepare stage of a small nano quantize went from 8.4 to 4.5 s on 2 cores).
    /// </summary>
    public KernelConfig LoopConfig(long length, int gpuGroupSize = 256, int maxGroups = 65536)
    {
        if (Capabilities.Simulator)
            return new KernelConfig(Math.Max(1, Accelerator.NumMultiprocessors), 1);
        int group = Math.Min(MaxGroupSize, gpuGroupSize);
        long groups = Math.Clamp((length + group - 1) / group, 1, maxGroups);
        return new KernelConfig((int)groups, group);
    }

    /// <summary><see cref="DeviceCapabilities.WarpSize"/>.</summary>
    public int WarpSize => Capabilities.WarpSize;

    /// <summary>Whether kernels may use fp16 (<c>ILGPU.Half</c>) data: <see cref="DeviceCapabilities.Float16"/>.</summary>
    public bool SupportsFloat16 => Capabilities.Float16;

    /// <summary>Throws <see cref="NotSupportedException"/> naming <paramref name="op"/> and this device when it has no fp16;
    /// kernel sets call it before loading an fp16 variant, so no compile is attempted.</summary>
    public void RequireFloat16(string op)
    {
        if (!SupportsFloat16)
            throw new NotSupportedException($"{op}: fp16 (ILGPU.Half) data is not supported on {this} (no cl_khr_fp16); use fp32");
    }

    /// <summary>The kernel set <typeparamref name="T"/> on this device, loaded on first use.</summary>
    public T Get<T>() where T : class, IKernelSet<T>
    {
        if (kernelSets.TryGetValue(typeof(T), out var existing))
            return (T)existing;
        lock (createLock)
        {
            if (kernelSets.TryGetValue(typeof(T), out existing))
                return (T)existing;
            var created = T.Create(this);
            kernelSets[typeof(T)] = created;
            return created;
        }
    }

    public void Synchronize() => Accelerator.Synchronize();

    public override string ToString() => $"{Kind.Name()}: {Accelerator.Name}";

    /// <summary>Frees the kernel sets, the accelerator and the context. Never throws: it runs while an error unwinds
    /// (a <c>using</c>), and an exception here would replace the one that says what went wrong. ILGPU 1.5.3 throws a
    /// NullReferenceException from <see cref="Accelerator.Dispose()"/> when a zero-length buffer was allocated on it.</summary>
    public void Dispose()
    {
        foreach (var set in kernelSets.Values)
        {
            try
            {
                (set as IDisposable)?.Dispose();
            }
            catch (Exception e) when (e is NullReferenceException or ObjectDisposedException or InvalidOperationException)
            {
                // Best effort: the process is releasing the device anyway.
            }
        }
        kernelSets.Clear();
        try
        {
            Accelerator.Dispose();
        }
        catch (NullReferenceException)
        {
            // ILGPU 1.5.3: disposing a zero-length MemoryBuffer (a child of the accelerator) dereferences null.
        }
        Context.Dispose();
    }
}
