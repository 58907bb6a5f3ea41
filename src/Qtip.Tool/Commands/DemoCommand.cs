using System.CommandLine;
using Qtip.Tool.Cli;

namespace Qtip.Tool.Commands;

/// <summary><c>qtip demo</c>: the README's main job on the bundled llama-nano (quantize, compare perplexity, generate).</summary>
public static class DemoCommand
{
    public static Command Create()
    {
        var command = new Command("demo", "Quantize the bundled llama-nano, compare FP and quantized perplexity, print a sample generation.");
        command.SetAction(_ => CommandRunner.Run(() =>
        {
            Console.Error.WriteLine("qtip: demo: not yet implemented — the quantization pipeline (issue 'QTIP end to end') has not landed.");
            return ExitCodes.Usage;
        }));
        return command;
    }
}
