using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Runtime;
using Qtip.Model.Checkpoint;
using Qtip.Model.Llama;
using Qtip.Model.Quantized;
using Qtip.Testing;
using Xunit;

namespace Qtip.Model.Tests;

/// <summary>
/// <see cref="LayerForward"/> (one decoder layer at a time, the layer-streaming quantizer's forward) against
/// <see cref="LlamaModel"/>'s fp32 prefill on llama-nano: the residual stream after every layer must be the same bits,
/// since the streamed Hessians are to equal the whole-model ones exactly.
/// </summary>
[RunOn(BackendKind.Cpu, BackendKind.Cuda)]
public abstract class LayerForwardTests(BackendKind backend) : BackendTest(backend)
{
    [Fact]
    public void LayerByLayer_GivesTheSameBitsAsThePrefill()
    {
        var device = Device;
        using var checkpoint = LlamaCheckpoint.Open(Fixtures.Nano);
        var c = checkpoint.Config;
        const int rows = 24;
        var ids = Enumerable.Range(0, rows).Select(i => ((i * 37) + 5) % c.VocabSize).ToArray();

        var observer = new HiddenStateRecorder();
        using (var model = LlamaModel.Load(device, checkpoint, new ModelOptions { Precision = WeightPrecision.Float32, MaxContext = 32, MaxPrefillRows = 32 }))
        {
            model.Observer = observer;
            model.Prefill(ids, 0, LogitsMode.None, throughLayer: c.NumHiddenLayers - 1);
            device.Synchronize();
        }

        var source = new CheckpointWeights(device, checkpoint);
        using var forward = new LayerForward(device, c, rows, 32);
        using var x = device.Allocate1D<float>((long)rows * c.HiddenSize);
        using (var table = source.Embedding())
        using (var tokens = device.Allocate1D(ids))
            device.Get<Qtip.Kernels.Llama.Embedding>().Apply(table.View, c.VocabSize, c.HiddenSize, tokens.View, x.View, rows);
        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            using var layer = source.Layer(l);
            forward.Run(layer, x.View, rows);
            device.Synchronize();
            var streamed = x.GetAsArray1D();
            Assert.Equal(observer.States[l], streamed);
        }
    }
}
