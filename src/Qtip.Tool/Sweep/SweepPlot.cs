using ScottPlot;
using SkiaSharp;

namespace Qtip.Tool.Sweep;

/// <summary>One point of a sweep: a method at a bit width, its storage and quality.</summary>
public sealed record SweepPoint(string Method, int Bits, double BitsPerWeight, double Perplexity, double KldMean);

/// <summary>
/// The sweep's picture with ScottPlot: two panels side by side, bits/weight against perplexity and against the mean KL
/// divergence from the full-precision model, one line per method, the full-precision perplexity as a dashed
/// horizontal line. Both y axes are logarithmic (the values are drawn as log10 with labels in the original units): a
/// 2-bit round-to-nearest baseline is 10× off where the trellis codes differ by a few per cent. Written as PNG and SVG
/// (SkiaSharp's SVG canvas), headless.
/// </summary>
public static class SweepPlot
{
    public const int Width = 1200;
    public const int Height = 500;

    private static readonly ScottPlot.Palettes.Category10 Palette = new();

    /// <summary>False on a machine without fonts (a bare container): the picture is then drawn without any text.</summary>
    public static bool HasFonts => SKFontManager.Default.FontFamilyCount > 0;

    public static void Save(string title, IReadOnlyList<SweepPoint> points, double fpPerplexity, string pngPath, string svgPath)
    {
        var multiplot = Build(title, points, fpPerplexity);
        multiplot.SavePng(pngPath, Width, Height);
        using (var stream = File.Create(svgPath))
        {
            using var canvas = SKSvgCanvas.Create(new SKRect(0, 0, Width, Height), stream);
            canvas.Clear(SKColors.White);
            multiplot.Render(canvas, new PixelRect(0, Width, Height, 0));
        }
    }

    /// <summary>Labels a left axis whose values are log10, in the original units.</summary>
    private static void LogAxis(Plot plot)
    {
        var ticks = new ScottPlot.TickGenerators.NumericAutomatic
        {
            LabelFormatter = y => Math.Pow(10, y).ToString("G3", System.Globalization.CultureInfo.InvariantCulture),
        };
        plot.Axes.Left.TickGenerator = ticks;
    }

    private static Multiplot Build(string title, IReadOnlyList<SweepPoint> points, double fpPerplexity)
    {
        var multiplot = new Multiplot();
        multiplot.AddPlots(2);
        multiplot.Layout = new ScottPlot.MultiplotLayouts.Columns();
        var ppl = multiplot.GetPlot(0);
        var kld = multiplot.GetPlot(1);
        var methods = points.Select(p => p.Method).Distinct().ToList();
        for (int i = 0; i < methods.Count; i++)
        {
            var mine = points.Where(p => p.Method == methods[i]).OrderBy(p => p.BitsPerWeight).ToList();
            var color = Palette.GetColor(i);
            var xs = mine.Select(p => p.BitsPerWeight).ToArray();
            var a = ppl.Add.Scatter(xs, mine.Select(p => Math.Log10(p.Perplexity)).ToArray(), color);
            a.LegendText = methods[i];
            a.MarkerSize = 8;
            var b = kld.Add.Scatter(xs, mine.Select(p => Math.Log10(Math.Max(p.KldMean, 1e-6))).ToArray(), color);
            b.LegendText = methods[i];
            b.MarkerSize = 8;
        }
        var fp = ppl.Add.HorizontalLine(Math.Log10(fpPerplexity));
        fp.LegendText = $"FP ({fpPerplexity:F2})";
        fp.LinePattern = LinePattern.Dashed;
        fp.Color = Colors.Black;
        ppl.Title($"{title}: perplexity");
        ppl.XLabel("bits/weight (decoder linears)");
        ppl.YLabel("perplexity");
        ppl.ShowLegend(Alignment.UpperRight);
        kld.Title($"{title}: KL divergence from FP");
        kld.XLabel("bits/weight (decoder linears)");
        kld.YLabel("mean KLD (nats/token)");
        kld.ShowLegend(Alignment.UpperRight);
        LogAxis(ppl);
        LogAxis(kld);
        return multiplot;
    }
}
