/* ops_cpu.c: the CPU backend, the numerical reference of dapt. fp32
 * everywhere; OpenBLAS sgemm for every matrix product, OpenMP for the rest.
 *
 * Determinism: no op reduces across OpenMP threads in arrival order. Where a
 * reduction crosses rows (parameter gradients of norms and biases, embedding
 * scatter, sum of squares) each thread owns a disjoint set of outputs, or
 * fixed-size partial sums are combined sequentially, so results are bitwise
 * reproducible for a given thread count (resume and parity tests rely on it).
 */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/ops_cpu_moe.h"
#include "kernels/cpu/vecmath.h"
#include "kernels/ops.h"

#define LMHEAD_CHUNK_ROWS 256 /* rows of logits materialised at once */
/* Loops with less work than this many elements run on one thread: forking
 * costs more than it saves, and on a busy machine a parallel region waits
 * for its slowest (descheduled) thread. Results do not depend on it: every
 * output element is computed by the same code whichever thread runs it. */
#define PAR(work) ((work) >= 32768)

/* ---- memory ---- */

/* Byte accounting (ops_cpu_mem): each block carries its requested size in
 * a 64-byte header in front of it (the data stays 64-byte aligned), so free
 * can subtract it. Allocations happen on the thread that drives the model. */
#define ALLOC_HEADER 64
static size_t g_mem_live, g_mem_peak;

static void *cpu_alloc(size_t n_bytes) {
    size_t size = (n_bytes + 63) / 64 * 64;
    if (size == 0) size = 64;
    char *p = aligned_alloc(64, ALLOC_HEADER + size);
    if (!p) return NULL;
    memset(p + ALLOC_HEADER, 0, size);
    memcpy(p, &n_bytes, sizeof n_bytes);
    g_mem_live += n_bytes;
    if (g_mem_live > g_mem_peak) g_mem_peak = g_mem_live;
    return p + ALLOC_HEADER;
}
static void cpu_free(void *p) {
    if (!p) return;
    char *base = (char *)p - ALLOC_HEADER;
    size_t n_bytes;
    memcpy(&n_bytes, base, sizeof n_bytes);
    g_mem_live -= n_bytes;
    free(base);
}

void ops_cpu_mem(size_t *live_bytes, size_t *peak_bytes) {
    if (live_bytes) *live_bytes = g_mem_live;
    if (peak_bytes) *peak_bytes = g_mem_peak;
}
void ops_cpu_mem_reset_peak(void) { g_mem_peak = g_mem_live; }
static void cpu_zero(void *p, size_t n_bytes) { memset(p, 0, n_bytes); }
static void cpu_sync(void) {}
static void cpu_upload(void *dst, const float *src, size_t n) { memcpy(dst, src, n * 4); }
static void cpu_download(float *dst, const void *src, size_t n) { memcpy(dst, src, n * 4); }
static void cpu_copy_bytes(void *dst, const void *src, size_t n) { memcpy(dst, src, n); }

/* ---- embeddings ---- */

static void cpu_embed_fwd(void *out_, const int32_t *tokens, const void *wte_, const void *wpe_,
                          int B, int T, int C) {
    float *out = out_;
    const float *wte = wte_, *wpe = wpe_;
#pragma omp parallel for if (PAR((size_t)B * T * C))
    for (int n = 0; n < B * T; n++) {
        const float *e = wte + (size_t)tokens[n] * C;
        float *o = out + (size_t)n * C;
        if (wpe) {
            const float *p = wpe + (size_t)(n % T) * C;
            for (int c = 0; c < C; c++) o[c] = e[c] + p[c];
        } else {
            memcpy(o, e, (size_t)C * 4);
        }
    }
}

/* Parallel over channel slices: each thread owns columns [c0, c1) of dwte
 * and dwpe and walks all rows in order, so repeated tokens accumulate in a
 * fixed order without atomics. */
static void cpu_embed_bwd(void *dwte_, void *dwpe_, const void *dout_, const int32_t *tokens,
                          int B, int T, int C) {
    float *dwte = dwte_, *dwpe = dwpe_;
    const float *dout = dout_;
    const int slice = 32;
#pragma omp parallel for schedule(static) if (PAR((size_t)B * T * C))
    for (int c0 = 0; c0 < C; c0 += slice) {
        int c1 = c0 + slice < C ? c0 + slice : C;
        for (int n = 0; n < B * T; n++) {
            const float *d = dout + (size_t)n * C;
            float *w = dwte + (size_t)tokens[n] * C;
            for (int c = c0; c < c1; c++) w[c] += d[c];
            if (dwpe) {
                float *p = dwpe + (size_t)(n % T) * C;
                for (int c = c0; c < c1; c++) p[c] += d[c];
            }
        }
    }
}

/* ---- norms ---- */

/* One row of LayerNorm / RMSNorm forward. The plain ops and the fused
 * residual + norm ops call the same code on the row as stored, so the fused
 * ones are bitwise the two-op sequence (ops.h); noinline keeps it one body
 * of machine code, vectorised once, whichever op calls it. */
__attribute__((noinline)) static void layernorm_row(float *o, float *mean, float *rstd,
                                                    const float *x, const float *w, const float *b,
                                                    int C, float eps) {
    float m = 0.0f;
#pragma omp simd reduction(+ : m)
    for (int c = 0; c < C; c++) m += x[c];
    m /= C;
    float v = 0.0f;
#pragma omp simd reduction(+ : v)
    for (int c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
    v /= C;
    float s = 1.0f / sqrtf(v + eps);
    for (int c = 0; c < C; c++) o[c] = (x[c] - m) * s * w[c] + b[c];
    *mean = m;
    *rstd = s;
}

__attribute__((noinline)) static void rmsnorm_row(float *o, float *rstd, const float *x,
                                                  const float *w, int C, float eps) {
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int c = 0; c < C; c++) ss += x[c] * x[c];
    float s = 1.0f / sqrtf(ss / C + eps);
    for (int c = 0; c < C; c++) o[c] = x[c] * s * w[c];
    *rstd = s;
}

static void cpu_layernorm_fwd(void *out_, float *mean, float *rstd, const void *inp_,
                              const void *w_, const void *b_, int N, int C, float eps) {
    float *out = out_;
    const float *inp = inp_, *w = w_, *b = b_;
#pragma omp parallel for if (PAR((size_t)N * C))
    for (int n = 0; n < N; n++)
        layernorm_row(out + (size_t)n * C, &mean[n], &rstd[n], inp + (size_t)n * C, w, b, C, eps);
}

/* res = a + b row by row (the same additions as cpu_residual_fwd), then the
 * norm of the row just written */
static void cpu_residual_layernorm_fwd(void *res_, void *out_, float *mean, float *rstd,
                                       const void *a_, const void *b_, const void *w_,
                                       const void *bias_, int N, int C, float eps) {
    float *res = res_, *out = out_;
    const float *a = a_, *b = b_, *w = w_, *bias = bias_;
#pragma omp parallel for if (PAR((size_t)N * C))
    for (int n = 0; n < N; n++) {
        size_t r = (size_t)n * C;
        for (int c = 0; c < C; c++) res[r + c] = a[r + c] + b[r + c];
        layernorm_row(out + r, &mean[n], &rstd[n], res + r, w, bias, C, eps);
    }
}

/* Two passes: rows in parallel for dinp, then channel slices in parallel for
 * dw and db (each thread owns its channels; rows summed in order). */
static void cpu_layernorm_bwd(void *dinp_, void *dw_, void *db_, const void *dout_,
                              const void *inp_, const void *w_, const float *mean,
                              const float *rstd, int N, int C) {
    float *dinp = dinp_, *dw = dw_, *db = db_;
    const float *dout = dout_, *inp = inp_, *w = w_;
#pragma omp parallel for if (PAR((size_t)N * C))
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C, *d = dout + (size_t)n * C;
        float *dx = dinp + (size_t)n * C;
        float m = mean[n], s = rstd[n];
        float dn_mean = 0.0f, dnn_mean = 0.0f;
#pragma omp simd reduction(+ : dn_mean, dnn_mean)
        for (int c = 0; c < C; c++) {
            float dn = d[c] * w[c];
            dn_mean += dn;
            dnn_mean += dn * (x[c] - m) * s;
        }
        dn_mean /= C;
        dnn_mean /= C;
        for (int c = 0; c < C; c++) {
            float norm = (x[c] - m) * s;
            dx[c] += (d[c] * w[c] - dn_mean - norm * dnn_mean) * s;
        }
    }
    const int slice = 64;
#pragma omp parallel for schedule(static) if (PAR((size_t)N * C))
    for (int c0 = 0; c0 < C; c0 += slice) {
        int c1 = c0 + slice < C ? c0 + slice : C;
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C, *d = dout + (size_t)n * C;
            float m = mean[n], s = rstd[n];
            for (int c = c0; c < c1; c++) {
                dw[c] += d[c] * (x[c] - m) * s;
                db[c] += d[c];
            }
        }
    }
}

static void cpu_rmsnorm_fwd(void *out_, float *rstd, const void *inp_, const void *w_, int N,
                            int C, float eps) {
    float *out = out_;
    const float *inp = inp_, *w = w_;
#pragma omp parallel for if (PAR((size_t)N * C))
    for (int n = 0; n < N; n++)
        rmsnorm_row(out + (size_t)n * C, &rstd[n], inp + (size_t)n * C, w, C, eps);
}

static void cpu_residual_rmsnorm_fwd(void *res_, void *out_, float *rstd, const void *a_,
                                     const void *b_, const void *w_, int N, int C, float eps) {
    float *res = res_, *out = out_;
    const float *a = a_, *b = b_, *w = w_;
#pragma omp parallel for if (PAR((size_t)N * C))
    for (int n = 0; n < N; n++) {
        size_t r = (size_t)n * C;
        for (int c = 0; c < C; c++) res[r + c] = a[r + c] + b[r + c];
        rmsnorm_row(out + r, &rstd[n], res + r, w, C, eps);
    }
}

static void cpu_rmsnorm_bwd(void *dinp_, void *dw_, const void *dout_, const void *inp_,
                            const void *w_, const float *rstd, int N, int C) {
    float *dinp = dinp_, *dw = dw_;
    const float *dout = dout_, *inp = inp_, *w = w_;
#pragma omp parallel for if (PAR((size_t)N * C))
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C, *d = dout + (size_t)n * C;
        float *dx = dinp + (size_t)n * C;
        float s = rstd[n];
        float dnn_mean = 0.0f;
#pragma omp simd reduction(+ : dnn_mean)
        for (int c = 0; c < C; c++) dnn_mean += d[c] * w[c] * x[c] * s;
        dnn_mean /= C;
        for (int c = 0; c < C; c++) dx[c] += (d[c] * w[c] - x[c] * s * dnn_mean) * s;
    }
    const int slice = 64;
#pragma omp parallel for schedule(static) if (PAR((size_t)N * C))
    for (int c0 = 0; c0 < C; c0 += slice) {
        int c1 = c0 + slice < C ? c0 + slice : C;
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C, *d = dout + (size_t)n * C;
            float s = rstd[n];
            for (int c = c0; c < c1; c++) dw[c] += d[c] * x[c] * s;
        }
    }
}

/* ---- linear layers ---- */

static void cpu_matmul_fwd(void *out_, const void *inp, const void *w, const void *bias_, int N,
                           int IC, int OC) {
    float *out = out_;
    const float *bias = bias_;
    float beta = 0.0f;
    if (bias) {
#pragma omp parallel for if (PAR((size_t)N * OC))
        for (int n = 0; n < N; n++) memcpy(out + (size_t)n * OC, bias, (size_t)OC * 4);
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, IC, 1.0f, inp, IC, w, IC, beta,
                out, OC);
}

static void cpu_matmul_bwd(void *dinp, void *dw, void *dbias_, const void *dout_, const void *inp,
                           const void *w, int N, int IC, int OC) {
    const float *dout = dout_;
    float *dbias = dbias_;
    if (dinp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, IC, OC, 1.0f, dout, OC, w, IC,
                    0.0f, dinp, IC);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, IC, N, 1.0f, dout, OC, inp, IC, 1.0f,
                dw, IC);
    if (dbias) {
        const int slice = 64;
#pragma omp parallel for schedule(static) if (PAR((size_t)N * OC))
        for (int o0 = 0; o0 < OC; o0 += slice) {
            int o1 = o0 + slice < OC ? o0 + slice : OC;
            for (int n = 0; n < N; n++) {
                const float *d = dout + (size_t)n * OC;
                for (int o = o0; o < o1; o++) dbias[o] += d[o];
            }
        }
    }
}

/* ---- RoPE ----
 * The cos/sin table (T, HD/2) from ops_rope_table, then one pass over the
 * rows in parallel. */

/* dir = +1 rotates forward, -1 applies the inverse (transposed) rotation. */
static void rope_apply(float *qkv, int B, int T, int NH, int NKV, int HD, const float *inv_freq,
                       float dir, const int32_t *pos) {
    int half = HD / 2, row = (NH + 2 * NKV) * HD;
    float *cs = malloc(sizeof(float) * T * half), *sn = malloc(sizeof(float) * T * half);
    ops_rope_table(cs, sn, T, half, inv_freq);
#pragma omp parallel for if (PAR((size_t)B * T * (NH + NKV) * HD))
    for (int n = 0; n < B * T; n++) {
        int t = pos ? pos[n] : n % T;
        const float *c = cs + (size_t)t * half, *s = sn + (size_t)t * half;
        for (int h = 0; h < NH + NKV; h++) {
            float *x = qkv + (size_t)n * row + (size_t)h * HD;
            for (int i = 0; i < half; i++) {
                float x1 = x[i], x2 = x[i + half], si = dir * s[i];
                x[i] = x1 * c[i] - x2 * si;
                x[i + half] = x2 * c[i] + x1 * si;
            }
        }
    }
    free(cs);
    free(sn);
}

static void cpu_rope_fwd(void *qkv, int B, int T, int NH, int NKV, int HD, const float *inv_freq) {
    rope_apply(qkv, B, T, NH, NKV, HD, inv_freq, 1.0f, NULL);
}
static void cpu_rope_bwd(void *dqkv, int B, int T, int NH, int NKV, int HD, const float *inv_freq) {
    rope_apply(dqkv, B, T, NH, NKV, HD, inv_freq, -1.0f, NULL);
}
static void cpu_rope_pos_fwd(void *qkv, int B, int T, int NH, int NKV, int HD,
                             const float *inv_freq, const int32_t *pos) {
    rope_apply(qkv, B, T, NH, NKV, HD, inv_freq, 1.0f, pos);
}
static void cpu_rope_pos_bwd(void *dqkv, int B, int T, int NH, int NKV, int HD,
                             const float *inv_freq, const int32_t *pos) {
    rope_apply(dqkv, B, T, NH, NKV, HD, inv_freq, -1.0f, pos);
}

/* ---- q/k head norms (Qwen3) ----
 * Forward: each head through rmsnorm_row (as rmsnorm_fwd), its input
 * saved first, rows in parallel. Backward: the weight gradients first (they need the incoming
 * gradient, which the second pass overwrites), each column of wq and wk
 * summed over rows then heads in order by one thread (deterministic at any
 * thread count); then the input gradients row by row. */
static void cpu_qk_norm_fwd(void *qkv_, void *saved_, float *rstd, const void *wq_, const void *wk_,
                            int N, int NH, int NKV, int HD, float eps) {
    float *qkv = qkv_, *saved = saved_;
    const float *wq = wq_, *wk = wk_;
    int H = NH + NKV;
    size_t row = (size_t)(NH + 2 * NKV) * HD;
#pragma omp parallel for if (PAR((size_t)N * H * HD))
    for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++) {
            float *x = qkv + n * row + (size_t)h * HD, *s = saved + ((size_t)n * H + h) * HD;
            memcpy(s, x, (size_t)HD * sizeof *s);
            rmsnorm_row(x, &rstd[(size_t)n * H + h], s, h < NH ? wq : wk, HD, eps);
        }
}

static void cpu_qk_norm_bwd(void *dqkv_, void *dwq_, void *dwk_, const void *saved_,
                            const void *wq_, const void *wk_, const float *rstd, int N, int NH,
                            int NKV, int HD) {
    float *dqkv = dqkv_, *dwq = dwq_, *dwk = dwk_;
    const float *saved = saved_, *wq = wq_, *wk = wk_;
    int H = NH + NKV;
    size_t row = (size_t)(NH + 2 * NKV) * HD;
#pragma omp parallel for if (PAR((size_t)N * H * HD))
    for (int c = 0; c < 2 * HD; c++) { /* c < HD: column c of wq; else of wk */
        int i = c % HD, h0 = c < HD ? 0 : NH, h1 = c < HD ? NH : H;
        float acc = 0.0f;
        for (int n = 0; n < N; n++)
            for (int h = h0; h < h1; h++)
                acc += dqkv[n * row + (size_t)h * HD + i] * saved[((size_t)n * H + h) * HD + i] *
                       rstd[(size_t)n * H + h];
        (c < HD ? dwq : dwk)[i] += acc;
    }
#pragma omp parallel for if (PAR((size_t)N * H * HD))
    for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++) {
            float *d = dqkv + n * row + (size_t)h * HD;
            const float *x = saved + ((size_t)n * H + h) * HD, *w = h < NH ? wq : wk;
            float s = rstd[(size_t)n * H + h], a = 0.0f;
            for (int i = 0; i < HD; i++) a += d[i] * w[i] * x[i] * s;
            a /= HD;
            for (int i = 0; i < HD; i++) d[i] = (d[i] * w[i] - x[i] * s * a) * s;
        }
}

/* ---- attention ----
 * Per (b, head) the products are GEMMs read in place from the packed qkv
 * rows (leading dimension (NH + 2 NKV) HD), run single-threaded inside the
 * OpenMP loop over heads (OpenBLAS's OpenMP build does not fork inside a
 * parallel region). The full T x T score matrix is computed and the upper
 * triangle zeroed: at the sequence lengths of CPU runs the GEMM rate more
 * than pays for the wasted half.
 *
 * Forward, task (b, h): S = scale Q K^T; row-wise causal softmax into att
 * (zeros above the diagonal, and before the row's document start when
 * starts != NULL); O = P V. */
static void attention_fwd(float *out, float *att, const float *qkv, int B, int T, int NH, int NKV,
                          int HD, const int32_t *starts) {
    const int row = (NH + 2 * NKV) * HD, group = NH / NKV;
    const float scale = 1.0f / sqrtf((float)HD);
#pragma omp parallel for collapse(2) if (PAR((size_t)B * NH * T * T * HD))
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            int g = h / group;
            const float *q = qkv + (size_t)b * T * row + (size_t)h * HD;
            const float *k = qkv + (size_t)b * T * row + (size_t)(NH + g) * HD;
            const float *v = qkv + (size_t)b * T * row + (size_t)(NH + NKV + g) * HD;
            float *P = att + ((size_t)b * NH + h) * T * T;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, HD, scale, q, row, k, row,
                        0.0f, P, T);
            for (int t = 0; t < T; t++) {
                float *p = P + (size_t)t * T;
                const int s0 = starts ? starts[(size_t)b * T + t] : 0;
                float maxv = -INFINITY;
                for (int j = s0; j <= t; j++) maxv = p[j] > maxv ? p[j] : maxv;
                float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
                for (int j = s0; j <= t; j++) {
                    p[j] = vec_expf(p[j] - maxv);
                    sum += p[j];
                }
                float inv = 1.0f / sum;
                for (int j = 0; j < s0; j++) p[j] = 0.0f;
                for (int j = s0; j <= t; j++) p[j] *= inv;
                for (int j = t + 1; j < T; j++) p[j] = 0.0f;
            }
            float *o = out + (size_t)b * T * NH * HD + (size_t)h * HD;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, HD, T, 1.0f, P, T, v, row,
                        0.0f, o, NH * HD);
        }
}

static void cpu_attention_fwd(void *out, float *att, const void *qkv, int B, int T, int NH,
                              int NKV, int HD) {
    attention_fwd(out, att, qkv, B, T, NH, NKV, HD, NULL);
}

static void cpu_attention_doc_fwd(void *out, float *att, const void *qkv, int B, int T, int NH,
                                  int NKV, int HD, const int32_t *starts) {
    attention_fwd(out, att, qkv, B, T, NH, NKV, HD, starts);
}

/* Backward, task (b, kv head g), the group's query heads in order (so the
 * shared dK, dV accumulate race-free and in a fixed order):
 *   Pm = P with the upper triangle zeroed (only the lower one of att is
 *        read), dV += Pm^T dO
 *   dP = dO V^T, dS = Pm (dP - rowsum(Pm dP))   (in datt)
 *   dQ = scale dS K,  dK += scale dS^T Q */
static void cpu_attention_bwd(void *dqkv_, float *datt, const void *dout_, const void *out,
                              const void *qkv_, const float *att, int B, int T, int NH, int NKV,
                              int HD) {
    (void)out; /* the saved probabilities are enough */
    float *dqkv = dqkv_;
    const float *dout = dout_, *qkv = qkv_;
    const int row = (NH + 2 * NKV) * HD, group = NH / NKV;
    const float scale = 1.0f / sqrtf((float)HD);
#pragma omp parallel if (PAR((size_t)B * NH * T * T * HD))
    {
        float *pm = malloc(sizeof(float) * T * T);
#pragma omp for collapse(2)
        for (int b = 0; b < B; b++)
            for (int g = 0; g < NKV; g++) {
                const float *k = qkv + (size_t)b * T * row + (size_t)(NH + g) * HD;
                const float *v = qkv + (size_t)b * T * row + (size_t)(NH + NKV + g) * HD;
                float *dk = dqkv + (size_t)b * T * row + (size_t)(NH + g) * HD;
                float *dv = dqkv + (size_t)b * T * row + (size_t)(NH + NKV + g) * HD;
                for (int t = 0; t < T; t++) {
                    memset(dk + (size_t)t * row, 0, sizeof(float) * HD);
                    memset(dv + (size_t)t * row, 0, sizeof(float) * HD);
                }
                for (int h = g * group; h < (g + 1) * group; h++) {
                    const float *P = att + ((size_t)b * NH + h) * T * T;
                    float *dS = datt + ((size_t)b * NH + h) * T * T;
                    const float *q = qkv + (size_t)b * T * row + (size_t)h * HD;
                    const float *dO = dout + (size_t)b * T * NH * HD + (size_t)h * HD;
                    float *dq = dqkv + (size_t)b * T * row + (size_t)h * HD;
                    for (int t = 0; t < T; t++) {
                        memcpy(pm + (size_t)t * T, P + (size_t)t * T, sizeof(float) * (t + 1));
                        memset(pm + (size_t)t * T + t + 1, 0, sizeof(float) * (T - t - 1));
                    }
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, HD, T, 1.0f, pm, T, dO,
                                NH * HD, 1.0f, dv, row);
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, HD, 1.0f, dO,
                                NH * HD, v, row, 0.0f, dS, T);
                    for (int t = 0; t < T; t++) {
                        const float *p = pm + (size_t)t * T;
                        float *d = dS + (size_t)t * T;
                        float pdp = 0.0f;
#pragma omp simd reduction(+ : pdp)
                        for (int j = 0; j <= t; j++) pdp += p[j] * d[j];
#pragma omp simd
                        for (int j = 0; j < T; j++) d[j] = p[j] * (d[j] - pdp);
                    }
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, HD, T, scale, dS, T,
                                k, row, 0.0f, dq, row);
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, HD, T, scale, dS, T, q,
                                row, 1.0f, dk, row);
                }
            }
        free(pm);
    }
}

/* ---- activations ---- */

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */

static void cpu_gelu_fwd(void *out_, const void *inp_, size_t n) {
    float *out = out_;
    const float *inp = inp_;
#pragma omp parallel for simd if (PAR(n))
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + vec_tanhf(GELU_K * (x + 0.044715f * x * x * x)));
    }
}

static void cpu_gelu_bwd(void *dinp_, const void *inp_, const void *dout_, size_t n) {
    float *dinp = dinp_;
    const float *inp = inp_, *dout = dout_;
#pragma omp parallel for simd if (PAR(n))
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_K * (x + 0.044715f * x * x * x);
        float th = vec_tanhf(u);
        float sech2 = 1.0f - th * th;
        float du = GELU_K * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] = dout[i] * (0.5f * (1.0f + th) + 0.5f * x * sech2 * du);
    }
}

static void cpu_swiglu_fwd(void *out_, const void *gu_, int N, int F) {
    float *out = out_;
    const float *gu = gu_;
#pragma omp parallel for if (PAR((size_t)N * F))
    for (int n = 0; n < N; n++) {
        const float *g = gu + (size_t)n * 2 * F, *u = g + F;
        float *o = out + (size_t)n * F;
#pragma omp simd
        for (int i = 0; i < F; i++) o[i] = g[i] * vec_sigmoidf(g[i]) * u[i];
    }
}

static void cpu_swiglu_bwd(void *dgu_, const void *dout_, const void *gu_, int N, int F) {
    float *dgu = dgu_;
    const float *dout = dout_, *gu = gu_;
#pragma omp parallel for if (PAR((size_t)N * F))
    for (int n = 0; n < N; n++) {
        const float *g = gu + (size_t)n * 2 * F, *u = g + F, *d = dout + (size_t)n * F;
        float *dg = dgu + (size_t)n * 2 * F, *du = dg + F;
#pragma omp simd
        for (int i = 0; i < F; i++) {
            float sig = vec_sigmoidf(g[i]);
            float silu = g[i] * sig;
            du[i] = d[i] * silu;
            dg[i] = d[i] * u[i] * sig * (1.0f + g[i] * (1.0f - sig));
        }
    }
}

static void cpu_residual_fwd(void *out_, const void *a_, const void *b_, size_t n) {
    float *out = out_;
    const float *a = a_, *b = b_;
#pragma omp parallel for if (PAR(n))
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

/* ---- LM head + cross-entropy ----
 * Rows in chunks of LMHEAD_CHUNK_ROWS: logits by sgemm into scratch, then
 * per row (parallel) logsumexp in double, loss, and in training the logits
 * are turned in place into dlogits; two more sgemms give dx and dw. */
static size_t cpu_lmhead_scratch_bytes(int N, int V) {
    int rows = N < LMHEAD_CHUNK_ROWS ? N : LMHEAD_CHUNK_ROWS;
    return (size_t)rows * V * sizeof(float);
}

static void cpu_lmhead_ce(float *losses, void *dx_, void *dw, const void *x_, const void *w,
                          const int32_t *targets, int N, int C, int V, float grad_scale,
                          void *scratch) {
    float *logits = scratch, *dx = dx_;
    const float *x = x_;
    for (int n0 = 0; n0 < N; n0 += LMHEAD_CHUNK_ROWS) {
        int rows = N - n0 < LMHEAD_CHUNK_ROWS ? N - n0 : LMHEAD_CHUNK_ROWS;
        const float *xc = x + (size_t)n0 * C;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, V, C, 1.0f, xc, C, w, C, 0.0f,
                    logits, V);
#pragma omp parallel for if (PAR((size_t)rows * V))
        for (int r = 0; r < rows; r++) {
            float *l = logits + (size_t)r * V;
            int tgt = targets[n0 + r];
            float maxv = -INFINITY;
#pragma omp simd reduction(max : maxv)
            for (int i = 0; i < V; i++) maxv = l[i] > maxv ? l[i] : maxv;
            double sum = 0.0;
#pragma omp simd reduction(+ : sum)
            for (int i = 0; i < V; i++) sum += vec_expf(l[i] - maxv);
            float lse = maxv + (float)log(sum);
            losses[n0 + r] = tgt < 0 ? 0.0f : lse - l[tgt];
            if (!dx) continue;
            if (tgt < 0) {
                memset(l, 0, sizeof(float) * V);
                continue;
            }
#pragma omp simd
            for (int i = 0; i < V; i++) l[i] = vec_expf(l[i] - lse) * grad_scale;
            l[tgt] -= grad_scale;
        }
        if (!dx) continue;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, C, V, 1.0f, logits, V, w, C,
                    0.0f, dx + (size_t)n0 * C, C);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, V, C, rows, 1.0f, logits, V, xc, C,
                    1.0f, dw, C);
    }
}

/* ---- optimizer ---- */

/* Fixed blocks summed in parallel, then the block sums in order: the result
 * does not depend on the number of threads. */
static double cpu_sumsq(const void *g_, size_t n) {
    const float *g = g_;
    enum { NBLOCK = 64 };
    double part[NBLOCK];
    size_t per = (n + NBLOCK - 1) / NBLOCK;
#pragma omp parallel for if (PAR(n))
    for (int k = 0; k < NBLOCK; k++) {
        size_t lo = k * per, hi = lo + per < n ? lo + per : n;
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (size_t i = lo; i < hi; i++) s += (double)g[i] * g[i];
        part[k] = s;
    }
    double s = 0.0;
    for (int k = 0; k < NBLOCK; k++) s += part[k];
    return s;
}

static void cpu_adamw(void *param_, float *master, const void *grad_, float *m, float *v, size_t n,
                      float lr, float b1, float b2, float eps, float wd, int t, float grad_scale) {
    (void)master; /* fp32 parameters are their own master copy */
    float *p = param_;
    const float *grad = grad_;
    float bc1 = 1.0f - powf(b1, (float)t), bc2 = 1.0f - powf(b2, (float)t);
#pragma omp parallel for simd if (PAR(n))
    for (size_t i = 0; i < n; i++) {
        float g = grad[i] * grad_scale;
        m[i] = b1 * m[i] + (1.0f - b1) * g;
        v[i] = b2 * v[i] + (1.0f - b2) * g * g;
        float mh = m[i] / bc1, vh = v[i] / bc2;
        p[i] -= lr * (mh / (sqrtf(vh) + eps) + wd * p[i]);
    }
}

static const Ops cpu_ops = {
    .name = "cpu",
    .act_bytes = 4,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .zero = cpu_zero,
    .sync = cpu_sync,
    .upload = cpu_upload,
    .download = cpu_download,
    .upload_bytes = cpu_copy_bytes,
    .download_bytes = cpu_copy_bytes,
    .copy = cpu_copy_bytes,
    .embed_fwd = cpu_embed_fwd,
    .embed_bwd = cpu_embed_bwd,
    .layernorm_fwd = cpu_layernorm_fwd,
    .layernorm_bwd = cpu_layernorm_bwd,
    .rmsnorm_fwd = cpu_rmsnorm_fwd,
    .rmsnorm_bwd = cpu_rmsnorm_bwd,
    .matmul_fwd = cpu_matmul_fwd,
    .matmul_bwd = cpu_matmul_bwd,
    .rope_fwd = cpu_rope_fwd,
    .rope_bwd = cpu_rope_bwd,
    .qk_norm_fwd = cpu_qk_norm_fwd,
    .qk_norm_bwd = cpu_qk_norm_bwd,
    .attention_fwd = cpu_attention_fwd,
    .attention_bwd = cpu_attention_bwd,
    .attention_doc_fwd = cpu_attention_doc_fwd,
    .rope_pos_fwd = cpu_rope_pos_fwd,
    .rope_pos_bwd = cpu_rope_pos_bwd,
    .gelu_fwd = cpu_gelu_fwd,
    .gelu_bwd = cpu_gelu_bwd,
    .swiglu_fwd = cpu_swiglu_fwd,
    .swiglu_bwd = cpu_swiglu_bwd,
    .residual_fwd = cpu_residual_fwd,
    .lmhead_ce = cpu_lmhead_ce,
    .lmhead_scratch_bytes = cpu_lmhead_scratch_bytes,
    .sumsq = cpu_sumsq,
    .adamw = cpu_adamw,
    OPS_CPU_MOE_ENTRIES
    .residual_layernorm_fwd = cpu_residual_layernorm_fwd,
    .residual_rmsnorm_fwd = cpu_residual_rmsnorm_fwd,
};

const Ops *ops_cpu(void) { return &cpu_ops; }

char *openblas_get_corename(void); /* OpenBLAS's own API (not in cblas.h) */

const char *ops_cpu_blas_hint(void) {
    const char *core = openblas_get_corename();
    if (!core || strcmp(core, "Prescott") || !__builtin_cpu_supports("avx512f")) return NULL;
    return "note: OpenBLAS chose its generic Prescott kernels on this AVX-512 CPU (a model it "
           "does not know); OPENBLAS_CORETYPE=SkylakeX selects its AVX-512 kernels, about 5x "
           "faster matrix products on the CPU measured in docs/performance.md";
}
