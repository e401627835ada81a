/* norms.cu: LayerNorm and RMSNorm, forward and backward, and the
 * deterministic column sums that parameter gradients of norms and biases use.
 *
 * Forward: one thread block per row; each thread reads 8-element chunks
 * (16-byte loads when C % 8 == 0 and the pointers are aligned), statistics
 * are block reductions in fp32, and the row is normalised, scaled and shifted
 * in the same kernel. Backward: one block per row accumulates dinp (+=); the
 * weight/bias gradients are column sums over rows done in two fixed-order
 * passes (no atomics), so results are bitwise reproducible.
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

/* o0[c] += sum_r part[r][c] (and o1 from the second half), r in order. */
template <typename T>
__global__ void colsum_finish_kernel(T *o0, T *o1, const float *part, int R, int C) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float s0 = 0.0f, s1 = 0.0f;
    for (int r = 0; r < R; r++) s0 += part[(size_t)r * C + c];
    o0[c] = from_f<T>(to_f(o0[c]) + s0);
    if (o1) {
        for (int r = 0; r < R; r++) s1 += part[(size_t)(R + r) * C + c];
        o1[c] = from_f<T>(to_f(o1[c]) + s1);
    }
}

template <typename T>
void cuda_colsum(T *o0, T *o1, const T *dout, const T *inp, const float *mean, const float *rstd,
                 int N, int C, int mode) {
    if (N <= 0 || C <= 0) return;
    int R = (N + 31) / 32;
    if (R > 64) R = 64;
    int rows_per = (N + R - 1) / R;
    R = (N + rows_per - 1) / rows_per;
    float *part = (float *)cuda_scratch((size_t)2 * R * C * sizeof(float));
    dim3 grid((C + 255) / 256, R);
    colsum_partial_kernel<T>
        <<<grid, 256, 0, g_cuda.stream>>>(part, dout, inp, mean, rstd, N, C, rows_per, mode);
    LAUNCH_CHECK();
    colsum_finish_kernel<T><<<(C + 255) / 256, 256, 0, g_cuda.stream>>>(o0, o1, part, R, C);
    LAUNCH_CHECK();
}
template void cuda_colsum<float>(float *, float *, const float *, const float *, const float *,
                                 const float *, int, int, int);
template void cuda_colsum<bf16>(bf16 *, bf16 *, const bf16 *, const bf16 *, const float *,
                                const float *, int, int, int);

/* ---- the ops ---- */

template <typename T>
static void layernorm_fwd(void *out, float *mean, float *rstd, const void *inp, const void *w,
                          const void *b, int N, int C, float eps) {
    if (N <= 0) return;
    int vec = C % 8 == 0 && cuda_aligned16(out) && cuda_aligned16(inp) && cuda_aligned16(w) &&
              cuda_aligned16(b);
    layernorm_fwd_kernel<T><<<N, norm_block(C), 0, g_cuda.stream>>>(
        (T *)out, mean, rstd, (const T *)inp, (const T *)w, (const T *)b, C, eps, vec);
    LAUNCH_CHECK();
}

template <typename T>
static void layernorm_bwd(void *dinp, void *dw, void *db, const void *dout, const void *inp,
                          const void *w, const float *mean, const float *rstd, int N, int C) {
    if (N <= 0) return;
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
    if (N <= 0) return;
    int vec = C % 8 == 0 && cuda_aligned16(out) && cuda_aligned16(inp) && cuda_aligned16(w);
    rmsnorm_fwd_kernel<T><<<N, norm_block(C), 0, g_cuda.stream>>>(
        (T *)out, rstd, (const T *)inp, (const T *)w, C, eps, vec);
    LAUNCH_CHECK();
}

template <typename T>
static void rmsnorm_bwd(void *dinp, void *dw, const void *dout, const void *inp, const void *w,
                        const float *rstd, int N, int C) {
    if (N <= 0) return;
    int vec = C % 8 == 0 && cuda_aligned16(dinp) && cuda_aligned16(dout) && cuda_aligned16(inp) &&
              cuda_aligned16(w);
    rmsnorm_bwd_kernel<T><<<N, norm_block(C), 0, g_cuda.stream>>>(
        (T *)dinp, (const T *)dout, (const T *)inp, (const T *)w, rstd, C, vec);
    LAUNCH_CHECK();
    cuda_colsum<T>((T *)dw, NULL, (const T *)dout, (const T *)inp, NULL, rstd, N, C, COLSUM_RMS);
}

void cuda_fill_norms(Ops *o, int use_bf16) {
    o->layernorm_fwd = use_bf16 ? layernorm_fwd<bf16> : layernorm_fwd<float>;
    o->layernorm_bwd = use_bf16 ? layernorm_bwd<bf16> : layernorm_bwd<float>;
    o->rmsnorm_fwd = use_bf16 ? rmsnorm_fwd<bf16> : rmsnorm_fwd<float>;
    o->rmsnorm_bwd = use_bf16 ? rmsnorm_bwd<bf16> : rmsnorm_bwd<float>;
}
