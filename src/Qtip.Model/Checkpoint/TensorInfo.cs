namespace Qtip.Model.Checkpoint;

/// <summary>One tensor of a safetensors file: name, dtype, shape, and where its bytes lie in the data section.</summary>
public sealed record TensorInfo(string Name, SafeTensorsDType DType, long[] Shape, long Begin, long End, string File)
{
    /// <summary>Number of elements (1 for a scalar).</summary>
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);

    public long ByteCount => End - Begin;

    public string ShapeText => ShapeString(Shape);

    public static string ShapeString(IReadOnlyList<long> shape) => "[" + string.Join(",", shape) + "]";
}
