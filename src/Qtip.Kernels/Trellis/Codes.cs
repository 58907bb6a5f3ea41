using System.Runtime.CompilerServices;
using ILGPU;

namespace Qtip.Kernels.Trellis;

/// <summary>
/// Read access to a code's data table (the HYB LUT, the random Gaussian LUT). Kernels use
/// <see cref="DeviceTable"/> over an <see cref="ArrayView{T}"/>; host code (the CPU references in the tests, the
/// bench's statistics) uses <see cref="HostTable"/> over a managed array. The decode functions are generic over
/// it, so one function serves both.
/// </summary>
public interface ICodeTable
{
    float this[int index] { get; }

    /// <summary>Entries 2·<paramref name="pair"/> and 2·<paramref name="pair"/> + 1: one 8-byte load where the table allows it.</summary>
    void Pair(int pair, out float first, out float second);
}

/// <summary>A code table in device memory (usable inside kernels).</summary>
public readonly struct DeviceTable(ArrayView<float> view) : ICodeTable
{
    private readonly ArrayView<float> view = view;

    public float this[int index]
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => view[index];
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Pair(int pair, out float first, out float second)
    {
        first = view[2 * pair];
        second = view[(2 * pair) + 1];
    }
}

/// <summary>A code table of (even, odd) entry pairs in device memory, read with one 8-byte load per pair (kernels only).</summary>
public readonly struct DevicePairTable(ArrayView<Float2> view) : ICodeTable
{
    private readonly ArrayView<Float2> view = view;

    public float this[int index]
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            var p = view[index >> 1];
            return (index & 1) == 0 ? p.X : p.Y;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Pair(int pair, out float first, out float second)
    {
        var p = view[pair];
        first = p.X;
        second = p.Y;
    }
}

/// <summary>Two floats, read and written with one 8-byte access.</summary>
public readonly struct Float2(float x, float y)
{
    public readonly float X = x;
    public readonly float Y = y;
}

/// <summary>A code table in host memory (host code only; never passed to a kernel).</summary>
public readonly struct HostTable(float[] data) : ICodeTable
{
    private readonly float[] data = data;

    public float this[int index] => data[index];

    public void Pair(int pair, out float first, out float second)
    {
        first = data[2 * pair];
        second = data[(2 * pair) + 1];
    }
}

/// <summary>
/// A trellis code: the map from an L-bit state to V ∈ {1, 2} values (spec §2). It is split in two so that the
/// Viterbi can precompute per-step costs for codes with few distinct outputs:
/// <c>Decode(s) = Value(Symbol(s))</c>. A symbol is an integer that fully determines the values — the 1MAD byte
/// sum (10 bits), the HYB LUT row plus sign (10 bits), the LUT index (L bits), or for 3INST the masked 32-bit
/// word itself. <see cref="Codes.Decode{TCode,TTable}"/> is the one decode function every kernel and every CPU
/// reference calls. Implementations are field-less structs used as generic type arguments, so each kernel is
/// specialised per code at compile time.
/// <para>Beside its decode a code states its facts (host only; kernels never read them): its name, how the checkpoint
/// names it, its table, how many symbols a kernel tabulates, its tile layout. The registry (Qtip.Quant's
/// <c>TrellisCodes</c>) holds one row per code struct and is the one place that dispatches on codes.</para>
/// </summary>
public interface ITrellisCode
{
    /// <summary>Values per state (1 or 2).</summary>
    int V { get; }

    /// <summary>The name the CLI and <c>quantization_config.code</c> use ("hyb"); name and V identify a registered code.</summary>
    string Name { get; }

    /// <summary><c>quip_params.decode_mode</c> ("quantlut_sym" for HYB, as the reference spells it).</summary>
    string DecodeMode { get; }

    /// <summary>log2 of the rows of the code's table for an L-bit trellis (<c>quip_params.tlut_bits</c>; the table is
    /// rows × V floats); 0 when the code has no table.</summary>
    int TableBits(int l);

    /// <summary>log2 of the number of distinct symbols a kernel must tabulate to cover every state of an L-bit trellis,
    /// or 32 when the symbol is a free 32-bit word (decoded arithmetically per state).</summary>
    int SymbolBits(int l);

    /// <summary>The tile layout the checkpoint stores the trellis in for an L-bit trellis.</summary>
    TileLayoutKind DefaultLayout(int l);

    /// <summary>The Wscale override this code quantizes with; 0 for the bit width's default.</summary>
    double ScaleOverride { get; }

    /// <summary>The state's symbol (32-bit wrap-around arithmetic on the zero-extended state).</summary>
    uint Symbol(uint state);

    /// <summary>The V values of a symbol (<paramref name="v1"/> is 0 for V = 1).</summary>
    void Value<TTable>(uint symbol, TTable table, out float v0, out float v1) where TTable : struct, ICodeTable;
}

/// <summary>1MAD: u = 34038481·s + 76625530; symbol = sum of u's four bytes (0…1020); value = (t − 510)/147.800537109375.</summary>
public readonly struct OneMadCode : ITrellisCode
{
    public const uint Multiplier = 34038481u;
    public const uint Increment = 76625530u;

    /// <summary>√(4·(256² − 1)/12): the standard deviation of a sum of four uniform bytes, as float32.</summary>
    public const float Divisor = 147.800537109375f;

    public int V => 1;

    public string Name => "1mad";

    public string DecodeMode => "1mad";

    public int TableBits(int l) => 0;

    public int SymbolBits(int l) => 10;

    public TileLayoutKind DefaultLayout(int l) => TileLayoutKind.Generic;

    public double ScaleOverride => 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public uint Symbol(uint state)
    {
        uint u = (state * Multiplier) + Increment;
        // Byte sum with two paired adds: 16-bit lanes of (b0+b1, b2+b3), then the two lanes.
        uint pairs = (u & 0x00FF00FFu) + ((u >> 8) & 0x00FF00FFu);
        return (pairs & 0xFFFFu) + (pairs >> 16);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Value<TTable>(uint symbol, TTable table, out float v0, out float v1) where TTable : struct, ICodeTable
    {
        v0 = ((int)symbol - 510) / Divisor;
        v1 = 0f;
    }
}

/// <summary>
/// 3INST: u = 89226354·s + 64248484; u = (u AND 0x8FFF8FFF) XOR 0x3B603B60; value = fp16(low half) + fp16(high
/// half), added in fp16 (round to nearest even) and widened. The symbol is the masked word itself.
/// </summary>
public readonly struct ThreeInstCode : ITrellisCode
{
    public const uint Multiplier = 89226354u;
    public const uint Increment = 64248484u;
    public const uint Mask = 0x8FFF8FFFu;
    public const uint Pattern = 0x3B603B60u;

    public int V => 1;

    public string Name => "3inst";

    public string DecodeMode => "3inst";

    public int TableBits(int l) => 0;

    public int SymbolBits(int l) => 32;

    public TileLayoutKind DefaultLayout(int l) => TileLayoutKind.Generic;

    public double ScaleOverride => 0;

    /// <remarks>The LCG step is computed in 64 bits and truncated (the same value mod 2^32): ILGPU's OpenCL backend writes
    /// uint arithmetic as <c>int</c>, so a 32-bit wrapping multiply is signed overflow in the generated OpenCL C —
    /// undefined, and pocl's compiler miscompiled it at L = 16 (a 16-bit state is below 2^16, so the 64-bit product
    /// cannot overflow). CUDA's compiler narrows it back: the same µs per matvec (docs/BENCHMARKS.md, issue 13).</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public uint Symbol(uint state) => ((uint)((state * (ulong)Multiplier) + Increment) & Mask) ^ Pattern;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Value<TTable>(uint symbol, TTable table, out float v0, out float v1) where TTable : struct, ICodeTable
    {
        // Both halves are normal fp16 numbers in ±[0.125, 2) (exponent field 12…15), so their float32 sum is exact
        // and rounding it once to fp16 precision is exactly the fp16 addition.
        // The halves widen exactly by moving their bits (NormalHalfToFloat), so no fp16 type is needed: OpenCL devices
        // without cl_khr_fp16 run this too. ILGPU.Half addition is not used: its software float→half conversion on the
        // CPU accelerator truncates instead of rounding to nearest even.
        float sum = NormalHalfToFloat(symbol & 0xFFFFu) + NormalHalfToFloat(symbol >> 16);
        v0 = RoundToHalfPrecision(sum);
        v1 = 0f;
    }

    /// <summary>
    /// The float32 value of the fp16 bit pattern h (low 16 bits) when h is a normal number (exponent field 1…30):
    /// sign to bit 31, exponent rebiased by 127 − 15 = 112, mantissa widened by 13 zero bits. Exact.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float NormalHalfToFloat(uint h) =>
        Interop.IntAsFloat(((h & 0x8000u) << 16) | (((h & 0x7FFFu) + (112u << 10)) << 13));

    /// <summary>Rounds a float32 in the fp16 normal range to 11 significant bits, round to nearest even.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float RoundToHalfPrecision(float f)
    {
        uint bits = Interop.FloatAsInt(f);
        bits += 0x0FFFu + ((bits >> 13) & 1u);
        return Interop.IntAsFloat(bits & ~0x1FFFu);
    }
}

/// <summary>
/// HYB (Q = 9, V = 2): h = s·(s+1) mod 2^32; LUT row = bits 6…14 of h; component 0 negated when bit 15 of h is
/// set (the reference flips the first component, not the second as the paper's text says). The symbol is bits
/// 6…15 of h: row | sign·512. The table is the 512×2 LUT, row-major.
/// </summary>
public readonly struct HybCode : ITrellisCode
{
    public const int Q = 9;
    public const int Rows = 1 << Q;

    public int V => 2;

    public string Name => "hyb";

    public string DecodeMode => "quantlut_sym";

    public int TableBits(int l) => Q;

    public int SymbolBits(int l) => Q + 1;

    /// <summary>The reference CUDA kernel's layout at L = 16 (Q = 9, V = 2), else generic.</summary>
    public TileLayoutKind DefaultLayout(int l) => l == 16 ? TileLayoutKind.Kernel : TileLayoutKind.Generic;

    public double ScaleOverride => 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public uint Symbol(uint state) => ((state * (state + 1u)) >> (15 - Q)) & ((2u << Q) - 1u);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Value<TTable>(uint symbol, TTable table, out float v0, out float v1) where TTable : struct, ICodeTable
    {
        int row = (int)(symbol & (Rows - 1));
        float a = table[2 * row];
        v0 = (symbol >> Q) != 0 ? -a : a;
        v1 = table[(2 * row) + 1];
    }
}

/// <summary>Random LUT, V = 1: state s decodes to table[s] (2^L entries).</summary>
public readonly struct Lut1Code : ITrellisCode
{
    public int V => 1;

    public string Name => "lut";

    public string DecodeMode => "lut";

    public int TableBits(int l) => l;

    public int SymbolBits(int l) => l;

    public TileLayoutKind DefaultLayout(int l) => TileLayoutKind.Generic;

    public double ScaleOverride => 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public uint Symbol(uint state) => state;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Value<TTable>(uint symbol, TTable table, out float v0, out float v1) where TTable : struct, ICodeTable
    {
        v0 = table[(int)symbol];
        v1 = 0f;
    }
}

/// <summary>Random LUT, V = 2: state s decodes to (table[2s], table[2s+1]) (2^L × 2 entries).</summary>
public readonly struct Lut2Code : ITrellisCode
{
    public int V => 2;

    public string Name => "lut";

    public string DecodeMode => "lut";

    public int TableBits(int l) => l;

    public int SymbolBits(int l) => l;

    public TileLayoutKind DefaultLayout(int l) => TileLayoutKind.Generic;

    public double ScaleOverride => 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public uint Symbol(uint state) => state;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Value<TTable>(uint symbol, TTable table, out float v0, out float v1) where TTable : struct, ICodeTable
    {
        v0 = table[2 * (int)symbol];
        v1 = table[(2 * (int)symbol) + 1];
    }
}

/// <summary>The one decode function.</summary>
public static class Codes
{
    /// <summary>State → its V values: <c>Value(Symbol(state))</c>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Decode<TCode, TTable>(uint state, TTable table, out float v0, out float v1)
        where TCode : struct, ITrellisCode
        where TTable : struct, ICodeTable
    {
        var code = default(TCode);
        code.Value(code.Symbol(state), table, out v0, out v1);
    }
}
