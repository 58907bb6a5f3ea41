using System.CommandLine;
using Qtip.Tool.Cli;
using Qtip.Tool.Commands;

namespace Qtip.Tool;

public static class Program
{
    public const string ExitCodesHelp =
        "Exit codes: 0 ok, 1 usage, 2 backend unavailable, 3 bad model or input, 4 internal error (a bug: please report), 130 interrupted.";

    public static int Main(string[] args) => Run(args);

    /// <summary>
    /// Parses and runs a command line; returns the exit code. <paramref name="error"/> (default: stderr) receives the
    /// one-line failure message and <paramref name="output"/> (default: stdout) the results, so tests can run the CLI
    /// in-process. Never throws: an exception that escapes a command is an internal error (exit code 4).
    /// </summary>
    public static int Run(string[] args, TextWriter? error = null, TextWriter? output = null)
    {
        try
        {
            var parse = BuildRoot().Parse(args);
            CliConsole.Set(error, parse.GetValue<bool>("--verbose"), output);
            // --json is written at the end: refuse a target that can never take it (a directory, a FIFO) before any work.
            if (parse.Errors.Count == 0 && parse.CommandResult.Command.Options.FirstOrDefault(o => o.Name == "--json") is Option<FileInfo?> json
                && parse.GetValue(json) is { } target)
            {
                // --json -: stdout carries the JSON document alone; everything human-readable goes to stderr.
                if (Output.IsStdout(target))
                    CliConsole.Set(error, parse.GetValue<bool>("--verbose"), output, jsonOnStdout: true);
                int code = CommandRunner.Run(() => Output.CheckJsonTarget(target));
                if (code != ExitCodes.Ok)
                    return code;
            }
            var config = new InvocationConfiguration { EnableDefaultExceptionHandler = false };
            if (error is not null)
                config.Error = error;
            if (output is not null)
                config.Output = output;
            return parse.Invoke(config);
        }
        catch (Exception e)
        {
            return CommandRunner.Internal(e);
        }
        finally
        {
            CliConsole.Set(null, false);
        }
    }

    public static RootCommand BuildRoot()
    {
        var root = new RootCommand(
            "qtip: QTIP trellis quantization for Llama checkpoints (2, 3 or 4 bits per weight), and the runtime to " +
            "evaluate and run them, on CUDA, OpenCL or the CPU. " + ExitCodesHelp + " " +
            Cli.Locations.DefaultsHelp + " A model is a local folder; an org/name not found as a folder is read from the Hugging Face cache.");
        // Recursive: valid after any command.
        root.Options.Add(new Option<bool>("--verbose") { Description = "On failure, also print the stack trace.", Recursive = true });
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
