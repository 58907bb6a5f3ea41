using System.CommandLine;
using Qtip.Model.Checkpoint;
using Qtip.Tool.Cli;

namespace Qtip.Tool.Commands;

/// <summary>
/// <c>qtip inspect --model DIR</c>: the config, the tokenizer (as <c>eval</c> loads it), the quantization block of a
/// quantized folder (code, K, L, V, tlut bits, bits/weight of the decoder linears and of everything), the model's
/// parameter count (a quantized m×n linear counts m·n) and every stored tensor (name, dtype, shape, bytes).
/// </summary>
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
        using var ckpt = LlamaCheckpoint.Open(Locations.ResolveModel(dir, Locations.Note));
        var c = ckpt.Config;
        var tok = RuntimeCli.TokenizerDescription(ckpt);
        var size = StorageSummary.Of(ckpt);
        var qc = StorageSummary.QuantizationConfig(ckpt.Folder);
        string? method = qc is { } qe && qe.TryGetProperty("quant_method", out var qm) && qm.ValueKind == System.Text.Json.JsonValueKind.String ? qm.GetString() : null;
        int? qcBits = qc is { } qb && qb.TryGetProperty("K", out var kb) && kb.ValueKind == System.Text.Json.JsonValueKind.Number ? kb.GetInt32() : null;
        var quantRows = new List<IReadOnlyList<string>>();
        if (ckpt.Quip is { } q)
        {
            quantRows.Add(["quantization", $"QTIP {size.Code!.ToUpperInvariant()} (decode_mode {q.DecodeMode})"]);
            quantRows.Add(["K / L / V / tlut bits", $"{q.K} / {q.L} / {q.V} / {(q.TableRows > 0 ? q.TlutBits.ToString() : "-")}"]);
        }
        else if (method is not null)
        {
            quantRows.Add(["quantization", $"{method}{(qcBits is { } b ? $" {b}-bit" : "")} (stored dense)"]);
        }
        Output.Table($"model {ckpt.Folder}", ["key", "value"],
        [
            ["model_type", $"{c.ModelType} ({c.Family.Architecture})"],
            ["attention", c.SlidingWindow > 0 ? $"sliding window {c.SlidingWindow}" : "full causal"],
            ["biases", c.Family.HasBiases ? string.Join(", ", c.Family.Linears.Where(l => l.Bias).Select(l => l.Module)) : "none"],
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
            .. quantRows,
            ["bits/weight", $"{size.DecoderBitsPerWeight:F3} decoder linears, {size.TotalBitsPerWeight:F3} with embeddings/head/norms"],
            ["shards", ckpt.Tensors.Files.Count.ToString()],
            ["parameters", ckpt.Quip is null ? size.Parameters.ToString("N0") : $"{size.Parameters:N0} (original; {size.StoredElements:N0} stored elements)"],
        ]);
        var rows = ckpt.Tensors.Tensors.Select(t => new TensorRow(t.Name, t.DType.Name(), t.Shape, t.ByteCount, Path.GetFileName(t.File))).ToList();
        Output.Table("tensors", ["name", "dtype", "shape", "bytes", "file"],
            rows.Select(r => (IReadOnlyList<string>)[r.Name, r.Dtype, TensorInfo.ShapeString(r.Shape), r.Bytes.ToString("N0"), r.File]));
        Output.Line($"{rows.Count} tensors, {size.Parameters:N0} parameters{(ckpt.Quip is null ? "" : $" ({size.StoredElements:N0} stored elements)")}, {Output.Bytes(rows.Sum(r => r.Bytes))}");
        Output.WriteJson(json, new
        {
            model = ckpt.Folder,
            config = c,
            tied_embeddings = ckpt.TiedEmbeddings,
            tokenizer = tok,
            quantization = ckpt.Quip is { } qp
                ? new { method = "qtip", code = size.Code, K = qp.K, L = qp.L, V = qp.V, tlut_bits = qp.TableRows > 0 ? qp.TlutBits : (int?)null, decode_mode = qp.DecodeMode }
                : method is null ? null : (object)new { method, K = qcBits },
            bits_per_weight = new { decoder = size.DecoderBitsPerWeight, all = size.TotalBitsPerWeight },
            parameters = size.Parameters,
            stored_elements = size.StoredElements,
            tensors = rows,
        });
        return ExitCodes.Ok;
    }
}
