/* norms.cu: LayerNorm and RMSNorm, forward and backward (and the per-head
 * RMSNorm of q and k, Qwen3's), and the deterministic column sums that
 * parameter gradients of norms and biases use.
 *
 * Two paths for each op. The vector path (C % 8 == 0 and 16-byte aligned
 * pointers: every model shape) works on 8-element chunks with 16-byte loads,
 * one warp per row:
 * - forward (C <= 4096): the row is read once into registers; mean,
 *   variance (or mean square) and the output come from there;
 * - backward (C <= 2048 LayerNorm, 4104 RMSNorm): one kernel adds dinp and
 *   collects the dw (and db) terms per block in shared memory, written as one
 *   fp32 partial row per block; a second kernel adds the partials in a fixed
 *   order into dw/db (inputs read by one kernel only).
 * Otherwise (odd or unaligned sizes, wider rows) one thread block per row
 * with block reductions, and the dw/db column sums as a separate pass
 * (cuda_colsum). No atomics anywhere; every sum has a fixed order, so the
 * results are bitwise reproducible.
 * The forward's warp-per-row kernel also serves the fused residual add +
 * norm ops (on unless cuda.fused_norm = false), at the end of the file.
 */

#include "kernels/cuda/cuda_common.cuh"

static int norm_block(int C) {
    int t = (C + 7) / 8;
    t = (t + 31) / 32 * 32;
    return t < 32 ? 32 : (t > 512 ? 512 : t);
}

/* out (N,C), mean/rstd (N) written; reads inp (N,C), w, b (C). */
template <typename T>
__global__ void layernorm_fwd_kernel(T *out, float *mean, float *rstd, const T *inp, const T *w,
                                     const T *b, int C, float eps, int vec) {
    size_t row = (size_t)blockIdx.x * C;
    const T *x = inp + row;
    float f[8], wf[8], bf[8], o[8];
    float s = 0.0f;
    for (int c0 = threadIdx.x * 8; c0 < C; c0 += blockDim.x * 8) {
        ld8v(f, x + c0, vec, C - c0);
        for (int j = 0; j < 8; j++) s += f[j];
    }
    float m = block_reduce(s, 0) / C;
    float v = 0.0f;
    for (int c0 = threadIdx.x * 8; c0 < C; c0 += blockDim.x * 8) {
        int cnt = min(8, C - c0);
        ld8v(f, x + c0, vec, cnt);
        for (int j = 0; j < cnt; j++) v += (f[j] - m) * (f[j] - m);
    }
    v = block_reduce(v, 0) / C;
    float rs = 1.0f / sqrtf(v + eps);
    for (int c0 = threadIdx.x * 8; c0 < C; c0 += blockDim.x * 8) {
        int cnt = min(8, C - c0);
        ld8v(f, x + c0, vec, cnt);
        ld8v(wf, w + c0, vec, cnt);
        ld8v(bf, b + c0, vec, cnt);
        for (int j = 0; j < 8; j++) o[j] = (f[j] - m) * rs * wf[j] + bf[j];
        st8v(out + row + c0, o, vec, cnt);
    }
    if (threadIdx.x == 0) {
        mean[blockIdx.x] = m;
        rstd[blockIdx.x] = rs;
    }
}

/* dinp (N,C) += ; reads dout, inp (N,C), w (C), mean, rstd (N). One block
 * per row. */
template <typename T>
__global__ void layernorm_bwd_kernel(T *dinp, const T *dout, const T *inp, const T *w,
                                     const float *mean, const float *rstd, int C, int vec) {
    size_t row = (size_t)blockIdx.x * C;
    float m = mean[blockIdx.x], s = rstd[blockIdx.x];
    float d[8], x[8], wf[8], dx[8];
    float a = 0.0f, b = 0.0f;
    for (int c0 = threadIdx.x * 8; c0 < C; c0 += blockDim.x * 8) {
        int cnt = min(8, C - c0);
        ld8v(d, dout + row + c0, vec, cnt);
        ld8v(x, inp + row + c0, vec, cnt);
        ld8v(wf, w + c0, vec, cnt);
        for (int j = 0; j < cnt; j++) {
            float dn = d[j] * wf[j];
            a += dn;
            b += dn * (x[j] - m) * s;
        }
    }
    a = block_reduce(a, 0) / C;
    b = block_reduce(b, 0) / C;
    for (int c0 = threadIdx.x * 8; c0 < C; c0 += blockDim.x * 8) {
        int cnt = min(8, C - c0);
        ld8v(d, dout + row + c0, vec, cnt);
        ld8v(x, inp + row + c0, vec, cnt);
        ld8v(wf, w + c0, vec, cnt);
        ld8v(dx, dinp + row + c0, vec, cnt);
        for (int j = 0; j < 8; j++) dx[j] += (d[j] * wf[j] - a - (x[j] - m) * s * b) * s;
        st8v(dinp + row + c0, dx, vec, cnt);
    }
}

/* out (N,C), rstd (N) written; reads inp (N,C), w (C). One block per row. */
template <typename T>
__global__ void rmsnorm_fwd_kernel(T *out, float *rstd, const T *inp, const T *w, int C, float eps,
                                   int vec) {
    size_t row = (size_t)blockIdx.x * C;
    float f[8], wf[8], o[8];
    float ss = 0.0f;
    for (int c0 = threadIdx.x * 8; c0 < C; c0 += blockDim.x * 8) {
        ld8v(f, inp + row + c0, vec, C - c0);
        for (int j = 0; j < 8; j++) ss += f[j] * f[j];
    }
    float rs = 1.0f / sqrtf(block_reduce(ss, 0) / C + eps);
    for (int c0 = threadIdx.x * 8; c0 < C; c0 += blockDim.x * 8) {
        int cnt = min(8, C - c0);
        ld8v(f, inp + row + c0, vec, cnt);
        ld8v(wf, w + c0, vec, cnt);
        for (int j = 0; j < 8; j++) o[j] = f[j] * rs * wf[j];
        st8v(out + row + c0, o, vec, cnt);
    }
    if (threadIdx.x == 0) rstd[blockIdx.x] = rs;
}

/* dinp (N,C) += ; reads dout, inp (N,C), w (C), rstd (N). One block per row. */
template <typename T>
__global__ void rmsnorm_bwd_kernel(T *dinp, const T *dout, const T *inp, const T *w,
                                   const float *rstd, int C, int vec) {
    size_t row = (size_t)blockIdx.x * C;
    float s = rstd[blockIdx.x];
    float d[8], x[8], wf[8], dx[8];
    float a = 0.0f;
    for (int c0 = threadIdx.x * 8; c0 < C; c0 += blockDim.x * 8) {
        ld8v(d, dout + row + c0, vec, C - c0);
        ld8v(x, inp + row + c0, vec, C - c0);
        ld8v(wf, w + c0, vec, C - c0);
        for (int j = 0; j < 8; j++) a += d[j] * wf[j] * x[j] * s;
    }
    a = block_reduce(a, 0) / C;
    for (int c0 = threadIdx.x * 8; c0 < C; c0 += blockDim.x * 8) {
        int cnt = min(8, C - c0);
        ld8v(d, dout + row + c0, vec, cnt);
        ld8v(x, inp + row + c0, vec, cnt);
        ld8v(wf, w + c0, vec, cnt);
        ld8v(dx, dinp + row + c0, vec, cnt);
        for (int j = 0; j < 8; j++) dx[j] += (d[j] * wf[j] - x[j] * s * a) * s;
        st8v(dinp + row + c0, dx, vec, cnt);
    }
}

/* Column partial sums: block (x: 256 columns, y: one chunk of rows); each
 * thread walks its column down the chunk's rows in order and writes
 * part[y][c] (and part[R + y][c] for COLSUM_LN). Reads are coalesced across
 * the threads of a row. */
template <typename T>
__global__ void colsum_partial_kernel(float *part, const T *dout, const T *inp, const float *mean,
                                      const float *rstd, int N, int C, int rows_per, int mode) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    int n0 = blockIdx.y * rows_per, n1 = min(N, n0 + rows_per);
    float a0 = 0.0f, a1 = 0.0f;
    for (int n = n0; n < n1; n++) {
        size_t i = (size_t)n * C + c;
        float d = to_f(dout[i]);
        if (mode == COLSUM_PLAIN) {
            a0 += d;
        } else if (mode == COLSUM_LN) {
            a0 += d * (to_f(inp[i]) - mean[n]) * rstd[n];
            a1 += d;
        } else {
            a0 += d * to_f(inp[i]) * rstd[n];
        }
    }
    part[(size_t)blockIdx.y * C + c] = a0;
    if (mode == COLSUM_LN) part[(size_t)(gridDim.y + blockIdx.y) * C + c] = a1;
}

/* The same partial sums on 8-column chunks (C % 8 == 0, 16-byte aligned
 * rows): thread i of row chunk y adds columns 8 i .. 8 i + 7 down the chunk's
 * rows in order, loading 4 rows ahead (16-byte loads). */
template <typename T>
__global__ void colsum_partial_vec_kernel(float *part, const T *dout, const T *inp,
                                          const float *mean, const float *rstd, int N, int C,
                                          int rows_per, int mode) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= C / 8) return;
    int n0 = blockIdx.y * rows_per, n1 = min(N, n0 + rows_per);
    float a0[8], a1[8];
#pragma unroll
    for (int j = 0; j < 8; j++) a0[j] = a1[j] = 0.0f;
    for (int n = n0; n < n1; n += 4) {
        float d[4][8], x[4][8];
#pragma unroll
        for (int u = 0; u < 4; u++) {
            if (n + u < n1) {
                size_t o = (size_t)(n + u) * C + 8 * (size_t)i;
                ld8(d[u], dout + o);
                if (mode != COLSUM_PLAIN) ld8(x[u], inp + o);
            }
        }
#pragma unroll
        for (int u = 0; u < 4; u++) {
            if (n + u < n1) {
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    if (mode == COLSUM_PLAIN) {
                        a0[j] += d[u][j];
                    } else if (mode == COLSUM_LN) {
                        a0[j] += d[u][j] * (x[u][j] - mean[n + u]) * rstd[n + u];
                        a1[j] += d[u][j];
                    } else {
                        a0[j] += d[u][j] * x[u][j] * rstd[n + u];
                    }
                }
            }
        }
    }
    st8(part + (size_t)blockIdx.y * C + 8 * i, a0);
    if (mode == COLSUM_LN) st8(part + (size_t)(gridDim.y + blockIdx.y) * C + 8 * i, a1);
}

/* o0[c] += sum_r part[r][c] (o1 from part[R + r][c] when non-NULL). Block
 * (32, 8): 32 columns; thread y adds rows y, y + 8, ... in order, then thread
 * y = 0 adds the 8 sums in order. */
template <typename T>
__global__ void colsum_finish_kernel(T *o0, T *o1, const float *part, int R, int C) {
    __shared__ float sh[2][8][32];
    int c = blockIdx.x * 32 + threadIdx.x;
    float s0 = 0.0f, s1 = 0.0f;
    if (c < C) {
        for (int r = threadIdx.y; r < R; r += 8) {
            s0 += part[(size_t)r * C + c];
            if (o1) s1 += part[(size_t)(R + r) * C + c];
        }
    }
    sh[0][threadIdx.y][threadIdx.x] = s0;
    sh[1][threadIdx.y][threadIdx.x] = s1;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        s0 = sh[0][0][threadIdx.x], s1 = sh[1][0][threadIdx.x];
        for (int y = 1; y < 8; y++) s0 += sh[0][y][threadIdx.x], s1 += sh[1][y][threadIdx.x];
        o0[c] = from_f<T>(to_f(o0[c]) + s0);
        if (o1) o1[c] = from_f<T>(to_f(o1[c]) + s1);
    }
}

template <typename T>
void cuda_colsum(T *o0, T *o1, const T *dout, const T *inp, const float *mean, const float *rstd,
                 int N, int C, int mode) {
    if (N <= 0 || C <= 0) return;
    int vec = C % 8 == 0 && cuda_aligned16(dout) && (mode == COLSUM_PLAIN || cuda_aligned16(inp));
    /* vector path: chunks of >= 16 rows, at most 256; scalar: >= 32, at most 64 */
    int R = vec ? (N + 15) / 16 : (N + 31) / 32, Rmax = vec ? 256 : 64;
    if (R > Rmax) R = Rmax;
    int rows_per = (N + R - 1) / R;
    R = (N + rows_per - 1) / rows_per;
    float *part = (float *)cuda_scratch((size_t)2 * R * C * sizeof(float));
    if (vec) {
        dim3 grid((C / 8 + 127) / 128, R);
        colsum_partial_vec_kernel<T>
            <<<grid, 128, 0, g_cuda.stream>>>(part, dout, inp, mean, rstd, N, C, rows_per, mode);
    } else {
        dim3 grid((C + 255) / 256, R);
        colsum_partial_kernel<T>
            <<<grid, 256, 0, g_cuda.stream>>>(part, dout, inp, mean, rstd, N, C, rows_per, mode);
    }
    LAUNCH_CHECK();
    colsum_finish_kernel<T><<<(C + 31) / 32, dim3(32, 8), 0, g_cuda.stream>>>(
        o0, mode == COLSUM_LN ? o1 : NULL, part, R, C);
    LAUNCH_CHECK();
}
template void cuda_colsum<float>(float *, float *, const float *, const float *, const float *,
                                 const float *, int, int, int);
template void cuda_colsum<bf16>(bf16 *, bf16 *, const bf16 *, const bf16 *, const float *,
                                const float *, int, int, int);

/* ---- forward, vector path for C <= 4096 ----
 * One warp per row, NORM_FWD_WARPS rows a block. Each lane loads its chunks
 * (i = lane + 32 k, k < K) once into registers; the mean, the variance (or
 * the mean square) and the output all come from those registers, so inp is
 * read once. K is a compile-time bound (4, 8 or 16 chunks a lane) so that
 * f[][] stays in registers; chunks past the row are zero and skipped.
 * The arithmetic is the per-row kernels' above, in warp order.
 *
 * RES (the fused residual + norm ops): instead of reading inp, a lane reads
 * its chunks of ra and rb, adds them (float, as residual_kernel does), stores
 * the sum to res rounded to T and continues with the rounded values, i.e.
 * with exactly what the plain kernel would read back from res: the rest of
 * the kernel is the same code, so the results are those of residual_fwd
 * followed by the norm. res may alias ra or rb (a lane reads its chunk of
 * both before it writes that chunk; no other lane touches it), so these
 * three pointers are not __restrict__. */
#define NORM_FWD_WARPS 4

template <typename T, int LN, int K, int RES>
__global__ void __launch_bounds__(NORM_FWD_WARPS * 32)
    norm_fwd_warp_kernel(T *__restrict__ out, float *__restrict__ mean, float *__restrict__ rstd,
                         const T *__restrict__ inp, const T *__restrict__ w,
                         const T *__restrict__ b, int N, int C, float eps, T *res, const T *ra,
                         const T *rb) {
    const int lane = threadIdx.x & 31, nch = C / 8;
    const long long n = (long long)blockIdx.x * NORM_FWD_WARPS + (threadIdx.x >> 5);
    if (n >= N) return; /* whole warps only: the warp sums below stay uniform */
    float f[K][8];
#pragma unroll
    for (int k = 0; k < K; k++) {
        int i = lane + 32 * k;
        if (i < nch) {
            if (RES) {
                float y[8];
                ld8(f[k], ra + n * C + 8 * i);
                ld8(y, rb + n * C + 8 * i);
#pragma unroll
                for (int j = 0; j < 8; j++) f[k][j] = to_f(from_f<T>(f[k][j] + y[j]));
                st8(res + n * C + 8 * i, f[k]); /* exact: f is representable in T */
            } else {
                ld8(f[k], inp + n * C + 8 * i);
            }
        } else {
#pragma unroll
            for (int j = 0; j < 8; j++) f[k][j] = 0.0f;
        }
    }
    float m = 0.0f;
    if (LN) {
        float s = 0.0f;
#pragma unroll
        for (int k = 0; k < K; k++)
#pragma unroll
            for (int j = 0; j < 8; j++) s += f[k][j];
        m = warp_sum(s) / C;
    }
    float v = 0.0f;
#pragma unroll
    for (int k = 0; k < K; k++) {
        if (lane + 32 * k < nch) {
#pragma unroll
            for (int j = 0; j < 8; j++) v += (f[k][j] - m) * (f[k][j] - m);
        }
    }
    const float rs = 1.0f / sqrtf(warp_sum(v) / C + eps);
#pragma unroll
    for (int k = 0; k < K; k++) {
        int i = lane + 32 * k;
        if (i < nch) {
            float wf[8], bf[8], o[8];
            ld8(wf, w + 8 * i);
            if (LN) ld8(bf, b + 8 * i);
#pragma unroll
            for (int j = 0; j < 8; j++)
                o[j] = LN ? (f[k][j] - m) * rs * wf[j] + bf[j] : f[k][j] * rs * wf[j];
            st8(out + n * C + 8 * i, o);
        }
    }
    if (lane == 0) {
        if (LN) mean[n] = m;
        rstd[n] = rs;
    }
}

/* The warp-per-row forward when the vector path applies (C % 8 == 0,
 * 16-byte aligned rows, C <= 4096); returns 0 (nothing done) otherwise.
 * RES: the input row is ra + rb, stored to res (inp unused). */
template <typename T, int LN, int RES>
static int norm_fwd_warp(T *out, float *mean, float *rstd, const T *inp, const T *w, const T *b,
                         int N, int C, float eps, T *res = NULL, const T *ra = NULL,
                         const T *rb = NULL) {
    if (C % 8 || C > 8 * 32 * 16 || !cuda_aligned16(out) || !cuda_aligned16(w) ||
        (LN && !cuda_aligned16(b)))
        return 0;
    if (RES ? !cuda_aligned16(res) || !cuda_aligned16(ra) || !cuda_aligned16(rb)
            : !cuda_aligned16(inp))
        return 0;
    unsigned grid = (unsigned)((N + NORM_FWD_WARPS - 1) / NORM_FWD_WARPS);
    unsigned blk = NORM_FWD_WARPS * 32;
    cudaStream_t st = g_cuda.stream;
    int nch = C / 8;
    if (nch <= 32 * 4)
        norm_fwd_warp_kernel<T, LN, 4, RES>
            <<<grid, blk, 0, st>>>(out, mean, rstd, inp, w, b, N, C, eps, res, ra, rb);
    else if (nch <= 32 * 8)
        norm_fwd_warp_kernel<T, LN, 8, RES>
            <<<grid, blk, 0, st>>>(out, mean, rstd, inp, w, b, N, C, eps, res, ra, rb);
    else
        norm_fwd_warp_kernel<T, LN, 16, RES>
            <<<grid, blk, 0, st>>>(out, mean, rstd, inp, w, b, N, C, eps, res, ra, rb);
    LAUNCH_CHECK();
    return 1;
}

/* ---- fused backward (bf16 and fp32 tables, 16-byte vector path) ----
 *
 * One warp per row, NORM_BWD_BLOCKS blocks of W warps; warp k of block g
 * takes rows (j * G + g) * W + k, j = 0, 1, ... Pass 1 reads the row's dout
 * and inp (batches of U 8-element chunks per lane, loads issued before the
 * arithmetic) and reduces the row's two dot products with a warp sum; pass 2
 * re-reads them (L1/L2: the warp read them microseconds before), adds the
 * row's dinp and adds its dw (and db) terms to the warp's own fp32
 * accumulators in shared memory: each lane owns its chunks' columns, so no
 * two threads ever touch one accumulator. At the end the block adds its
 * warps' accumulators in warp order and writes one fp32 partial row per
 * block; colsum_finish_kernel adds the G partials in a fixed order into dw/db.
 * Every sum has a fixed order: bitwise reproducible. LN: a = mean(dn),
 * b = mean(dn * xh), xh = (x - mean) * rstd; RMS: a = 0, b = mean(dn * xh),
 * xh = x * rstd (m = 0); dn = dout * w; dinp += (dn - a - xh * b) * rstd;
 * dw += dout * xh; db += dout (LN). */
#define NORM_BWD_BLOCKS 264 /* two resident blocks on each of an H100's 132 SMs */
#define NORM_BWD_MAX_WARPS 8
#define NORM_BWD_MIN_WARPS 4 /* fewer rows in flight: the per-row kernels instead */
/* bytes of accumulators a block may use (opt-in above 48 KiB): 4 warps at
 * LayerNorm C = 2048, RMSNorm C = 4104 */
#define NORM_BWD_SMEM (65536 + 256)

template <typename T, int LN>
__global__ void __launch_bounds__(NORM_BWD_MAX_WARPS * 32, 2)
    norm_bwd_fused_kernel(T *__restrict__ dinp, float *__restrict__ part,
                          const T *__restrict__ dout, const T *__restrict__ inp,
                          const T *__restrict__ w, const float *__restrict__ mean,
                          const float *__restrict__ rstd, int N, int C) {
    constexpr int U = 2, NACC = LN ? 2 : 1;
    /* acc[warp][NACC][8][nch + 1]: column 8 i + j at j * (nch + 1) + i (the +1
     * spreads the 8 columns of a chunk over 8 banks for the final read) */
    extern __shared__ float acc[];
    const int W = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int nch = C / 8, P = C + 8; /* P: one accumulator's stride */
    for (int i = threadIdx.x; i < W * NACC * P; i += blockDim.x) acc[i] = 0.0f;
    __syncthreads();
    float *aw = acc + (size_t)warp * NACC * P, *ab = aw + P;
    for (long long n = (long long)blockIdx.x * W + warp; n < N; n += (long long)gridDim.x * W) {
        const T *d = dout + n * C, *x = inp + n * C;
        T *g = dinp + n * C;
        const float m = LN ? mean[n] : 0.0f, s = rstd[n];
        float a = 0.0f, b = 0.0f;
        for (int i0 = lane; i0 < nch; i0 += 32 * U) {
            float dv[U][8], xv[U][8];
#pragma unroll
            for (int u = 0; u < U; u++) {
                int i = i0 + 32 * u;
                if (i < nch) {
                    ld8(dv[u], d + 8 * i);
                    ld8(xv[u], x + 8 * i);
                }
            }
#pragma unroll
            for (int u = 0; u < U; u++) {
                int i = i0 + 32 * u;
                if (i < nch) {
                    float wf[8];
                    ld8(wf, w + 8 * i);
#pragma unroll
                    for (int j = 0; j < 8; j++) {
                        float dn = dv[u][j] * wf[j];
                        a += dn;
                        b += dn * ((xv[u][j] - m) * s);
                    }
                }
            }
        }
        a = LN ? warp_sum(a) / C : 0.0f;
        b = warp_sum(b) / C;
        for (int i0 = lane; i0 < nch; i0 += 32 * U) {
            float dv[U][8], xv[U][8], gv[U][8];
#pragma unroll
            for (int u = 0; u < U; u++) {
                int i = i0 + 32 * u;
                if (i < nch) {
                    ld8(dv[u], d + 8 * i);
                    ld8(xv[u], x + 8 * i);
                    ld8(gv[u], g + 8 * i);
                }
            }
#pragma unroll
            for (int u = 0; u < U; u++) {
                int i = i0 + 32 * u;
                if (i < nch) {
                    float wf[8];
                    ld8(wf, w + 8 * i);
#pragma unroll
                    for (int j = 0; j < 8; j++) {
                        float xh = (xv[u][j] - m) * s;
                        gv[u][j] += (dv[u][j] * wf[j] - a - xh * b) * s;
                        aw[j * (nch + 1) + i] += dv[u][j] * xh;
                        if (LN) ab[j * (nch + 1) + i] += dv[u][j];
                    }
                    st8(g + 8 * i, gv[u]);
                }
            }
        }
    }
    __syncthreads();
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        int k = (c & 7) * (nch + 1) + (c >> 3);
        float s0 = 0.0f, s1 = 0.0f;
        for (int v = 0; v < W; v++) {
            s0 += acc[(size_t)v * NACC * P + k];
            if (LN) s1 += acc[(size_t)v * NACC * P + P + k];
        }
        part[(size_t)blockIdx.x * C + c] = s0;
        if (LN) part[(size_t)(gridDim.x + blockIdx.x) * C + c] = s1;
    }
}

/* The fused path when the vector path applies (C % 8 == 0, 16-byte aligned
 * rows) and the accumulators of NORM_BWD_MIN_WARPS warps fit NORM_BWD_SMEM
 * (C <= 2048 for LayerNorm, 4104 for RMSNorm); returns 0 (nothing done)
 * otherwise, and the caller takes the one-block-per-row kernel and
 * cuda_colsum. */
template <typename T, int LN>
static int norm_bwd_fused(T *dinp, T *dw, T *db, const T *dout, const T *inp, const T *w,
                          const float *mean, const float *rstd, int N, int C) {
    int nacc = LN ? 2 : 1;
    if (C % 8 || !cuda_aligned16(dinp) || !cuda_aligned16(dout) || !cuda_aligned16(inp) ||
        !cuda_aligned16(w))
        return 0;
    int W = NORM_BWD_SMEM / (nacc * (C + 8) * (int)sizeof(float));
    if (W < NORM_BWD_MIN_WARPS) return 0;
    if (W > NORM_BWD_MAX_WARPS) W = NORM_BWD_MAX_WARPS;
    int G = (N + W - 1) / W;
    if (G > NORM_BWD_BLOCKS) G = NORM_BWD_BLOCKS;
    float *part = (float *)cuda_scratch((size_t)nacc * G * C * sizeof(float));
    size_t smem = (size_t)W * nacc * (C + 8) * sizeof(float);
    static int smem_opt_in; /* one per instantiation */
    if (!smem_opt_in) {
        CUDA_CHECK(cudaFuncSetAttribute(norm_bwd_fused_kernel<T, LN>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        NORM_BWD_SMEM));
        smem_opt_in = 1;
    }
    norm_bwd_fused_kernel<T, LN><<<G, W * 32, smem, g_cuda.stream>>>(dinp, part, dout, inp, w, mean,
                                                                     rstd, N, C);
    LAUNCH_CHECK();
    colsum_finish_kernel<T><<<(C + 31) / 32, dim3(32, 8), 0, g_cuda.stream>>>(dw, LN ? db : NULL,
                                                                            part, G, C);
    LAUNCH_CHECK();
    return 1;
}

/* ---- the ops ---- */

template <typename T>
static void layernorm_fwd(void *out, float *mean, float *rstd, const void *inp, const void *w,
                          const void *b, int N, int C, float eps) {
    if (N <= 0 || C <= 0) return;
    if (norm_fwd_warp<T, 1, 0>((T *)out, mean, rstd, (const T *)inp, (const T *)w, (const T *)b, N,
                               C, eps))
        return;
    int vec = C % 8 == 0 && cuda_aligned16(out) && cuda_aligned16(inp) && cuda_aligned16(w) &&
              cuda_aligned16(b);
    layernorm_fwd_kernel<T><<<N, norm_block(C), 0, g_cuda.stream>>>(
        (T *)out, mean, rstd, (const T *)inp, (const T *)w, (const T *)b, C, eps, vec);
    LAUNCH_CHECK();
}

template <typename T>
static void layernorm_bwd(void *dinp, void *dw, void *db, const void *dout, const void *inp,
                          const void *w, const float *mean, const float *rstd, int N, int C) {
    if (N <= 0 || C <= 0) return;
    if (norm_bwd_fused<T, 1>((T *)dinp, (T *)dw, (T *)db, (const T *)dout, (const T *)inp,
                             (const T *)w, mean, rstd, N, C))
        return;
    int vec = C % 8 == 0 && cuda_aligned16(dinp) && cuda_aligned16(dout) && cuda_aligned16(inp) &&
              cuda_aligned16(w);
    layernorm_bwd_kernel<T><<<N, norm_block(C), 0, g_cuda.stream>>>(
        (T *)dinp, (const T *)dout, (const T *)inp, (const T *)w, mean, rstd, C, vec);
    LAUNCH_CHECK();
    cuda_colsum<T>((T *)dw, (T *)db, (const T *)dout, (const T *)inp, mean, rstd, N, C, COLSUM_LN);
}

template <typename T>
static void rmsnorm_fwd(void *out, float *rstd, const void *inp, const void *w, int N, int C,
                        float eps) {
    if (N <= 0 || C <= 0) return;
    if (norm_fwd_warp<T, 0, 0>((T *)out, NULL, rstd, (const T *)inp, (const T *)w, NULL, N, C,
                               eps))
        return;
    int vec = C % 8 == 0 && cuda_aligned16(out) && cuda_aligned16(inp) && cuda_aligned16(w);
    rmsnorm_fwd_kernel<T><<<N, norm_block(C), 0, g_cuda.stream>>>(
        (T *)out, rstd, (const T *)inp, (const T *)w, C, eps, vec);
    LAUNCH_CHECK();
}

template <typename T>
static void rmsnorm_bwd(void *dinp, void *dw, const void *dout, const void *inp, const void *w,
                        const float *rstd, int N, int C) {
    if (N <= 0 || C <= 0) return;
    if (norm_bwd_fused<T, 0>((T *)dinp, (T *)dw, NULL, (const T *)dout, (const T *)inp,
                             (const T *)w, NULL, rstd, N, C))
        return;
    int vec = C % 8 == 0 && cuda_aligned16(dinp) && cuda_aligned16(dout) && cuda_aligned16(inp) &&
              cuda_aligned16(w);
    rmsnorm_bwd_kernel<T><<<N, norm_block(C), 0, g_cuda.stream>>>(
        (T *)dinp, (const T *)dout, (const T *)inp, (const T *)w, rstd, C, vec);
    LAUNCH_CHECK();
    cuda_colsum<T>((T *)dw, NULL, (const T *)dout, (const T *)inp, NULL, rstd, N, C, COLSUM_RMS);
}

/* ---- per-head q/k RMSNorm (Qwen3's q_norm, k_norm; ops.h qk_norm_fwd/bwd) ----
 * One warp per (row, head) pair p = n (NH + NKV) + h, QK_WARPS pairs a
 * block; lane j takes the head's elements j, j + 32, ... (any HD), a
 * warp_sum reduces. The weight gradients are column sums over every pair
 * of the q (k) heads: qk_norm_dw_kernel adds, for one column, a chunk of
 * rows and their heads in order into one fp32 partial row per chunk
 * (part[y] for wq, part[R + y] for wk), then colsum_finish_kernel adds the
 * R partials in order. It runs before the input-gradient kernel, which
 * overwrites the gradient it reads. No atomics: bitwise reproducible. */
#define QK_WARPS 4

/* qkv's q and k heads in place, saved (N*H, HD) and rstd (N*H) written */
template <typename T>
__global__ void __launch_bounds__(QK_WARPS * 32)
    qk_norm_fwd_kernel(T *qkv, T *saved, float *rstd, const T *wq, const T *wk, int N, int NH,
                       int NKV, int HD, float eps) {
    const int lane = threadIdx.x & 31, H = NH + NKV;
    const long long p = (long long)blockIdx.x * QK_WARPS + (threadIdx.x >> 5);
    if (p >= (long long)N * H) return; /* whole warps: the warp sum stays uniform */
    const long long n = p / H;
    const int h = (int)(p % H);
    T *x = qkv + n * (NH + 2 * NKV) * HD + (long long)h * HD, *s = saved + p * HD;
    const T *w = h < NH ? wq : wk;
    float ss = 0.0f;
    for (int i = lane; i < HD; i += 32) {
        float v = to_f(x[i]);
        ss += v * v;
    }
    const float r = 1.0f / sqrtf(warp_sum(ss) / HD + eps);
    for (int i = lane; i < HD; i += 32) {
        T v = x[i];
        s[i] = v;
        x[i] = from_f<T>(to_f(v) * r * to_f(w[i]));
    }
    if (lane == 0) rstd[p] = r;
}

/* part[y][i] (wq) / part[R + y][i] (wk) = sum over rows of chunk y, then
 * heads, of dout * x * rstd; block (64 columns of the 2 HD, chunk y) */
template <typename T>
__global__ void qk_norm_dw_kernel(float *part, const T *dqkv, const T *saved, const float *rstd,
                                  int N, int NH, int NKV, int HD, int rows_per) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= 2 * HD) return;
    const int H = NH + NKV, i = c % HD, h0 = c < HD ? 0 : NH, h1 = c < HD ? NH : H;
    const long long n0 = (long long)blockIdx.y * rows_per;
    const long long n1 = min((long long)N, n0 + rows_per);
    const long long row = (long long)(NH + 2 * NKV) * HD;
    float a = 0.0f;
    for (long long n = n0; n < n1; n++)
        for (int h = h0; h < h1; h++) {
            long long p = n * H + h;
            a += to_f(dqkv[n * row + (long long)h * HD + i]) * to_f(saved[p * HD + i]) * rstd[p];
        }
    part[(size_t)(c < HD ? blockIdx.y : gridDim.y + blockIdx.y) * HD + i] = a;
}

/* dqkv's q and k heads overwritten with the gradient before the norm */
template <typename T>
__global__ void __launch_bounds__(QK_WARPS * 32)
    qk_norm_bwd_kernel(T *dqkv, const T *saved, const T *wq, const T *wk, const float *rstd, int N,
                       int NH, int NKV, int HD) {
    const int lane = threadIdx.x & 31, H = NH + NKV;
    const long long p = (long long)blockIdx.x * QK_WARPS + (threadIdx.x >> 5);
    if (p >= (long long)N * H) return;
    const long long n = p / H;
    const int h = (int)(p % H);
    T *d = dqkv + n * (NH + 2 * NKV) * HD + (long long)h * HD;
    const T *x = saved + p * HD, *w = h < NH ? wq : wk;
    const float s = rstd[p];
    float a = 0.0f;
    for (int i = lane; i < HD; i += 32) a += to_f(d[i]) * to_f(w[i]) * to_f(x[i]) * s;
    a = warp_sum(a) / HD;
    for (int i = lane; i < HD; i += 32)
        d[i] = from_f<T>((to_f(d[i]) * to_f(w[i]) - to_f(x[i]) * s * a) * s);
}

template <typename T>
static void qk_norm_fwd(void *qkv, void *saved, float *rstd, const void *wq, const void *wk, int N,
                        int NH, int NKV, int HD, float eps) {
    long long pairs = (long long)N * (NH + NKV);
    if (pairs <= 0 || HD <= 0) return;
    unsigned grid = (unsigned)((pairs + QK_WARPS - 1) / QK_WARPS);
    qk_norm_fwd_kernel<T><<<grid, QK_WARPS * 32, 0, g_cuda.stream>>>(
        (T *)qkv, (T *)saved, rstd, (const T *)wq, (const T *)wk, N, NH, NKV, HD, eps);
    LAUNCH_CHECK();
}

template <typename T>
static void qk_norm_bwd(void *dqkv, void *dwq, void *dwk, const void *saved, const void *wq,
                        const void *wk, const float *rstd, int N, int NH, int NKV, int HD) {
    long long pairs = (long long)N * (NH + NKV);
    if (pairs <= 0 || HD <= 0) return;
    /* chunks of >= 16 rows, at most 256 */
    int R = (N + 15) / 16;
    if (R > 256) R = 256;
    int rows_per = (N + R - 1) / R;
    R = (N + rows_per - 1) / rows_per;
    float *part = (float *)cuda_scratch((size_t)2 * R * HD * sizeof(float));
    dim3 grid((2 * HD + 63) / 64, R);
    qk_norm_dw_kernel<T><<<grid, 64, 0, g_cuda.stream>>>(part, (const T *)dqkv, (const T *)saved,
                                                         rstd, N, NH, NKV, HD, rows_per);
    LAUNCH_CHECK();
    colsum_finish_kernel<T>
        <<<(HD + 31) / 32, dim3(32, 8), 0, g_cuda.stream>>>((T *)dwq, (T *)dwk, part, R, HD);
    LAUNCH_CHECK();
    unsigned g = (unsigned)((pairs + QK_WARPS - 1) / QK_WARPS);
    qk_norm_bwd_kernel<T><<<g, QK_WARPS * 32, 0, g_cuda.stream>>>(
        (T *)dqkv, (const T *)saved, (const T *)wq, (const T *)wk, rstd, N, NH, NKV, HD);
    LAUNCH_CHECK();
}

/* ---- residual add + norm forward (ops.h residual_layernorm_fwd /
 * residual_rmsnorm_fwd) ----
 * The warp-per-row kernel with RES where it applies; otherwise (odd or
 * unaligned sizes, C > 4096) the table's own residual_fwd and then the
 * plain norm: two launches, the same results. Bitwise the two ops (verified
 * on an H100 and an H200, docs/gpu-log.md) and 1-3 ms a step faster on the
 * 1.1B llama (docs/performance.md): on by default; cuda.fused_norm = false
 * leaves the entries NULL (the model then calls the two ops), for A/B
 * runs. */
template <typename T> static const Ops *own_table(void) { return cuda_table(sizeof(T) == 2); }

template <typename T>
static void residual_layernorm_fwd(void *res, void *out, float *mean, float *rstd, const void *a,
                                   const void *b, const void *w, const void *bias, int N, int C,
                                   float eps) {
    if (N <= 0 || C <= 0) return;
    if (norm_fwd_warp<T, 1, 1>((T *)out, mean, rstd, NULL, (const T *)w, (const T *)bias, N, C,
                               eps, (T *)res, (const T *)a, (const T *)b))
        return;
    own_table<T>()->residual_fwd(res, a, b, (size_t)N * C);
    layernorm_fwd<T>(out, mean, rstd, res, w, bias, N, C, eps);
}

template <typename T>
static void residual_rmsnorm_fwd(void *res, void *out, float *rstd, const void *a, const void *b,
                                 const void *w, int N, int C, float eps) {
    if (N <= 0 || C <= 0) return;
    if (norm_fwd_warp<T, 0, 1>((T *)out, NULL, rstd, NULL, (const T *)w, NULL, N, C, eps, (T *)res,
                               (const T *)a, (const T *)b))
        return;
    own_table<T>()->residual_fwd(res, a, b, (size_t)N * C);
    rmsnorm_fwd<T>(out, rstd, res, w, N, C, eps);
}

void cuda_fill_norms(Ops *o, int use_bf16) {
    o->layernorm_fwd = use_bf16 ? layernorm_fwd<bf16> : layernorm_fwd<float>;
    o->layernorm_bwd = use_bf16 ? layernorm_bwd<bf16> : layernorm_bwd<float>;
    o->rmsnorm_fwd = use_bf16 ? rmsnorm_fwd<bf16> : rmsnorm_fwd<float>;
    o->rmsnorm_bwd = use_bf16 ? rmsnorm_bwd<bf16> : rmsnorm_bwd<float>;
    o->qk_norm_fwd = use_bf16 ? qk_norm_fwd<bf16> : qk_norm_fwd<float>;
    o->qk_norm_bwd = use_bf16 ? qk_norm_bwd<bf16> : qk_norm_bwd<float>;
    if (g_cuda.opt.cuda.fused_norm) {
        o->residual_layernorm_fwd =
            use_bf16 ? residual_layernorm_fwd<bf16> : residual_layernorm_fwd<float>;
        o->residual_rmsnorm_fwd =
            use_bf16 ? residual_rmsnorm_fwd<bf16> : residual_rmsnorm_fwd<float>;
    }
}
