using Qtip.Kernels.Runtime;
using Qtip.Kernels.Trellis;

namespace Qtip.Quant.Trellis;

/// <summary>An operation specialised for one code struct: <see cref="TrellisCodeInfo.Run{TOp}"/> calls it with the row's struct.</summary>
public interface ICodeOp
{
    void Run<TCode>() where TCode : struct, ITrellisCode;
}

/// <summary>An operation specialised for one code struct that returns a value.</summary>
public interface ICodeOp<out TResult>
{
    TResult Run<TCode>() where TCode : struct, ITrellisCode;
}

/// <summary>
/// One row of <see cref="TrellisCodes"/>: a code struct (<see cref="CodeType"/>) with the facts it states
/// (<see cref="ITrellisCode"/>) and how the quantizer makes its table. <see cref="Run{TOp}"/> is the dispatch every
/// code-generic operation goes through: the row knows its struct and calls <c>op.Run&lt;TCode&gt;()</c>.
/// </summary>
public abstract class TrellisCodeInfo
{
    private protected TrellisCodeInfo(ITrellisCode facts, Type codeType, Func<QtipDevice, int, float[]>? makeTable)
    {
        Name = facts.Name;
        DecodeMode = facts.DecodeMode;
        V = facts.V;
        ScaleOverride = facts.ScaleOverride;
        CodeType = codeType;
        MakeTable = makeTable;
        Facts = facts;
    }

    private ITrellisCode Facts { get; }

    /// <summary>The struct implementing the code.</summary>
    public Type CodeType { get; }

    /// <summary>The CLI's and <c>quantization_config.code</c>'s name.</summary>
    public string Name { get; }

    /// <summary><c>quip_params.decode_mode</c>.</summary>
    public string DecodeMode { get; }

    /// <summary>Values per state.</summary>
    public int V { get; }

    /// <summary>The Wscale override this code quantizes with; 0 for the bit width's default.</summary>
    public double ScaleOverride { get; }

    /// <summary>
    /// The table a quantize run starts from for an L-bit trellis (HYB: the k-means LUT), before the checkpoint's dtype
    /// rounding; null when the code has no table, or when its table must be given (the random LUT baselines).
    /// </summary>
    public Func<QtipDevice, int, float[]>? MakeTable { get; }

    /// <summary>log2 of the table's rows (<c>quip_params.tlut_bits</c>); 0 without a table.</summary>
    public int TableBits(int l) => Facts.TableBits(l);

    /// <summary>Rows of the table (the <c>tlut</c> tensor's first dimension); 0 without a table.</summary>
    public int TableRows(int l) => TableBits(l) == 0 ? 0 : 1 << TableBits(l);

    /// <summary>Floats in the table: rows × V.</summary>
    public int TableLength(int l) => TableRows(l) * V;

    /// <summary>log2 of the distinct symbols a kernel tabulates for an L-bit trellis (32: decoded per state).</summary>
    public int SymbolBits(int l) => Facts.SymbolBits(l);

    /// <summary>The stored tile layout for an L-bit trellis.</summary>
    public TileLayoutKind DefaultLayout(int l) => Facts.DefaultLayout(l);

    /// <summary>True when a quantize run can make a checkpoint of this code: it has no table or knows how to make it.</summary>
    public bool Quantizable => TableBits(TrellisShape.MaxL) == 0 || MakeTable is not null;

    /// <summary>Runs <paramref name="op"/> specialised for this row's code struct.</summary>
    public abstract void Run<TOp>(TOp op) where TOp : ICodeOp;

    /// <summary>Runs <paramref name="op"/> specialised for this row's code struct and returns its result.</summary>
    public abstract TResult Run<TOp, TResult>(TOp op) where TOp : ICodeOp<TResult>;

    /// <summary>Host decode of one state (the kernels' own decode function) with the table <paramref name="table"/>.</summary>
    public abstract void Decode(uint state, float[]? table, out float v0, out float v1);

    public override string ToString() => Name;
}

/// <summary>The row of code struct <typeparamref name="TCode"/>.</summary>
internal sealed class TrellisCodeInfo<TCode>(Func<QtipDevice, int, float[]>? makeTable)
    : TrellisCodeInfo(default(TCode), typeof(TCode), makeTable)
    where TCode : struct, ITrellisCode
{
    public override void Run<TOp>(TOp op) => op.Run<TCode>();

    public override TResult Run<TOp, TResult>(TOp op) => op.Run<TCode>();

    public override void Decode(uint state, float[]? table, out float v0, out float v1) =>
        Codes.Decode<TCode, HostTable>(state, new HostTable(table ?? []), out v0, out v1);
}

/// <summary>
/// The trellis codes, one row each: the one place that maps a name, a checkpoint's decode mode or a kind of table to
/// a code struct. Adding a code = its struct (beside the others in Qtip.Kernels' Codes.cs, or anywhere) + its row:
/// one line in <see cref="All"/>'s initialiser, or <see cref="Register{TCode}"/> at run time (a test's toy code).
/// </summary>
public static class TrellisCodes
{
    /// <summary>1MAD (V = 1, computed).</summary>
    public static readonly TrellisCodeInfo OneMad = new TrellisCodeInfo<OneMadCode>(null);

    /// <summary>3INST (V = 1, computed).</summary>
    public static readonly TrellisCodeInfo ThreeInst = new TrellisCodeInfo<ThreeInstCode>(null);

    /// <summary>HYB (V = 2, the 512×2 k-means LUT).</summary>
    public static readonly TrellisCodeInfo Hyb = new TrellisCodeInfo<HybCode>((device, _) => HybLut.GetOrCreate(device));

    /// <summary>"lut" with V = 1: a random LUT of 2^L values (the paper's RPTC baseline; the table is given, not made).</summary>
    public static readonly TrellisCodeInfo Lut1 = new TrellisCodeInfo<Lut1Code>(null);

    /// <summary>"lut" with V = 2: a random LUT of 2^L × 2 values.</summary>
    public static readonly TrellisCodeInfo Lut2 = new TrellisCodeInfo<Lut2Code>(null);

    private static readonly Lock Gate = new();
    private static TrellisCodeInfo[] rows = [Hyb, ThreeInst, OneMad, Lut1, Lut2];

    /// <summary>Every code, built-in ones first, then the registered ones in registration order.</summary>
    public static IReadOnlyList<TrellisCodeInfo> All => Volatile.Read(ref rows);

    /// <summary>
    /// Adds the row of <typeparamref name="TCode"/> (returns the existing row when that struct is registered already).
    /// Throws <see cref="ArgumentException"/> when another code has the same name and V or the same decode mode and V, or
    /// the facts are not usable (V not 1 or 2, an empty or non-lowercase name).
    /// </summary>
    public static TrellisCodeInfo Register<TCode>(Func<QtipDevice, int, float[]>? makeTable = null) where TCode : struct, ITrellisCode
    {
        var row = new TrellisCodeInfo<TCode>(makeTable);
        if (string.IsNullOrWhiteSpace(row.Name) || row.Name.Any(c => char.IsWhiteSpace(c) || char.IsUpper(c)))
            throw new ArgumentException($"code {typeof(TCode).Name}: name '{row.Name}' must be non-empty lowercase without spaces", nameof(TCode));
        if (string.IsNullOrWhiteSpace(row.DecodeMode))
            throw new ArgumentException($"code {typeof(TCode).Name}: the decode mode is empty", nameof(TCode));
        if (row.V is not (1 or 2))
            throw new ArgumentException($"code {typeof(TCode).Name}: V = {row.V}; the kernels decode 1 or 2 values per state", nameof(TCode));
        lock (Gate)
        {
            if (rows.FirstOrDefault(r => r.CodeType == typeof(TCode)) is { } same)
                return same;
            if (rows.FirstOrDefault(r => r.Name == row.Name && r.V == row.V) is { } named)
                throw new ArgumentException($"code {typeof(TCode).Name}: the name '{row.Name}' with V = {row.V} is taken by {named.CodeType.Name}", nameof(TCode));
            if (rows.FirstOrDefault(r => r.DecodeMode == row.DecodeMode && r.V == row.V) is { } moded)
                throw new ArgumentException($"code {typeof(TCode).Name}: decode mode '{row.DecodeMode}' with V = {row.V} is taken by {moded.Name}", nameof(TCode));
            Volatile.Write(ref rows, [.. rows, row]);
            return row;
        }
    }

    /// <summary>
    /// The code called <paramref name="text"/> (case-insensitive): its name or its decode mode ("quantlut_sym"), with
    /// <paramref name="v"/> choosing among the codes that share it (lut: V = 1 or 2; the smallest V when null); null when none.
    /// </summary>
    public static TrellisCodeInfo? Find(string text, int? v = null)
    {
        var t = text.Trim().ToLowerInvariant();
        var all = All;
        return all.Where(r => r.Name == t && (v is null || r.V == v)).OrderBy(r => r.V).FirstOrDefault()
            ?? all.Where(r => r.DecodeMode == t && (v is null || r.V == v)).OrderBy(r => r.V).FirstOrDefault();
    }

    /// <summary>The code of a checkpoint's <c>quip_params</c> (decode mode and V), or null.</summary>
    public static TrellisCodeInfo? FromDecodeMode(string decodeMode, int v) =>
        All.FirstOrDefault(r => r.DecodeMode == decodeMode && r.V == v);

    /// <summary>Whether any code has decode mode <paramref name="decodeMode"/>.</summary>
    public static bool IsDecodeMode(string decodeMode) => All.Any(r => r.DecodeMode == decodeMode);

    /// <summary>
    /// The code called <paramref name="text"/> among those <paramref name="allowed"/> accepts; an
    /// <see cref="ArgumentException"/> listing them otherwise.
    /// </summary>
    public static TrellisCodeInfo Parse(string text, int? v = null, Func<TrellisCodeInfo, bool>? allowed = null)
    {
        var row = Find(text, v);
        if (row is null || !(allowed?.Invoke(row) ?? true))
            throw new ArgumentException($"unknown code '{text}' (expected {Names(allowed, " or ")})");
        return row;
    }

    /// <summary>The names of the codes <paramref name="filter"/> accepts: "hyb, 3inst, 1mad" (the last joined by <paramref name="last"/>).</summary>
    public static string Names(Func<TrellisCodeInfo, bool>? filter = null, string last = ", ")
    {
        var names = All.Where(r => filter?.Invoke(r) ?? true).Select(r => r.Name).Distinct().ToList();
        return names.Count <= 1 ? string.Join("", names) : string.Join(", ", names[..^1]) + last + names[^1];
    }

    /// <summary>The decode modes of every code, for messages.</summary>
    public static string DecodeModes => string.Join(", ", All.Select(r => r.DecodeMode).Distinct());
}
