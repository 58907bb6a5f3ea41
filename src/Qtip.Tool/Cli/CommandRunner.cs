using Qtip.Kernels;
using Qtip.Kernels.Runtime;

namespace Qtip.Tool.Cli;

/// <summary>Runs a command body and turns every failure into one clear line on stderr and a documented exit code.</summary>
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
            return Fail("usage", e.Message, ExitCodes.Usage);
        }
        catch (BackendUnavailableException e)
        {
            return Fail("error", e.Message, ExitCodes.BackendUnavailable);
        }
        catch (InvalidInputException e)
        {
            return Fail("error", e.Message, ExitCodes.BadInput);
        }
        catch (IOException e)
        {
            return Fail("error", e.Message, ExitCodes.BadInput);
        }
        catch (UnauthorizedAccessException e)
        {
            return Fail("error", e.Message, ExitCodes.BadInput);
        }
        catch (ArgumentException e)
        {
            return Fail("usage", e.Message, ExitCodes.Usage);
        }
        catch (ILGPU.Runtime.AcceleratorException e)
        {
            // Allocation failures land here: a model or batch that does not fit in the accelerator's memory.
            return Fail("error", $"accelerator: {e.Message} (if the device ran out of memory: a smaller --calib-ctx or --ctx, or another device)", ExitCodes.BadInput);
        }
        catch (OutOfMemoryException)
        {
            return Fail("error", "out of memory (host or CPU-simulator accelerator): the model or the batch does not fit", ExitCodes.BadInput);
        }
        catch (Qtip.Model.Quantized.QuantizeInterruptedException e)
        {
            Console.Error.WriteLine($"qtip: {e.Message}");
            return ExitCodes.Interrupted;
        }
        catch (OperationCanceledException)
        {
            return Fail("error", "interrupted", ExitCodes.Interrupted);
        }
    }

    private static int Fail(string kind, string message, int code)
    {
        var line = message.ReplaceLineEndings(" ");
        Console.Error.WriteLine($"qtip: {kind}: {line}");
        return code;
    }
}
