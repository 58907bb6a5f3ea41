using System.Text.Json;
using ILGPU;
using ILGPU.Runtime;
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
/// A test-only trellis code: 1 bit of the state, the lowest (the freshest bit the trellis shifts in), decodes to ±1.
/// V = 1, no table. Its struct plus one <see cref="TrellisCodes.Register{TCode}"/> row are all it takes to quantize and
/// decode it everywhere (<see cref="ToyCodeTests"/>).
/// </summary>
public readonly struct SignCode : ITrellisCode
{
    public int V => 1;

    public string Name => "sign";

    public string DecodeMode => "sign";

    public int TableBits(int l) => 0;

    public int SymbolBits(int l) => 1;

    public TileLayoutKind DefaultLayout(int l) => TileLayoutKind.Generic;

    public double ScaleOverride => 0;

    public uint Symbol(uint state) => state & 1u;

    public void Value<TTable>(uint symbol, TTable table, out float v0, out float v1) where TTable : struct, ICodeTable
    {
        v0 = symbol != 0 ? 1f : -1f;
        v1 = 0f;
    }
}

/// <summary>Another struct claiming the sign code's name: the registry must refuse it.</summary>
public readonly struct SignClashCode : ITrellisCode
{
    public int V => 1;

    public string Name => "sign";

    public string DecodeMode => "sign-clash";

    public int TableBits(int l) => 0;

    public int SymbolBits(int l) => 1;

    public TileLayoutKind DefaultLayout(int l) => TileLayoutKind.Generic;

    public double ScaleOverride => 0;

    public uint Symbol(uint state) => state & 1u;

    public void Value<TTable>(uint symbol, TTable table, out float v0, out float v1) where TTable : struct, ICodeTable
    {
        v0 = symbol != 0 ? 2f : -2f;
        v1 = 0f;
    }
}

/// <summary>
/// The registry's acceptance proof: <see cref="SignCode"/>, registered at run time, goes through the trellis quantizer,
/// the decode kernel, the trellis matvec, the quantize pipeline on llama-nano (BlockLDLQ, the format writer) and back
/// through <see cref="QtipLinear.FromCheckpoint"/> and the model's forward, each checked against the plain host decode.
/// </summary>
[RunOn(BackendKind.Cpu, BackendKind.Cuda)]
public abstract class ToyCodeTests(BackendKind backend) : BackendTest(backend)
{
    private static readonly TrellisCodeInfo Sign = TrellisCodes.Register<SignCode>();

    /// <summary>Relative difference allowed between fp32 products in different summation orders.</summary>
    private const double ProductTolerance = 1e-4;

    /// <summary>
    /// Per-weight MSE of the sign code on N(0, 1) targets: each step's fresh low bit picks the sign freely, so the search
    /// reaches the per-weight optimum E(|x| − 1)² = 2 − 2·√(2/π) ≈ 0.404 up to the tail-biting constraint and the
    /// sample; a search that did not work would be ≥ 1 (random signs: 2).
    /// </summary>
    private const double SignMse = 0.404, SignMseSlack = 0.06;

    [Fact]
    public void Registry_HoldsTheRegisteredRow_AndRefusesAClash()
    {
        Assert.Same(Sign, TrellisCodes.Register<SignCode>());
        Assert.Contains(Sign, TrellisCodes.All);
        Assert.Same(Sign, TrellisCodes.Find("sign"));
        Assert.Same(Sign, TrellisCodes.Find("SIGN", 1));
        Assert.Same(Sign, TrellisCodes.FromDecodeMode("sign", 1));
        Assert.Null(TrellisCodes.FromDecodeMode("sign", 2));
        Assert.True(Sign.Quantizable);
        Assert.Equal(0, Sign.TableLength(8));
        var e = Assert.Throws<ArgumentException>(() => TrellisCodes.Register<SignClashCode>());
        Assert.Contains("'sign'", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(TrellisCodes.All, c => c.CodeType == typeof(SignClashCode));
    }

    [Fact]
    public void EveryRow_IsFoundByItsNameAndDecodeMode_AndDecodesAsItsStruct()
    {
        foreach (var code in TrellisCodes.All)
        {
            Assert.Same(code, TrellisCodes.Find(code.Name, code.V));
            Assert.Same(code, TrellisCodes.FromDecodeMode(code.DecodeMode, code.V));
            Assert.Equal(code.TableRows(12) * code.V, code.TableLength(12));
            Assert.InRange(code.SymbolBits(12), 1, 32);
        }
        Assert.Equal(["hyb", "3inst", "1mad", "lut", "lut"], TrellisCodes.All.Take(5).Select(c => c.Name));
    }

    [Fact]
    public void SignCode_QuantizesAndDecodes_InTheKernels()
    {
        const int l = 8, k = 2, m = 32, n = 48;
        // CPU reference decode: the row's host decode is the struct's.
        for (uint s = 0; s < 1u << l; s++)
        {
            Sign.Decode(s, null, out float v0, out float v1);
            Assert.Equal((s & 1) != 0 ? 1f : -1f, v0);
            Assert.Equal(0f, v1);
        }
        var book = TrellisCodebook.For(Sign);
        Assert.Equal(1.0, book.Rms(l), 12);

        // Trellis quantizer (Viterbi, packing) and the decode kernel (its reconstruction).
        using var quantizer = new TrellisQuantizer(Device, book, l, k);
        var w = Rng.Gaussian(m * n, seed: 31);
        var q = quantizer.QuantizeMatrix(w, m, n, TailBiting.Approx);
        var host = HostDecode(q.Trellis, m, n, l, k, Sign);
        Assert.Equal(host, q.Reconstruction);
        double mse = w.Zip(host, (a, b) => (double)(a - b) * (a - b)).Average();
        Assert.InRange(mse, SignMse - SignMseSlack, SignMse + SignMseSlack);

        // QtipLinear on the words (no signs, no scale): its dense decode and its trellis matvec against the host decode.
        var spec = QtipCodeSpec.Default(Sign, l, k);
        using var linear = new QtipLinear(Device, m, n, spec, q.Trellis, Ones(n), Ones(m), []);
        using var dense = Device.Allocate1D<float>((long)m * n);
        linear.DecodeDense(dense.View, Device.Accelerator.DefaultStream);
        Assert.Equal(host, dense.GetAsArray1D());
        var x = Rng.Gaussian(n, seed: 32);
        using var xd = Device.Allocate1D(x);
        using var yd = Device.Allocate1D<float>(m);
        linear.TransformedMatVec(xd.View, yd.View, Device.Accelerator.DefaultStream);
        AssertProduct(HostProduct(host, m, n, x, 1), yd.GetAsArray1D(), "trellis matvec");
    }

    [Fact]
    public void SignCode_ThroughThePipeline_WritesACheckpointThatLoadsAndRuns()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"qtip-sign-{Environment.ProcessId}-{Guid.NewGuid():N}");
        try
        {
            var options = new QuantizeOptions
            {
                ModelDir = Fixtures.Nano,
                OutDir = dir,
                CalibrationFile = Fixtures.Corpus("calib.txt"),
                CalibrationContext = 64,
                CalibrationWindows = 2,
                Code = Sign,
                Bits = 2,
                L = 8,
            };
            var report = new QuantizePipeline(Device, options).Run();
            Assert.NotEmpty(report.Matrices);
            foreach (var r in report.Matrices)
                Assert.InRange(r.ProxyError, 1e-4, 1.0);

            using (var cfg = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "config.json"))))
            {
                var quip = cfg.RootElement.GetProperty("quip_params");
                Assert.Equal("sign", quip.GetProperty("decode_mode").GetString());
                Assert.Equal(1, quip.GetProperty("V").GetInt32());
                Assert.Equal(0, quip.GetProperty("tlut_bits").GetInt32());
                Assert.Equal("sign", cfg.RootElement.GetProperty("quantization_config").GetProperty("code").GetString());
            }

            using var ckpt = LlamaCheckpoint.Open(dir);
            Assert.Same(Sign, ckpt.Quip!.Code);
            var c = ckpt.Config;
            string name = LlamaNames.Linear(1, LinearKind.Down);
            var (m, n) = LlamaNames.LinearShape(c, LinearKind.Down);
            Assert.False(ckpt.Tensors.Contains(name + ".tlut"));
            using var linear = QtipLinear.FromCheckpoint(Device, ckpt.Tensors, ckpt.Quip, name, m, n);
            // Ŵ from the stored words: the decode kernel against the host decode.
            var words = ckpt.Tensors.FileOf(LlamaNames.QuantizedPrefix(name) + ".trellis")
                .ReadAs<short>(ckpt.Tensors.Info(LlamaNames.QuantizedPrefix(name) + ".trellis"), SafeTensorsDType.I16);
            var host = HostDecode(words, m, n, options.L, options.Bits, Sign);
            using (var dense = Device.Allocate1D<float>((long)m * n))
            {
                linear.DecodeDense(dense.View, Device.Accelerator.DefaultStream);
                Assert.Equal(host, dense.GetAsArray1D());
            }
            // The forward (one row: trellis matvec; two rows: dense decode + product) against W = DecodeWeight() times x.
            var weight = linear.DecodeWeight();
            Assert.All(weight, v => Assert.True(float.IsFinite(v)));
            foreach (int rows in new[] { 1, 2 })
            {
                var x = Rng.Gaussian(rows * n, seed: 40 + rows);
                using var xd = Device.Allocate1D(x);
                using var yd = Device.Allocate1D<float>((long)rows * m);
                linear.Forward(xd.View, yd.View, rows, Device.Accelerator.DefaultStream);
                AssertProduct(HostProduct(weight, m, n, x, rows), yd.GetAsArray1D(), $"forward, {rows} row(s)");
            }

            // The whole quantized model runs: finite logits that are not flat.
            using var model = LlamaModel.Load(Device, ckpt, new ModelOptions { Precision = WeightPrecision.Float32, MaxContext = 16, MaxPrefillRows = 8 });
            model.Prefill([1, 450, 4996, 1735, 1701], 0, LogitsMode.Last);
            var logits = model.ReadLogits();
            Assert.All(logits, v => Assert.True(float.IsFinite(v)));
            Assert.True(logits.Max() - logits.Min() > 1f, "the quantized model's logits are flat");
        }
        finally
        {
            if (Directory.Exists(dir))
                Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>Ŵ (m×n) of generic-layout words, decoded on the host with the row's host decode.</summary>
    private static float[] HostDecode(short[] words, int m, int n, int l, int k, TrellisCodeInfo code) =>
        TrellisHostDecode.Matrix<GenericLayout>(words, m, n, l, k, code.V, (uint s, out float v0, out float v1) => code.Decode(s, null, out v0, out v1));

    /// <summary>y (rows × m) = x (rows × n) · Wᵀ in float64.</summary>
    private static double[] HostProduct(float[] w, int m, int n, float[] x, int rows)
    {
        var y = new double[rows * m];
        for (int r = 0; r < rows; r++)
        {
            for (int i = 0; i < m; i++)
            {
                double s = 0;
                for (int j = 0; j < n; j++)
                    s += (double)w[(i * n) + j] * x[(r * n) + j];
                y[(r * m) + i] = s;
            }
        }
        return y;
    }

    private static void AssertProduct(double[] expected, float[] got, string what)
    {
        double scale = expected.Max(Math.Abs);
        Assert.True(scale > 0, what);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(got[i] - expected[i]) <= ProductTolerance * scale, $"{what} [{i}]: {got[i]} vs {expected[i]} (scale {scale})");
    }

    private static float[] Ones(int count) => Enumerable.Repeat(1f, count).ToArray();
}
