using ILGPU;
using ILGPU.Runtime;
using Qtip.Kernels.Llama;
using Qtip.Kernels.Runtime;
using Qtip.Model.Llama;

namespace Qtip.Model.Quantized;

/// <summary>
/// The calibration activations x (windows × ctx × dim, fp32) on the device and the layer they are at: made from the
/// embedding on first use, then advanced layer by layer with <see cref="LayerForward"/>. With
/// <paramref name="reconstruct"/> (--sequential), each layer passed on the way is first replaced by its quantized
/// reconstruction.
/// </summary>
internal sealed class CalibrationActivations(QtipDevice device, IWeightSource source, CalibrationSet calib, WeightPrecision precision,
    Action<DecoderLayer>? reconstruct, CancellationToken cancel) : IDisposable
{
    private readonly int dim = source.Config.HiddenSize;
    private MemoryBuffer1D<float, Stride1D.Dense>? x;
    private MemoryBuffer1D<float, Stride1D.Dense>? scratch;
    private LayerForward? forward;

    /// <summary>The next layer to run: x holds the input of this layer.</summary>
    public int Layer { get; private set; }

    private int Rows => calib.Context;

    private ArrayView<float> Window(int w) => x!.View.SubView((long)w * Rows * dim, (long)Rows * dim);

    private void Ensure()
    {
        if (x is not null)
            return;
        forward = new LayerForward(device, source.Config, Rows, Math.Max(Rows, 16));
        x = device.Allocate1D<float>((long)calib.Windows.Count * Rows * dim);
        using var table = source.Embedding();
        using var ids = device.Allocate1D<int>(Rows);
        var embed = device.Get<Embedding>();
        for (int w = 0; w < calib.Windows.Count; w++)
        {
            Embedding.CheckIds(calib.Windows[w], source.Config.VocabSize);
            ids.View.CopyFromCPU(calib.Windows[w]);
            embed.Apply(table.View, source.Config.VocabSize, dim, ids.View, Window(w), Rows);
        }
        device.Synchronize();
        Layer = 0;
    }

    /// <summary>Runs x up to the input of <paramref name="layer"/> through the layers before it.</summary>
    public void AdvanceTo(int layer)
    {
        Ensure();
        while (Layer < layer)
        {
            using var w = source.Layer(Layer, precision);
            reconstruct?.Invoke(w);
            Advance(w, null);
        }
    }

    /// <summary>x ← layer w(x) for every window, with the taps of <paramref name="observer"/>.</summary>
    public void Advance(DecoderLayer w, IActivationObserver? observer)
    {
        Ensure();
        if (w.Index != Layer)
            throw new InvalidOperationException($"the activations are at layer {Layer}, not {w.Index}");
        for (int i = 0; i < calib.Windows.Count; i++)
        {
            cancel.ThrowIfCancellationRequested();
            forward!.Run(w, Window(i), Rows, observer);
            if (device.Kind != BackendKind.Cpu && (i & 7) == 7)
                device.Synchronize(); // keeps cancellation responsive (the launches are asynchronous)
        }
        device.Synchronize();
        Layer++;
    }

    /// <summary>Runs every window through w for its taps only: x is left as it is.</summary>
    public void Observe(DecoderLayer w, IActivationObserver observer)
    {
        Ensure();
        scratch ??= device.Allocate1D<float>((long)Rows * dim);
        for (int i = 0; i < calib.Windows.Count; i++)
        {
            cancel.ThrowIfCancellationRequested();
            Window(i).CopyTo(device.Accelerator.DefaultStream, scratch.View);
            forward!.Run(w, scratch.View, Rows, observer);
            if (device.Kind != BackendKind.Cpu && (i & 7) == 7)
                device.Synchronize();
        }
        device.Synchronize();
    }

    public void Dispose()
    {
        forward?.Dispose();
        x?.Dispose();
        scratch?.Dispose();
    }
}
