using System.CommandLine;
using Qtip.Kernels.Runtime;
using Qtip.Tool.Cli;

namespace Qtip.Tool.Commands;

/// <summary><c>qtip devices</c>: every backend and device seen, with whether Qtip can use it and why not.</summary>
public static class DevicesCommand
{
    public static Command Create()
    {
        var json = CommonOptions.Json();
        var command = new Command("devices", "List the backends and devices: name, memory, compute units, warp size, usable or why not.") { json };
        command.SetAction(parse => CommandRunner.Run(() => Execute(parse.GetValue(json))));
        return command;
    }

    private static int Execute(FileInfo? json)
    {
        var survey = Backends.Survey();
        var rows = new List<IReadOnlyList<string>>();
        foreach (var status in survey)
        {
            if (status.Devices.Count == 0)
                rows.Add([status.Backend.Name(), "-", "(none)", "-", "-", "-", "no: " + status.Note]);
            foreach (var d in status.Devices)
            {
                rows.Add([
                    d.Backend.Name(), d.Index.ToString(), d.Name, Output.Bytes(d.MemoryBytes), d.ComputeUnits.ToString(),
                    d.WarpSize == 0 ? "?" : d.WarpSize.ToString(), d.Usable ? "yes" : "no: " + d.Reason,
                ]);
            }
        }
        Output.Table("Qtip backends", ["backend", "#", "device", "memory", "units", "warp", "usable"], rows);
        Output.WriteJson(json, survey.Select(s => new
        {
            backend = s.Backend.Name(),
            note = s.Note,
            devices = s.Devices.Select(d => new
            {
                index = d.Index, name = d.Name, memory_bytes = d.MemoryBytes, compute_units = d.ComputeUnits,
                warp_size = d.WarpSize, max_group_size = d.MaxGroupSize, shared_memory_per_group = d.SharedMemoryPerGroup,
                usable = d.Usable, reason = d.Reason,
            }),
        }));
        return ExitCodes.Ok;
    }
}
