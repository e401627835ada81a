/* attention.cu: causal self-attention with grouped-query heads. The bf16
 * table runs the fused flash-style kernels of flash_attention.cu for head
 * dims 64 and 128 (saved state: B*NH*T log-sum-exps, see
 * attention_saved_floats); everything else, and the fp32 parity table,
 * takes the path below, correct first: head-split copies, batched cuBLASLt
 * GEMMs and a causal softmax kernel.
 *
 * Whatever the act type, the inside of attention is fp32: q, k, v are copied
 * out of the packed qkv rows into fp32 (B, NH, T, HD) buffers in scratch,
 * with each kv head repeated for the NH / NKV query heads of its group, so
 * every GEMM is one strided batch over B*NH heads. In the bf16 table those
 * fp32 GEMMs may use TF32 tensor cores; the fp32 table never does.
 *
 * The saved probabilities att (B, NH, T, T) are fp32 as ops.h says; the
 * forward writes zeros above the diagonal. The backward never reads att
 * above the diagonal (ops.h: it is never read), so it also accepts an att
 * whose upper triangle holds anything.
 */
#include <math.h>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/flash_attention.cuh"

/* (B, NH, T, HD) fp32 q, k, v from qkv rows (N, (NH + 2 NKV) HD); one
 * thread per element of q; k and v of query head h come from kv head
 * h / (NH / NKV). */
template <typename E>
__global__ void attn_split_kernel(float *q, float *k, float *v, const E *qkv, int T, int NH,
                                  int NKV, int HD, size_t total) {
    size_t row = (size_t)(NH + 2 * NKV) * HD, stride = (size_t)gridDim.x * blockDim.x;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < total; e += stride) {
        int i = (int)(e % HD);
        size_t r = e / HD;
        int t = (int)(r % T);
        size_t bh = r / T;
        int h = (int)(bh % NH), b = (int)(bh / NH), g = h / (NH / NKV);
        const E *src = qkv + ((size_t)b * T + t) * row;
        q[e] = to_f(src[(size_t)h * HD + i]);
        k[e] = to_f(src[(size_t)(NH + g) * HD + i]);
        v[e] = to_f(src[(size_t)(NH + NKV + g) * HD + i]);
    }
}

/* Between (N, NH*HD) rows of type E and fp32 (B, NH, T, HD) heads; one
 * thread per element. to_heads = 1: rows -> heads, 0: heads -> rows. */
template <typename E>
__global__ void attn_heads_kernel(float *heads, E *rows, int T, int NH, int HD, size_t total,
                                  int to_heads) {
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < total; e += stride) {
        int i = (int)(e % HD);
        size_t r = e / HD;
        int t = (int)(r % T);
        size_t bh = r / T;
        int h = (int)(bh % NH), b = (int)(bh / NH);
        size_t o = ((size_t)b * T + t) * NH * HD + (size_t)h * HD + i;
        if (to_heads)
            heads[e] = to_f(rows[o]);
        else
            rows[o] = from_f<E>(heads[e]);
    }
}

/* Causal softmax in place on att rows; one warp per row (b, h, t). The
 * scores were already scaled by 1/sqrt(HD) in the GEMM. Columns j <= t get
 * the probabilities, j > t get 0. */
__global__ void attn_softmax_kernel(float *att, int T, size_t rows) {
    size_t r = blockIdx.x * (size_t)(blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    if (r >= rows) return;
    int t = (int)(r % T);
    float *p = att + r * T;
    float m = -INFINITY;
    for (int j = lane; j <= t; j += 32) m = fmaxf(m, p[j]);
    m = warp_max(m);
    float s = 0.0f;
    for (int j = lane; j <= t; j += 32) s += expf(p[j] - m);
    float inv = 1.0f / warp_sum(s);
    for (int j = lane; j < T; j += 32) p[j] = j <= t ? expf(p[j] - m) * inv : 0.0f;
}

/* dst = att with the upper triangle zeroed (the masked P for dV = P^T dO);
 * one warp per row. */
__global__ void attn_mask_copy_kernel(float *dst, const float *att, int T, size_t rows) {
    size_t r = blockIdx.x * (size_t)(blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    if (r >= rows) return;
    int t = (int)(r % T);
    for (int j = lane; j < T; j += 32) dst[r * T + j] = j <= t ? att[r * T + j] : 0.0f;
}

/* Softmax backward in place: datt holds dP on entry; on exit dS * scale,
 * dS = P (dP - sum_j P dP) for j <= t and 0 above the diagonal. One warp
 * per row. */
__global__ void attn_softmax_bwd_kernel(float *datt, const float *att, int T, size_t rows,
                                        float scale) {
    size_t r = blockIdx.x * (size_t)(blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    if (r >= rows) return;
    int t = (int)(r % T);
    const float *p = att + r * T;
    float *d = datt + r * T;
    float s = 0.0f;
    for (int j = lane; j <= t; j += 32) s += p[j] * d[j];
    s = warp_sum(s);
    for (int j = lane; j < T; j += 32) d[j] = j <= t ? p[j] * (d[j] - s) * scale : 0.0f;
}

/* dqkv rows (N, (NH + 2 NKV) HD), overwritten, from fp32 dq, dk, dv heads
 * (B, NH, T, HD): dk/dv of kv head g is the sum over its NH/NKV query heads,
 * in head order. One thread per element of the dqkv row. */
template <typename E>
__global__ void attn_merge_kernel(E *dqkv, const float *dq, const float *dk, const float *dv,
                                  int T, int NH, int NKV, int HD, size_t total) {
    int width = (NH + 2 * NKV) * HD, group = NH / NKV;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < total; e += stride) {
        int c = (int)(e % width);
        size_t n = e / width;
        int t = (int)(n % T), b = (int)(n / T);
        int slot = c / HD, i = c % HD;
        float s = 0.0f;
        if (slot < NH) {
            s = dq[(((size_t)b * NH + slot) * T + t) * HD + i];
        } else {
            int g = slot < NH + NKV ? slot - NH : slot - NH - NKV;
            const float *src = slot < NH + NKV ? dk : dv;
            for (int h = g * group; h < (g + 1) * group; h++)
                s += src[(((size_t)b * NH + h) * T + t) * HD + i];
        }
        dqkv[e] = from_f<E>(s);
    }
}

/* batched row-major fp32 GEMM over the B*NH heads */
static void heads_gemm(int ta, int tb, int M, int N, int K, const float *A, int lda, long long sA,
                       const float *Bm, int ldb, long long sB, float *C, int ldc, long long sC,
                       int batch, float alpha, int tf32) {
    GemmArgs g = {};
    g.ta = ta, g.tb = tb, g.M = M, g.N = N, g.K = K;
    g.A = A, g.lda = lda, g.sA = sA, g.B = Bm, g.ldb = ldb, g.sB = sB, g.C = C, g.ldc = ldc;
    g.sC = sC, g.batch = batch;
    g.ab_type = g.c_type = CUDA_R_32F;
    g.alpha = alpha, g.beta = 0.0f, g.tf32 = tf32;
    cuda_gemm(&g);
}

static unsigned warp_rows_grid(size_t rows) { return (unsigned)((rows + 7) / 8); }

template <typename E>
static void attention_fwd(void *out, float *att, const void *qkv, int B, int T, int NH, int NKV,
                          int HD) {
    if (sizeof(E) == 2 && cuda_flash_enabled(HD)) {
        cuda_flash_fwd(out, att, qkv, B, T, NH, NKV, HD);
        return;
    }
    size_t BH = (size_t)B * NH, per = (size_t)T * HD, total = BH * per, rows = BH * T;
    if (total == 0) return;
    int tf32 = sizeof(E) == 2;
    size_t bytes = cuda_pad(total * sizeof(float));
    char *ws = (char *)cuda_scratch(3 * bytes);
    float *q = (float *)ws, *k = (float *)(ws + bytes), *v = (float *)(ws + 2 * bytes);
    float *o = q; /* q is dead once the scores exist */
    attn_split_kernel<E><<<cuda_grid(total, 256), 256, 0, g_cuda.stream>>>(
        q, k, v, (const E *)qkv, T, NH, NKV, HD, total);
    LAUNCH_CHECK();
    /* att (T, T) = q (T, HD) @ k^T / sqrt(HD), per head */
    heads_gemm(0, 1, T, T, HD, q, HD, per, k, HD, per, att, T, (long long)T * T, (int)BH,
               1.0f / sqrtf((float)HD), tf32);
    attn_softmax_kernel<<<warp_rows_grid(rows), 256, 0, g_cuda.stream>>>(att, T, rows);
    LAUNCH_CHECK();
    /* o (T, HD) = att (T, T) @ v (T, HD) */
    heads_gemm(0, 0, T, HD, T, att, T, (long long)T * T, v, HD, per, o, HD, per, (int)BH, 1.0f,
               tf32);
    attn_heads_kernel<E><<<cuda_grid(total, 256), 256, 0, g_cuda.stream>>>(o, (E *)out, T, NH, HD,
                                                                          total, 0);
    LAUNCH_CHECK();
}

template <typename E>
static void attention_bwd(void *dqkv, float *datt, const void *dout, const void *out,
                          const void *qkv, const float *att, int B, int T, int NH, int NKV,
                          int HD) {
    if (sizeof(E) == 2 && cuda_flash_enabled(HD)) {
        cuda_flash_bwd(dqkv, datt, dout, out, qkv, att, B, T, NH, NKV, HD);
        return;
    }
    size_t BH = (size_t)B * NH, per = (size_t)T * HD, total = BH * per, rows = BH * T;
    if (total == 0) return;
    int tf32 = sizeof(E) == 2;
    long long TT = (long long)T * T;
    size_t bytes = cuda_pad(total * sizeof(float));
    char *ws = (char *)cuda_scratch(7 * bytes);
    float *q = (float *)ws, *k = (float *)(ws + bytes), *v = (float *)(ws + 2 * bytes);
    float *dO = (float *)(ws + 3 * bytes), *dq = (float *)(ws + 4 * bytes);
    float *dk = (float *)(ws + 5 * bytes), *dv = (float *)(ws + 6 * bytes);
    attn_split_kernel<E><<<cuda_grid(total, 256), 256, 0, g_cuda.stream>>>(
        q, k, v, (const E *)qkv, T, NH, NKV, HD, total);
    LAUNCH_CHECK();
    attn_heads_kernel<E><<<cuda_grid(total, 256), 256, 0, g_cuda.stream>>>(dO, (E *)dout, T, NH,
                                                                          HD, total, 1);
    LAUNCH_CHECK();
    /* dv (T, HD) = P^T (T, T) @ dO (T, HD), with P masked into datt first */
    attn_mask_copy_kernel<<<warp_rows_grid(rows), 256, 0, g_cuda.stream>>>(datt, att, T, rows);
    LAUNCH_CHECK();
    heads_gemm(1, 0, T, HD, T, datt, T, TT, dO, HD, per, dv, HD, per, (int)BH, 1.0f, tf32);
    /* dP (T, T) = dO (T, HD) @ v^T, then dS * scale in place */
    heads_gemm(0, 1, T, T, HD, dO, HD, per, v, HD, per, datt, T, TT, (int)BH, 1.0f, tf32);
    attn_softmax_bwd_kernel<<<warp_rows_grid(rows), 256, 0, g_cuda.stream>>>(
        datt, att, T, rows, 1.0f / sqrtf((float)HD));
    LAUNCH_CHECK();
    /* dq = dS @ k; dk = dS^T @ q */
    heads_gemm(0, 0, T, HD, T, datt, T, TT, k, HD, per, dq, HD, per, (int)BH, 1.0f, tf32);
    heads_gemm(1, 0, T, HD, T, datt, T, TT, q, HD, per, dk, HD, per, (int)BH, 1.0f, tf32);
    size_t n_out = (size_t)B * T * (NH + 2 * NKV) * HD;
    attn_merge_kernel<E><<<cuda_grid(n_out, 256), 256, 0, g_cuda.stream>>>(
        (E *)dqkv, dq, dk, dv, T, NH, NKV, HD, n_out);
    LAUNCH_CHECK();
}

/* the bf16 table: log-sum-exps where the fused kernel runs, else the
 * probabilities; the fp32 table leaves the hook NULL (probabilities) */
static size_t saved_floats_bf16(int B, int T, int NH, int HD) {
    size_t rows = (size_t)B * NH * T;
    return cuda_flash_enabled(HD) ? rows : rows * T;
}

void cuda_fill_attention(Ops *o, int use_bf16) {
    o->attention_fwd = use_bf16 ? attention_fwd<bf16> : attention_fwd<float>;
    o->attention_bwd = use_bf16 ? attention_bwd<bf16> : attention_bwd<float>;
    o->attention_saved_floats = use_bf16 ? saved_floats_bf16 : NULL;
}
