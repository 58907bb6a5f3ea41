using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using Half = ILGPU.Half;

namespace Qtip.Kernels.Llama;

/// <summary>
/// The tensor-core kernel of <see cref="MatMul"/> for fp16 weights on CUDA: Y (rows×m) = X (rows×n) · Wᵀ with
/// <c>mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32</c> through ILGPU's inline PTX (<see cref="CudaAsm"/>, sm_80 ISA,
/// valid on Hopper). A group of 4 warps computes a 64×64 tile of Y, each warp 32×32 (2 × 4 MMA tiles, 32 fp32
/// accumulators per thread). K advances in chunks of 32: the group stages X (fp32 rounded to fp16 on the way in, as
/// fp16 inference engines keep activations) and W (fp16, as stored) into shared memory as half2 words, rows padded to 20
/// words so the fragment reads of a warp hit 32 different banks; each warp then reads its A/B fragments (PTX ISA
/// fragment layout of m16n8k16) and issues 8 MMAs per k16 step. Accumulation is fp32. Needs n a multiple of 32; rows and
/// m are bounds-checked (zero-filled tiles, guarded stores).
/// </summary>
internal static class MatMulMma
{
    public const int Threads = 128;
    public const int BM = 64;
    public const int BN = 64;
    public const int BK = 32;
    private const int Stride = (BK / 2) + 4;
    private const string Mma = "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};";

    public static KernelConfig Config(int rows, int m) =>
        new(checked(((rows + BM - 1) / BM) * ((m + BN - 1) / BN)), Threads);

    /// <summary>Group (tile) i covers Y rows (i / tilesX)·64.., columns (i mod tilesX)·64..; w2 is W (m×n fp16) as half2 words.</summary>
    internal static void MatMulMmaKernel(ArrayView<uint> w2, ArrayView<float> x, ArrayView<float> y, MatMul.MatMulParams p)
    {
        var xs = SharedMemory.Allocate<uint>(BM * Stride);
        var ws = SharedMemory.Allocate<uint>(BN * Stride);
        int tid = Group.IdxX;
        int lane = tid & 31;
        int warp = tid >> 5;
        int wr = warp >> 1, wc = warp & 1;
        int g = lane >> 2, t = lane & 3;
        int tileY = Grid.IdxX / p.TilesX;
        int tileX = Grid.IdxX - (tileY * p.TilesX);
        int row0 = tileY * BM;
        int col0 = tileX * BN;
        // Every thread's 32 accumulators: c{mi}{ni}{e} = D fragment element e of m-tile mi (16 rows) × n-tile ni (8 columns).
        Ref<float> c000 = 0f, c001 = 0f, c002 = 0f, c003 = 0f, c010 = 0f, c011 = 0f, c012 = 0f, c013 = 0f;
        Ref<float> c020 = 0f, c021 = 0f, c022 = 0f, c023 = 0f, c030 = 0f, c031 = 0f, c032 = 0f, c033 = 0f;
        Ref<float> c100 = 0f, c101 = 0f, c102 = 0f, c103 = 0f, c110 = 0f, c111 = 0f, c112 = 0f, c113 = 0f;
        Ref<float> c120 = 0f, c121 = 0f, c122 = 0f, c123 = 0f, c130 = 0f, c131 = 0f, c132 = 0f, c133 = 0f;

        for (int k0 = 0; k0 < p.N; k0 += BK)
        {
            // Stage X[row0.., k0..k0+32) as half2 pairs (fp32 → fp16, round to nearest) and W[col0.., k0..k0+32) as they are.
            for (int e = tid; e < BM * (BK / 2); e += Threads)
            {
                int r = e / (BK / 2);
                int kp = e - (r * (BK / 2));
                int gr = row0 + r;
                uint packed = 0;
                if (gr < p.Rows)
                {
                    long xi = ((long)gr * p.N) + k0 + (2 * kp);
                    CudaAsm.Emit("cvt.rn.f16x2.f32 %0, %1, %2;", out packed, x[xi + 1], x[xi]);
                }
                xs[(r * Stride) + kp] = packed;
            }
            for (int e = tid; e < BN * (BK / 2); e += Threads)
            {
                int c = e / (BK / 2);
                int kp = e - (c * (BK / 2));
                int gc = col0 + c;
                ws[(c * Stride) + kp] = gc < p.M ? w2[(((long)gc * p.N) + k0) / 2 + kp] : 0u;
            }
            Group.Barrier();
            for (int s = 0; s < BK / 16; s++)
            {
                int kq = (s * 8) + t;
                int ra0 = (wr * 32) + (0 * 16) + g;
                Input<uint> a00 = xs[(ra0 * Stride) + kq], a01 = xs[((ra0 + 8) * Stride) + kq], a02 = xs[(ra0 * Stride) + kq + 4], a03 = xs[((ra0 + 8) * Stride) + kq + 4];
                int ra1 = (wr * 32) + (1 * 16) + g;
                Input<uint> a10 = xs[(ra1 * Stride) + kq], a11 = xs[((ra1 + 8) * Stride) + kq], a12 = xs[(ra1 * Stride) + kq + 4], a13 = xs[((ra1 + 8) * Stride) + kq + 4];
                int cb0 = (wc * 32) + (0 * 8) + g;
                Input<uint> b00 = ws[(cb0 * Stride) + kq], b01 = ws[(cb0 * Stride) + kq + 4];
                int cb1 = (wc * 32) + (1 * 8) + g;
                Input<uint> b10 = ws[(cb1 * Stride) + kq], b11 = ws[(cb1 * Stride) + kq + 4];
                int cb2 = (wc * 32) + (2 * 8) + g;
                Input<uint> b20 = ws[(cb2 * Stride) + kq], b21 = ws[(cb2 * Stride) + kq + 4];
                int cb3 = (wc * 32) + (3 * 8) + g;
                Input<uint> b30 = ws[(cb3 * Stride) + kq], b31 = ws[(cb3 * Stride) + kq + 4];
                CudaAsm.EmitRef(Mma, ref c000, ref c001, ref c002, ref c003, ref a00, ref a01, ref a02, ref a03, ref b00, ref b01);
                CudaAsm.EmitRef(Mma, ref c010, ref c011, ref c012, ref c013, ref a00, ref a01, ref a02, ref a03, ref b10, ref b11);
                CudaAsm.EmitRef(Mma, ref c020, ref c021, ref c022, ref c023, ref a00, ref a01, ref a02, ref a03, ref b20, ref b21);
                CudaAsm.EmitRef(Mma, ref c030, ref c031, ref c032, ref c033, ref a00, ref a01, ref a02, ref a03, ref b30, ref b31);
                CudaAsm.EmitRef(Mma, ref c100, ref c101, ref c102, ref c103, ref a10, ref a11, ref a12, ref a13, ref b00, ref b01);
                CudaAsm.EmitRef(Mma, ref c110, ref c111, ref c112, ref c113, ref a10, ref a11, ref a12, ref a13, ref b10, ref b11);
                CudaAsm.EmitRef(Mma, ref c120, ref c121, ref c122, ref c123, ref a10, ref a11, ref a12, ref a13, ref b20, ref b21);
                CudaAsm.EmitRef(Mma, ref c130, ref c131, ref c132, ref c133, ref a10, ref a11, ref a12, ref a13, ref b30, ref b31);
            }
            Group.Barrier();
        }

        StorePair(y, p, row0 + (wr * 32) + (0 * 16) + g, col0 + (wc * 32) + (0 * 8) + (2 * t), c000.Value, c001.Value);
        StorePair(y, p, row0 + (wr * 32) + (0 * 16) + g + 8, col0 + (wc * 32) + (0 * 8) + (2 * t), c002.Value, c003.Value);
        StorePair(y, p, row0 + (wr * 32) + (0 * 16) + g, col0 + (wc * 32) + (1 * 8) + (2 * t), c010.Value, c011.Value);
        StorePair(y, p, row0 + (wr * 32) + (0 * 16) + g + 8, col0 + (wc * 32) + (1 * 8) + (2 * t), c012.Value, c013.Value);
        StorePair(y, p, row0 + (wr * 32) + (0 * 16) + g, col0 + (wc * 32) + (2 * 8) + (2 * t), c020.Value, c021.Value);
        StorePair(y, p, row0 + (wr * 32) + (0 * 16) + g + 8, col0 + (wc * 32) + (2 * 8) + (2 * t), c022.Value, c023.Value);
        StorePair(y, p, row0 + (wr * 32) + (0 * 16) + g, col0 + (wc * 32) + (3 * 8) + (2 * t), c030.Value, c031.Value);
        StorePair(y, p, row0 + (wr * 32) + (0 * 16) + g + 8, col0 + (wc * 32) + (3 * 8) + (2 * t), c032.Value, c033.Value);
        StorePair(y, p, row0 + (wr * 32) + (1 * 16) + g, col0 + (wc * 32) + (0 * 8) + (2 * t), c100.Value, c101.Value);
        StorePair(y, p, row0 + (wr * 32) + (1 * 16) + g + 8, col0 + (wc * 32) + (0 * 8) + (2 * t), c102.Value, c103.Value);
        StorePair(y, p, row0 + (wr * 32) + (1 * 16) + g, col0 + (wc * 32) + (1 * 8) + (2 * t), c110.Value, c111.Value);
        StorePair(y, p, row0 + (wr * 32) + (1 * 16) + g + 8, col0 + (wc * 32) + (1 * 8) + (2 * t), c112.Value, c113.Value);
        StorePair(y, p, row0 + (wr * 32) + (1 * 16) + g, col0 + (wc * 32) + (2 * 8) + (2 * t), c120.Value, c121.Value);
        StorePair(y, p, row0 + (wr * 32) + (1 * 16) + g + 8, col0 + (wc * 32) + (2 * 8) + (2 * t), c122.Value, c123.Value);
        StorePair(y, p, row0 + (wr * 32) + (1 * 16) + g, col0 + (wc * 32) + (3 * 8) + (2 * t), c130.Value, c131.Value);
        StorePair(y, p, row0 + (wr * 32) + (1 * 16) + g + 8, col0 + (wc * 32) + (3 * 8) + (2 * t), c132.Value, c133.Value);
    }

    private static void StorePair(ArrayView<float> y, MatMul.MatMulParams p, int row, int col, float v0, float v1)
    {
        if (row >= p.Rows)
            return;
        long b = (long)row * p.M;
        if (col < p.M)
            y[b + col] = v0;
        if (col + 1 < p.M)
            y[b + col + 1] = v1;
    }
}
