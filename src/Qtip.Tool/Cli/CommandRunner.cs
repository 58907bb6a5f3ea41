using Qtip.Kernels;
using Qtip.Kernels.Runtime;

namespace Qtip.Tool.Cli;

/// <summary>
/// Runs a command body and turns every failure into one clear line on stderr and a documented exit code
/// (<see cref="ExitCodes"/>). An exception no rule expects is a bug in qtip: "internal error: … — please report",
/// exit code 4, never a stack trace unless <c>--verbose</c>.
/// </summary>
public static class CommandRunner
{
    public static int Run(Func<int> body)
    {
        try
        {
            return body();
        }
        catch (UsageException e)
        {
            return Fail("usage", e, ExitCodes.Usage);
        }
        catch (BackendUnavailableException e)
        {
            return Fail("error", e, ExitCodes.BackendUnavailable);
        }
        catch (InvalidInputException e)
        {
            return Fail("error", e, ExitCodes.BadInput);
        }
        catch (IOException e)
        {
            return Fail("error", e, ExitCodes.BadInput);
        }
        catch (UnauthorizedAccessException e)
        {
            return Fail("error", e, ExitCodes.BadInput);
        }
        catch (ArgumentException e)
        {
            return Fail("usage", e, ExitCodes.Usage);
        }
        catch (ILGPU.Runtime.AcceleratorException e)
        {
            // Allocation failures land here: a model or batch that does not fit in the accelerator's memory.
            return Fail("error", e, ExitCodes.BadInput, $"accelerator: {e.Message} (if the device ran out of memory: a smaller --calib-ctx or --ctx, or another device)");
        }
        catch (OutOfMemoryException e)
        {
            return Fail("error", e, ExitCodes.BadInput, "out of memory (host or CPU-simulator accelerator): the model or the batch does not fit");
        }
        catch (Qtip.Model.Quantized.QuantizeInterruptedException e)
        {
            CliConsole.Error.WriteLine($"qtip: {e.Message}");
            return ExitCodes.Interrupted;
        }
        catch (OperationCanceledException e)
        {
            return Fail("error", e, ExitCodes.Interrupted, "interrupted");
        }
        catch (Exception e)
        {
            return Internal(e);
        }
    }

    /// <summary>The line and exit code of an exception nothing expected (a bug).</summary>
    public static int Internal(Exception e) =>
        Fail("internal error", e, ExitCodes.InternalError,
            $"{e.GetType().Name}: {e.Message} — please report this (with the command line; --verbose prints the stack trace)");

    private static int Fail(string kind, Exception e, int code, string? message = null)
    {
        var line = (message ?? UsageException.CleanMessage(e)).ReplaceLineEndings(" ");
        var error = CliConsole.Error;
        error.WriteLine($"qtip: {kind}: {line}");
        if (CliConsole.Verbose)
            error.WriteLine(e.ToString());
        return code;
    }
}
