namespace Qtip.Model.Checkpoint;

/// <summary>The element types of the safetensors format (the header's "dtype" strings).</summary>
public enum SafeTensorsDType
{
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U64,
    U32,
    U16,
    U8,
    Bool,
}

public static class SafeTensorsDTypes
{
    /// <summary>Bytes per element.</summary>
    public static int Size(this SafeTensorsDType t) => t switch
    {
        SafeTensorsDType.F64 or SafeTensorsDType.I64 or SafeTensorsDType.U64 => 8,
        SafeTensorsDType.F32 or SafeTensorsDType.I32 or SafeTensorsDType.U32 => 4,
        SafeTensorsDType.F16 or SafeTensorsDType.BF16 or SafeTensorsDType.I16 or SafeTensorsDType.U16 => 2,
        _ => 1,
    };

    /// <summary>The header spelling ("F32", "BF16", "BOOL", …).</summary>
    public static string Name(this SafeTensorsDType t) => t == SafeTensorsDType.Bool ? "BOOL" : t.ToString().ToUpperInvariant();

    public static bool TryParse(string text, out SafeTensorsDType dtype)
    {
        foreach (var t in Enum.GetValues<SafeTensorsDType>())
        {
            if (t.Name() == text)
            {
                dtype = t;
                return true;
            }
        }
        dtype = default;
        return false;
    }

    /// <summary>Whether the dtype is one of the floating formats a Llama weight may have (F32, F16, BF16).</summary>
    public static bool IsWeightFloat(this SafeTensorsDType t) => t is SafeTensorsDType.F32 or SafeTensorsDType.F16 or SafeTensorsDType.BF16;
}
