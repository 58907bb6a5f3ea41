using System.Runtime.InteropServices;

namespace Qtip.Kernels.Runtime;

/// <summary>
/// pocl (the portable OpenCL CPU runtime) builds its work-group loops with the "loopvec" method by default, which
/// aborts the whole process (an LLVM assertion, <c>region_entry_barrier != NULL</c> in
/// <c>pocl::Kernel::createParallelRegionBefore</c>) on the Viterbi kernel's barriers inside loops; measured with
/// pocl on the GPU machine's CPU OpenCL device. Its continuation-based method (<c>cbs</c>) compiles them and the
/// Viterbi and quantizer tests pass. This sets <c>POCL_WORK_GROUP_METHOD=cbs</c> in the native environment before
/// OpenCL is first loaded, unless the user set it. .NET's Environment.SetEnvironmentVariable does not reach the native
/// environment on Unix, hence setenv.
/// </summary>
internal static partial class PoclSettings
{
    public const string Variable = "POCL_WORK_GROUP_METHOD";

    private static int applied;

    public static void Apply()
    {
        if (Interlocked.Exchange(ref applied, 1) == 1 || !OperatingSystem.IsLinux())
            return;
        if (!string.IsNullOrEmpty(Environment.GetEnvironmentVariable(Variable)))
            return;
        try
        {
            _ = SetEnv(Variable, "cbs", 0);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            // No libc setenv (not glibc/musl): pocl keeps its default.
        }
    }

    [LibraryImport("libc", EntryPoint = "setenv", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SetEnv(string name, string value, int overwrite);
}
