using System.Reflection;
using System.Runtime.InteropServices;
using ILGPU;

namespace Qtip.Kernels.Runtime;

/// <summary>
/// ILGPU P/Invokes "cuda" and "OpenCL"; .NET probes libcuda.so / libOpenCL.so, which driver-only installs do
/// not ship (only the *.so.1 names). Without this resolver ILGPU silently finds no device on such machines. It is also
/// the one hook that runs before any native GPU library loads, so it applies <see cref="PoclSettings"/> there.
/// </summary>
public static class NativeLibraries
{
    private static int registered;

    /// <summary>Registers the resolver once per process; safe to call from anywhere, any number of times.</summary>
    public static void EnsureRegistered()
    {
        if (Interlocked.Exchange(ref registered, 1) == 1)
            return;
        PoclSettings.Apply();
        try
        {
            NativeLibrary.SetDllImportResolver(typeof(Context).Assembly, Resolve);
        }
        catch (InvalidOperationException)
        {
            // Somebody (a host application) already set a resolver for ILGPU; theirs wins.
        }
    }

    private static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? path)
    {
        string[] candidates = name switch
        {
            "cuda" or "nvcuda" => ["libcuda.so.1", "libcuda.so", "nvcuda.dll"],
            "OpenCL" => ["libOpenCL.so.1", "libOpenCL.so", "OpenCL.dll"],
            _ => [],
        };
        foreach (var candidate in candidates)
        {
            if (NativeLibrary.TryLoad(candidate, out var handle))
                return handle;
        }
        return IntPtr.Zero;
    }
}
