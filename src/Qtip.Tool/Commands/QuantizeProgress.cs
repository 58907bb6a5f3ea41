using System.Diagnostics;
using Qtip.Model.Quantized;
using Qtip.Tool.Cli;
using Spectre.Console;

namespace Qtip.Tool.Commands;

/// <summary>
/// Progress of a quantize run as plain lines (piped output): one line per stage and per layer with elapsed time, done/total
/// and an ETA, and inside the trellis search a line every ~10 % of a layer's column blocks (at most one per 2 s).
/// Console output is flushed as it is written.
/// </summary>
internal sealed class PlainQuantizeProgress : IQuantizeProgress
{
    private readonly Stopwatch sw = Stopwatch.StartNew();
    private readonly LayerClock clock = new();
    private int lastDecile = -1;
    private double lastBlockLine = -10;

    public void Stage(string name) => Write($"{name}");

    public void Layer(int layer, int count)
    {
        clock.Layer(layer, count);
        lastDecile = -1;
        Write($"layer {layer + 1}/{count}{clock.Eta()}");
    }

    public void Block(string layers, int step, int steps)
    {
        int decile = step * 10 / steps;
        double now = sw.Elapsed.TotalSeconds;
        if (decile == lastDecile || (now - lastBlockLine < 2 && step != steps))
            return;
        lastDecile = decile;
        lastBlockLine = now;
        clock.Fraction((double)step / steps);
        Write($"  {layers}: trellis column block {step}/{steps} ({100.0 * step / steps:F0} %){clock.Eta()}");
    }

    public void Matrix(MatrixReport r) =>
        CliConsole.Human.WriteLine($"            {r.Name} {r.M}×{r.N}: proxy {Fmt(r.ProxyError)}{(r.Sigma > 0.0101 ? $" (damping raised to σ = {r.Sigma})" : "")}, {r.Seconds:F2} s");

    private void Write(string text)
    {
        CliConsole.Human.WriteLine($"[{sw.Elapsed.TotalSeconds,7:F1} s] {text}");
        CliConsole.Human.Flush();
    }

    internal static string Fmt(double v) => double.IsNaN(v) ? "-" : v.ToString("F5");
}

/// <summary>Progress of a quantize run on a terminal: a stage line and a layer bar that moves inside each layer with the trellis column blocks.</summary>
internal sealed class SpectreQuantizeProgress(ProgressContext ctx) : IQuantizeProgress
{
    private readonly LayerClock clock = new();
    private ProgressTask? stage;
    private ProgressTask? layers;
    private int layer;

    public void Stage(string name)
    {
        stage ??= ctx.AddTask(name, maxValue: 1).IsIndeterminate();
        stage.Description = name;
    }

    public void Layer(int index, int count)
    {
        clock.Layer(index, count);
        layer = index;
        layers ??= ctx.AddTask("layers", maxValue: count);
        layers.Value = index;
        layers.Description = $"layer {index + 1}/{count}";
    }

    public void Block(string label, int step, int steps)
    {
        if (layers is null)
            return;
        clock.Fraction((double)step / steps);
        layers.Value = layer + ((double)step / steps);
        layers.Description = $"{label}: trellis block {step}/{steps}";
    }

    public void Matrix(MatrixReport r)
    {
        if (layers is not null)
            layers.Description = $"layer {r.Layer + 1}: {r.Name.Split('.')[^2]} proxy {PlainQuantizeProgress.Fmt(r.ProxyError)}";
    }

    public void Finish()
    {
        if (layers is not null)
            layers.Value = layers.MaxValue;
        stage?.StopTask();
    }
}

/// <summary>ETA of the layer loop: the time per layer so far (layers done plus the fraction of the current one) times what is left.</summary>
internal sealed class LayerClock
{
    private readonly Stopwatch sw = new();
    private int first = -1, current, count;
    private double fraction;

    public void Layer(int layer, int layers)
    {
        if (first < 0)
        {
            first = layer;
            sw.Start();
        }
        current = layer;
        count = layers;
        fraction = 0;
    }

    public void Fraction(double f) => fraction = Math.Clamp(f, 0, 1);

    public string Eta()
    {
        double done = current - first + fraction;
        if (done <= 0.05)
            return "";
        double perLayer = sw.Elapsed.TotalSeconds / done;
        double left = perLayer * (count - current - fraction);
        return $", elapsed {sw.Elapsed.TotalSeconds:F0} s, ETA {left:F0} s";
    }
}
