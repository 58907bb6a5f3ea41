using System.CommandLine;
using Qtip.Tool.Commands;

namespace Qtip.Tool;

public static class Program
{
    public static int Main(string[] args) => BuildRoot().Parse(args).Invoke();

    public static RootCommand BuildRoot()
    {
        var root = new RootCommand(
            "qtip: QTIP trellis quantization for Llama checkpoints (2, 3 or 4 bits per weight), and the runtime to " +
            "evaluate and run them, on CUDA, OpenCL or the CPU. Exit codes: 0 ok, 1 usage, 2 backend unavailable, 3 bad model or input. " +
            Cli.Locations.DefaultsHelp + " A model is a local folder; an org/name not found as a folder is read from the Hugging Face cache.");
        root.Subcommands.Add(DevicesCommand.Create());
        root.Subcommands.Add(BenchCommand.Create());
        root.Subcommands.Add(QuantizeCommand.Create());
        root.Subcommands.Add(DemoCommand.Create());
        root.Subcommands.Add(EvalCommand.Create());
        root.Subcommands.Add(SweepCommand.Create());
        root.Subcommands.Add(GenerateCommand.Create());
        root.Subcommands.Add(InspectCommand.Create());
        return root;
    }
}
