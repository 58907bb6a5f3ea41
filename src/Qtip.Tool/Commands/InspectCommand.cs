using System.CommandLine;
using Qtip.Model.Checkpoint;
using Qtip.Tool.Cli;

namespace Qtip.Tool.Commands;

/// <summary><c>qtip inspect --model DIR</c>: the config, every tensor (name, dtype, shape, bytes) and the parameter count.</summary>
public static class InspectCommand
{
    public sealed record TensorRow(string Name, string Dtype, long[] Shape, long Bytes, string File);

    public static Command Create()
    {
        var model = RuntimeCli.ModelOption();
        var json = CommonOptions.Json();
        var command = new Command("inspect", "Show a checkpoint: config, tensor table (name, dtype, shape, bytes), parameter count.") { model, json };
        command.SetAction(parse => CommandRunner.Run(() => Execute(parse.GetValue(model)!, parse.GetValue(json))));
        return command;
    }

    private static int Execute(string dir, FileInfo? json)
    {
        using var ckpt = LlamaCheckpoint.Open(dir);
        var c = ckpt.Config;
        var tok = RuntimeCli.TokenizerKind(ckpt.Folder);
        Output.Table($"model {ckpt.Folder}", ["key", "value"],
        [
            ["model_type", c.ModelType],
            ["layers", c.NumHiddenLayers.ToString()],
            ["hidden", c.HiddenSize.ToString()],
            ["intermediate", c.IntermediateSize.ToString()],
            ["heads / kv heads / head_dim", $"{c.NumAttentionHeads} / {c.NumKeyValueHeads} / {c.HeadDim}"],
            ["vocab", c.VocabSize.ToString()],
            ["max positions", c.MaxPositionEmbeddings.ToString()],
            ["rms_norm_eps", c.RmsNormEps.ToString("G")],
            ["rope", c.RopeScaling.Type == "default" ? $"theta {c.RopeTheta:G}" : $"theta {c.RopeTheta:G}, {c.RopeScaling}"],
            ["embeddings", ckpt.TiedEmbeddings ? "tied (output projection = embed_tokens)" : "untied (lm_head.weight)"],
            ["bos / eos", $"{c.BosTokenId} / {string.Join(",", c.EosTokenIds)}"],
            ["dtype", c.TorchDtype ?? "?"],
            ["tokenizer", tok],
            ["shards", ckpt.Tensors.Files.Count.ToString()],
            ["parameters", ckpt.ParameterCount.ToString("N0")],
        ]);
        var rows = ckpt.Tensors.Tensors.Select(t => new TensorRow(t.Name, t.DType.Name(), t.Shape, t.ByteCount, Path.GetFileName(t.File))).ToList();
        Output.Table("tensors", ["name", "dtype", "shape", "bytes", "file"],
            rows.Select(r => (IReadOnlyList<string>)[r.Name, r.Dtype, TensorInfo.ShapeString(r.Shape), r.Bytes.ToString("N0"), r.File]));
        Output.Line($"{rows.Count} tensors, {ckpt.ParameterCount:N0} parameters, {Output.Bytes(rows.Sum(r => r.Bytes))}");
        Output.WriteJson(json, new
        {
            model = ckpt.Folder,
            config = c,
            tied_embeddings = ckpt.TiedEmbeddings,
            tokenizer = tok,
            parameters = ckpt.ParameterCount,
            tensors = rows,
        });
        return ExitCodes.Ok;
    }
}
