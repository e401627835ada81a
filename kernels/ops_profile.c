/* ops_profile.c: the profiling Ops wrapper (see ops_profile.h). Each
 * wrapper computes its FLOP and byte estimates from the arguments, then
 * brackets the inner call with inner->sync() and the monotonic clock; the
 * bookkeeping happens outside the timed interval.
 *
 * FLOPs (2 per multiply-add): matmul_fwd 2·N·IC·OC; matmul_bwd 4·N·IC·OC
 * (moe_expert_matmul_fwd/bwd the same with N the rows of all experts)
 * (2 when dinp is NULL); lmhead_ce 2·N·C·V forward, 6·N·C·V with the
 * backward; attention_fwd 4·B·NH·HD·T(T+1)/2 (causal: only the pairs the
 * mask keeps), attention_bwd twice that. Bytes: the activation-sized
 * buffers each op reads and writes once (act_bytes per element, fp32
 * buffers 4), small per-row statistics and weight vectors left out. */
#include "kernels/ops_profile.h"
#include "kernels/util.h"

#include <stdlib.h>
#include <string.h>

enum {
    P_ZERO,
    P_UPLOAD,
    P_DOWNLOAD,
    P_UPLOAD_BYTES,
    P_DOWNLOAD_BYTES,
    P_EMBED_FWD,
    P_EMBED_BWD,
    P_LAYERNORM_FWD,
    P_LAYERNORM_BWD,
    P_RMSNORM_FWD,
    P_RMSNORM_BWD,
    P_MATMUL_FWD,
    P_MATMUL_BWD,
    P_ROPE_FWD,
    P_ROPE_BWD,
    P_ATTENTION_FWD,
    P_ATTENTION_BWD,
    P_GELU_FWD,
    P_GELU_BWD,
    P_SWIGLU_FWD,
    P_SWIGLU_BWD,
    P_RESIDUAL_FWD,
    P_LMHEAD_CE,
    P_SUMSQ,
    P_ADAMW,
    P_MOE_ROUTE_FWD,
    P_MOE_ROUTE_BWD,
    P_MOE_PERMUTE,
    P_MOE_GATHER_FWD,
    P_MOE_GATHER_BWD,
    P_MOE_COMBINE_FWD,
    P_MOE_COMBINE_BWD,
    P_RESIDUAL_LAYERNORM_FWD,
    P_RESIDUAL_RMSNORM_FWD,
    P_MOE_EXPERT_MATMUL_FWD,
    P_MOE_EXPERT_MATMUL_BWD,
    P_QK_NORM_FWD,
    P_QK_NORM_BWD,
    P_ATTENTION_DOC_FWD,
    P_ROPE_POS_FWD,
    P_ROPE_POS_BWD,
    P_COUNT
};
static const char *const op_names[P_COUNT] = {
    "zero",           "upload",         "download",        "upload_bytes",
    "download_bytes", "embed_fwd",      "embed_bwd",       "layernorm_fwd",
    "layernorm_bwd",  "rmsnorm_fwd",    "rmsnorm_bwd",     "matmul_fwd",
    "matmul_bwd",     "rope_fwd",       "rope_bwd",        "attention_fwd",
    "attention_bwd",  "gelu_fwd",       "gelu_bwd",        "swiglu_fwd",
    "swiglu_bwd",     "residual_fwd",   "lmhead_ce",       "sumsq",
    "adamw",          "moe_route_fwd",  "moe_route_bwd",   "moe_permute",
    "moe_gather_fwd", "moe_gather_bwd", "moe_combine_fwd", "moe_combine_bwd",
    "residual_layernorm_fwd", "residual_rmsnorm_fwd",
    "moe_expert_mm_fwd", "moe_expert_mm_bwd", "qk_norm_fwd", "qk_norm_bwd",
    "attention_doc_fwd", "rope_pos_fwd", "rope_pos_bwd",
};

/* one slot per op, plus one per matmul (direction, IC, OC) */
#define MAX_ENTRIES 256

static struct {
    const Ops *inner;
    Ops table;
    int on;
    int n;
    int id[MAX_ENTRIES];
    OpsProfileEntry e[MAX_ENTRIES];
    long dropped; /* calls not counted: more distinct shapes than slots */
} g;

static double prof_begin(void) {
    g.inner->sync();
    return now_s();
}

static void prof_end(double t0, int id, int ic, int oc, double flops, double bytes) {
    g.inner->sync();
    double dt = now_s() - t0;
    int i = 0;
    while (i < g.n && !(g.id[i] == id && g.e[i].ic == ic && g.e[i].oc == oc))
        i++;
    if (i == g.n) {
        if (g.n == MAX_ENTRIES) {
            g.dropped++;
            return;
        }
        g.id[i] = id;
        g.e[i] = (OpsProfileEntry){op_names[id], ic, oc, 0, 0.0, 0.0, 0.0};
        g.n++;
    }
    g.e[i].calls++;
    g.e[i].seconds += dt;
    g.e[i].flops += flops;
    g.e[i].bytes += bytes;
}

/* the inner call, timed when profiling is on */
#define PROF(id, ic, oc, flops, bytes, ...)                                                        \
    do {                                                                                           \
        if (!g.on) {                                                                               \
            __VA_ARGS__;                                                                           \
            return;                                                                                \
        }                                                                                          \
        double f_ = (flops), b_ = (bytes);                                                         \
        double t0_ = prof_begin();                                                                 \
        __VA_ARGS__;                                                                               \
        prof_end(t0_, id, ic, oc, f_, b_);                                                         \
    } while (0)

#define AB ((double)g.inner->act_bytes)

static void p_zero(void *p, size_t n_bytes) {
    PROF(P_ZERO, 0, 0, 0, (double)n_bytes, g.inner->zero(p, n_bytes));
}
static void p_upload(void *dst, const float *src, size_t n) {
    PROF(P_UPLOAD, 0, 0, 0, n * AB, g.inner->upload(dst, src, n));
}
static void p_download(float *dst, const void *src, size_t n) {
    PROF(P_DOWNLOAD, 0, 0, 0, n * AB, g.inner->download(dst, src, n));
}
static void p_upload_bytes(void *dst, const void *src, size_t n_bytes) {
    PROF(P_UPLOAD_BYTES, 0, 0, 0, (double)n_bytes, g.inner->upload_bytes(dst, src, n_bytes));
}
static void p_download_bytes(void *dst, const void *src, size_t n_bytes) {
    PROF(P_DOWNLOAD_BYTES, 0, 0, 0, (double)n_bytes, g.inner->download_bytes(dst, src, n_bytes));
}
static void p_embed_fwd(void *out, const int32_t *tokens, const void *wte, const void *wpe, int B,
                        int T, int C) {
    double NC = (double)B * T * C;
    PROF(P_EMBED_FWD, 0, 0, 0, NC * AB * (wpe ? 3 : 2),
         g.inner->embed_fwd(out, tokens, wte, wpe, B, T, C));
}
static void p_embed_bwd(void *dwte, void *dwpe, const void *dout, const int32_t *tokens, int B,
                        int T, int C) {
    double NC = (double)B * T * C;
    PROF(P_EMBED_BWD, 0, 0, 0, NC * AB * (dwpe ? 5 : 3),
         g.inner->embed_bwd(dwte, dwpe, dout, tokens, B, T, C));
}
static void p_layernorm_fwd(void *out, float *mean, float *rstd, const void *inp, const void *w,
                            const void *b, int N, int C, float eps) {
    PROF(P_LAYERNORM_FWD, 0, 0, 0, 2.0 * N * C * AB,
         g.inner->layernorm_fwd(out, mean, rstd, inp, w, b, N, C, eps));
}
static void p_layernorm_bwd(void *dinp, void *dw, void *db, const void *dout, const void *inp,
                            const void *w, const float *mean, const float *rstd, int N, int C) {
    PROF(P_LAYERNORM_BWD, 0, 0, 0, 4.0 * N * C * AB,
         g.inner->layernorm_bwd(dinp, dw, db, dout, inp, w, mean, rstd, N, C));
}
static void p_rmsnorm_fwd(void *out, float *rstd, const void *inp, const void *w, int N, int C,
                          float eps) {
    PROF(P_RMSNORM_FWD, 0, 0, 0, 2.0 * N * C * AB,
         g.inner->rmsnorm_fwd(out, rstd, inp, w, N, C, eps));
}
static void p_rmsnorm_bwd(void *dinp, void *dw, const void *dout, const void *inp, const void *w,
                          const float *rstd, int N, int C) {
    PROF(P_RMSNORM_BWD, 0, 0, 0, 4.0 * N * C * AB,
         g.inner->rmsnorm_bwd(dinp, dw, dout, inp, w, rstd, N, C));
}
static void p_matmul_fwd(void *out, const void *inp, const void *w, const void *bias, int N, int IC,
                         int OC) {
    PROF(P_MATMUL_FWD, IC, OC, 2.0 * N * IC * OC, 0,
         g.inner->matmul_fwd(out, inp, w, bias, N, IC, OC));
}
static void p_matmul_bwd(void *dinp, void *dw, void *dbias, const void *dout, const void *inp,
                         const void *w, int N, int IC, int OC) {
    PROF(P_MATMUL_BWD, IC, OC, (dinp ? 4.0 : 2.0) * N * IC * OC, 0,
         g.inner->matmul_bwd(dinp, dw, dbias, dout, inp, w, N, IC, OC));
}
static void p_rope_fwd(void *qkv, int B, int T, int NH, int NKV, int HD, const float *inv_freq) {
    PROF(P_ROPE_FWD, 0, 0, 0, 2.0 * B * T * (NH + NKV) * HD * AB,
         g.inner->rope_fwd(qkv, B, T, NH, NKV, HD, inv_freq));
}
static void p_rope_bwd(void *dqkv, int B, int T, int NH, int NKV, int HD, const float *inv_freq) {
    PROF(P_ROPE_BWD, 0, 0, 0, 2.0 * B * T * (NH + NKV) * HD * AB,
         g.inner->rope_bwd(dqkv, B, T, NH, NKV, HD, inv_freq));
}
static void p_rope_pos_fwd(void *qkv, int B, int T, int NH, int NKV, int HD,
                           const float *inv_freq, const int32_t *pos) {
    PROF(P_ROPE_POS_FWD, 0, 0, 0, 2.0 * B * T * (NH + NKV) * HD * AB,
         g.inner->rope_pos_fwd(qkv, B, T, NH, NKV, HD, inv_freq, pos));
}
static void p_rope_pos_bwd(void *dqkv, int B, int T, int NH, int NKV, int HD,
                           const float *inv_freq, const int32_t *pos) {
    PROF(P_ROPE_POS_BWD, 0, 0, 0, 2.0 * B * T * (NH + NKV) * HD * AB,
         g.inner->rope_pos_bwd(dqkv, B, T, NH, NKV, HD, inv_freq, pos));
}
/* q and k heads read and written, their input saved; the backward reads
 * the gradient, the saved input and writes the gradient */
static void p_qk_norm_fwd(void *qkv, void *saved, float *rstd, const void *wq, const void *wk,
                          int N, int NH, int NKV, int HD, float eps) {
    PROF(P_QK_NORM_FWD, 0, 0, 0, 3.0 * N * (NH + NKV) * HD * AB,
         g.inner->qk_norm_fwd(qkv, saved, rstd, wq, wk, N, NH, NKV, HD, eps));
}
static void p_qk_norm_bwd(void *dqkv, void *dwq, void *dwk, const void *saved, const void *wq,
                          const void *wk, const float *rstd, int N, int NH, int NKV, int HD) {
    PROF(P_QK_NORM_BWD, 0, 0, 0, 5.0 * N * (NH + NKV) * HD * AB,
         g.inner->qk_norm_bwd(dqkv, dwq, dwk, saved, wq, wk, rstd, N, NH, NKV, HD));
}
/* causal: q.k and p.v over T(T+1)/2 pairs per head */
static double attention_flops(int B, int T, int NH, int HD) {
    return 4.0 * B * NH * HD * (double)T * (T + 1) / 2.0;
}
static void p_attention_fwd(void *out, float *att, const void *qkv, int B, int T, int NH, int NKV,
                            int HD) {
    PROF(P_ATTENTION_FWD, 0, 0, attention_flops(B, T, NH, HD), 0,
         g.inner->attention_fwd(out, att, qkv, B, T, NH, NKV, HD));
}
/* the causal count: an upper bound of the document-masked work */
static void p_attention_doc_fwd(void *out, float *att, const void *qkv, int B, int T, int NH,
                                int NKV, int HD, const int32_t *starts) {
    PROF(P_ATTENTION_DOC_FWD, 0, 0, attention_flops(B, T, NH, HD), 0,
         g.inner->attention_doc_fwd(out, att, qkv, B, T, NH, NKV, HD, starts));
}
static void p_attention_bwd(void *dqkv, float *datt, const void *dout, const void *out,
                            const void *qkv, const float *att, int B, int T, int NH, int NKV,
                            int HD) {
    PROF(P_ATTENTION_BWD, 0, 0, 2.0 * attention_flops(B, T, NH, HD), 0,
         g.inner->attention_bwd(dqkv, datt, dout, out, qkv, att, B, T, NH, NKV, HD));
}
static void p_gelu_fwd(void *out, const void *inp, size_t n) {
    PROF(P_GELU_FWD, 0, 0, 0, 2.0 * n * AB, g.inner->gelu_fwd(out, inp, n));
}
static void p_gelu_bwd(void *dinp, const void *inp, const void *dout, size_t n) {
    PROF(P_GELU_BWD, 0, 0, 0, 3.0 * n * AB, g.inner->gelu_bwd(dinp, inp, dout, n));
}
static void p_swiglu_fwd(void *out, const void *gu, int N, int F) {
    PROF(P_SWIGLU_FWD, 0, 0, 0, 3.0 * N * F * AB, g.inner->swiglu_fwd(out, gu, N, F));
}
static void p_swiglu_bwd(void *dgu, const void *dout, const void *gu, int N, int F) {
    PROF(P_SWIGLU_BWD, 0, 0, 0, 5.0 * N * F * AB, g.inner->swiglu_bwd(dgu, dout, gu, N, F));
}
static void p_residual_fwd(void *out, const void *a, const void *b, size_t n) {
    PROF(P_RESIDUAL_FWD, 0, 0, 0, 3.0 * n * AB, g.inner->residual_fwd(out, a, b, n));
}
static void p_lmhead_ce(float *losses, void *dx, void *dw, const void *x, const void *w,
                        const int32_t *targets, int N, int C, int V, float grad_scale,
                        void *scratch) {
    PROF(P_LMHEAD_CE, 0, 0, (dx ? 6.0 : 2.0) * N * C * V, 0,
         g.inner->lmhead_ce(losses, dx, dw, x, w, targets, N, C, V, grad_scale, scratch));
}
static double p_sumsq(const void *grad, size_t n) {
    if (!g.on) return g.inner->sumsq(grad, n);
    double t0 = prof_begin();
    double r = g.inner->sumsq(grad, n);
    prof_end(t0, P_SUMSQ, 0, 0, 0, n * AB);
    return r;
}
/* param read + written, grad read, m and v read + written (fp32), master too */
static void p_adamw(void *param, float *master, const void *grad, float *m, float *v, size_t n,
                    float lr, float b1, float b2, float eps, float wd, int t, float grad_scale) {
    PROF(P_ADAMW, 0, 0, 0, n * (3.0 * AB + 16.0 + (master ? 8.0 : 0.0)),
         g.inner->adamw(param, master, grad, m, v, n, lr, b1, b2, eps, wd, t, grad_scale));
}
static void p_moe_route_fwd(float *probs, float *lse, int32_t *top_idx, float *top_w, float *stats,
                            const void *logits, int N, int E, int K, int norm_topk) {
    PROF(P_MOE_ROUTE_FWD, 0, 0, 0, 0,
         g.inner->moe_route_fwd(probs, lse, top_idx, top_w, stats, logits, N, E, K, norm_topk));
}
static void p_moe_route_bwd(void *dlogits, const float *dtop_w, const float *dprob, float z_scale,
                            const float *probs, const float *lse, const int32_t *top_idx,
                            const float *top_w, int N, int E, int K, int norm_topk) {
    PROF(P_MOE_ROUTE_BWD, 0, 0, 0, 0,
         g.inner->moe_route_bwd(dlogits, dtop_w, dprob, z_scale, probs, lse, top_idx, top_w, N, E,
                                K, norm_topk));
}
static void p_moe_permute(int32_t *counts, int32_t *row_token, int32_t *pos, const int32_t *top_idx,
                          int N, int E, int K) {
    PROF(P_MOE_PERMUTE, 0, 0, 0, 0, g.inner->moe_permute(counts, row_token, pos, top_idx, N, E, K));
}
static void p_moe_gather_fwd(void *xs, const void *x, const int32_t *row_token, int NK, int C) {
    PROF(P_MOE_GATHER_FWD, 0, 0, 0, 2.0 * NK * C * AB,
         g.inner->moe_gather_fwd(xs, x, row_token, NK, C));
}
static void p_moe_gather_bwd(void *dx, const void *dxs, const int32_t *pos, int N, int K, int C) {
    PROF(P_MOE_GATHER_BWD, 0, 0, 0, (K + 1.0) * N * C * AB,
         g.inner->moe_gather_bwd(dx, dxs, pos, N, K, C));
}
static void p_moe_combine_fwd(void *out, const void *ys, const float *top_w, const int32_t *pos,
                              int N, int K, int C) {
    PROF(P_MOE_COMBINE_FWD, 0, 0, 0, (K + 1.0) * N * C * AB,
         g.inner->moe_combine_fwd(out, ys, top_w, pos, N, K, C));
}
static void p_moe_combine_bwd(void *dys, float *dtop_w, const void *dout, const void *ys,
                              const float *top_w, const int32_t *pos, int N, int K, int C) {
    PROF(P_MOE_COMBINE_BWD, 0, 0, 0, (1.0 + 2.0 * K) * N * C * AB,
         g.inner->moe_combine_bwd(dys, dtop_w, dout, ys, top_w, pos, N, K, C));
}
/* read a, b; write res, out */
static void p_residual_layernorm_fwd(void *res, void *out, float *mean, float *rstd, const void *a,
                                     const void *b, const void *w, const void *bias, int N, int C,
                                     float eps) {
    PROF(P_RESIDUAL_LAYERNORM_FWD, 0, 0, 0, 4.0 * N * C * AB,
         g.inner->residual_layernorm_fwd(res, out, mean, rstd, a, b, w, bias, N, C, eps));
}
static void p_residual_rmsnorm_fwd(void *res, void *out, float *rstd, const void *a, const void *b,
                                   const void *w, int N, int C, float eps) {
    PROF(P_RESIDUAL_RMSNORM_FWD, 0, 0, 0, 4.0 * N * C * AB,
         g.inner->residual_rmsnorm_fwd(res, out, rstd, a, b, w, N, C, eps));
}

/* the grouped expert GEMMs: as matmul_fwd/bwd over the sum of the rows */
static double rows_of(const int32_t *counts, int E) {
    double r = 0.0;
    for (int e = 0; e < E; e++) r += counts[e] > 0 ? counts[e] : 0;
    return r;
}
static void p_moe_expert_matmul_fwd(void *out, const void *inp, const void *w, size_t w_stride,
                                    const int32_t *counts, int E, int IC, int OC) {
    PROF(P_MOE_EXPERT_MATMUL_FWD, IC, OC, 2.0 * rows_of(counts, E) * IC * OC, 0,
         g.inner->moe_expert_matmul_fwd(out, inp, w, w_stride, counts, E, IC, OC));
}
static void p_moe_expert_matmul_bwd(void *dinp, void *dw, const void *dout, const void *inp,
                                    const void *w, size_t w_stride, const int32_t *counts, int E,
                                    int IC, int OC) {
    PROF(P_MOE_EXPERT_MATMUL_BWD, IC, OC, 4.0 * rows_of(counts, E) * IC * OC, 0,
         g.inner->moe_expert_matmul_bwd(dinp, dw, dout, inp, w, w_stride, counts, E, IC, OC));
}

/* the wrapper where the inner table has the op, else NULL */
#define WRAP(field, fn) t->field = in->field ? fn : NULL

const Ops *ops_profiled(const Ops *in) {
    if (!in) return NULL;
    if (in == &g.table) return in;
    Ops *t = &g.table;
    *t = *in; /* name, act_bytes, alloc, free, sync, lmhead_scratch_bytes,
                attention_saved_floats */
    WRAP(zero, p_zero);
    WRAP(upload, p_upload);
    WRAP(download, p_download);
    WRAP(upload_bytes, p_upload_bytes);
    WRAP(download_bytes, p_download_bytes);
    WRAP(embed_fwd, p_embed_fwd);
    WRAP(embed_bwd, p_embed_bwd);
    WRAP(layernorm_fwd, p_layernorm_fwd);
    WRAP(layernorm_bwd, p_layernorm_bwd);
    WRAP(rmsnorm_fwd, p_rmsnorm_fwd);
    WRAP(rmsnorm_bwd, p_rmsnorm_bwd);
    WRAP(matmul_fwd, p_matmul_fwd);
    WRAP(matmul_bwd, p_matmul_bwd);
    WRAP(rope_fwd, p_rope_fwd);
    WRAP(rope_bwd, p_rope_bwd);
    WRAP(qk_norm_fwd, p_qk_norm_fwd);
    WRAP(qk_norm_bwd, p_qk_norm_bwd);
    WRAP(attention_fwd, p_attention_fwd);
    WRAP(attention_bwd, p_attention_bwd);
    WRAP(gelu_fwd, p_gelu_fwd);
    WRAP(gelu_bwd, p_gelu_bwd);
    WRAP(swiglu_fwd, p_swiglu_fwd);
    WRAP(swiglu_bwd, p_swiglu_bwd);
    WRAP(residual_fwd, p_residual_fwd);
    WRAP(lmhead_ce, p_lmhead_ce);
    WRAP(sumsq, p_sumsq);
    WRAP(adamw, p_adamw);
    WRAP(moe_route_fwd, p_moe_route_fwd);
    WRAP(moe_route_bwd, p_moe_route_bwd);
    WRAP(moe_permute, p_moe_permute);
    WRAP(moe_gather_fwd, p_moe_gather_fwd);
    WRAP(moe_gather_bwd, p_moe_gather_bwd);
    WRAP(moe_combine_fwd, p_moe_combine_fwd);
    WRAP(moe_combine_bwd, p_moe_combine_bwd);
    WRAP(residual_layernorm_fwd, p_residual_layernorm_fwd);
    WRAP(residual_rmsnorm_fwd, p_residual_rmsnorm_fwd);
    WRAP(moe_expert_matmul_fwd, p_moe_expert_matmul_fwd);
    WRAP(moe_expert_matmul_bwd, p_moe_expert_matmul_bwd);
    WRAP(attention_doc_fwd, p_attention_doc_fwd);
    WRAP(rope_pos_fwd, p_rope_pos_fwd);
    WRAP(rope_pos_bwd, p_rope_pos_bwd);
    g.inner = in;
    g.on = 1;
    ops_profile_reset();
    return t;
}

void ops_profile_enable(int on) {
    g.on = on != 0;
}

void ops_profile_reset(void) {
    g.n = 0;
    g.dropped = 0;
}

int ops_profile_entries(OpsProfileEntry *out, int max) {
    for (int i = 0; i < g.n && i < max; i++)
        out[i] = g.e[i];
    return g.n;
}

int ops_profile_get(const char *op, OpsProfileEntry *out) {
    *out = (OpsProfileEntry){op, 0, 0, 0, 0.0, 0.0, 0.0};
    int found = 0;
    for (int i = 0; i < g.n; i++) {
        if (strcmp(g.e[i].op, op)) continue;
        found = 1;
        out->op = g.e[i].op;
        out->calls += g.e[i].calls;
        out->seconds += g.e[i].seconds;
        out->flops += g.e[i].flops;
        out->bytes += g.e[i].bytes;
    }
    return found ? 0 : -1;
}

static int by_time_desc(const void *a, const void *b) {
    double x = ((const OpsProfileEntry *)a)->seconds, y = ((const OpsProfileEntry *)b)->seconds;
    return x < y ? 1 : x > y ? -1 : 0;
}

void ops_profile_report(FILE *f, double step_count, double wall_s) {
    if (step_count <= 0) step_count = 1;
    OpsProfileEntry e[MAX_ENTRIES];
    int n = ops_profile_entries(e, MAX_ENTRIES);
    qsort(e, n, sizeof e[0], by_time_desc);
    double sum_s = 0.0, sum_flops = 0.0, sum_calls = 0.0;
    for (int i = 0; i < n; i++) {
        sum_s += e[i].seconds;
        sum_flops += e[i].flops;
        sum_calls += e[i].calls;
    }
    double total_s = wall_s > 0 ? wall_s : sum_s;
    const char *name = g.inner ? g.inner->name : "?";
    fprintf(f,
            "op profile on %s over %g step(s): each op is bracketed by sync() calls, so the\n"
            "launch overlap of a device backend is lost; a profile, not the benchmark.\n",
            name, step_count);
    fprintf(f, "%-30s %10s %10s %7s %8s %8s\n", "op", "calls/step", "ms/step", "% wall", "TFLOP/s",
            "GB/s");
    for (int i = 0; i < n; i++) {
        char label[64];
        if (e[i].ic || e[i].oc)
            snprintf(label, sizeof label, "%s IC=%d OC=%d", e[i].op, e[i].ic, e[i].oc);
        else
            snprintf(label, sizeof label, "%s", e[i].op);
        fprintf(f, "%-30s %10.1f %10.3f %6.1f%%", label, e[i].calls / step_count,
                1e3 * e[i].seconds / step_count, 100.0 * e[i].seconds / total_s);
        if (e[i].flops > 0 && e[i].seconds > 0)
            fprintf(f, " %8.2f", 1e-12 * e[i].flops / e[i].seconds);
        else
            fprintf(f, " %8s", "");
        if (e[i].bytes > 0 && e[i].seconds > 0)
            fprintf(f, " %8.1f", 1e-9 * e[i].bytes / e[i].seconds);
        fprintf(f, "\n");
    }
    fprintf(f, "%-30s %10.1f %10.3f %6.1f%%\n", "(sum of ops)", sum_calls / step_count,
            1e3 * sum_s / step_count, 100.0 * sum_s / total_s);
    if (wall_s > 0) {
        fprintf(f, "%-30s %10s %10.3f %6.1f%%\n", "(outside ops: host, gaps)", "",
                1e3 * (wall_s - sum_s) / step_count, 100.0 * (wall_s - sum_s) / wall_s);
        fprintf(f, "%-30s %10s %10.3f %6.1f%%\n", "(wall)", "", 1e3 * wall_s / step_count, 100.0);
    }
    fprintf(f,
            "counted FLOPs (matmuls, lm head, causal attention): %.1f GFLOP/step, %.1f TFLOP/s "
            "over the %s\n",
            1e-9 * sum_flops / step_count, total_s > 0 ? 1e-12 * sum_flops / total_s : 0.0,
            wall_s > 0 ? "wall time" : "ops' time");
    if (g.dropped)
        fprintf(f, "(%ld calls not counted: more than %d distinct op shapes)\n", g.dropped,
                MAX_ENTRIES);
}
