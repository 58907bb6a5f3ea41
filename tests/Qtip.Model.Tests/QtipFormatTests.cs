using System.Text.Json.Nodes;
using Qtip.Kernels;
using Qtip.Kernels.Runtime;
using Qtip.Kernels.Trellis;
using Qtip.Model.Checkpoint;
using Qtip.Model.Llama;
using Qtip.Model.Quantized;
using Qtip.Quant.Trellis;
using Qtip.Testing;
using Xunit;

namespace Qtip.Model.Tests;

/// <summary>
/// A test-only code with a 4-row table (V = 1; the state's two low bits pick the row), whose values bf16 and fp16 round
/// differently: it shows the storage dtype rule on the table without HYB's k-means.
/// </summary>
public readonly struct FourTableCode : ITrellisCode
{
    /// <summary>The table the code's row makes: none of these is exact in bf16 or fp16.</summary>
    public static readonly float[] Table = [-1.2345678f, -0.3333333f, 0.3333333f, 1.2345678f];

    public int V => 1;

    public string Name => "four";

    public string DecodeMode => "four";

    public int TableBits(int l) => 2;

    public int SymbolBits(int l) => 2;

    public TileLayoutKind DefaultLayout(int l) => TileLayoutKind.Generic;

    public double ScaleOverride => 0;

    public uint Symbol(uint state) => state & 3u;

    public void Value<TTable>(uint symbol, TTable table, out float v0, out float v1) where TTable : struct, ICodeTable
    {
        v0 = table[(int)symbol];
        v1 = 0f;
    }
}

/// <summary>
/// <see cref="QtipFormat"/>'s storage dtype rule on a bf16 model (llama-nano) and on its float32 copy: SU in the model's
/// dtype, SV F32, the table rounded to the model's dtype and stored F16 (F32 for the float32 model) — exactly the values
/// the search used — and the checkpoint reloads through <see cref="QtipLinear.FromCheckpoint"/> and runs.
/// </summary>
public abstract class QtipFormatTests(BackendKind backend) : BackendTest(backend)
{
    private static readonly TrellisCodeInfo Four = TrellisCodes.Register<FourTableCode>((_, _) => FourTableCode.Table);

    [Fact]
    public void StorageRule_BFloat16Model_RoundsTheTableToBFloat16_StoredAsFloat16()
    {
        var dir = Temp("bf16");
        try
        {
            Quantize(Fixtures.Nano, dir);
            var (su, sv, tlut, table) = Stored(dir);
            Assert.Equal(SafeTensorsDType.BF16, su);
            Assert.Equal(SafeTensorsDType.F32, sv);
            Assert.Equal(SafeTensorsDType.F16, tlut);
            Assert.Equal(FourTableCode.Table.Select(v => BFloat16.ToSingle(BFloat16.FromSingle(v))), table);
            Assert.Equal(table, QtipFormat.RoundTable(FourTableCode.Table, "bfloat16"));
            Reload(dir);
        }
        finally
        {
            Delete(dir);
        }
    }

    [Fact]
    public void StorageRule_Float32Model_KeepsTheTableInFloat32_AndTheCheckpointRoundTrips()
    {
        var model = Temp("f32-model");
        var dir = Temp("f32");
        try
        {
            Float32Copy(Fixtures.Nano, model);
            Quantize(model, dir);
            var (su, sv, tlut, table) = Stored(dir);
            Assert.Equal(SafeTensorsDType.F32, su);
            Assert.Equal(SafeTensorsDType.F32, sv);
            Assert.Equal(SafeTensorsDType.F32, tlut);
            Assert.Equal(FourTableCode.Table, table);
            Reload(dir);
        }
        finally
        {
            Delete(model);
            Delete(dir);
        }
    }

    private void Quantize(string model, string outDir) =>
        new QuantizePipeline(Device, new QuantizeOptions
        {
            ModelDir = model,
            OutDir = outDir,
            CalibrationFile = Fixtures.Corpus("calib.txt"),
            CalibrationContext = 32,
            CalibrationWindows = 2,
            Code = Four,
            Bits = 2,
            L = 8,
        }).Run();

    /// <summary>The dtypes of layer 0's q_proj SU, SV and tlut, and the table's values.</summary>
    private static (SafeTensorsDType Su, SafeTensorsDType Sv, SafeTensorsDType Tlut, float[] Table) Stored(string dir)
    {
        using var st = SafeTensorsFile.Open(Path.Combine(dir, "model.safetensors"));
        string prefix = LlamaNames.QuantizedPrefix(LlamaNames.Linear(0, LinearKind.Q));
        var tlut = st[prefix + QtipFormat.TableSuffix];
        Assert.Equal([4L, 1L], tlut.Shape);
        return (st[prefix + QtipFormat.SuSuffix].DType, st[prefix + QtipFormat.SvSuffix].DType, tlut.DType, st.ReadFloat32(tlut));
    }

    /// <summary>Loads the checkpoint: its code is the registered row, and a forward gives finite logits that are not flat.</summary>
    private void Reload(string dir)
    {
        using var ckpt = LlamaCheckpoint.Open(dir);
        Assert.Same(Four, ckpt.Quip!.Code);
        Assert.Equal(2, ckpt.Quip.TlutBits);
        using var model = LlamaModel.Load(Device, ckpt, new ModelOptions { Precision = WeightPrecision.Float32, MaxContext = 16, MaxPrefillRows = 8 });
        model.Prefill([1, 450, 4996, 1735, 1701], 0, LogitsMode.Last);
        var logits = model.ReadLogits();
        Assert.All(logits, v => Assert.True(float.IsFinite(v)));
        Assert.True(logits.Max() - logits.Min() > 1f, "the quantized model's logits are flat");
    }

    /// <summary>llama-nano with every tensor stored F32 and <c>dtype</c>/<c>torch_dtype</c> float32.</summary>
    private static void Float32Copy(string source, string dest)
    {
        Directory.CreateDirectory(dest);
        using (var st = SafeTensorsFile.Open(Path.Combine(source, "model.safetensors")))
        {
            var w = new SafeTensorsWriter();
            foreach (var t in st.Tensors.OrderBy(t => t.Name, StringComparer.Ordinal))
                w.AddFloat32(t.Name, st.ReadFloat32(t), t.Shape);
            w.Write(Path.Combine(dest, "model.safetensors"));
        }
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(source, "config.json")))!.AsObject();
        cfg["torch_dtype"] = "float32";
        cfg["dtype"] = "float32";
        File.WriteAllText(Path.Combine(dest, "config.json"), cfg.ToJsonString());
        foreach (var f in Directory.EnumerateFiles(source).Where(f => Path.GetFileName(f).StartsWith("tokenizer", StringComparison.Ordinal) || Path.GetFileName(f) is "special_tokens_map.json" or "generation_config.json"))
            File.Copy(f, Path.Combine(dest, Path.GetFileName(f)));
    }

    private static string Temp(string what) => Path.Combine(Path.GetTempPath(), $"qtip-format-{what}-{Environment.ProcessId}-{Guid.NewGuid():N}");

    private static void Delete(string dir)
    {
        if (Directory.Exists(dir))
            Directory.Delete(dir, recursive: true);
    }
}

public sealed class QtipFormatTestsCpu() : QtipFormatTests(BackendKind.Cpu);
