/* flash_attention.cu: fused causal attention for the bf16 table, head dims
 * 64 and 128, flash-style (Dao 2022/2023), arranged like FlashAttention-2:
 * q, k, v tiles in shared memory, scores and probabilities in registers, an
 * online softmax, no T x T matrix anywhere. The forward saves one
 * log-sum-exp per (b, h, t) row; the backward recomputes the probabilities
 * from it. Blocks of 128 query rows in 8 warps with ldmatrix fragment
 * loads: 1.03x faster on GPT-2 124M and 1.07x on the 1.1B llama than 64-row
 * blocks of 4 warps with 32-bit loads, measured on an H200
 * (docs/log/performance-history.md, change 7).
 *
 * Tensor cores through mma.sync.m16n8k16 (bf16 in, fp32 accumulate; sm_80
 * and later). Register layouts of the m16n8k16 fragments (PTX ISA, "Matrix
 * Fragments for mma.m16n8k16"), with g = lane / 4 and t = lane % 4:
 *   A (16 x 16, row-major): reg0 = A[g][2t, 2t+1], reg1 = A[g+8][2t, 2t+1],
 *                           reg2 = A[g][2t+8, +9], reg3 = A[g+8][2t+8, +9]
 *   B (16 x 8):             reg0 = B[2t, 2t+1][g], reg1 = B[2t+8, +9][g]
 *   C (16 x 8, fp32):       c0, c1 = C[g][2t, 2t+1], c2, c3 = C[g+8][2t, 2t+1]
 * so the accumulators of two adjacent 16 x 8 score tiles are, packed to
 * bf16, exactly the A fragment of the next product (P V, dS K): the
 * probabilities never leave registers.
 *
 * - every mma operand comes from shared memory through ldmatrix (four 8 x 8
 *   matrices a warp instruction) and ldmatrix.trans for the operands read
 *   transposed (V in P V, dO and Q in dV/dK, K in dQ). Rows are padded to
 *   HD + 8 elements (144 or 272 bytes): the 8 row addresses of one 8 x 8
 *   matrix then fall in 8 different 16-byte bank groups, no conflicts.
 * - the forward and the dQ pass own 128 query rows a block (8 warps x 16),
 *   against 64-row key/value tiles; the dK/dV pass owns 128 key rows a
 *   block against 64-row query tiles. Tiles are double-buffered with
 *   cp.async.
 * - a warp skips a tile all of whose keys lie after its 16 queries (the
 *   diagonal of a 128 x 64 pairing), and masks only the tiles that cross
 *   its diagonal.
 * Fragment addresses of ldmatrix.x4 (lane l gives the row address of
 * matrix l / 8, row l % 8; register i receives matrix i in the layout of an
 * mma fragment, row lane / 4, columns 2 (lane % 4), +1, or with .trans its
 * transpose):
 *   A (16 x 16 at X[r0][c0]):             row r0 + l % 16, column c0 + (l / 16) 8
 *   B^T pairs (B[k][n] = Y[n0 + n][k0 + k], n-tiles n0 and n0 + 8):
 *                                         row n0 + l % 8 + (l / 16) 8,
 *                                         column k0 + (l / 8 % 2) 8
 *   B pairs, .trans (B[k][n] = Y[k0 + k][n0 + n]): as A with (r0, c0) = (k0, n0)
 * giving {b0, b1} of n-tile n0 in registers 0, 1 and of n0 + 8 in 2, 3.
 *
 * Scores are kept in log2 units: s2 = (q . k) * scale * log2(e), p =
 * exp2(s2 - m). The saved "log-sum-exp" is lse2 = m + log2(l) in the same
 * units; it is private to this file (ops.h: att's content is the backend's).
 *
 * Backward (deterministic, no atomics): D = rowsum(dO * O) first; then
 * blocks of key rows accumulate dK and dV over the query tiles (and, with
 * GQA, over the query heads of a group, see flash_bwd_dkdv_kernel) in
 * registers, and one block per (query head, query tile) accumulates dQ over
 * the key tiles. That recomputes Q K^T and dO V^T once more than a
 * dQ-by-atomics design, for bitwise-repeatable gradients.
 *
 * Rows of a tile past T are zero-filled in shared memory and masked; every
 * row t < T of out, dq, dk, dv is written exactly once.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/flash_attention.cuh"

namespace {

constexpr float LOG2E = 1.4426950408889634f;

__device__ __forceinline__ uint32_t pack2(bf16 lo, bf16 hi) {
    return (uint32_t)__bfloat16_as_ushort(lo) | ((uint32_t)__bfloat16_as_ushort(hi) << 16);
}
__device__ __forceinline__ uint32_t pack_f(float lo, float hi) {
    return pack2(__float2bfloat16_rn(lo), __float2bfloat16_rn(hi));
}

/* d += a (16x16) b (16x8) */
__device__ __forceinline__ void mma(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
#ifdef DAPT_CUEMU /* the host emulator's (tests/cuemu) */
    cuemu::mma_bf16_16816(d, a, b0, b1);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

/* the A fragment (16 x 16, columns 16c..16c+15) from score accumulators
 * s[2c], s[2c+1] (16 x 8 each) */
__device__ __forceinline__ void acc_to_a(uint32_t a[4], const float lo[4], const float hi[4]) {
    a[0] = pack_f(lo[0], lo[1]);
    a[1] = pack_f(lo[2], lo[3]);
    a[2] = pack_f(hi[0], hi[1]);
    a[3] = pack_f(hi[2], hi[3]);
}

/* cp.async (sm_80+): 16-byte copies global -> shared that bypass registers
 * and run while the block computes; valid == false zero-fills the 16 bytes
 * (source size 0, the address then only has to be valid). Issued copies
 * form a group at cp_async_commit(); cp_async_wait<N>() waits until at
 * most N groups are still in flight. */
#ifdef DAPT_CUEMU /* the host emulator's (tests/cuemu) */
__device__ __forceinline__ void cp_async16(void *dst, const void *src, bool valid) {
    cuemu::cp_async16(dst, src, valid);
}
__device__ __forceinline__ void cp_async_commit() { cuemu::cp_async_commit(); }
template <int N> __device__ __forceinline__ void cp_async_wait() { cuemu::cp_async_wait(N); }
#else
__device__ __forceinline__ void cp_async16(void *dst, const void *src, bool valid) {
    unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    int n = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
#endif

/* max / sum over the 4 threads of a quad (the 4 holders of one C row) */
__device__ __forceinline__ float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

/* D[(b, h), t] = sum_i dO[b, t, h, i] O[b, t, h, i]; HD / 8 threads a row
 * (16-byte loads of 8 elements each, then a butterfly over those lanes;
 * one warp a row with 2-byte loads ran at ~1.3 TB/s on an H200). Launch
 * with flash_dot_blocks(rows) blocks of 256 threads; rows (b, t, h) are
 * 16-byte aligned (HD 64 or 128). */
template <int HD>
__global__ void flash_bwd_dot_kernel(float *D, const bf16 *dout, const bf16 *out, int T, int NH,
                                     size_t rows) {
    constexpr int TPR = HD / 8; /* threads a row: 8 or 16, a power of two */
    size_t r = blockIdx.x * (size_t)(blockDim.x / TPR) + threadIdx.x / TPR; /* (b, t, h) */
    int k = threadIdx.x % TPR;
    float a[8], o[8], s = 0.0f;
    if (r < rows) {
        ld8(a, dout + r * HD + k * 8);
        ld8(o, out + r * HD + k * 8);
#pragma unroll
        for (int j = 0; j < 8; j++) s += a[j] * o[j];
    }
#pragma unroll
    for (int m = TPR / 2; m > 0; m >>= 1) s += __shfl_xor_sync(0xffffffffu, s, m);
    if (r >= rows || k) return;
    int h = (int)(r % NH);
    size_t bt = r / NH;
    int tt = (int)(bt % T), b = (int)(bt / T);
    D[((size_t)b * NH + h) * T + tt] = s;
}
template <int HD> static unsigned flash_dot_blocks(size_t rows) {
    return (unsigned)((rows + 256 / (HD / 8) - 1) / (256 / (HD / 8)));
}

/* dK, dV of GQA when a group's query heads are split over several blocks
 * (flash_bwd_dkdv_kernel's hpb < NH / NKV): dqkv's k and v parts = the sum
 * of the NS / NKV fp32 shares of each group, in split order; one thread
 * per (b, t, kv head, 2 HD) element */
template <int HD>
__global__ void flash_gqa_sum_kernel(bf16 *dqkv, const float *part, int T, int NH, int NKV,
                                     int NS, size_t total) {
    size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (e >= total) return;
    int i = (int)(e % (2 * HD));
    size_t r = e / (2 * HD);
    int g = (int)(r % NKV);
    size_t bt = r / NKV;
    int tt = (int)(bt % T), b = (int)(bt / T), per = NS / NKV;
    float s = 0.0f;
    for (int sp = g * per; sp < (g + 1) * per; sp++)
        s += part[(((size_t)b * NS + sp) * T + tt) * 2 * HD + i];
    size_t W = (size_t)(NH + 2 * NKV) * HD;
    int col = i < HD ? (NH + g) * HD + i : (NH + NKV + g) * HD + (i - HD);
    dqkv[bt * W + col] = __float2bfloat16_rn(s);
}

/* once per kernel: allow more than 48 KiB of dynamic shared memory */
template <typename K> static void allow_smem(K kernel, size_t bytes, int *done) {
    if (*done) return;
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)bytes));
    *done = 1;
}


constexpr int ROWS = 128;    /* rows a block owns: queries (fwd, dQ) or keys (dK/dV) */
constexpr int TILE = 64;     /* rows of the tiles it loops over */
constexpr int THREADS = 256; /* 8 warps x 16 rows */

#ifdef DAPT_CUEMU /* the host emulator's (tests/cuemu) */
__device__ __forceinline__ void ldsm4(uint32_t r[4], const bf16 *p) {
    cuemu::ldmatrix_x4(r, p, 0);
}
__device__ __forceinline__ void ldsm4_t(uint32_t r[4], const bf16 *p) {
    cuemu::ldmatrix_x4(r, p, 1);
}
#else
__device__ __forceinline__ void ldsm4(uint32_t r[4], const bf16 *p) {
    unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
__device__ __forceinline__ void ldsm4_t(uint32_t r[4], const bf16 *p) {
    unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
#endif
/* this lane's ldmatrix address for an A fragment at (r0, c0), or a .trans
 * B pair at (k0, n0) */
__device__ __forceinline__ const bf16 *at_a(const bf16 *X, int ld, int r0, int c0, int lane) {
    return X + (r0 + (lane & 15)) * ld + c0 + (lane >> 4) * 8;
}
/* ... for a B^T pair: n-tiles n0, n0 + 8 of B[k][n] = Y[n0 + n][k0 + k] */
__device__ __forceinline__ const bf16 *at_bt(const bf16 *Y, int ld, int n0, int k0, int lane) {
    return Y + (n0 + (lane & 7) + ((lane >> 4) << 3)) * ld + k0 + ((lane >> 3) & 1) * 8;
}

/* NR rows row0.. of one head into a shared tile (ld = HD + 8), as
 * 16-byte cp.async copies by the block's THREADS threads */
template <int HD, int NR>
__device__ __forceinline__ void load_rows_async(bf16 *S, const bf16 *src, size_t stride, int row0,
                                                int T) {
    constexpr int CH = HD / 8, LD = HD + 8;
    static_assert(NR * CH % THREADS == 0, "whole 16-byte chunks per thread");
    /* thread x copies chunk x % CH of rows x / CH + k THREADS / CH */
    const int r1 = threadIdx.x / CH, c = (threadIdx.x % CH) * 8;
#pragma unroll
    for (int k = 0; k < NR * CH / THREADS; k++) {
        int r = r1 + k * (THREADS / CH);
        bool ok = row0 + r < T;
        cp_async16(S + r * LD + c, ok ? src + (size_t)(row0 + r) * stride + c : src, ok);
    }
}

/* acc[8][4] (16 x 64) += A (16 x HD, rows r0.. of X) B, B[k][n] = Y[n][k]
 * for the 64 rows of Y: the Q K^T (and dO V^T, K Q^T, V dO^T) of a warp */
template <int HD>
__device__ __forceinline__ void mma_rows_t(float acc[8][4], const bf16 *X, int r0, const bf16 *Y,
                                           int lane) {
    constexpr int LD = HD + 8;
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) {
        uint32_t a[4];
        ldsm4(a, at_a(X, LD, r0, kk * 16, lane));
#pragma unroll
        for (int np = 0; np < 4; np++) {
            uint32_t bq[4];
            ldsm4(bq, at_bt(Y, LD, np * 16, kk * 16, lane));
            mma(acc[2 * np], a, bq[0], bq[1]);
            mma(acc[2 * np + 1], a, bq[2], bq[3]);
        }
    }
}
/* acc[HD/8][4] (16 x HD) += P (16 x 64, from the score accumulators p) Y
 * (64 rows x HD): the P V (dS K, P^T dO, dS^T Q) of a warp */
template <int HD>
__device__ __forceinline__ void mma_acc_rows(float acc[][4], const float p[8][4], const bf16 *Y,
                                             int lane) {
    constexpr int LD = HD + 8;
#pragma unroll
    for (int kc = 0; kc < 4; kc++) {
        uint32_t a[4];
        acc_to_a(a, p[2 * kc], p[2 * kc + 1]);
#pragma unroll
        for (int np = 0; np < HD / 16; np++) {
            uint32_t bv[4];
            ldsm4_t(bv, at_a(Y, LD, kc * 16, np * 16, lane));
            mma(acc[2 * np], a, bv[0], bv[1]);
            mma(acc[2 * np + 1], a, bv[2], bv[3]);
        }
    }
}

/* ---- forward: grid (B*NH, 128-row query tiles), the longest first ---- */
template <int HD>
__global__ void __launch_bounds__(THREADS, HD == 64 ? 2 : 1)
    flash_fwd_kernel(bf16 *out, float *lse, const bf16 *qkv, int T, int NH, int NKV, float sl2) {
    constexpr int LD = HD + 8, ND = HD / 8;
    extern __shared__ int4 smem_[];
    /* Q (128 rows), then K and V (64 rows) twice */
    bf16 *Qs = reinterpret_cast<bf16 *>(smem_), *Kb = Qs + ROWS * LD,
         *Vb = Kb + 2 * TILE * LD;
    const int bh = blockIdx.x, h = bh % NH, b = bh / NH, kvh = h / (NH / NKV);
    const int q0 = (gridDim.y - 1 - blockIdx.y) * ROWS;
    /* key tiles up to the last valid row of this query tile */
    const int nk = min(q0 + ROWS - 1, T - 1) / TILE + 1;
    const size_t W = (size_t)(NH + 2 * NKV) * HD;
    const bf16 *base = qkv + (size_t)b * T * W;
    const bf16 *kbase = base + (size_t)(NH + kvh) * HD,
               *vbase = base + (size_t)(NH + NKV + kvh) * HD;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int w0 = q0 + warp * 16; /* this warp's first query row */

    load_rows_async<HD, ROWS>(Qs, base + (size_t)h * HD, W, q0, T);
    cp_async_commit();
    load_rows_async<HD, TILE>(Kb, kbase, W, 0, T);
    load_rows_async<HD, TILE>(Vb, vbase, W, 0, T);
    cp_async_commit();

    float o[ND][4];
#pragma unroll
    for (int n = 0; n < ND; n++)
        o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
    const int r0 = w0 + g, r1 = r0 + 8; /* this thread's two query rows */

    for (int kt = 0; kt < nk; kt++) {
        const int k0 = kt * TILE, buf = kt & 1;
        if (kt + 1 < nk) { /* the next tile into the other buffer (free: see the end of the loop) */
            load_rows_async<HD, TILE>(Kb + (buf ^ 1) * TILE * LD, kbase, W, k0 + TILE, T);
            load_rows_async<HD, TILE>(Vb + (buf ^ 1) * TILE * LD, vbase, W, k0 + TILE, T);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        /* warp-uniform: skip a tile entirely after this warp's rows (and
         * warps wholly past T); tile 0 is never skipped by a row < T, so
         * every written row has a finite running max */
        if (k0 <= w0 + 15 && w0 < T) {
            const bf16 *Ks = Kb + buf * TILE * LD, *Vs = Vb + buf * TILE * LD;
            float s[8][4];
#pragma unroll
            for (int nt = 0; nt < 8; nt++)
                s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
            /* Q's fragments from shared memory at every tile (one ldmatrix
             * per 8 mma; held in registers they cost the HD-64 kernel its
             * second block per SM) */
            mma_rows_t<HD>(s, Qs, warp * 16, Ks, lane);
            /* scale into log2 units; the causal mask where the tile crosses
             * this warp's diagonal (keys >= T lie after every row < T) */
            const bool diag = k0 + TILE - 1 > w0;
            float mx0 = m0, mx1 = m1;
#pragma unroll
            for (int nt = 0; nt < 8; nt++)
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    int col = k0 + nt * 8 + 2 * t + j;
                    float v0 = s[nt][j] * sl2, v1 = s[nt][2 + j] * sl2;
                    if (diag && col > r0) v0 = -INFINITY;
                    if (diag && col > r1) v1 = -INFINITY;
                    s[nt][j] = v0, s[nt][2 + j] = v1;
                    mx0 = fmaxf(mx0, v0), mx1 = fmaxf(mx1, v1);
                }
            mx0 = quad_max(mx0), mx1 = quad_max(mx1);
            const float a0 = exp2f(m0 - mx0), a1 = exp2f(m1 - mx1);
            m0 = mx0, m1 = mx1;
            float rs0 = 0.0f, rs1 = 0.0f;
#pragma unroll
            for (int nt = 0; nt < 8; nt++) {
                s[nt][0] = exp2f(s[nt][0] - m0), s[nt][1] = exp2f(s[nt][1] - m0);
                s[nt][2] = exp2f(s[nt][2] - m1), s[nt][3] = exp2f(s[nt][3] - m1);
                rs0 += s[nt][0] + s[nt][1], rs1 += s[nt][2] + s[nt][3];
            }
            l0 = l0 * a0 + rs0, l1 = l1 * a1 + rs1;
#pragma unroll
            for (int n = 0; n < ND; n++)
                o[n][0] *= a0, o[n][1] *= a0, o[n][2] *= a1, o[n][3] *= a1;
            mma_acc_rows<HD>(o, s, Vs, lane);
        }
        __syncthreads(); /* this buffer is refilled two tiles on */
    }
    l0 = quad_sum(l0), l1 = quad_sum(l1);
    const float i0 = 1.0f / l0, i1 = 1.0f / l1;
#pragma unroll
    for (int n = 0; n < ND; n++) {
        int col = h * HD + n * 8 + 2 * t;
        if (r0 < T)
            *reinterpret_cast<uint32_t *>(out + ((size_t)b * T + r0) * NH * HD + col) =
                pack_f(o[n][0] * i0, o[n][1] * i0);
        if (r1 < T)
            *reinterpret_cast<uint32_t *>(out + ((size_t)b * T + r1) * NH * HD + col) =
                pack_f(o[n][2] * i1, o[n][3] * i1);
    }
    if (t == 0) {
        if (r0 < T) lse[(size_t)bh * T + r0] = m0 + log2f(l0);
        if (r1 < T) lse[(size_t)bh * T + r1] = m1 + log2f(l1);
    }
}

/* ---- backward: dQ; grid (B*NH, 128-row query tiles), the longest first.
 * Each warp accumulates 16 rows of dQ over the 64-row key tiles up to its
 * diagonal: S = Q K^T, P = exp2(S sl2 - lse2), dP = dO V^T,
 * dS = P (dP - D), dQ = scale dS K. Rows >= T take lse2 = +inf: P = 0. */
template <int HD>
__global__ void __launch_bounds__(THREADS, HD == 64 ? 2 : 1)
    flash_bwd_dq_kernel(bf16 *dqkv, const bf16 *dout, const bf16 *qkv, const float *lse,
                         const float *D, int T, int NH, int NKV, float sl2, float scale) {
    constexpr int LD = HD + 8, ND = HD / 8;
    extern __shared__ int4 smem_[];
    /* Q, dO (128 rows), then K and V (64 rows) twice */
    bf16 *Qs = reinterpret_cast<bf16 *>(smem_), *dOs = Qs + ROWS * LD, *Kb = dOs + ROWS * LD,
         *Vb = Kb + 2 * TILE * LD;
    const int bh = blockIdx.x, h = bh % NH, b = bh / NH, kvh = h / (NH / NKV);
    const int q0 = (gridDim.y - 1 - blockIdx.y) * ROWS;
    const int nk = min(q0 + ROWS - 1, T - 1) / TILE + 1;
    const size_t W = (size_t)(NH + 2 * NKV) * HD, OW = (size_t)NH * HD;
    const bf16 *base = qkv + (size_t)b * T * W;
    const bf16 *kbase = base + (size_t)(NH + kvh) * HD,
               *vbase = base + (size_t)(NH + NKV + kvh) * HD;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int w0 = q0 + warp * 16;

    load_rows_async<HD, ROWS>(Qs, base + (size_t)h * HD, W, q0, T);
    load_rows_async<HD, ROWS>(dOs, dout + (size_t)b * T * OW + (size_t)h * HD, OW, q0, T);
    load_rows_async<HD, TILE>(Kb, kbase, W, 0, T);
    load_rows_async<HD, TILE>(Vb, vbase, W, 0, T);
    cp_async_commit();
    const int r0 = w0 + g, r1 = r0 + 8;
    const float L0 = r0 < T ? lse[(size_t)bh * T + r0] : INFINITY;
    const float L1 = r1 < T ? lse[(size_t)bh * T + r1] : INFINITY;
    const float D0 = r0 < T ? D[(size_t)bh * T + r0] : 0.0f;
    const float D1 = r1 < T ? D[(size_t)bh * T + r1] : 0.0f;

    float dq[ND][4];
#pragma unroll
    for (int n = 0; n < ND; n++)
        dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.0f;

    for (int kt = 0; kt < nk; kt++) {
        const int k0 = kt * TILE, buf = kt & 1;
        if (kt + 1 < nk) {
            load_rows_async<HD, TILE>(Kb + (buf ^ 1) * TILE * LD, kbase, W, k0 + TILE, T);
            load_rows_async<HD, TILE>(Vb + (buf ^ 1) * TILE * LD, vbase, W, k0 + TILE, T);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        if (k0 <= w0 + 15 && w0 < T) {
            const bf16 *Ks = Kb + buf * TILE * LD, *Vs = Vb + buf * TILE * LD;
            float s[8][4], dp[8][4];
#pragma unroll
            for (int nt = 0; nt < 8; nt++)
#pragma unroll
                for (int j = 0; j < 4; j++)
                    s[nt][j] = dp[nt][j] = 0.0f;
            mma_rows_t<HD>(s, Qs, warp * 16, Ks, lane);
            mma_rows_t<HD>(dp, dOs, warp * 16, Vs, lane);
            const bool diag = k0 + TILE - 1 > w0;
#pragma unroll
            for (int nt = 0; nt < 8; nt++)
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    int col = k0 + nt * 8 + 2 * t + j;
                    float p0 = exp2f(s[nt][j] * sl2 - L0), p1 = exp2f(s[nt][2 + j] * sl2 - L1);
                    if (diag && col > r0) p0 = 0.0f;
                    if (diag && col > r1) p1 = 0.0f;
                    s[nt][j] = p0 * (dp[nt][j] - D0);
                    s[nt][2 + j] = p1 * (dp[nt][2 + j] - D1);
                }
            mma_acc_rows<HD>(dq, s, Ks, lane);
        }
        __syncthreads(); /* this buffer is refilled two tiles on */
    }
#pragma unroll
    for (int n = 0; n < ND; n++) {
        int col = h * HD + n * 8 + 2 * t;
        if (r0 < T)
            *reinterpret_cast<uint32_t *>(dqkv + ((size_t)b * T + r0) * W + col) =
                pack_f(dq[n][0] * scale, dq[n][1] * scale);
        if (r1 < T)
            *reinterpret_cast<uint32_t *>(dqkv + ((size_t)b * T + r1) * W + col) =
                pack_f(dq[n][2] * scale, dq[n][3] * scale);
    }
}

/* ---- backward: dK, dV; grid (B*NH/hpb, 128-row key tiles), the longest
 * first. A block owns 128 key rows of one key/value head and hpb of the
 * query heads of its group (hpb divides NH / NKV; consecutive heads). Each
 * warp accumulates 16 key rows of dK and dV over those query heads, in
 * head order, and for each over the 64-row query tiles from its diagonal
 * on: S^T = K Q^T, P^T, dP^T = V dO^T, dV += P^T dO, dK += scale dS^T Q.
 * With the whole group in the block (hpb = NH / NKV, what bwd picks when
 * that still gives every SM 4 blocks) the sum stays in registers
 * and is written once, in bf16. Otherwise each block writes its fp32 share
 * to part (B, NH/hpb, T, 2 HD: dK then dV) and flash_gqa_sum_kernel adds
 * a group's shares (with 1 head a block, that kernel took 4.3 ms a step of
 * the 1.1B llama at 16 x 2048 on an H200). Query rows >= T take lse2 =
 * +inf (P = 0). At HD 64 two blocks share an SM: the launch bounds cap
 * ptxas at 128 registers (24 bytes spilled), dP^T goes in chunks of 2
 * n-tiles (the same products in the same order: bitwise the results of
 * chunks of 8), and the kernel runs 9% faster than at one block an SM and
 * 203 registers (measured on an H100, docs/log/gpu-runs-history.md). */
template <int HD>
__global__ void __launch_bounds__(THREADS, HD == 64 ? 2 : 1)
    flash_bwd_dkdv_kernel(bf16 *dqkv, float *part, const bf16 *dout, const bf16 *qkv,
                          const float *lse, const float *D, int T, int NH, int NKV, int hpb,
                          float sl2, float scale) {
    constexpr int LD = HD + 8, ND = HD / 8;
    extern __shared__ int4 smem_[];
    /* K, V (128 rows), then Q and dO (64 rows) twice and the rows' lse2 and
     * D twice */
    bf16 *Ks = reinterpret_cast<bf16 *>(smem_), *Vs = Ks + ROWS * LD, *Qb = Vs + ROWS * LD,
         *dOb = Qb + 2 * TILE * LD;
    float *Lb = reinterpret_cast<float *>(dOb + 2 * TILE * LD), *Db = Lb + 2 * TILE;
    const int NS = NH / hpb, sp = blockIdx.x % NS, b = blockIdx.x / NS;
    const int h0 = sp * hpb, kvh = h0 / (NH / NKV);
    const int k0 = blockIdx.y * ROWS, nq = (T + TILE - 1) / TILE;
    const size_t W = (size_t)(NH + 2 * NKV) * HD, OW = (size_t)NH * HD;
    const bf16 *base = qkv + (size_t)b * T * W;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int wk = k0 + warp * 16;      /* this warp's first key row */
    const int c0 = wk + g, c1 = c0 + 8; /* this thread's two key rows */
    /* steps: (query head, query tile) pairs: the tiles from qt0 (the first
     * with a query >= k0) of head h0, then of h0 + 1, ... */
    const int qt0 = k0 / TILE, nqt = nq - qt0, steps = hpb * nqt;
    auto fetch = [&](int it, int to) {
        const int h = h0 + it / nqt, q0 = (qt0 + it % nqt) * TILE;
        const size_t bh = (size_t)b * NH + h;
        load_rows_async<HD, TILE>(Qb + to * TILE * LD, base + (size_t)h * HD, W, q0, T);
        load_rows_async<HD, TILE>(dOb + to * TILE * LD,
                                  dout + (size_t)b * T * OW + (size_t)h * HD, OW, q0, T);
        for (int i = threadIdx.x; i < TILE; i += THREADS) {
            bool in = q0 + i < T;
            Lb[to * TILE + i] = in ? lse[bh * T + q0 + i] : INFINITY;
            Db[to * TILE + i] = in ? D[bh * T + q0 + i] : 0.0f;
        }
    };
    load_rows_async<HD, ROWS>(Ks, base + (size_t)(NH + kvh) * HD, W, k0, T);
    load_rows_async<HD, ROWS>(Vs, base + (size_t)(NH + NKV + kvh) * HD, W, k0, T);
    fetch(0, 0);
    cp_async_commit();

    float dk[ND][4], dv[ND][4];
#pragma unroll
    for (int n = 0; n < ND; n++)
#pragma unroll
        for (int j = 0; j < 4; j++)
            dk[n][j] = dv[n][j] = 0.0f;

    for (int it = 0; it < steps; it++) {
        const int q0 = (qt0 + it % nqt) * TILE, buf = it & 1;
        if (it + 1 < steps) {
            fetch(it + 1, buf ^ 1);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        /* warp-uniform: skip query tiles wholly before this warp's keys (and
         * warps wholly past T) */
        if (q0 + TILE - 1 >= wk && wk < T) {
            const bf16 *Qs = Qb + buf * TILE * LD, *dOs = dOb + buf * TILE * LD;
            const float *Ls = Lb + buf * TILE, *Ds = Db + buf * TILE;
            float st[8][4];
#pragma unroll
            for (int nt = 0; nt < 8; nt++)
                st[nt][0] = st[nt][1] = st[nt][2] = st[nt][3] = 0.0f;
            mma_rows_t<HD>(st, Ks, warp * 16, Qs, lane);
            /* P^T: rows are keys c, columns queries q; zero where q < c
             * (only where the tile crosses this warp's diagonal) */
            const bool diag = q0 < wk + 15;
#pragma unroll
            for (int nt = 0; nt < 8; nt++)
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    int qi = nt * 8 + 2 * t + j, q = q0 + qi;
                    float L = Ls[qi];
                    float p0 = exp2f(st[nt][j] * sl2 - L), p1 = exp2f(st[nt][2 + j] * sl2 - L);
                    if (diag && q < c0) p0 = 0.0f;
                    if (diag && q < c1) p1 = 0.0f;
                    st[nt][j] = p0, st[nt][2 + j] = p1;
                }
            mma_acc_rows<HD>(dv, st, dOs, lane); /* dV += P^T dO */
            /* dS^T = P^T (dP^T - D), dP^T = V dO^T, in chunks of CH = 2
             * n-tiles (registers are short) */
            constexpr int CH = 2;
#pragma unroll
            for (int c = 0; c < 8; c += CH) {
                float dp[CH][4];
#pragma unroll
                for (int i = 0; i < CH; i++)
                    dp[i][0] = dp[i][1] = dp[i][2] = dp[i][3] = 0.0f;
#pragma unroll 2
                for (int kk = 0; kk < HD / 16; kk++) {
                    uint32_t a[4];
                    ldsm4(a, at_a(Vs, LD, warp * 16, kk * 16, lane));
#pragma unroll
                    for (int i = 0; i < CH; i += 2) {
                        uint32_t bq[4];
                        ldsm4(bq, at_bt(dOs, LD, (c + i) * 8, kk * 16, lane));
                        mma(dp[i], a, bq[0], bq[1]);
                        mma(dp[i + 1], a, bq[2], bq[3]);
                    }
                }
#pragma unroll
                for (int i = 0; i < CH; i++)
#pragma unroll
                    for (int j = 0; j < 2; j++) {
                        float Dq = Ds[(c + i) * 8 + 2 * t + j];
                        st[c + i][j] *= dp[i][j] - Dq;
                        st[c + i][2 + j] *= dp[i][2 + j] - Dq;
                    }
            }
            mma_acc_rows<HD>(dk, st, Qs, lane); /* dK += dS^T Q */
        }
        __syncthreads(); /* this buffer is refilled two tiles on */
    }
    if (part) {
        float *p0 = part + (((size_t)b * NS + sp) * T + c0) * 2 * HD, *p1 = p0 + 8 * 2 * HD;
#pragma unroll
        for (int n = 0; n < ND; n++) {
            int col = n * 8 + 2 * t;
            if (c0 < T) {
                *reinterpret_cast<float2 *>(p0 + col) =
                    make_float2(dk[n][0] * scale, dk[n][1] * scale);
                *reinterpret_cast<float2 *>(p0 + HD + col) = make_float2(dv[n][0], dv[n][1]);
            }
            if (c1 < T) {
                *reinterpret_cast<float2 *>(p1 + col) =
                    make_float2(dk[n][2] * scale, dk[n][3] * scale);
                *reinterpret_cast<float2 *>(p1 + HD + col) = make_float2(dv[n][2], dv[n][3]);
            }
        }
        return;
    }
#pragma unroll
    for (int n = 0; n < ND; n++) {
        int kc = (NH + kvh) * HD + n * 8 + 2 * t, vc = (NH + NKV + kvh) * HD + n * 8 + 2 * t;
        if (c0 < T) {
            bf16 *row = dqkv + ((size_t)b * T + c0) * W;
            *reinterpret_cast<uint32_t *>(row + kc) = pack_f(dk[n][0] * scale, dk[n][1] * scale);
            *reinterpret_cast<uint32_t *>(row + vc) = pack_f(dv[n][0], dv[n][1]);
        }
        if (c1 < T) {
            bf16 *row = dqkv + ((size_t)b * T + c1) * W;
            *reinterpret_cast<uint32_t *>(row + kc) = pack_f(dk[n][2] * scale, dk[n][3] * scale);
            *reinterpret_cast<uint32_t *>(row + vc) = pack_f(dv[n][2], dv[n][3]);
        }
    }
}

/* shared memory: the forward's 128-row Q + 2 x (64-row K, V); dQ's 128-row
 * Q, dO + 2 x (K, V); dK/dV's 128-row K, V + 2 x (64-row Q, dO) and
 * 2 x (lse2, D) rows */
template <int HD> constexpr size_t bytes_rows(int rows) {
    return (size_t)rows * (HD + 8) * sizeof(bf16);
}
template <int HD> constexpr size_t fwd_smem() {
    return bytes_rows<HD>(ROWS) + 4 * bytes_rows<HD>(TILE);
}
template <int HD> constexpr size_t dq_smem() {
    return 2 * bytes_rows<HD>(ROWS) + 4 * bytes_rows<HD>(TILE);
}
template <int HD> constexpr size_t dkdv_smem() {
    return dq_smem<HD>() + 4 * TILE * sizeof(float);
}

template <int HD>
static void fwd(bf16 *out, float *lse, const bf16 *qkv, int B, int T, int NH, int NKV) {
    static int ready;
    allow_smem(flash_fwd_kernel<HD>, fwd_smem<HD>(), &ready);
    dim3 grid((unsigned)(B * NH), (unsigned)((T + ROWS - 1) / ROWS));
    float sl2 = LOG2E / sqrtf((float)HD);
    KTIME_BEGIN("flash_fwd");
    flash_fwd_kernel<HD>
        <<<grid, THREADS, fwd_smem<HD>(), g_cuda.stream>>>(out, lse, qkv, T, NH, NKV, sl2);
    LAUNCH_CHECK();
    KTIME_END();
}

/* query heads a dK/dV block owns: the whole group (NH / NKV) when that
 * still makes 4 blocks for each of the card's SMs, else the
 * largest divisor of the group that does, else 1; the option
 * cuda.flash_heads_per_block = N (N must divide the group) overrides it,
 * for the op tests and A/B runs */
static int heads_per_block(int B, int NH, int NKV, unsigned tiles) {
    const int group = NH / NKV;
    const int v = g_cuda.opt.cuda.flash_heads_per_block;
    if (v) {
        if (v > group || group % v) {
            char msg[160];
            snprintf(msg, sizeof msg,
                     "cuda.flash_heads_per_block = %d: must be a divisor of the %d query heads "
                     "of a group",
                     v, group);
            CUDA_FATAL(msg);
        }
        return v;
    }
    const size_t want = 4 * (size_t)(g_cuda.sm_count > 0 ? g_cuda.sm_count : 1);
    for (int hpb = group; hpb > 1; hpb--)
        if (group % hpb == 0 && (size_t)B * (NH / hpb) * tiles >= want) return hpb;
    return 1;
}

template <int HD>
static void bwd(bf16 *dqkv, float *D, const bf16 *dout, const bf16 *out, const bf16 *qkv,
                 const float *lse, int B, int T, int NH, int NKV) {
    static int ready_dq, ready_dkdv;
    allow_smem(flash_bwd_dq_kernel<HD>, dq_smem<HD>(), &ready_dq);
    allow_smem(flash_bwd_dkdv_kernel<HD>, dkdv_smem<HD>(), &ready_dkdv);
    size_t rows = (size_t)B * T * NH;
    KTIME_BEGIN("flash_bwd_D");
    flash_bwd_dot_kernel<HD>
        <<<flash_dot_blocks<HD>(rows), 256, 0, g_cuda.stream>>>(D, dout, out, T, NH, rows);
    LAUNCH_CHECK();
    KTIME_END();
    float scale = 1.0f / sqrtf((float)HD), sl2 = LOG2E * scale;
    unsigned tiles = (unsigned)((T + ROWS - 1) / ROWS);
    const int hpb = heads_per_block(B, NH, NKV, tiles), NS = NH / hpb;
    float *part = hpb == NH / NKV
                      ? NULL
                      : (float *)cuda_scratch((size_t)B * NS * T * 2 * HD * sizeof(float));
    KTIME_BEGIN("flash_bwd_dkdv");
    flash_bwd_dkdv_kernel<HD>
        <<<dim3((unsigned)(B * NS), tiles), THREADS, dkdv_smem<HD>(), g_cuda.stream>>>(
            dqkv, part, dout, qkv, lse, D, T, NH, NKV, hpb, sl2, scale);
    LAUNCH_CHECK();
    KTIME_END();
    if (part) {
        size_t total = (size_t)B * T * NKV * 2 * HD;
        KTIME_BEGIN("flash_bwd_gqa_sum");
        flash_gqa_sum_kernel<HD><<<(unsigned)((total + 255) / 256), 256, 0, g_cuda.stream>>>(
            dqkv, part, T, NH, NKV, NS, total);
        LAUNCH_CHECK();
        KTIME_END();
    }
    KTIME_BEGIN("flash_bwd_dq");
    flash_bwd_dq_kernel<HD>
        <<<dim3((unsigned)(B * NH), tiles), THREADS, dq_smem<HD>(), g_cuda.stream>>>(
            dqkv, dout, qkv, lse, D, T, NH, NKV, sl2, scale);
    LAUNCH_CHECK();
    KTIME_END();
}

static void need_aligned(const void *p, const char *what) {
    if (!cuda_aligned16(p)) {
        char msg[96];
        snprintf(msg, sizeof msg, "flash attention: %s is not 16-byte aligned", what);
        CUDA_FATAL(msg);
    }
}

} // namespace

int cuda_flash_enabled(int HD) {
    return g_cuda.opt.cuda.flash_attention && (HD == 64 || HD == 128);
}

void cuda_flash_fwd(void *out, float *lse, const void *qkv, int B, int T, int NH, int NKV, int HD) {
    if ((size_t)B * NH * T == 0) return;
    need_aligned(out, "out"), need_aligned(qkv, "qkv");
    if (HD == 64)
        fwd<64>((bf16 *)out, lse, (const bf16 *)qkv, B, T, NH, NKV);
    else
        fwd<128>((bf16 *)out, lse, (const bf16 *)qkv, B, T, NH, NKV);
}

void cuda_flash_bwd(void *dqkv, float *D, const void *dout, const void *out, const void *qkv,
                    const float *lse, int B, int T, int NH, int NKV, int HD) {
    if ((size_t)B * NH * T == 0) return;
    need_aligned(dqkv, "dqkv"), need_aligned(dout, "dout"), need_aligned(out, "out");
    need_aligned(qkv, "qkv");
    if (HD == 64)
        bwd<64>((bf16 *)dqkv, D, (const bf16 *)dout, (const bf16 *)out, (const bf16 *)qkv, lse, B,
                T, NH, NKV);
    else
        bwd<128>((bf16 *)dqkv, D, (const bf16 *)dout, (const bf16 *)out, (const bf16 *)qkv, lse, B,
                 T, NH, NKV);
}
