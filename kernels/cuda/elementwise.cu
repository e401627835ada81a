/* elementwise.cu: the memory-bound ops of the CUDA backend: embedding
 * forward and (deterministic) backward, RoPE, GELU, SwiGLU and the residual
 * add. All are grid-stride loops over chunks of 8 elements; a chunk uses
 * 16-byte loads/stores when the host found the sizes and pointers aligned
 * (`vec`), and scalar accesses otherwise. Math is fp32 in registers.
 *
 * The element type is the template parameter E (float or bf16); T is the
 * sequence length, as in kernels/ops.h.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_common.cuh"

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */

static unsigned grid8(size_t n) { return cuda_grid((n + 7) / 8, 256); }
#define GRID_STRIDE_CHUNKS(ch, n)                                                                  \
    for (size_t ch = blockIdx.x * (size_t)blockDim.x + threadIdx.x; ch * 8 < (n);                \
         ch += (size_t)gridDim.x * blockDim.x)

/* ---- embeddings ---- */

/* out (N,C) = wte[tokens[n]] (+ wpe[n % T]); chunks of 8 channels of a row
 * when vec (C % 8 == 0), single elements otherwise. */
template <typename E>
__global__ void embed_fwd_kernel(E *out, const int32_t *tokens, const E *wte, const E *wpe, int T,
                                 int C, size_t total, int vec) {
    GRID_STRIDE_CHUNKS(ch, total) {
        size_t e0 = ch * 8;
        if (vec) {
            size_t n = e0 / C, c = e0 % C;
            float f[8], p[8];
            ld8(f, wte + (size_t)tokens[n] * C + c);
            if (wpe) {
                ld8(p, wpe + (n % T) * C + c);
                for (int j = 0; j < 8; j++) f[j] += p[j];
            }
            st8(out + e0, f);
        } else {
            for (size_t e = e0; e < e0 + 8 && e < total; e++) {
                size_t n = e / C, c = e % C;
                float f = to_f(wte[(size_t)tokens[n] * C + c]);
                if (wpe) f += to_f(wpe[(n % T) * C + c]);
                out[e] = from_f<E>(f);
            }
        }
    }
}

template <typename E>
static void embed_fwd(void *out, const int32_t *tokens, const void *wte, const void *wpe, int B,
                      int T, int C) {
    size_t total = (size_t)B * T * C;
    if (total == 0) return;
    int vec = C % 8 == 0 && cuda_aligned16(out) && cuda_aligned16(wte) &&
              (!wpe || cuda_aligned16(wpe));
    embed_fwd_kernel<E><<<grid8(total), 256, 0, g_cuda.stream>>>(
        (E *)out, tokens, (const E *)wte, (const E *)wpe, T, C, total, vec);
    LAUNCH_CHECK();
}

/* dwte += rows of dout grouped by token. Block (x: one distinct token u, y:
 * 256 channels); each thread sums the dout rows of its token in position
 * order and adds the sum into dwte: no two threads write the same element,
 * so there are no atomics and the result is deterministic. `idx` holds
 * [U tokens][U+1 offsets][N positions sorted by token, then position]. */
template <typename E>
__global__ void embed_bwd_wte_kernel(E *dwte, const E *dout, const int32_t *idx, int U, int C) {
    int u = blockIdx.x, c = blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= C) return;
    const int32_t *off = idx + U, *pos = idx + 2 * U + 1;
    float s = 0.0f;
    for (int k = off[u]; k < off[u + 1]; k++) s += to_f(dout[(size_t)pos[k] * C + c]);
    size_t o = (size_t)idx[u] * C + c;
    dwte[o] = from_f<E>(to_f(dwte[o]) + s);
}

/* dwpe[t] += sum over b of dout[b*T + t], b in order; one thread per (t, c). */
template <typename E>
__global__ void embed_bwd_wpe_kernel(E *dwpe, const E *dout, int B, int T, int C) {
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < (size_t)T * C; e += stride) {
        float s = 0.0f;
        for (int b = 0; b < B; b++) s += to_f(dout[(size_t)b * T * C + e]);
        dwpe[e] = from_f<E>(to_f(dwpe[e]) + s);
    }
}

/* Host side of the embedding backward: the token ids are copied to the host
 * (one sync) and counting-sorted there into the `idx` layout above. */
static struct {
    int32_t *buf;
    size_t buf_n;
    int32_t *count;
    size_t count_n;
} g_embed;

static int32_t *grow_i32(int32_t **p, size_t *have, size_t need) {
    if (need > *have) {
        free(*p);
        *p = (int32_t *)malloc(need * sizeof(int32_t));
        if (!*p) CUDA_FATAL("embed_bwd: out of host memory");
        *have = need;
    }
    return *p;
}

template <typename E>
static void embed_bwd(void *dwte, void *dwpe, const void *dout, const int32_t *tokens, int B,
                      int T, int C) {
    int N = B * T;
    if (N <= 0) return;
    /* buf: [N tokens (host copy)][U][U+1][N] with U <= N */
    int32_t *buf = grow_i32(&g_embed.buf, &g_embed.buf_n, (size_t)4 * N + 1);
    int32_t *tok = buf, *idx = buf + N;
    CUDA_CHECK(cudaMemcpyAsync(tok, tokens, (size_t)N * 4, cudaMemcpyDeviceToHost, g_cuda.stream));
    CUDA_CHECK(cudaStreamSynchronize(g_cuda.stream));
    int32_t maxtok = 0;
    for (int n = 0; n < N; n++) {
        if (tok[n] < 0) CUDA_FATAL("embed_bwd: negative token id");
        if (tok[n] > maxtok) maxtok = tok[n];
    }
    int32_t *count = grow_i32(&g_embed.count, &g_embed.count_n, (size_t)maxtok + 1);
    memset(count, 0, ((size_t)maxtok + 1) * sizeof(int32_t));
    for (int n = 0; n < N; n++) count[tok[n]]++;
    int U = 0;
    for (int32_t t = 0; t <= maxtok; t++)
        if (count[t]) U++;
    int32_t *uniq = idx, *off = idx + U, *pos = idx + 2 * U + 1;
    int u = 0, run = 0;
    for (int32_t t = 0; t <= maxtok; t++) {
        if (!count[t]) continue;
        uniq[u] = t;
        off[u] = run;
        run += count[t];
        count[t] = off[u]; /* now the next free slot of token t */
        u++;
    }
    off[U] = run;
    for (int n = 0; n < N; n++) pos[count[tok[n]]++] = n;
    size_t idx_bytes = ((size_t)2 * U + 1 + N) * sizeof(int32_t);
    int32_t *d_idx = (int32_t *)cuda_scratch(idx_bytes);
    CUDA_CHECK(cudaMemcpyAsync(d_idx, idx, idx_bytes, cudaMemcpyHostToDevice, g_cuda.stream));
    dim3 grid(U, (C + 255) / 256);
    embed_bwd_wte_kernel<E><<<grid, 256, 0, g_cuda.stream>>>((E *)dwte, (const E *)dout, d_idx, U, C);
    LAUNCH_CHECK();
    if (dwpe) {
        embed_bwd_wpe_kernel<E><<<cuda_grid((size_t)T * C, 256), 256, 0, g_cuda.stream>>>(
            (E *)dwpe, (const E *)dout, B, T, C);
        LAUNCH_CHECK();
    }
    /* the host idx buffer is reused by the next call: let the copy finish */
    CUDA_CHECK(cudaStreamSynchronize(g_cuda.stream));
}

/* ---- RoPE ----
 * The cos/sin table (T, HD/2) is computed on the host by ops_rope_table
 * (kernels/ops.c, the CPU backend's too) from the model's inverse
 * frequencies, and kept on the device until T, HD or the frequencies
 * change (compared value for value: HD/2 floats). */
static struct {
    float *table;    /* [T*half cos][T*half sin] */
    float *inv_freq; /* (half) host copy of the frequencies the table is for */
    int T, HD;
} g_rope;

static const float *rope_table(int T, int HD, const float *inv_freq) {
    int half = HD / 2;
    if (g_rope.table && g_rope.T == T && g_rope.HD == HD &&
        !memcmp(g_rope.inv_freq, inv_freq, (size_t)half * sizeof(float)))
        return g_rope.table;
    size_t n = (size_t)T * half;
    float *h = (float *)malloc(2 * n * sizeof(float));
    float *f = (float *)realloc(g_rope.inv_freq, (size_t)half * sizeof(float));
    if (!h || !f) CUDA_FATAL("rope: out of host memory");
    g_rope.inv_freq = f;
    ops_rope_table(h, h + n, T, half, inv_freq);
    if (g_rope.table) CUDA_CHECK(cudaFree(g_rope.table));
    g_rope.table = NULL;
    CUDA_CHECK(cudaMalloc(&g_rope.table, 2 * n * sizeof(float)));
    CUDA_CHECK(cudaMemcpyAsync(g_rope.table, h, 2 * n * sizeof(float), cudaMemcpyHostToDevice,
                               g_cuda.stream));
    CUDA_CHECK(cudaStreamSynchronize(g_cuda.stream));
    free(h);
    memcpy(g_rope.inv_freq, inv_freq, (size_t)half * sizeof(float));
    g_rope.T = T, g_rope.HD = HD;
    return g_rope.table;
}

/* One thread per (row n, rotated head h < NH+NKV, pair i < HD/2): rotates
 * x[i], x[i+HD/2] of that head in place (dir = -1: the inverse rotation). */
template <typename E>
__global__ void rope_kernel(E *qkv, const float *table, int T, int NH, int NKV, int HD, float dir,
                            size_t total) {
    int half = HD / 2, heads = NH + NKV;
    size_t row = (size_t)(NH + 2 * NKV) * HD, tab = (size_t)T * half;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < total; e += stride) {
        int i = (int)(e % half);
        size_t r = e / half;
        int h = (int)(r % heads);
        size_t n = r / heads;
        int t = (int)(n % T);
        E *x = qkv + n * row + (size_t)h * HD;
        float c = table[(size_t)t * half + i], s = dir * table[tab + (size_t)t * half + i];
        float x1 = to_f(x[i]), x2 = to_f(x[i + half]);
        x[i] = from_f<E>(x1 * c - x2 * s);
        x[i + half] = from_f<E>(x2 * c + x1 * s);
    }
}

/* The same rotation, 8 pairs a thread (i = 8 k .. 8 k + 7 of one head):
 * 16-byte loads and stores of x and the table, and one index division
 * chain per 8 pairs instead of per pair (a scalar kernel runs at ~1.3 TB/s
 * on an H200, docs/log/performance-history.md, change 9). Needs HD / 2 % 8 == 0 and a
 * 16-byte aligned qkv; the arithmetic per element is the scalar kernel's. */
template <typename E>
__global__ void rope8_kernel(E *qkv, const float *table, int T, int NH, int NKV, int HD,
                             float dir, size_t total) {
    int half = HD / 2, heads = NH + NKV, chunks = half / 8;
    size_t row = (size_t)(NH + 2 * NKV) * HD, tab = (size_t)T * half;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < total; e += stride) {
        int i = (int)(e % chunks) * 8;
        size_t r = e / chunks;
        int h = (int)(r % heads);
        size_t n = r / heads;
        int t = (int)(n % T);
        E *x = qkv + n * row + (size_t)h * HD;
        float c[8], s[8], x1[8], x2[8], y1[8], y2[8];
        ld8(c, table + (size_t)t * half + i);
        ld8(s, table + tab + (size_t)t * half + i);
        ld8(x1, x + i);
        ld8(x2, x + i + half);
#pragma unroll
        for (int j = 0; j < 8; j++) {
            float sj = dir * s[j];
            y1[j] = x1[j] * c[j] - x2[j] * sj;
            y2[j] = x2[j] * c[j] + x1[j] * sj;
        }
        st8(x + i, y1);
        st8(x + i + half, y2);
    }
}

template <typename E>
static void rope_apply(void *qkv, int B, int T, int NH, int NKV, int HD, const float *inv_freq,
                       float dir) {
    size_t total = (size_t)B * T * (NH + NKV) * (HD / 2);
    if (total == 0) return;
    const float *table = rope_table(T, HD, inv_freq);
    if ((HD / 2) % 8 == 0 && cuda_aligned16(qkv)) {
        total /= 8;
        rope8_kernel<E><<<cuda_grid(total, 256), 256, 0, g_cuda.stream>>>((E *)qkv, table, T, NH,
                                                                            NKV, HD, dir, total);
    } else {
        rope_kernel<E><<<cuda_grid(total, 256), 256, 0, g_cuda.stream>>>((E *)qkv, table, T, NH,
                                                                           NKV, HD, dir, total);
    }
    LAUNCH_CHECK();
}
template <typename E>
static void rope_fwd(void *qkv, int B, int T, int NH, int NKV, int HD, const float *inv_freq) {
    rope_apply<E>(qkv, B, T, NH, NKV, HD, inv_freq, 1.0f);
}
template <typename E>
static void rope_bwd(void *dqkv, int B, int T, int NH, int NKV, int HD, const float *inv_freq) {
    rope_apply<E>(dqkv, B, T, NH, NKV, HD, inv_freq, -1.0f);
}

/* ---- GELU (tanh) ---- */

__device__ __forceinline__ float gelu_f(float x) {
    return 0.5f * x * (1.0f + tanhf(GELU_K * (x + 0.044715f * x * x * x)));
}
__device__ __forceinline__ float gelu_grad_f(float x) {
    float th = tanhf(GELU_K * (x + 0.044715f * x * x * x));
    float du = GELU_K * (1.0f + 3.0f * 0.044715f * x * x);
    return 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * du;
}

/* out = gelu(inp), n elements; 8 per thread and step */
template <typename E> __global__ void gelu_fwd_kernel(E *out, const E *inp, size_t n, int vec) {
    GRID_STRIDE_CHUNKS(ch, n) {
        size_t i0 = ch * 8;
        int cnt = n - i0 < 8 ? (int)(n - i0) : 8, v = vec && cnt == 8;
        float x[8];
        ld8v(x, inp + i0, v, cnt);
        for (int j = 0; j < 8; j++) x[j] = gelu_f(x[j]);
        st8v(out + i0, x, v, cnt);
    }
}

/* dinp = dout * gelu'(inp) (overwritten) */
template <typename E>
__global__ void gelu_bwd_kernel(E *dinp, const E *inp, const E *dout, size_t n, int vec) {
    GRID_STRIDE_CHUNKS(ch, n) {
        size_t i0 = ch * 8;
        int cnt = n - i0 < 8 ? (int)(n - i0) : 8, v = vec && cnt == 8;
        float x[8], d[8];
        ld8v(x, inp + i0, v, cnt);
        ld8v(d, dout + i0, v, cnt);
        for (int j = 0; j < 8; j++) d[j] *= gelu_grad_f(x[j]);
        st8v(dinp + i0, d, v, cnt);
    }
}

template <typename E> static void gelu_fwd(void *out, const void *inp, size_t n) {
    if (!n) return;
    int vec = cuda_aligned16(out) && cuda_aligned16(inp);
    gelu_fwd_kernel<E><<<grid8(n), 256, 0, g_cuda.stream>>>((E *)out, (const E *)inp, n, vec);
    LAUNCH_CHECK();
}
template <typename E> static void gelu_bwd(void *dinp, const void *inp, const void *dout, size_t n) {
    if (!n) return;
    int vec = cuda_aligned16(dinp) && cuda_aligned16(inp) && cuda_aligned16(dout);
    gelu_bwd_kernel<E><<<grid8(n), 256, 0, g_cuda.stream>>>((E *)dinp, (const E *)inp,
                                                            (const E *)dout, n, vec);
    LAUNCH_CHECK();
}

/* ---- SwiGLU ----
 * Chunks of 8 of the (N, F) output; gu rows are [gate (F) | up (F)]. With
 * F % 8 == 0 a chunk lies in one row and is loaded with 16-byte accesses. */
template <typename E>
__global__ void swiglu_fwd_kernel(E *out, const E *gu, int F, size_t total, int vec) {
    GRID_STRIDE_CHUNKS(ch, total) {
        size_t e0 = ch * 8;
        if (vec) {
            size_t n = e0 / F, i = e0 % F;
            float g[8], u[8];
            ld8(g, gu + n * 2 * F + i);
            ld8(u, gu + n * 2 * F + F + i);
            for (int j = 0; j < 8; j++) g[j] = g[j] / (1.0f + expf(-g[j])) * u[j];
            st8(out + e0, g);
        } else {
            for (size_t e = e0; e < e0 + 8 && e < total; e++) {
                size_t n = e / F, i = e % F;
                float g = to_f(gu[n * 2 * F + i]), u = to_f(gu[n * 2 * F + F + i]);
                out[e] = from_f<E>(g / (1.0f + expf(-g)) * u);
            }
        }
    }
}

__device__ __forceinline__ void swiglu_grad(float g, float u, float d, float *dg, float *du) {
    float sig = 1.0f / (1.0f + expf(-g));
    *du = d * g * sig;
    *dg = d * u * sig * (1.0f + g * (1.0f - sig));
}

/* dgu (N, 2F) overwritten from dout (N, F) and gu */
template <typename E>
__global__ void swiglu_bwd_kernel(E *dgu, const E *dout, const E *gu, int F, size_t total,
                                  int vec) {
    GRID_STRIDE_CHUNKS(ch, total) {
        size_t e0 = ch * 8;
        if (vec) {
            size_t n = e0 / F, i = e0 % F, r = n * 2 * F + i;
            float g[8], u[8], d[8], dg[8], du[8];
            ld8(g, gu + r);
            ld8(u, gu + r + F);
            ld8(d, dout + e0);
            for (int j = 0; j < 8; j++) swiglu_grad(g[j], u[j], d[j], &dg[j], &du[j]);
            st8(dgu + r, dg);
            st8(dgu + r + F, du);
        } else {
            for (size_t e = e0; e < e0 + 8 && e < total; e++) {
                size_t n = e / F, i = e % F, r = n * 2 * F + i;
                float dg, du;
                swiglu_grad(to_f(gu[r]), to_f(gu[r + F]), to_f(dout[e]), &dg, &du);
                dgu[r] = from_f<E>(dg);
                dgu[r + F] = from_f<E>(du);
            }
        }
    }
}

template <typename E> static void swiglu_fwd(void *out, const void *gu, int N, int F) {
    size_t total = (size_t)N * F;
    if (!total) return;
    int vec = F % 8 == 0 && cuda_aligned16(out) && cuda_aligned16(gu);
    swiglu_fwd_kernel<E><<<grid8(total), 256, 0, g_cuda.stream>>>((E *)out, (const E *)gu, F,
                                                                  total, vec);
    LAUNCH_CHECK();
}
template <typename E>
static void swiglu_bwd(void *dgu, const void *dout, const void *gu, int N, int F) {
    size_t total = (size_t)N * F;
    if (!total) return;
    int vec = F % 8 == 0 && cuda_aligned16(dgu) && cuda_aligned16(dout) && cuda_aligned16(gu);
    swiglu_bwd_kernel<E><<<grid8(total), 256, 0, g_cuda.stream>>>(
        (E *)dgu, (const E *)dout, (const E *)gu, F, total, vec);
    LAUNCH_CHECK();
}

/* ---- residual: out = a + b (out may alias a or b: same index in and out) ---- */
template <typename E>
__global__ void residual_kernel(E *out, const E *a, const E *b, size_t n, int vec) {
    GRID_STRIDE_CHUNKS(ch, n) {
        size_t i0 = ch * 8;
        int cnt = n - i0 < 8 ? (int)(n - i0) : 8, v = vec && cnt == 8;
        float x[8], y[8];
        ld8v(x, a + i0, v, cnt);
        ld8v(y, b + i0, v, cnt);
        for (int j = 0; j < 8; j++) x[j] += y[j];
        st8v(out + i0, x, v, cnt);
    }
}
template <typename E> static void residual_fwd(void *out, const void *a, const void *b, size_t n) {
    if (!n) return;
    int vec = cuda_aligned16(out) && cuda_aligned16(a) && cuda_aligned16(b);
    residual_kernel<E><<<grid8(n), 256, 0, g_cuda.stream>>>((E *)out, (const E *)a, (const E *)b,
                                                            n, vec);
    LAUNCH_CHECK();
}

void cuda_fill_elementwise(Ops *o, int use_bf16) {
    o->embed_fwd = use_bf16 ? embed_fwd<bf16> : embed_fwd<float>;
    o->embed_bwd = use_bf16 ? embed_bwd<bf16> : embed_bwd<float>;
    o->rope_fwd = use_bf16 ? rope_fwd<bf16> : rope_fwd<float>;
    o->rope_bwd = use_bf16 ? rope_bwd<bf16> : rope_bwd<float>;
    o->gelu_fwd = use_bf16 ? gelu_fwd<bf16> : gelu_fwd<float>;
    o->gelu_bwd = use_bf16 ? gelu_bwd<bf16> : gelu_bwd<float>;
    o->swiglu_fwd = use_bf16 ? swiglu_fwd<bf16> : swiglu_fwd<float>;
    o->swiglu_bwd = use_bf16 ? swiglu_bwd<bf16> : swiglu_bwd<float>;
    o->residual_fwd = use_bf16 ? residual_fwd<bf16> : residual_fwd<float>;
}
