using System.CommandLine;

namespace Qtip.Tool.Commands;

/// <summary><c>qtip bench …</c>: measured figures for the kernels (recorded in docs/BENCHMARKS.md).</summary>
public static class BenchCommand
{
    public static Command Create()
    {
        var command = new Command("bench", "Benchmarks: kernel throughput against the device's own copy bandwidth, quantizer distortion.");
        command.Subcommands.Add(BenchHadamardCommand.Create());
        command.Subcommands.Add(BenchDistortionCommand.Create());
        command.Subcommands.Add(BenchDecodeCommand.Create());
        command.Subcommands.Add(BenchQuantizeCommand.Create());
        command.Subcommands.Add(BenchMatVecCommand.Create());
        return command;
    }
}
