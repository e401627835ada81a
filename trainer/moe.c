/* moe.c: the MoE FFN forward/backward over the op contract, the
 * load-balancing / z-loss bookkeeping, routing metrics and config checks
 * (see moe.h for the objective; docs/moe.md for the derivations).
 *
 * Shapes: N rows, C d_model, F expert hidden size, E experts, K top_k,
 * NK = N*K routed rows, Lm MoE layers (index i; model layer l).
 *
 * Layer forward: logits = x Wr^T; route (probs, top-k, weights); permute
 * routed rows by expert; xs = gather(x); per expert e on its contiguous
 * rows: gu = xs W13_e^T, h = swiglu(gu), ys = h W2_e^T; out = combine.
 * Per-expert row counts are downloaded to the host (the GEMM sizes). The
 * expert GEMMs are one matmul_fwd/bwd per expert, or, when the backend has
 * moe_expert_matmul_fwd/bwd (ops.h; CUDA with cuda.moe_grouped_gemm),
 * one grouped call per GEMM over all experts, SwiGLU then running on all
 * NK rows at once (it is row-wise, so that is the same).
 *
 * Host transfers (each a stream sync on CUDA): one download per layer
 * forward of counts and stats together (one device buffer, counts then
 * stats, so one copy), and one upload per forward pass of every layer's LBL
 * gradient (moe_after_forward, or in global mode with sum hooks
 * moe_before_backward of the first MoE layer's backward).
 *
 * Global LBL over ranks: moe_after_forward begins the non-blocking sum of
 * all layers' counts (red_buf) and moe_before_backward finishes it, so the
 * LM head and the layers above the last MoE layer compute while the counts
 * travel.
 *
 * Invariants: the counts, probs and top-k of a layer's last forward stay in
 * its buffers until the next forward; moe_after_forward has run between
 * the forward and the backward of a training pass, and
 * moe_before_backward before every MoE layer's backward; red_buf is the
 * hooks' between begin and finish (sum_pending).
 */
#include "trainer/moe.h"
#include "kernels/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int layer;                /* model layer index */
    void *logits;             /* (N, E) act */
    float *probs, *lse;       /* (N, E) (N) */
    int32_t *top_idx;         /* (N, K) */
    float *top_w;             /* (N, K) */
    int32_t *counts;          /* (E) backend, followed by stats in one allocation */
    int32_t *row_token, *pos; /* (NK) (N, K) */
    float *stats;             /* (E + 1) backend, = (float *)(counts + E) */
    void *xs, *gu, *h, *ys;   /* (NK, C) (NK, 2F) (NK, F) (NK, C) act */
    /* host */
    int32_t *counts_h;        /* (E) of the last forward; stats_h follows it */
    int64_t *counts_local;    /* (E) same, int64 */
    int64_t *counts_global;   /* (E) running sum over the step (global mode) */
    float *stats_h;           /* (E + 1) = (float *)(counts_h + E), not separately freed */
    double *f, *p;            /* (E) */
    float *dprob_h;           /* (E) LBL gradient dL/dprobs[n,e]: row i of MoeState.dprob_h */
    float z_scale;
    double lbl, z;
    int64_t *window[2];       /* (E) recorded routings per source */
} MoeLayer;

struct MoeState {
    ModelConfig cfg;
    const Ops *ops;
    int n_moe;          /* Lm */
    int *layer_to_moe;  /* (L) -1 on dense layers */
    MoeLayer *ml;       /* (Lm) */
    int cap_N, N;
    int recompute;      /* xs, gu, h, ys of ml[i > 0] are ml[0]'s (moe_set_recompute) */
    size_t act_bytes;   /* backend bytes of moe_ensure_acts */
    /* backward scratch */
    void *dys, *dh, *dgu, *dxs, *dlogits, *dtmp; /* (NK,C) (NK,F) (NK,2F) (NK,C) (N,E) (N,C) */
    float *dtop_w, *dprob;                        /* (N, K) (Lm, E) */
    float *dprob_h;                               /* (Lm, E) host, uploaded to dprob */
    int32_t *top_h;                               /* (N, K) host, for record_routing */
    /* step */
    int64_t step_tokens; /* 0: no step begun */
    double weight;       /* N / step_tokens of the last training forward; 1 otherwise */
    MoeSumBegin sum_begin; /* NULL: one rank */
    MoeSumFinish sum_finish;
    void *sum_ctx, *sum_req;
    int sum_pending;     /* begun, not finished */
    int64_t *red_buf;    /* (Lm * E) the counts in flight */
};

/* ---------------- config ---------------- */

static const char *const lbl_names[] = {"none", "micro", "global"};

static const char *closest(const char *s, const char *const *names, int n) {
    int best = -1;
    size_t bd = 3, len = strlen(s);
    for (int i = 0; i < n; i++) {
        size_t d = edit_distance(s, len, names[i]);
        if (d < bd) bd = d, best = i;
    }
    return best < 0 ? NULL : names[best];
}

int moe_lbl_mode_parse(const char *s, int *mode, char *err, size_t err_len) {
    for (int i = 0; i < 3; i++)
        if (!strcmp(s, lbl_names[i])) return *mode = i, 0;
    const char *c = closest(s, lbl_names, 3);
    err_set(err, err_len,
            "[moe] lbl = \"%.40s\" is not a mode (\"global\", \"micro\" or \"none\")%s%s%s", s,
            c ? "; did you mean \"" : "", c ? c : "", c ? "\"?" : "");
    return 1;
}

const char *moe_lbl_mode_name(int mode) {
    return mode >= 0 && mode < 3 ? lbl_names[mode] : "?";
}

int moe_lbl_norm_parse(const char *s, int *norm, char *err, size_t err_len) {
    if (!strcmp(s, "paper")) return *norm = MOE_LBL_NORM_PAPER, 0;
    if (!strcmp(s, "hf")) return *norm = MOE_LBL_NORM_HF, 0;
    err_set(err, err_len, "[moe] lbl_norm = \"%.40s\" is not a normalisation (\"paper\" or \"hf\")",
            s);
    return 1;
}

int moe_is_layer(const ModelConfig *c, int l) {
    return c->n_experts > 0 && l >= c->moe_layer_start &&
           (l - c->moe_layer_start) % c->moe_layer_step == 0;
}

int moe_config_check(const ModelConfig *c, char *err, size_t err_len) {
    if (c->n_experts == 0) return 0;
    if (c->arch != ARCH_LLAMA)
        return err_set(err, err_len, "MoE (n_experts = %d) is a llama option: gpt2 has no MoE FFN",
                       c->n_experts);
    if (c->n_experts < 2)
        return err_set(err, err_len,
                       "n_experts must be 0 (dense) or >= 2 (got %d): one expert is a dense FFN",
                       c->n_experts);
    if (c->top_k < 1 || c->top_k > c->n_experts)
        return err_set(err, err_len, "top_k must be in [1, n_experts = %d] (got %d)", c->n_experts,
                       c->top_k);
    if (c->moe_layer_step < 1)
        return err_set(err, err_len, "[moe] layer_step must be >= 1 (got %d)", c->moe_layer_step);
    if (c->moe_layer_start < 0 || c->moe_layer_start >= c->n_layer)
        return err_set(err, err_len, "[moe] layer_start must be in [0, n_layer = %d) (got %d)",
                       c->n_layer, c->moe_layer_start);
    if (c->lbl_mode < MOE_LBL_NONE || c->lbl_mode > MOE_LBL_GLOBAL)
        return err_set(err, err_len, "unknown lbl mode id %d", c->lbl_mode);
    if (c->lbl_norm != MOE_LBL_NORM_PAPER && c->lbl_norm != MOE_LBL_NORM_HF)
        return err_set(err, err_len, "unknown lbl_norm id %d", c->lbl_norm);
    if (!(c->lbl_coef >= 0.0f) || !(c->z_loss_coef >= 0.0f))
        return err_set(err, err_len, "lbl_coef and z_loss_coef must be >= 0 (got %g, %g)",
                       c->lbl_coef, c->z_loss_coef);
    return 0;
}

/* ---------------- state ---------------- */

MoeState *moe_create(const ModelConfig *c, const Ops *ops, char *err, size_t err_len) {
    if (!ops->moe_route_fwd || !ops->moe_route_bwd || !ops->moe_permute || !ops->moe_gather_fwd ||
        !ops->moe_gather_bwd || !ops->moe_combine_fwd || !ops->moe_combine_bwd)
        return err_set(err, err_len,
                       "the %s backend has no MoE kernels (n_experts = %d): run MoE models on "
                       "the cpu backend",
                       ops->name, c->n_experts),
               NULL;
    MoeState *s = calloc(1, sizeof *s);
    if (!s) return err_set(err, err_len, "out of host memory"), NULL;
    s->cfg = *c;
    s->ops = ops;
    s->weight = 1.0;
    int E = c->n_experts;
    s->layer_to_moe = malloc((size_t)c->n_layer * sizeof *s->layer_to_moe);
    s->ml = calloc((size_t)c->n_layer, sizeof *s->ml);
    s->red_buf = calloc((size_t)c->n_layer * E, sizeof *s->red_buf);
    int ok = s->layer_to_moe && s->ml && s->red_buf;
    for (int l = 0; ok && l < c->n_layer; l++) {
        s->layer_to_moe[l] = -1;
        if (!moe_is_layer(c, l)) continue;
        MoeLayer *m = &s->ml[s->n_moe];
        s->layer_to_moe[l] = s->n_moe++;
        m->layer = l;
        /* counts then stats, as one download fills them */
        m->counts_h = calloc((size_t)2 * E + 1, 4);
        m->counts_local = calloc(E, sizeof(int64_t));
        m->counts_global = calloc(E, sizeof(int64_t));
        m->stats_h = m->counts_h ? (float *)(void *)(m->counts_h + E) : NULL;
        m->f = calloc(E, sizeof(double));
        m->p = calloc(E, sizeof(double));
        m->window[0] = calloc(E, sizeof(int64_t));
        m->window[1] = calloc(E, sizeof(int64_t));
        ok = m->counts_h && m->counts_local && m->counts_global && m->f && m->p &&
             m->window[0] && m->window[1];
    }
    s->dprob_h = calloc((size_t)s->n_moe * E + 1, sizeof(float));
    ok = ok && s->dprob_h;
    for (int i = 0; ok && i < s->n_moe; i++) s->ml[i].dprob_h = s->dprob_h + (size_t)i * E;
    if (!ok) {
        moe_free(s);
        return err_set(err, err_len, "out of host memory"), NULL;
    }
    return s;
}

static void free_acts(MoeState *s) {
    const Ops *o = s->ops;
    for (int i = 0; i < s->n_moe; i++) {
        MoeLayer *m = &s->ml[i];
        /* m->stats lives in m->counts' allocation; shared expert buffers
         * are freed with layer 0's (the last 4) */
        void *b[] = {m->logits, m->probs, m->lse, m->top_idx, m->top_w, m->counts, m->row_token,
                     m->pos,    m->xs,    m->gu,  m->h,       m->ys};
        size_t nb = sizeof b / sizeof *b - (i > 0 && s->recompute ? 4 : 0);
        for (size_t k = 0; k < nb; k++)
            if (b[k]) o->free(b[k]);
        m->logits = m->xs = m->gu = m->h = m->ys = NULL;
        m->probs = m->lse = m->top_w = m->stats = NULL;
        m->top_idx = m->counts = m->row_token = m->pos = NULL;
    }
    void *b[] = {s->dys, s->dh, s->dgu, s->dxs, s->dlogits, s->dtmp, s->dtop_w, s->dprob};
    for (size_t k = 0; k < sizeof b / sizeof *b; k++)
        if (b[k]) o->free(b[k]);
    s->dys = s->dh = s->dgu = s->dxs = s->dlogits = s->dtmp = NULL;
    s->dtop_w = s->dprob = NULL;
    free(s->top_h);
    s->top_h = NULL;
    s->cap_N = 0;
    s->act_bytes = 0;
}

void moe_set_recompute(MoeState *s, int on) {
    if (on == s->recompute) return;
    free_acts(s);
    s->recompute = on;
}

size_t moe_activation_bytes(const MoeState *s) { return s->act_bytes; }

void moe_free(MoeState *s) {
    if (!s) return;
    free_acts(s);
    for (int i = 0; i < s->n_moe; i++) {
        MoeLayer *m = &s->ml[i];
        free(m->counts_h), free(m->counts_local), free(m->counts_global);
        free(m->f), free(m->p), free(m->window[0]), free(m->window[1]);
    }
    free(s->dprob_h);
    free(s->ml);
    free(s->layer_to_moe);
    free(s->red_buf);
    free(s);
}

int moe_ensure_acts(MoeState *s, int N, char *err, size_t err_len) {
    if (N <= s->cap_N) return 0;
    free_acts(s);
    const Ops *o = s->ops;
    size_t ab = o->act_bytes, E = s->cfg.n_experts, K = s->cfg.top_k, C = s->cfg.d_model;
    size_t F = s->cfg.d_ff, NK = (size_t)N * K;
    int ok = 1;
#define A_(ptr, bytes) ok = ok && ((ptr) = o->alloc(bytes)) != NULL && (s->act_bytes += (bytes), 1)
    for (int i = 0; i < s->n_moe; i++) {
        MoeLayer *m = &s->ml[i];
        A_(m->logits, N * E * ab);
        A_(m->probs, N * E * 4);
        A_(m->lse, (size_t)N * 4);
        A_(m->top_idx, NK * 4);
        A_(m->top_w, NK * 4);
        A_(m->counts, (2 * E + 1) * 4); /* counts (E) int32, stats (E + 1) fp32 */
        if (m->counts) m->stats = (float *)(void *)(m->counts + E);
        A_(m->row_token, NK * 4);
        A_(m->pos, NK * 4);
        if (i > 0 && s->recompute) {
            m->xs = s->ml[0].xs, m->gu = s->ml[0].gu, m->h = s->ml[0].h, m->ys = s->ml[0].ys;
            continue;
        }
        A_(m->xs, NK * C * ab);
        A_(m->gu, NK * 2 * F * ab);
        A_(m->h, NK * F * ab);
        A_(m->ys, NK * C * ab);
    }
    A_(s->dys, NK * C * ab);
    A_(s->dh, NK * F * ab);
    A_(s->dgu, NK * 2 * F * ab);
    A_(s->dxs, NK * C * ab);
    A_(s->dlogits, N * E * ab);
    A_(s->dtmp, N * C * ab);
    A_(s->dtop_w, NK * 4);
    A_(s->dprob, (size_t)s->n_moe * E * 4);
#undef A_
    s->top_h = malloc(NK * sizeof *s->top_h);
    if (!ok || !s->top_h) {
        free_acts(s);
        return err_set(err, err_len, "out of memory allocating MoE activations for %d rows on %s",
                       N, o->name);
    }
    s->cap_N = N;
    return 0;
}

/* ---------------- forward / backward ---------------- */

static void *at(const void *base, size_t off, size_t ab) { return (char *)base + off * ab; }

void moe_layer_fwd(MoeState *s, int l, const void *params, size_t router_off, size_t expert0_off,
                   void *out, const void *x, int N) {
    const Ops *o = s->ops;
    const ModelConfig *c = &s->cfg;
    MoeLayer *m = &s->ml[s->layer_to_moe[l]];
    int E = c->n_experts, K = c->top_k, C = c->d_model, F = c->d_ff;
    size_t ab = o->act_bytes, expert_numel = (size_t)3 * F * C;
    s->N = N;
    o->matmul_fwd(m->logits, x, at(params, router_off, ab), NULL, N, C, E);
    o->moe_route_fwd(m->probs, m->lse, m->top_idx, m->top_w, m->stats, m->logits, N, E, K,
                     c->norm_topk_prob);
    o->moe_permute(m->counts, m->row_token, m->pos, m->top_idx, N, E, K);
    o->moe_gather_fwd(m->xs, x, m->row_token, N * K, C);
    /* counts and stats in one copy: the one host sync of this layer */
    o->download_bytes(m->counts_h, m->counts, (size_t)(2 * E + 1) * 4);
    if (o->moe_expert_matmul_fwd) {
        /* grouped: each GEMM over all experts in one call, SwiGLU on all rows */
        const void *w13 = at(params, expert0_off, ab);
        const void *w2 = at(params, expert0_off + (size_t)2 * F * C, ab);
        o->moe_expert_matmul_fwd(m->gu, m->xs, w13, expert_numel, m->counts_h, E, C, 2 * F);
        o->swiglu_fwd(m->h, m->gu, N * K, F);
        o->moe_expert_matmul_fwd(m->ys, m->h, w2, expert_numel, m->counts_h, E, F, C);
    } else {
        size_t row = 0;
        for (int e = 0; e < E; e++) {
            int n = m->counts_h[e];
            if (n) {
                const void *w13 = at(params, expert0_off + e * expert_numel, ab);
                const void *w2 = at(params, expert0_off + e * expert_numel + (size_t)2 * F * C, ab);
                void *xs = at(m->xs, row * C, ab), *gu = at(m->gu, row * 2 * F, ab);
                void *h = at(m->h, row * F, ab), *ys = at(m->ys, row * C, ab);
                o->matmul_fwd(gu, xs, w13, NULL, n, C, 2 * F);
                o->swiglu_fwd(h, gu, n, F);
                o->matmul_fwd(ys, h, w2, NULL, n, F, C);
            }
            row += (size_t)n;
        }
    }
    o->moe_combine_fwd(out, m->ys, m->top_w, m->pos, N, K, C);
}

int moe_layer_refwd(MoeState *s, int l, const void *params, size_t router_off, size_t expert0_off,
                    void *out, const void *x, int N, char *err, size_t err_len) {
    MoeLayer *m = &s->ml[s->layer_to_moe[l]];
    moe_layer_fwd(s, l, params, router_off, expert0_off, out, x, N);
    for (int e = 0; e < s->cfg.n_experts; e++)
        if (m->counts_h[e] != m->counts_local[e])
            return err_set(err, err_len,
                           "recompute: layer %d routes %d rows to expert %d, the forward %lld "
                           "(a nondeterministic op on %s)",
                           l, m->counts_h[e], e, (long long)m->counts_local[e], s->ops->name);
    return 0;
}

double moe_lbl(const int64_t *counts, const float *prob_sum, int E, int K, int n_tokens,
               int lbl_norm, double *f, double *p) {
    double tot = 0.0, lbl = 0.0;
    for (int e = 0; e < E; e++) tot += (double)counts[e];
    for (int e = 0; e < E; e++) {
        f[e] = tot > 0 ? (double)counts[e] / tot : 0.0;
        p[e] = (double)prob_sum[e] / n_tokens;
        lbl += f[e] * p[e];
    }
    return (lbl_norm == MOE_LBL_NORM_HF ? K : 1) * (double)E * lbl;
}

/* f, LBL values and LBL gradients of every layer from counts_local
 * (micro) or counts_global (global, the step's sums so far), and one upload
 * of the gradients */
static void lbl_and_grad(MoeState *s, int global) {
    const ModelConfig *c = &s->cfg;
    int E = c->n_experts, N = s->N;
    double norm = c->lbl_norm == MOE_LBL_NORM_HF ? c->top_k : 1.0;
    for (int i = 0; i < s->n_moe; i++) {
        MoeLayer *m = &s->ml[i];
        const int64_t *cnt = global ? m->counts_global : m->counts_local;
        m->lbl = moe_lbl(cnt, m->stats_h, E, c->top_k, N, c->lbl_norm, m->f, m->p);
        /* d(weight * coef * s E sum_i f_i P_i)/dprobs[n,e] = weight coef s E f_e / N */
        int on = c->lbl_mode != MOE_LBL_NONE;
        for (int e = 0; e < E; e++)
            m->dprob_h[e] = on ? (float)(s->weight * c->lbl_coef * norm * E * m->f[e] / N) : 0.0f;
    }
    /* every layer's LBL gradient in one upload (one sync per pass, not one
     * per layer backward) */
    if (s->dprob) s->ops->upload_bytes(s->dprob, s->dprob_h, (size_t)s->n_moe * E * 4);
}

/* red_buf holds the sums over ranks: add them to the step's counts */
static void add_global(MoeState *s) {
    int E = s->cfg.n_experts;
    for (int i = 0; i < s->n_moe; i++)
        for (int e = 0; e < E; e++) s->ml[i].counts_global[e] += s->red_buf[(size_t)i * E + e];
}

int moe_after_forward(MoeState *s, int training, char *err, size_t err_len) {
    const ModelConfig *c = &s->cfg;
    int E = c->n_experts, N = s->N;
    if (training && s->step_tokens <= 0)
        return err_set(err, err_len,
                       "MoE training needs model_moe_begin_step(n_tokens_global) before the "
                       "first micro-batch of every optimizer step");
    if (s->sum_pending)
        return err_set(err, err_len,
                       "MoE: the previous pass's counts sum was never finished (a training "
                       "forward without its backward)");
    for (int i = 0; i < s->n_moe; i++)
        for (int e = 0; e < E; e++) s->ml[i].counts_local[e] = s->ml[i].counts_h[e];
    s->weight = training ? (double)N / (double)s->step_tokens : 1.0;
    for (int i = 0; i < s->n_moe; i++) {
        MoeLayer *m = &s->ml[i];
        m->z = (double)m->stats_h[E] / N;
        m->z_scale = (float)(s->weight * c->z_loss_coef / N);
    }
    int global = training && c->lbl_mode == MOE_LBL_GLOBAL;
    if (global) {
        for (int i = 0; i < s->n_moe; i++)
            memcpy(s->red_buf + (size_t)i * E, s->ml[i].counts_local, (size_t)E * sizeof(int64_t));
        if (s->sum_begin) {
            /* moe_before_backward finishes it */
            if (s->sum_begin(s->sum_ctx, s->red_buf, (size_t)s->n_moe * E, &s->sum_req, err,
                             err_len))
                return 1;
            s->sum_pending = 1;
            return 0;
        }
        add_global(s); /* one rank: the sum is the local counts */
    }
    lbl_and_grad(s, global);
    return 0;
}

int moe_before_backward(MoeState *s, char *err, size_t err_len) {
    if (!s->sum_pending) return 0;
    s->sum_pending = 0;
    if (s->sum_finish(s->sum_ctx, s->sum_req, err, err_len)) return 1;
    s->sum_req = NULL;
    add_global(s);
    lbl_and_grad(s, 1);
    return 0;
}

void moe_layer_bwd(MoeState *s, int l, const void *params, void *grads, size_t router_off,
                   size_t expert0_off, void *dx, const void *dout, const void *x, int N) {
    const Ops *o = s->ops;
    const ModelConfig *c = &s->cfg;
    MoeLayer *m = &s->ml[s->layer_to_moe[l]];
    int E = c->n_experts, K = c->top_k, C = c->d_model, F = c->d_ff;
    size_t ab = o->act_bytes, expert_numel = (size_t)3 * F * C;
    o->moe_combine_bwd(s->dys, s->dtop_w, dout, m->ys, m->top_w, m->pos, N, K, C);
    if (o->moe_expert_matmul_bwd) {
        /* grouped, as the forward */
        size_t w13_off = expert0_off, w2_off = expert0_off + (size_t)2 * F * C;
        o->moe_expert_matmul_bwd(s->dh, at(grads, w2_off, ab), s->dys, m->h,
                                 at(params, w2_off, ab), expert_numel, m->counts_h, E, F, C);
        o->swiglu_bwd(s->dgu, s->dh, m->gu, N * K, F);
        o->moe_expert_matmul_bwd(s->dxs, at(grads, w13_off, ab), s->dgu, m->xs,
                                 at(params, w13_off, ab), expert_numel, m->counts_h, E, C, 2 * F);
    } else {
        size_t row = 0;
        for (int e = 0; e < E; e++) {
            int n = m->counts_h[e];
            if (n) {
                size_t w13_off = expert0_off + e * expert_numel;
                size_t w2_off = w13_off + (size_t)2 * F * C;
                void *dys = at(s->dys, row * C, ab), *dh = at(s->dh, row * F, ab);
                void *dgu = at(s->dgu, row * 2 * F, ab), *dxs = at(s->dxs, row * C, ab);
                o->matmul_bwd(dh, at(grads, w2_off, ab), NULL, dys, at(m->h, row * F, ab),
                              at(params, w2_off, ab), n, F, C);
                o->swiglu_bwd(dgu, dh, at(m->gu, row * 2 * F, ab), n, F);
                o->matmul_bwd(dxs, at(grads, w13_off, ab), NULL, dgu, at(m->xs, row * C, ab),
                              at(params, w13_off, ab), n, C, 2 * F);
            }
            row += (size_t)n;
        }
    }
    o->moe_gather_bwd(dx, s->dxs, m->pos, N, K, C);
    /* dprob was uploaded for every layer by moe_after_forward or
     * moe_before_backward */
    const float *dprob = s->dprob + (size_t)s->layer_to_moe[l] * E;
    o->moe_route_bwd(s->dlogits, s->dtop_w, dprob, m->z_scale, m->probs, m->lse, m->top_idx,
                     m->top_w, N, E, K, c->norm_topk_prob);
    o->matmul_bwd(s->dtmp, at(grads, router_off, ab), NULL, s->dlogits, x,
                  at(params, router_off, ab), N, C, E);
    o->residual_fwd(dx, dx, s->dtmp, (size_t)N * C);
}

/* ---------------- the loop's API (model_moe.c forwards to it) ---------------- */

int moe_set_loss(MoeState *s, const ModelConfig *src, char *err, size_t err_len) {
    ModelConfig c = s->cfg;
    c.lbl_mode = src->lbl_mode;
    c.lbl_norm = src->lbl_norm;
    c.lbl_coef = src->lbl_coef;
    c.z_loss_coef = src->z_loss_coef;
    if (moe_config_check(&c, err, err_len)) return 1;
    s->cfg = c;
    return 0;
}

void moe_set_allreduce(MoeState *s, MoeSumBegin begin, MoeSumFinish finish, void *ctx) {
    if (!s) return;
    s->sum_begin = begin && finish ? begin : NULL;
    s->sum_finish = begin && finish ? finish : NULL;
    s->sum_ctx = ctx;
}

int moe_begin_step(MoeState *s, int64_t n_tokens_global, char *err, size_t err_len) {
    if (!s) return 0;
    if (n_tokens_global < 1)
        return err_set(err, err_len,
                       "model_moe_begin_step: n_tokens_global must be >= 1 (got %lld)",
                       (long long)n_tokens_global);
    s->step_tokens = n_tokens_global;
    for (int i = 0; i < s->n_moe; i++)
        memset(s->ml[i].counts_global, 0, (size_t)s->cfg.n_experts * sizeof(int64_t));
    return 0;
}

int moe_num_layers(const MoeState *s) {
    return s ? s->n_moe : 0;
}

int moe_layer_stats(const MoeState *s, int i, MoeLayerStats *out) {
    if (!s || i < 0 || i >= s->n_moe) return 1;
    const MoeLayer *m = &s->ml[i];
    int E = s->cfg.n_experts;
    int64_t mx = 0, tot = 0;
    for (int e = 0; e < E; e++) {
        tot += m->counts_local[e];
        if (m->counts_local[e] > mx) mx = m->counts_local[e];
    }
    out->layer = m->layer;
    out->n_tokens = s->N;
    out->lbl = m->lbl;
    out->z_loss = m->z;
    out->load_max = tot ? (double)mx * E / (double)tot : 0.0;
    out->f = m->f;
    out->p = m->p;
    out->counts = m->counts_local;
    return 0;
}

double moe_aux_loss(const MoeState *s) {
    if (!s) return 0.0;
    double a = 0.0;
    for (int i = 0; i < s->n_moe; i++) {
        if (s->cfg.lbl_mode != MOE_LBL_NONE) a += s->cfg.lbl_coef * s->ml[i].lbl;
        a += s->cfg.z_loss_coef * s->ml[i].z;
    }
    return a * s->weight;
}

int moe_record_routing(MoeState *s, const int *row_source, int B, char *err, size_t err_len) {
    if (!s) return 0;
    int K = s->cfg.top_k, N = s->N;
    if (B < 1 || N % B)
        return err_set(err, err_len,
                       "record_routing: %d rows do not split the last forward's %d tokens", B, N);
    int T = N / B;
    for (int i = 0; i < s->n_moe; i++) {
        MoeLayer *m = &s->ml[i];
        s->ops->download_bytes(s->top_h, m->top_idx, (size_t)N * K * 4);
        for (int n = 0; n < N; n++) {
            int src = row_source[n / T];
            if (src != 0 && src != 1) continue;
            for (int k = 0; k < K; k++) m->window[src][s->top_h[(size_t)n * K + k]]++;
        }
    }
    return 0;
}

void moe_metrics_reset(MoeState *s) {
    if (!s) return;
    for (int i = 0; i < s->n_moe; i++)
        for (int src = 0; src < 2; src++)
            memset(s->ml[i].window[src], 0, (size_t)s->cfg.n_experts * sizeof(int64_t));
}

void moe_metrics_free(MoeMetrics *mm) {
    free(mm->dist[0]), free(mm->dist[1]), free(mm->load_max), free(mm->jsd);
    memset(mm, 0, sizeof *mm);
}

static double kl_to_mix(const double *p, const double *q, int E) {
    double s = 0.0;
    for (int e = 0; e < E; e++) {
        double mix = 0.5 * (p[e] + q[e]);
        if (p[e] > 0) s += p[e] * log(p[e] / mix);
    }
    return s;
}

int moe_metrics(const MoeState *s, MoeMetrics *out, char *err, size_t err_len) {
    memset(out, 0, sizeof *out);
    if (!s) return 0;
    int E = s->cfg.n_experts, Lm = s->n_moe;
    out->n_layers = Lm;
    out->n_experts = E;
    out->dist[0] = calloc((size_t)Lm * E, sizeof(double));
    out->dist[1] = calloc((size_t)Lm * E, sizeof(double));
    out->load_max = calloc(Lm, sizeof(double));
    out->jsd = calloc(Lm, sizeof(double));
    if (!out->dist[0] || !out->dist[1] || !out->load_max || !out->jsd) {
        moe_metrics_free(out);
        return err_set(err, err_len, "out of host memory");
    }
    double jsd_sum = 0.0;
    int both = 1;
    out->worst_load = 0.0;
    for (int i = 0; i < Lm; i++) {
        const MoeLayer *m = &s->ml[i];
        double tot[2] = {0, 0}, mx = 0, all = 0;
        for (int e = 0; e < E; e++) {
            tot[0] += (double)m->window[0][e], tot[1] += (double)m->window[1][e];
            double c = (double)(m->window[0][e] + m->window[1][e]);
            all += c;
            if (c > mx) mx = c;
        }
        for (int src = 0; src < 2; src++)
            for (int e = 0; e < E; e++)
                out->dist[src][(size_t)i * E + e] = tot[src] > 0 ? m->window[src][e] / tot[src] : 0.0;
        out->load_max[i] = all > 0 ? mx * E / all : 0.0;
        if (out->load_max[i] > out->worst_load) out->worst_load = out->load_max[i];
        if (tot[0] > 0 && tot[1] > 0) {
            const double *p = out->dist[1] + (size_t)i * E, *q = out->dist[0] + (size_t)i * E;
            out->jsd[i] = 0.5 * kl_to_mix(p, q, E) + 0.5 * kl_to_mix(q, p, E);
        } else {
            out->jsd[i] = NAN;
            both = 0;
        }
        jsd_sum += out->jsd[i];
    }
    out->specialization = both && Lm ? jsd_sum / Lm : NAN;
    return 0;
}
