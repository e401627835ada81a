/* moe.cu: the mixture-of-experts ops of kernels/ops.h on CUDA: router
 * softmax + top-k (moe_route_fwd), its backward (moe_route_bwd), the stable
 * permutation of the routed rows by expert (moe_permute), gather / combine
 * and their backwards. The expert GEMMs are matmul_fwd/bwd on contiguous
 * slices of the permuted rows (trainer/moe.c), as on the CPU.
 *
 * Reference: kernels/cpu/ops_cpu_moe.c. The kernels follow it operation by
 * operation, so that in the fp32 table they match it to the last bit where
 * the arithmetic allows it:
 * - route_fwd: one thread per row does exactly the CPU's arithmetic (fp32
 *   max, fp64 exp sum, fp32 probabilities, selection of the K largest with
 *   the lower index first on ties, fp32 renormalisation). probs, top_idx and
 *   top_w are therefore the CPU's up to the last bit of exp/log, and the
 *   selection is identical unless two probabilities are within that bit.
 *   stats: the CPU sums each column in fp64 in row order; here one block
 *   per column sums 256 contiguous row ranges in fp64 and adds the 256
 *   partials in order (a fixed shape: deterministic, and equal to the CPU's
 *   sum to fp64 rounding, far below the final fp32 rounding).
 * - route_bwd: one thread per row, the CPU's arithmetic (fp64 softmax dot).
 * - permute: a stable counting sort in three kernels over chunks of 256
 *   routings: per-chunk counts per expert (integer shared atomics: order
 *   does not matter for integers), a scan to each (chunk, expert)'s first
 *   packed row, then each routing's rank among the earlier routings of its
 *   chunk with the same expert. Result identical to the CPU's by
 *   construction (token order within an expert).
 * - gather / combine: one thread per 8 channels of a row, fp32 sums in slot
 *   order; combine_bwd: one block per token, the dot products accumulated in
 *   fp64 per thread and added by a fixed block tree.
 * No floating-point atomics anywhere: every op is deterministic.
 */
#include "kernels/cuda/cuda_common.cuh"

#define MOE_BLOCK 256
#define PERM_CHUNK 256

/* ---- route forward ---- */

template <typename T>
__global__ void route_fwd_kernel(float *probs, float *lse, int32_t *top_idx, float *top_w,
                                 const T *logits, int N, int E, int K, int norm_topk) {
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    const T *x = logits + (size_t)n * E;
    float *p = probs + (size_t)n * E;
    float mx = to_f(x[0]);
    for (int e = 1; e < E; e++) {
        float v = to_f(x[e]);
        mx = v > mx ? v : mx;
    }
    double s = 0.0;
    for (int e = 0; e < E; e++) s += exp((double)(to_f(x[e]) - mx));
    for (int e = 0; e < E; e++) p[e] = (float)(exp((double)(to_f(x[e]) - mx)) / s);
    lse[n] = (float)((double)mx + log(s));
    int32_t *idx = top_idx + (size_t)n * K;
    float *w = top_w + (size_t)n * K;
    for (int k = 0; k < K; k++) {
        int best = -1;
        float bp = 0.0f;
        for (int e = 0; e < E; e++) {
            int taken = 0;
            for (int j = 0; j < k; j++) taken |= idx[j] == e;
            float pe = p[e];
            if (!taken && (best < 0 || pe > bp)) best = e, bp = pe;
        }
        idx[k] = best;
        w[k] = bp;
    }
    if (norm_topk) {
        float sum = 0.0f;
        for (int k = 0; k < K; k++) sum += w[k];
        for (int k = 0; k < K; k++) w[k] /= sum;
    }
}

/* fp64 sum over the block, in a fixed order, returned to thread 0 */
__device__ double block_sum_d(double v) {
    __shared__ double sh[32];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
    __syncthreads();
    double r = sh[0];
    for (int w = 1; w < (int)(blockDim.x >> 5); w++) r += sh[w];
    return r;
}

/* block e < E: stats[e] = sum_n probs[n,e]; block E: sum_n lse[n]^2. Thread
 * t sums the rows [t*chunk, (t+1)*chunk) in order. */
__global__ void route_stats_kernel(float *stats, const float *probs, const float *lse, int N,
                                   int E) {
    int e = blockIdx.x;
    int chunk = (N + blockDim.x - 1) / blockDim.x;
    int n0 = threadIdx.x * chunk, n1 = min(N, n0 + chunk);
    double s = 0.0;
    if (e < E)
        for (int n = n0; n < n1; n++) s += probs[(size_t)n * E + e];
    else
        for (int n = n0; n < n1; n++) s += (double)lse[n] * lse[n];
    s = block_sum_d(s);
    if (threadIdx.x == 0) stats[e] = (float)s;
}

template <typename T>
static void moe_route_fwd(float *probs, float *lse, int32_t *top_idx, float *top_w, float *stats,
                          const void *logits, int N, int E, int K, int norm_topk) {
    if (N > 0) {
        route_fwd_kernel<T><<<(N + 127) / 128, 128, 0, g_cuda.stream>>>(
            probs, lse, top_idx, top_w, (const T *)logits, N, E, K, norm_topk);
        LAUNCH_CHECK();
    }
    route_stats_kernel<<<E + 1, MOE_BLOCK, 0, g_cuda.stream>>>(stats, probs, lse, N, E);
    LAUNCH_CHECK();
}

/* ---- route backward ---- */

template <typename T>
__global__ void route_bwd_kernel(T *dlogits, const float *dtop_w, const float *dprob,
                                 float z_scale, const float *probs, const float *lse,
                                 const int32_t *top_idx, const float *top_w, int N, int E, int K,
                                 int norm_topk) {
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    const float *p = probs + (size_t)n * E;
    const int32_t *idx = top_idx + (size_t)n * K;
    const float *w = top_w + (size_t)n * K, *dw = dtop_w + (size_t)n * K;
    T *dl = dlogits + (size_t)n * E;
    /* w_k = p_k / s, s = sum_k p_k: dp_k = (dw_k - sum_j dw_j w_j) / s */
    float s = 0.0f, dot = 0.0f;
    if (norm_topk)
        for (int k = 0; k < K; k++) s += p[idx[k]], dot += dw[k] * w[k];
    /* g(e) = dL/dp_e: the LBL term plus the slot holding e (top-k indices
     * are distinct, so at most one) */
#define MOE_G(e, g)                                                                                \
    do {                                                                                           \
        g = dprob ? dprob[e] : 0.0f;                                                               \
        for (int k = 0; k < K; k++)                                                                \
            if (idx[k] == (e)) g += norm_topk ? (dw[k] - dot) / s : dw[k];                         \
    } while (0)
    double dd = 0.0;
    for (int e = 0; e < E; e++) {
        float g;
        MOE_G(e, g);
        dd += (double)p[e] * g;
    }
    float zt = z_scale * 2.0f * lse[n];
    for (int e = 0; e < E; e++) {
        float g;
        MOE_G(e, g);
        dl[e] = from_f<T>(p[e] * (g - (float)dd + zt));
    }
#undef MOE_G
}

template <typename T>
static void moe_route_bwd(void *dlogits, const float *dtop_w, const float *dprob, float z_scale,
                          const float *probs, const float *lse, const int32_t *top_idx,
                          const float *top_w, int N, int E, int K, int norm_topk) {
    if (N <= 0) return;
    route_bwd_kernel<T><<<(N + 127) / 128, 128, 0, g_cuda.stream>>>(
        (T *)dlogits, dtop_w, dprob, z_scale, probs, lse, top_idx, top_w, N, E, K, norm_topk);
    LAUNCH_CHECK();
}

/* ---- permute ---- */

/* cc[c*E + e] = routings of chunk c that go to expert e */
__global__ void perm_count_kernel(int32_t *cc, const int32_t *top_idx, int NK, int E) {
    extern __shared__ int32_t sh_cnt[];
    for (int e = threadIdx.x; e < E; e += blockDim.x) sh_cnt[e] = 0;
    __syncthreads();
    int i = blockIdx.x * PERM_CHUNK + threadIdx.x;
    if (i < NK) atomicAdd(&sh_cnt[top_idx[i]], 1);
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x) cc[(size_t)blockIdx.x * E + e] = sh_cnt[e];
}

/* one block: counts[e] = sum_c cc[c,e]; then cc[c,e] = the packed row of the
 * first routing of chunk c to expert e = start(e) + sum_{c'<c} cc[c',e] */
__global__ void perm_scan_kernel(int32_t *cc, int32_t *counts, int32_t *start, int n_chunks,
                                 int E) {
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
        int32_t run = 0;
        for (int c = 0; c < n_chunks; c++) {
            int32_t t = cc[(size_t)c * E + e];
            cc[(size_t)c * E + e] = run;
            run += t;
        }
        counts[e] = run;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        int32_t s = 0;
        for (int e = 0; e < E; e++) start[e] = s, s += counts[e];
    }
    __syncthreads();
    for (int e = threadIdx.x; e < E; e += blockDim.x)
        for (int c = 0; c < n_chunks; c++) cc[(size_t)c * E + e] += start[e];
}

/* routing i = chunk c, lane t: its row is cc[c, e] + the number of earlier
 * routings of the chunk to the same expert (stable: token-major order) */
__global__ void perm_place_kernel(int32_t *row_token, int32_t *pos, const int32_t *cc,
                                  const int32_t *top_idx, int NK, int E, int K) {
    __shared__ int32_t ids[PERM_CHUNK];
    int i = blockIdx.x * PERM_CHUNK + threadIdx.x;
    ids[threadIdx.x] = i < NK ? top_idx[i] : -1;
    __syncthreads();
    if (i >= NK) return;
    int e = ids[threadIdx.x], rank = 0;
    for (int j = 0; j < (int)threadIdx.x; j++) rank += ids[j] == e;
    int32_t r = cc[(size_t)blockIdx.x * E + e] + rank;
    row_token[r] = i / K;
    pos[i] = r;
}

static void moe_permute(int32_t *counts, int32_t *row_token, int32_t *pos, const int32_t *top_idx,
                        int N, int E, int K) {
    int NK = N * K;
    if (NK <= 0) {
        CUDA_CHECK(cudaMemsetAsync(counts, 0, (size_t)E * sizeof(int32_t), g_cuda.stream));
        return;
    }
    int n_chunks = (NK + PERM_CHUNK - 1) / PERM_CHUNK;
    char *sc = (char *)cuda_scratch(cuda_pad((size_t)n_chunks * E * 4) + cuda_pad((size_t)E * 4));
    int32_t *cc = (int32_t *)sc, *start = (int32_t *)(sc + cuda_pad((size_t)n_chunks * E * 4));
    perm_count_kernel<<<n_chunks, PERM_CHUNK, (size_t)E * sizeof(int32_t), g_cuda.stream>>>(
        cc, top_idx, NK, E);
    LAUNCH_CHECK();
    perm_scan_kernel<<<1, MOE_BLOCK, 0, g_cuda.stream>>>(cc, counts, start, n_chunks, E);
    LAUNCH_CHECK();
    perm_place_kernel<<<n_chunks, PERM_CHUNK, 0, g_cuda.stream>>>(row_token, pos, cc, top_idx, NK,
                                                                  E, K);
    LAUNCH_CHECK();
}

/* ---- gather / combine: one thread per (row, 8 channels) ---- */

template <typename T>
__global__ void gather_fwd_kernel(T *xs, const T *x, const int32_t *row_token, int NK, int C,
                                  int vec) {
    int cpr = (C + 7) / 8;
    size_t items = (size_t)NK * cpr, stride = (size_t)gridDim.x * blockDim.x;
    for (size_t it = blockIdx.x * (size_t)blockDim.x + threadIdx.x; it < items; it += stride) {
        size_t r = it / cpr;
        int c0 = (int)(it % cpr) * 8, cnt = min(8, C - c0);
        float f[8];
        ld8v(f, x + (size_t)row_token[r] * C + c0, vec, cnt);
        st8v(xs + r * C + c0, f, vec, cnt);
    }
}

/* dx[n] = sum_k dxs[pos[n,k]] (w == NULL), or out[n] = sum_k w[n,k] ys[pos[n,k]] */
template <typename T>
__global__ void sum_slots_kernel(T *out, const T *src, const float *w, const int32_t *pos, int N,
                                 int K, int C, int vec) {
    int cpr = (C + 7) / 8;
    size_t items = (size_t)N * cpr, stride = (size_t)gridDim.x * blockDim.x;
    for (size_t it = blockIdx.x * (size_t)blockDim.x + threadIdx.x; it < items; it += stride) {
        size_t n = it / cpr;
        int c0 = (int)(it % cpr) * 8, cnt = min(8, C - c0);
        float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0}, f[8];
        for (int k = 0; k < K; k++) {
            ld8v(f, src + (size_t)pos[n * K + k] * C + c0, vec, cnt);
            if (w) {
                float wk = w[n * K + k];
#pragma unroll
                for (int j = 0; j < 8; j++) acc[j] = k ? acc[j] + wk * f[j] : wk * f[j];
            } else {
#pragma unroll
                for (int j = 0; j < 8; j++) acc[j] = k ? acc[j] + f[j] : f[j];
            }
        }
        st8v(out + n * C + c0, acc, vec, cnt);
    }
}

static int rows_vec(int C, const void *a, const void *b) {
    return C % 8 == 0 && cuda_aligned16(a) && cuda_aligned16(b);
}

template <typename T>
static void moe_gather_fwd(void *xs, const void *x, const int32_t *row_token, int NK, int C) {
    if (NK <= 0 || C <= 0) return;
    size_t items = (size_t)NK * ((C + 7) / 8);
    gather_fwd_kernel<T><<<cuda_grid(items, MOE_BLOCK), MOE_BLOCK, 0, g_cuda.stream>>>(
        (T *)xs, (const T *)x, row_token, NK, C, rows_vec(C, xs, x));
    LAUNCH_CHECK();
}

template <typename T>
static void moe_gather_bwd(void *dx, const void *dxs, const int32_t *pos, int N, int K, int C) {
    if (N <= 0 || C <= 0) return;
    size_t items = (size_t)N * ((C + 7) / 8);
    sum_slots_kernel<T><<<cuda_grid(items, MOE_BLOCK), MOE_BLOCK, 0, g_cuda.stream>>>(
        (T *)dx, (const T *)dxs, NULL, pos, N, K, C, rows_vec(C, dx, dxs));
    LAUNCH_CHECK();
}

template <typename T>
static void moe_combine_fwd(void *out, const void *ys, const float *top_w, const int32_t *pos,
                            int N, int K, int C) {
    if (N <= 0 || C <= 0) return;
    size_t items = (size_t)N * ((C + 7) / 8);
    sum_slots_kernel<T><<<cuda_grid(items, MOE_BLOCK), MOE_BLOCK, 0, g_cuda.stream>>>(
        (T *)out, (const T *)ys, top_w, pos, N, K, C, rows_vec(C, out, ys));
    LAUNCH_CHECK();
}

/* one block per token n: for each slot, dys row = w * dout row, and the dot
 * product dout . ys row (fp64 per thread, fixed block tree) */
template <typename T>
__global__ void combine_bwd_kernel(T *dys, float *dtop_w, const T *dout, const T *ys,
                                   const float *top_w, const int32_t *pos, int K, int C) {
    size_t n = blockIdx.x;
    const T *d = dout + n * C;
    for (int k = 0; k < K; k++) {
        size_t r = (size_t)pos[n * K + k];
        float w = top_w[n * K + k];
        T *dy = dys + r * C;
        const T *y = ys + r * C;
        double dot = 0.0;
        for (int c = threadIdx.x; c < C; c += blockDim.x) {
            float dc = to_f(d[c]);
            dy[c] = from_f<T>(w * dc);
            dot += (double)dc * to_f(y[c]);
        }
        dot = block_sum_d(dot);
        if (threadIdx.x == 0) dtop_w[n * K + k] = (float)dot;
    }
}

template <typename T>
static void moe_combine_bwd(void *dys, float *dtop_w, const void *dout, const void *ys,
                            const float *top_w, const int32_t *pos, int N, int K, int C) {
    if (N <= 0) return;
    combine_bwd_kernel<T><<<N, 128, 0, g_cuda.stream>>>((T *)dys, dtop_w, (const T *)dout,
                                                         (const T *)ys, top_w, pos, K, C);
    LAUNCH_CHECK();
}

/* ---- table ---- */

template <typename T> static void fill(Ops *o) {
    o->moe_route_fwd = moe_route_fwd<T>;
    o->moe_route_bwd = moe_route_bwd<T>;
    o->moe_permute = moe_permute;
    o->moe_gather_fwd = moe_gather_fwd<T>;
    o->moe_gather_bwd = moe_gather_bwd<T>;
    o->moe_combine_fwd = moe_combine_fwd<T>;
    o->moe_combine_bwd = moe_combine_bwd<T>;
}

void cuda_fill_moe(Ops *o, int use_bf16) {
    if (use_bf16)
        fill<bf16>(o);
    else
        fill<float>(o);
}
