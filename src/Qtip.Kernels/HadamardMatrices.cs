using System.Numerics;
using System.Reflection;

namespace Qtip.Kernels;

/// <summary>
/// The small Hadamard factors H_K (K = 12 … 172) for non-power-of-two transform sizes, read from embedded copies
/// of N. J. A. Sloane's matrices — the same matrices, rows and columns in the same order, that the reference
/// QTIP/QuIP# implementations use, so checkpoints they produced decode here. Also the size plan: which K goes
/// with which n.
/// </summary>
public static class HadamardMatrices
{
    /// <summary>The small orders in the order they are tried: the first K dividing n with n/K a power of two wins.</summary>
    public static readonly IReadOnlyList<int> Orders = [172, 156, 140, 124, 116, 108, 60, 52, 36, 28, 20, 12];

    private static readonly Dictionary<int, sbyte[,]> Cache = [];
    private static readonly Lock CacheLock = new();

    /// <summary>The factor K of n = K·2^p (1 when n is a power of two). Throws for sizes no Hadamard plan covers.</summary>
    public static int SmallFactor(int n)
    {
        if (n <= 0)
            throw new ArgumentOutOfRangeException(nameof(n), n, "Hadamard size must be positive");
        foreach (int k in Orders)
        {
            if (n % k == 0 && BitOperations.IsPow2(n / k))
                return k;
        }
        if (BitOperations.IsPow2(n))
            return 1;
        throw new ArgumentException(
            $"no Hadamard transform of size {n}: it must be a power of two or K·2^p with K in {{{string.Join(", ", Orders)}}} " +
            "(e.g. 4096, 11008 = 172·64, 14336 = 28·512)", nameof(n));
    }

    /// <summary>Whether a Hadamard transform of size n exists here.</summary>
    public static bool IsSupported(int n)
    {
        if (n <= 0)
            return false;
        if (BitOperations.IsPow2(n))
            return true;
        foreach (int k in Orders)
        {
            if (n % k == 0 && BitOperations.IsPow2(n / k))
                return true;
        }
        return false;
    }

    /// <summary>H_K as ±1 entries, [row, column], exactly as stored (H·Hᵀ = K·I). K = 1 gives [[1]].</summary>
    public static sbyte[,] Get(int k)
    {
        if (k == 1)
            return new sbyte[,] { { 1 } };
        lock (CacheLock)
        {
            if (Cache.TryGetValue(k, out var cached))
                return cached;
            var matrix = Load(k);
            Cache[k] = matrix;
            return matrix;
        }
    }

    /// <summary>The natural-order (Sylvester) Walsh–Hadamard matrix of order 2^p: entry (a, b) = (−1)^popcount(a AND b).</summary>
    public static sbyte[,] Sylvester(int order)
    {
        if (!BitOperations.IsPow2(order))
            throw new ArgumentException($"Sylvester order {order} is not a power of two", nameof(order));
        var h = new sbyte[order, order];
        for (int a = 0; a < order; a++)
        {
            for (int b = 0; b < order; b++)
                h[a, b] = (sbyte)((BitOperations.PopCount((uint)(a & b)) & 1) == 0 ? 1 : -1);
        }
        return h;
    }

    /// <summary>Kronecker product A ⊗ B of two ±1 matrices: entry (a·|B| + c, b·|B| + d) = A[a,b]·B[c,d].</summary>
    public static sbyte[,] Kronecker(sbyte[,] a, sbyte[,] b)
    {
        int na = a.GetLength(0), nb = b.GetLength(0);
        var k = new sbyte[na * nb, na * nb];
        for (int i = 0; i < na; i++)
        {
            for (int j = 0; j < na; j++)
            {
                for (int c = 0; c < nb; c++)
                {
                    for (int d = 0; d < nb; d++)
                        k[(i * nb) + c, (j * nb) + d] = (sbyte)(a[i, j] * b[c, d]);
                }
            }
        }
        return k;
    }

    private static sbyte[,] Load(int k)
    {
        if (!Orders.Contains(k))
            throw new ArgumentException($"no stored Hadamard matrix of order {k}", nameof(k));
        var name = $"Qtip.Kernels.hadamard.had{k}.txt";
        using var stream = Assembly.GetExecutingAssembly().GetManifestResourceStream(name)
            ?? throw new InvalidDataException($"embedded resource {name} is missing from Qtip.Kernels");
        using var reader = new StreamReader(stream);
        var rows = reader.ReadToEnd().Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (rows.Length != k)
            throw new InvalidDataException($"{name}: {rows.Length} rows, expected {k}");
        var h = new sbyte[k, k];
        for (int i = 0; i < k; i++)
        {
            if (rows[i].Length != k)
                throw new InvalidDataException($"{name}: row {i} has {rows[i].Length} entries, expected {k}");
            for (int j = 0; j < k; j++)
            {
                h[i, j] = rows[i][j] switch
                {
                    '+' => 1,
                    '-' => -1,
                    var c => throw new InvalidDataException($"{name}: row {i} column {j}: '{c}' is not + or -"),
                };
            }
        }
        return h;
    }
}
