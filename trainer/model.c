/* model.c: the GPT-2 / Llama graph over the op contract (see model.h).
 *
 * Shapes: B batch, T sequence, N = B*T rows, C d_model, NH query heads,
 * NKV key/value heads, HD head size (model_head_dim: C / NH unless
 * head_dim), QKV = (NH + 2 NKV) HD, QK = (NH + NKV) HD, F d_ff, UP = F
 * (gpt2 c_fc) or 2F (llama gate|up), V vocab, L layers.
 *
 * Block l (pre-norm):
 *   h1 = norm1(x_l); qkv = h1 W_qkv^T (+b); [q/k head norms]; [rope];
 *   y = attn(qkv);
 *   x_mid = x_l + y W_o^T (+b)
 *   h2 = norm2(x_mid); u = h2 W_up^T (+b); a = gelu(u) | swiglu(u);
 *   x_{l+1} = x_mid + a W_down^T (+b)
 * Head: loss = CE(norm_f(x_L) W_head^T, targets).
 *
 * Backward keeps one residual-stream gradient buffer `dresid` that the norm
 * backward ops accumulate into (ops.h: norms' dinp is +=).
 *
 * Recompute "block" (model.h ModelRecompute): the blocks share one set of
 * activation buffers (acts[0]'s) and keep only x_l each; the backward runs
 * block_fwd again before each block's backward (recompute_block).
 */
#include "trainer/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/util.h"
#include "trainer/moe.h"
#include "trainer/rng.h"

typedef struct {
    void *resid;            /* (N, C) block input x_l; resid of layer L is x_L */
    void *ln1;              /* (N, C) */
    float *ln1_mean, *ln1_rstd; /* (N) */
    void *qkv;              /* (N, QKV) after RoPE */
    void *qk_pre;           /* (N, QK) q and k before their head norms (qk_norm only) */
    float *qk_rstd;         /* (N, NH + NKV) the head norms' 1/rms (qk_norm only) */
    float *att;             /* (B, NH, T, T) */
    void *atty;             /* (N, NH*HD) */
    void *resid_mid;        /* (N, C) */
    void *ln2;              /* (N, C) */
    float *ln2_mean, *ln2_rstd; /* (N) */
    void *up;               /* (N, UP) pre-activation */
    void *act;              /* (N, F) */
} LayerActs;

struct Model {
    ModelConfig cfg;
    const Ops *ops;
    int n_tensors;
    ParamTensor *tensors;
    LayerTensors *layers; /* (L) */
    int t_wte, t_wpe, t_lnf_w, t_lnf_b, t_head;
    size_t n_params;
    float *rope_inv_freq;      /* (HD / 2) host: model_rope_inv_freq, what the rope ops rotate by */
    void *params, *grads;      /* (n_params) act type */
    float *adam_m, *adam_v;    /* (opt_n) fp32: optimizer elements [opt_off, opt_off + opt_n) */
    float *master;             /* (opt_n) fp32 when act type is not fp32 */
    size_t opt_off, opt_n;     /* the optimizer shard; 0, n_params unless sharded */

    /* activations for up to cap_N rows (cap_B, cap_T as allocated) */
    int cap_B, cap_T;
    int B, T; /* of the last forward pass */
    LayerActs *acts;     /* (L) plus one more resid: acts[L].resid = x_L; with
                          * recompute, acts[l > 0] share acts[0]'s buffers but resid */
    int recompute;       /* ModelRecompute; the acts are allocated for it */
    size_t act_bytes;    /* backend bytes ensure_acts allocated (model_activation_bytes) */
    void *lnf;           /* (N, C) */
    float *lnf_mean, *lnf_rstd;
    int32_t *tokens, *targets; /* (N) backend */
    float *losses;       /* (N) backend fp32 */
    float *losses_host;  /* (N) */
    void *scratch;       /* lm head scratch */
    /* backward scratch */
    void *dresid, *dln, *datty, *dbig, *dact; /* (N,C) (N,C) (N,NH*HD) (N,max(QKV,UP)) (N,F) */
    float *datt;                              /* (B, NH, T, T) */
    char nonfinite_name[112];
    /* data.doc_mask (model_set_doc_mask): EOS id, -1 when off */
    int doc_eos, doc_reset;
    int32_t *doc_starts, *doc_pos; /* (doc_cap) backend: document start, position */
    int32_t *doc_host;             /* (2 doc_cap) host: both, for the upload */
    int doc_cap;
    MoeState *moe; /* NULL for a dense model (trainer/moe.c) */
    ModelGradReady grad_ready; /* NULL: none (model_set_grad_ready) */
    void *grad_ready_ctx;
    ModelGradReady params_needed; /* NULL: none (model_set_params_needed) */
    void *params_needed_ctx;

    /* ---- ZeRO (model_create_sharded): params is the shard under stage 3,
     * grads under stages 2 and 3; the shard is [opt_off, opt_off + opt_n) */
    int zero;                 /* stage 0..3 */
    int world, rank;
    size_t *pieces, *piece_off; /* (world) rank r's piece and its offset */
    ModelShardComm sc;
    int n_units;              /* L + 2: embeddings, blocks, tail (model.h) */
    size_t *unit_lo;          /* (n_units + 1) unit u is [unit_lo[u], unit_lo[u + 1]) */
    int *tensor_unit;         /* (n_tensors) */
    size_t *counts;           /* (world) scratch: pieces' overlaps with a unit */
    size_t win_elems;         /* the largest unit */
    /* windows: the unit each holds (-1: none) and, per unit, its window */
    void *gwin[2];            /* stages 2, 3: gradients (2 with a tied head) */
    int gwin_unit[2];
    void **gptr;              /* (n_units) */
    void *pwin[3];            /* stage 3: parameters (a unit, the next, one prefetched) */
    int pwin_unit[3];
    unsigned long pwin_tick[3], tick;
    int pf_unit, pf_slot;     /* the unit being prefetched into pwin[pf_slot]; -1: none */
    void **pptr;              /* (n_units) */
    /* optimizer offload: adam_m, adam_v, master are host memory */
    int offload;
    float *off_g, *off_p;     /* (OFFLOAD_CHUNK) host staging: gradients, fp32 parameters */
};

/* elements a chunk of the offloaded AdamW moves through the host */
#define OFFLOAD_CHUNK ((size_t)1 << 22)

/* ---------------- parameter table ---------------- */

static int add_tensor(Model *m, const char *name, int rows, int cols, int decay, int hf_t) {
    ParamTensor *t = &m->tensors[m->n_tensors];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->offset = m->n_params;
    t->ndim = cols ? 2 : 1;
    t->shape[0] = rows;
    t->shape[1] = cols;
    t->numel = (size_t)rows * (cols ? cols : 1);
    t->decay = decay;
    t->hf_transposed = hf_t;
    m->n_params += t->numel;
    return m->n_tensors++;
}

/* Mixtral names; expert e's w1 (gate), w3 (up) adjacent: one (2F, C) matrix */
static void add_moe_tensors(Model *m, int l) {
    int C = m->cfg.d_model, F = m->cfg.d_ff;
    char nm[96];
    snprintf(nm, sizeof nm, "model.layers.%d.block_sparse_moe.gate.weight", l);
    m->layers[l].moe_router = add_tensor(m, nm, m->cfg.n_experts, C, 1, 0);
    for (int e = 0; e < m->cfg.n_experts; e++) {
        static const char *const w[] = {"w1", "w3", "w2"};
        for (int j = 0; j < 3; j++) {
            snprintf(nm, sizeof nm, "model.layers.%d.block_sparse_moe.experts.%d.%s.weight", l, e, w[j]);
            int t = add_tensor(m, nm, j < 2 ? F : C, j < 2 ? C : F, 1, 0);
            if (e == 0 && j == 0) m->layers[l].moe_expert0 = t;
        }
    }
}

static void build_table(Model *m) {
    const ModelConfig *c = &m->cfg;
    int C = c->d_model, F = c->d_ff, V = c->vocab_size, HD = model_head_dim(c);
    int qd = c->n_head * HD, kvd = c->n_kv_head * HD;
    char nm[96];
    m->t_wpe = m->t_lnf_b = m->t_head = -1;
    m->doc_eos = -1; /* data.doc_mask off */
    if (c->arch == ARCH_GPT2) {
        m->t_wte = add_tensor(m, "transformer.wte.weight", V, C, 1, 0);
        m->t_wpe = add_tensor(m, "transformer.wpe.weight", c->max_seq_len, C, 1, 0);
        for (int l = 0; l < c->n_layer; l++) {
            LayerTensors *lt = &m->layers[l];
            lt->moe_router = lt->moe_expert0 = lt->q_norm_w = lt->k_norm_w = -1;
#define T_(field, suffix, rows, cols, decay, hft)                                                  \
    snprintf(nm, sizeof nm, "transformer.h.%d.%s", l, suffix);                                     \
    lt->field = add_tensor(m, nm, rows, cols, decay, hft)
            T_(ln1_w, "ln_1.weight", C, 0, 0, 0);
            T_(ln1_b, "ln_1.bias", C, 0, 0, 0);
            T_(qkv_w, "attn.c_attn.weight", 3 * C, C, 1, 1);
            T_(qkv_b, "attn.c_attn.bias", 3 * C, 0, 0, 0);
            T_(o_w, "attn.c_proj.weight", C, C, 1, 1);
            T_(o_b, "attn.c_proj.bias", C, 0, 0, 0);
            T_(ln2_w, "ln_2.weight", C, 0, 0, 0);
            T_(ln2_b, "ln_2.bias", C, 0, 0, 0);
            T_(up_w, "mlp.c_fc.weight", F, C, 1, 1);
            T_(up_b, "mlp.c_fc.bias", F, 0, 0, 0);
            T_(down_w, "mlp.c_proj.weight", C, F, 1, 1);
            T_(down_b, "mlp.c_proj.bias", C, 0, 0, 0);
        }
        m->t_lnf_w = add_tensor(m, "transformer.ln_f.weight", C, 0, 0, 0);
        m->t_lnf_b = add_tensor(m, "transformer.ln_f.bias", C, 0, 0, 0);
    } else {
        m->t_wte = add_tensor(m, "model.embed_tokens.weight", V, C, 1, 0);
        for (int l = 0; l < c->n_layer; l++) {
            LayerTensors *lt = &m->layers[l];
            lt->ln1_b = lt->ln2_b = lt->qkv_b = lt->o_b = lt->up_b = lt->down_b = -1;
            lt->moe_router = lt->moe_expert0 = -1;
#undef T_
#define T_(field, suffix, rows, cols, decay)                                                       \
    snprintf(nm, sizeof nm, "model.layers.%d.%s", l, suffix);                                      \
    lt->field = add_tensor(m, nm, rows, cols, decay, 0)
            T_(ln1_w, "input_layernorm.weight", C, 0, 0);
            /* q, k, v adjacent: one stacked (QKV, C) weight */
            T_(qkv_w, "self_attn.q_proj.weight", qd, C, 1);
            snprintf(nm, sizeof nm, "model.layers.%d.self_attn.k_proj.weight", l);
            add_tensor(m, nm, kvd, C, 1, 0);
            snprintf(nm, sizeof nm, "model.layers.%d.self_attn.v_proj.weight", l);
            add_tensor(m, nm, kvd, C, 1, 0);
            if (c->qkv_bias) {
                T_(qkv_b, "self_attn.q_proj.bias", qd, 0, 0);
                snprintf(nm, sizeof nm, "model.layers.%d.self_attn.k_proj.bias", l);
                add_tensor(m, nm, kvd, 0, 0, 0);
                snprintf(nm, sizeof nm, "model.layers.%d.self_attn.v_proj.bias", l);
                add_tensor(m, nm, kvd, 0, 0, 0);
            }
            T_(o_w, "self_attn.o_proj.weight", C, qd, 1);
            lt->q_norm_w = lt->k_norm_w = -1;
            if (c->qk_norm) {
                T_(q_norm_w, "self_attn.q_norm.weight", HD, 0, 0);
                T_(k_norm_w, "self_attn.k_norm.weight", HD, 0, 0);
            }
            T_(ln2_w, "post_attention_layernorm.weight", C, 0, 0);
            if (moe_is_layer(c, l)) {
                lt->up_w = lt->down_w = -1;
                add_moe_tensors(m, l);
                continue;
            }
            /* gate, up adjacent: one stacked (2F, C) weight */
            T_(up_w, "mlp.gate_proj.weight", F, C, 1);
            snprintf(nm, sizeof nm, "model.layers.%d.mlp.up_proj.weight", l);
            add_tensor(m, nm, F, C, 1, 0);
            T_(down_w, "mlp.down_proj.weight", C, F, 1);
#undef T_
        }
        m->t_lnf_w = add_tensor(m, "model.norm.weight", C, 0, 0, 0);
    }
    if (!c->tie_embeddings) m->t_head = add_tensor(m, "lm_head.weight", V, C, 1, 0);
}

/* ---------------- creation ---------------- */

/* Tensor t's place in a unit's window (stages 2, 3): the window must be
 * there (a missing one is a bug in the unit sequence: abort). */
static void *in_window(const Model *m, void *const *ptr, int t, const char *what) {
    int u = m->tensor_unit[t];
    if (!ptr[u]) {
        fprintf(stderr, "dapt: internal error: %s of %s read outside its unit's window\n", what,
                m->tensors[t].name);
        abort();
    }
    return (char *)ptr[u] + (m->tensors[t].offset - m->unit_lo[u]) * m->ops->act_bytes;
}

static void *P(const Model *m, int t) {
    if (t < 0) return NULL;
    if (m->zero >= 3) return in_window(m, m->pptr, t, "parameters");
    return (char *)m->params + m->tensors[t].offset * m->ops->act_bytes;
}
static void *G(const Model *m, int t) {
    if (t < 0) return NULL;
    if (m->zero >= 2) return in_window(m, m->gptr, t, "gradients");
    return (char *)m->grads + m->tensors[t].offset * m->ops->act_bytes;
}

/* elements of the flat buffer this rank keeps of params / grads */
static size_t param_elems(const Model *m) { return m->zero >= 3 ? m->opt_n : m->n_params; }
static size_t grad_elems(const Model *m) { return m->zero >= 2 ? m->opt_n : m->n_params; }
/* element `off` of the flat buffer in this rank's params / grads (off in
 * the shard when they are sharded) */
static char *param_at(const Model *m, size_t off) {
    return (char *)m->params + (off - (m->zero >= 3 ? m->opt_off : 0)) * m->ops->act_bytes;
}
static char *grad_at(const Model *m, size_t off) {
    return (char *)m->grads + (off - (m->zero >= 2 ? m->opt_off : 0)) * m->ops->act_bytes;
}

/* The optimizer state's memory: the backend's, or host memory with
 * offload (the backend's pinned allocator when it has one). */
static void *opt_alloc(Model *m, size_t bytes) {
    if (!m->offload) return m->ops->alloc(bytes);
    return m->ops->alloc_host ? m->ops->alloc_host(bytes) : calloc(1, bytes ? bytes : 1);
}
static void opt_free(const Model *m, void *p) {
    if (!p) return;
    if (!m->offload) m->ops->free(p);
    else if (m->ops->alloc_host) m->ops->free_host(p);
    else free(p);
}
/* optimizer state <-> host */
static void opt_get(const Model *m, void *dst, const void *src, size_t bytes) {
    if (m->offload) memcpy(dst, src, bytes);
    else m->ops->download_bytes(dst, src, bytes);
}
static void opt_put(const Model *m, void *dst, const void *src, size_t bytes) {
    if (m->offload) memcpy(dst, src, bytes);
    else m->ops->upload_bytes(dst, src, bytes);
}

/* Units (model.h): block l starts at its first norm weight; the tail at
 * the final norm. */
static int build_units(Model *m) {
    const ModelConfig *c = &m->cfg;
    int L = c->n_layer;
    m->n_units = L + 2;
    m->unit_lo = malloc(sizeof(size_t) * (m->n_units + 1));
    m->tensor_unit = malloc(sizeof(int) * (m->n_tensors ? m->n_tensors : 1));
    m->gptr = calloc(m->n_units, sizeof(void *));
    m->pptr = calloc(m->n_units, sizeof(void *));
    if (!m->unit_lo || !m->tensor_unit || !m->gptr || !m->pptr) return 1;
    m->unit_lo[0] = 0;
    for (int l = 0; l < L; l++) m->unit_lo[1 + l] = m->tensors[m->layers[l].ln1_w].offset;
    m->unit_lo[L + 1] = m->tensors[m->t_lnf_w].offset;
    m->unit_lo[L + 2] = m->n_params;
    m->win_elems = 0;
    for (int u = 0; u < m->n_units; u++)
        if (m->unit_lo[u + 1] - m->unit_lo[u] > m->win_elems)
            m->win_elems = m->unit_lo[u + 1] - m->unit_lo[u];
    for (int t = 0, u = 0; t < m->n_tensors; t++) {
        while (m->tensors[t].offset >= m->unit_lo[u + 1]) u++;
        m->tensor_unit[t] = u;
    }
    m->gwin_unit[0] = m->gwin_unit[1] = -1;
    for (int i = 0; i < 3; i++) m->pwin_unit[i] = -1;
    m->pf_unit = -1;
    return 0;
}

/* The shard of sh: pieces, this rank's offset and count. */
static int set_shard(Model *m, const ModelShard *sh, char *err, size_t err_len) {
    if (sh->stage < 0 || sh->stage > 3)
        return err_set(err, err_len, "ZeRO stage %d is not 0, 1, 2 or 3", sh->stage);
    if (sh->world < 1 || sh->rank < 0 || sh->rank >= sh->world)
        return err_set(err, err_len, "rank %d of %d is not a rank", sh->rank, sh->world);
    m->zero = sh->stage, m->world = sh->world, m->rank = sh->rank;
    m->pieces = malloc(sizeof(size_t) * sh->world);
    m->piece_off = malloc(sizeof(size_t) * sh->world);
    m->counts = malloc(sizeof(size_t) * sh->world);
    if (!m->pieces || !m->piece_off || !m->counts) return err_set(err, err_len, "out of memory");
    size_t sum = 0;
    for (int r = 0; r < sh->world; r++) {
        size_t p = sh->pieces ? sh->pieces[r] : (r == 0 ? m->n_params : 0);
        if (p > m->n_params - sum)
            return err_set(err, err_len, "ZeRO pieces add up to more than the %zu parameters",
                           m->n_params);
        m->piece_off[r] = sum, m->pieces[r] = p;
        sum += p;
    }
    if (sum != m->n_params)
        return err_set(err, err_len, "ZeRO pieces add up to %zu, not the %zu parameters", sum,
                       m->n_params);
    m->opt_off = m->piece_off[sh->rank], m->opt_n = m->pieces[sh->rank];
    return 0;
}

Model *model_create_sharded(const ModelConfig *cfg, const Ops *ops, const ModelShard *sh,
                            char *err, size_t err_len) {
    if (model_config_check(cfg, err, err_len)) return NULL;
    Model *m = calloc(1, sizeof *m);
    if (!m) return err_set(err, err_len, "out of host memory"), NULL;
    m->cfg = *cfg;
    m->ops = ops;
    int max_tensors = 4 + cfg->n_layer * (16 + 1 + 3 * cfg->n_experts);
    m->tensors = calloc(max_tensors, sizeof *m->tensors);
    m->layers = calloc(cfg->n_layer, sizeof *m->layers);
    m->rope_inv_freq = malloc((size_t)(model_head_dim(cfg) / 2 + 1) * sizeof(float));
    if (!m->tensors || !m->layers || !m->rope_inv_freq) goto oom;
    model_rope_inv_freq(cfg, m->rope_inv_freq);
    build_table(m);
    if (build_units(m)) goto oom;
    size_t n = m->n_params;
    m->opt_off = 0, m->opt_n = n;
    m->world = 1;
    if (sh && sh->stage > 0 && set_shard(m, sh, err, err_len)) {
        model_free(m);
        return NULL;
    }
    /* an empty shard still gets a buffer (alloc(0) may be NULL) */
    size_t on = m->opt_n ? m->opt_n : 1, ab = ops->act_bytes;
    m->params = ops->alloc((m->zero >= 3 ? on : n) * ab);
    m->grads = ops->alloc((m->zero >= 2 ? on : n) * ab);
    m->offload = sh && sh->offload;
    m->adam_m = opt_alloc(m, on * sizeof(float));
    m->adam_v = opt_alloc(m, on * sizeof(float));
    if (!m->params || !m->grads || !m->adam_m || !m->adam_v) goto oom;
    if (ops->act_bytes != sizeof(float)) {
        m->master = opt_alloc(m, on * sizeof(float));
        if (!m->master) goto oom;
    }
    if (m->offload) {
        size_t ch = on < OFFLOAD_CHUNK ? on : OFFLOAD_CHUNK;
        m->off_g = opt_alloc(m, ch * sizeof(float));
        m->off_p = m->master ? NULL : opt_alloc(m, ch * sizeof(float));
        if (!m->off_g || (!m->master && !m->off_p)) goto oom;
    }
    /* gradient windows: one, and a second for the embeddings while a tied
     * head's gradient waits for theirs; parameter windows: three (a block,
     * the next block for its first norm, and the one after, prefetched) */
    for (int i = 0; m->zero >= 2 && i < (cfg->tie_embeddings ? 2 : 1); i++)
        if (!(m->gwin[i] = ops->alloc(m->win_elems * ab))) goto oom;
    for (int i = 0; m->zero >= 3 && i < 3; i++)
        if (!(m->pwin[i] = ops->alloc(m->win_elems * ab))) goto oom;
    if (cfg->n_experts && !(m->moe = moe_create(cfg, ops, err, err_len))) {
        model_free(m);
        return NULL;
    }
    return m;
oom:
    err_set(err, err_len, "out of memory allocating a model of %zu parameters on %s", m->n_params,
            ops->name);
    model_free(m);
    return NULL;
}

Model *model_create(const ModelConfig *cfg, const Ops *ops, char *err, size_t err_len) {
    return model_create_sharded(cfg, ops, NULL, err, err_len);
}

void model_set_shard_comm(Model *m, const ModelShardComm *sc) {
    m->sc = sc ? *sc : (ModelShardComm){0};
}

int model_zero_stage(const Model *m) { return m->zero; }
int model_offload(const Model *m) { return m->offload; }

size_t model_offload_host_bytes(const Model *m) {
    if (!m->offload) return 0;
    size_t ch = m->opt_n < OFFLOAD_CHUNK ? m->opt_n : OFFLOAD_CHUNK;
    if (!ch) ch = 1;
    return model_optimizer_bytes(m) + ch * sizeof(float) * (m->master ? 1 : 2);
}

size_t model_param_bytes(const Model *m) {
    return (param_elems(m) + (m->pwin[0] ? 3 * m->win_elems : 0)) * m->ops->act_bytes;
}

size_t model_grad_bytes(const Model *m) {
    int nw = (m->gwin[0] != NULL) + (m->gwin[1] != NULL);
    return (grad_elems(m) + nw * m->win_elems) * m->ops->act_bytes;
}

/* ---------------- ZeRO windows ---------------- */

/* counts[r] = the overlap of rank r's piece with unit u; returns the
 * overlap [*a, *b) of this rank's */
static void unit_counts(Model *m, int u, size_t *a, size_t *b) {
    size_t lo = m->unit_lo[u], hi = m->unit_lo[u + 1];
    *a = *b = lo;
    for (int r = 0; r < m->world; r++) {
        size_t x = m->piece_off[r] > lo ? m->piece_off[r] : lo;
        size_t y = m->piece_off[r] + m->pieces[r] < hi ? m->piece_off[r] + m->pieces[r] : hi;
        m->counts[r] = x < y ? y - x : 0;
        if (r == m->rank) *a = x, *b = x < y ? y : x;
    }
}

/* Stage 3's prefetch (ModelShardComm.allgather_begin): the pending unit's
 * gather waited for and the unit made resident. A failure here has ended
 * a NCCL job already (trainer/comm.c); anything else is a bug. */
static int pf_finish(Model *m, char *err, size_t err_len) {
    if (m->pf_unit < 0) return 0;
    int u = m->pf_unit, slot = m->pf_slot;
    m->pf_unit = -1;
    if (m->sc.allgather_wait(m->sc.ctx, err, err_len)) return 1;
    m->pwin_unit[slot] = u, m->pwin_tick[slot] = ++m->tick;
    m->pptr[u] = m->pwin[slot];
    return 0;
}

/* the window for a unit other than ua and ub: a free one, else the least
 * recently used (its unit dropped) */
static int free_slot(Model *m, int ua, int ub) {
    int slot = -1;
    for (int i = 0; i < 3; i++) {
        int h = m->pwin_unit[i];
        if (h >= 0 && (h == ua || h == ub)) continue; /* in use by this call */
        if (h < 0) {
            slot = i;
            break;
        }
        if (slot < 0 || m->pwin_tick[i] < m->pwin_tick[slot]) slot = i;
    }
    if (m->pwin_unit[slot] >= 0) m->pptr[m->pwin_unit[slot]] = NULL;
    m->pwin_unit[slot] = -1;
    return slot;
}

/* this rank's piece of unit u into window w; the counts of every rank's */
static void own_piece(Model *m, int u, char *w) {
    size_t a, b, lo = m->unit_lo[u], ab = m->ops->act_bytes;
    unit_counts(m, u, &a, &b);
    if (b > a) m->ops->copy(w + (a - lo) * ab, param_at(m, a), (b - a) * ab);
}

/* Stage 3: units ua and ub (-1: none) gathered into the parameter windows,
 * each in one that holds neither unless it is there already; a prefetched
 * unit is waited for first. The same calls on every rank make the same
 * gathers. */
static int need_units(Model *m, int ua, int ub, char *err, size_t err_len) {
    if (m->zero < 3) return 0;
    if (pf_finish(m, err, err_len)) return 1;
    const int want[2] = {ua, ub};
    for (int k = 0; k < 2; k++) {
        int u = want[k];
        if (u < 0) continue;
        if (m->pptr[u]) {
            for (int i = 0; i < 3; i++)
                if (m->pwin_unit[i] == u) m->pwin_tick[i] = ++m->tick;
            continue;
        }
        int slot = free_slot(m, ua, ub);
        char *w = m->pwin[slot];
        own_piece(m, u, w);
        if (m->world > 1) {
            if (!m->sc.allgather)
                return err_set(err, err_len, "internal error: ZeRO-3 without collectives");
            if (m->sc.allgather(m->sc.ctx, w, m->counts, err, err_len)) return 1;
        }
        m->pwin_unit[slot] = u, m->pwin_tick[slot] = ++m->tick;
        m->pptr[u] = w;
    }
    return 0;
}

/* Stage 3: the gather of unit u (the next one a pass will need) started
 * now, into a window other than ua's and ub's (the units the kernels just
 * queued read), and waited for by the next need_units: the collective runs
 * beside those kernels (NCCL) where the comm can start one
 * (allgather_begin); nothing when u is there already. */
static int prefetch(Model *m, int u, int ua, int ub, char *err, size_t err_len) {
    if (m->zero < 3 || m->world < 2 || !m->sc.allgather_begin || u < 0 || u >= m->n_units ||
        m->pptr[u])
        return 0;
    if (pf_finish(m, err, err_len)) return 1;
    int slot = free_slot(m, ua, ub);
    own_piece(m, u, m->pwin[slot]);
    if (m->sc.allgather_begin(m->sc.ctx, m->pwin[slot], m->counts, err, err_len)) return 1;
    m->pf_unit = u, m->pf_slot = slot;
    return 0;
}

/* Stage 3: the gathered parameters are stale (an optimizer step, a set);
 * a prefetch in flight is waited for first (nothing may write a window
 * NCCL still writes). */
static void drop_units(Model *m) {
    char err[512];
    if (pf_finish(m, err, sizeof err)) {
        fprintf(stderr, "dapt: %s\n", err);
        abort();
    }
    for (int i = 0; i < 3; i++) {
        if (m->pwin_unit[i] >= 0) m->pptr[m->pwin_unit[i]] = NULL;
        m->pwin_unit[i] = -1;
    }
}

/* Stages 2, 3: a zeroed gradient window for unit u (the backward
 * accumulates into it); nothing when it is open already. */
static void grad_open(Model *m, int u) {
    if (m->zero < 2 || m->gptr[u]) return;
    int slot = m->gwin_unit[0] < 0 ? 0 : 1;
    if (!m->gwin[slot] || m->gwin_unit[slot] >= 0) {
        fprintf(stderr, "dapt: internal error: no free gradient window for unit %d\n", u);
        abort();
    }
    size_t n = m->unit_lo[u + 1] - m->unit_lo[u];
    m->ops->zero(m->gwin[slot], n * m->ops->act_bytes);
    m->gwin_unit[slot] = u;
    m->gptr[u] = m->gwin[slot];
}

/* Stages 2, 3: unit u's gradients are final for this micro-batch: summed
 * over the ranks (reduce-scatter), this rank's part added to its gradient
 * shard, the window freed. */
static int grad_close(Model *m, int u, char *err, size_t err_len) {
    if (m->zero < 2) return 0;
    int slot = m->gwin_unit[0] == u ? 0 : 1;
    char *w = m->gptr[u];
    size_t a, b, lo = m->unit_lo[u], ab = m->ops->act_bytes;
    m->gptr[u] = NULL, m->gwin_unit[slot] = -1;
    /* one collective at a time on the communicator: the prefetch first */
    if (pf_finish(m, err, err_len)) return 1;
    unit_counts(m, u, &a, &b);
    if (m->world > 1) {
        if (!m->sc.reduce_scatter)
            return err_set(err, err_len, "internal error: ZeRO-2 without collectives");
        if (m->sc.reduce_scatter(m->sc.ctx, w, m->counts, err, err_len)) return 1;
    }
    if (b > a) m->ops->residual_fwd(grad_at(m, a), grad_at(m, a), w + (a - lo) * ab, b - a);
    return 0;
}

static void free_acts(Model *m) {
    const Ops *o = m->ops;
    if (!m->acts) return;
    for (int l = 0; l <= m->cfg.n_layer; l++) {
        LayerActs *a = &m->acts[l];
        if (l > 0 && m->recompute) { /* only x_l is its own (ensure_acts) */
            if (a->resid) o->free(a->resid);
            continue;
        }
        void *bufs[] = {a->resid,     a->ln1, a->ln1_mean, a->ln1_rstd, a->qkv,
                        a->qk_pre,    a->qk_rstd, a->att, a->atty, a->resid_mid,
                        a->ln2,       a->ln2_mean, a->ln2_rstd, a->up, a->act};
        for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
            if (bufs[i]) o->free(bufs[i]);
    }
    free(m->acts);
    m->acts = NULL;
    void *bufs[] = {m->lnf,   m->lnf_mean, m->lnf_rstd, m->tokens, m->targets, m->losses,
                    m->scratch, m->dresid, m->dln,    m->datty,  m->dbig,    m->dact,
                    m->datt};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        if (bufs[i]) o->free(bufs[i]);
    free(m->losses_host);
    m->lnf = m->lnf_mean = m->lnf_rstd = m->losses = m->datt = NULL;
    m->tokens = m->targets = NULL;
    m->scratch = m->dresid = m->dln = m->datty = m->dbig = m->dact = NULL;
    m->losses_host = NULL;
    m->cap_B = m->cap_T = 0;
    m->act_bytes = 0;
}

void model_free(Model *m) {
    if (!m) return;
    const Ops *o = m->ops;
    free_acts(m);
    if (m->zero >= 3 && m->pf_unit >= 0) drop_units(m); /* waits for a prefetch in flight */
    void *bufs[] = {m->params,  m->grads,   m->gwin[0], m->gwin[1],
                    m->pwin[0], m->pwin[1], m->pwin[2]};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        if (bufs[i]) o->free(bufs[i]);
    void *opt[] = {m->adam_m, m->adam_v, m->master, m->off_g, m->off_p};
    for (size_t i = 0; i < sizeof opt / sizeof *opt; i++) opt_free(m, opt[i]);
    free(m->pieces), free(m->piece_off), free(m->counts);
    if (m->doc_starts) o->free(m->doc_starts);
    if (m->doc_pos) o->free(m->doc_pos);
    free(m->doc_host);
    free(m->unit_lo), free(m->tensor_unit), free(m->gptr), free(m->pptr);
    free(m->rope_inv_freq);
    moe_free(m->moe);
    free(m->tensors);
    free(m->layers);
    free(m);
}

/* Allocates activations for B x T (reallocating when either grows). */
static int ensure_acts(Model *m, int B, int T, char *err, size_t err_len) {
    if (m->acts && B <= m->cap_B && T <= m->cap_T) return 0;
    if (m->acts) {
        if (B < m->cap_B) B = m->cap_B;
        if (T < m->cap_T) T = m->cap_T;
    }
    free_acts(m);
    const ModelConfig *c = &m->cfg;
    const Ops *o = m->ops;
    size_t ab = o->act_bytes, N = (size_t)B * T, C = c->d_model, F = c->d_ff;
    size_t HD = model_head_dim(c), QKV = (c->n_head + 2 * c->n_kv_head) * HD;
    size_t UP = c->arch == ARCH_LLAMA ? 2 * F : F, NQK = c->n_head + c->n_kv_head;
    /* attention's saved state: the probabilities, or less (ops.h) */
    size_t ATT = o->attention_saved_floats
                     ? o->attention_saved_floats((int)B, (int)T, c->n_head, (int)HD)
                     : (size_t)B * c->n_head * T * T;
    int ok = 1;
#define A_(ptr, bytes) ok = ok && ((ptr) = o->alloc(bytes)) != NULL && (m->act_bytes += (bytes), 1)
    m->acts = calloc(c->n_layer + 1, sizeof *m->acts);
    if (!m->acts) return err_set(err, err_len, "out of host memory");
    int any_dense = 0; /* a layer with a dense FFN: the shared set needs up, act */
    for (int l = 0; l < c->n_layer; l++) any_dense |= !moe_is_layer(c, l);
    for (int l = 0; l < c->n_layer; l++) {
        LayerActs *a = &m->acts[l];
        A_(a->resid, N * C * ab);
        if (l > 0 && m->recompute) {
            /* one block's worth for all blocks: block 0's (free_acts frees
             * only resid here) */
            void *resid = a->resid;
            *a = m->acts[0];
            a->resid = resid;
            continue;
        }
        A_(a->ln1, N * C * ab);
        if (c->arch == ARCH_GPT2) A_(a->ln1_mean, N * 4);
        A_(a->ln1_rstd, N * 4);
        A_(a->qkv, N * QKV * ab);
        if (c->qk_norm) {
            A_(a->qk_pre, N * NQK * HD * ab);
            A_(a->qk_rstd, N * NQK * 4);
        }
        A_(a->att, ATT * 4);
        A_(a->atty, N * c->n_head * HD * ab);
        A_(a->resid_mid, N * C * ab);
        A_(a->ln2, N * C * ab);
        if (c->arch == ARCH_GPT2) A_(a->ln2_mean, N * 4);
        A_(a->ln2_rstd, N * 4);
        /* the MoE FFN keeps its own (trainer/moe.c) */
        if (m->recompute ? !any_dense : moe_is_layer(c, l)) continue;
        A_(a->up, N * UP * ab);
        A_(a->act, N * F * ab);
    }
    A_(m->acts[c->n_layer].resid, N * C * ab);
    A_(m->lnf, N * C * ab);
    if (c->arch == ARCH_GPT2) A_(m->lnf_mean, N * 4);
    A_(m->lnf_rstd, N * 4);
    A_(m->tokens, N * 4);
    A_(m->targets, N * 4);
    A_(m->losses, N * 4);
    A_(m->scratch, o->lmhead_scratch_bytes((int)N, c->vocab_size));
    A_(m->dresid, N * C * ab);
    A_(m->dln, N * C * ab);
    A_(m->datty, N * c->n_head * HD * ab);
    A_(m->dbig, N * (QKV > UP ? QKV : UP) * ab);
    A_(m->dact, N * F * ab);
    A_(m->datt, ATT * 4);
#undef A_
    m->losses_host = malloc(N * sizeof(float));
    m->cap_B = B;
    m->cap_T = T;
    if (ok && m->moe && moe_ensure_acts(m->moe, (int)N, err, err_len)) return free_acts(m), 1;
    if (!ok || !m->losses_host) {
        free_acts(m);
        return err_set(err, err_len, "out of memory allocating activations for B=%d T=%d on %s", B,
                       T, o->name);
    }
    return 0;
}

/* ---------------- accessors ---------------- */

/* cfg's table (and units) on the host, nothing on a backend; what out
 * selects: 0 the parameters, 1 the largest unit */
static size_t config_table(const ModelConfig *cfg, int out) {
    Model m = {.cfg = *cfg};
    size_t r = 0;
    m.tensors = calloc(4 + (size_t)cfg->n_layer * (16 + 1 + 3 * cfg->n_experts), sizeof *m.tensors);
    m.layers = calloc(cfg->n_layer, sizeof *m.layers);
    if (m.tensors && m.layers) {
        build_table(&m);
        r = m.n_params;
        if (out == 1) r = build_units(&m) ? 0 : m.win_elems;
    }
    free(m.tensors), free(m.layers);
    free(m.unit_lo), free(m.tensor_unit), free(m.gptr), free(m.pptr);
    return r;
}

size_t model_config_num_params(const ModelConfig *cfg) { return config_table(cfg, 0); }
size_t model_config_max_unit(const ModelConfig *cfg) { return config_table(cfg, 1); }

Model *model_create_table(const ModelConfig *cfg, char *err, size_t err_len) {
    if (model_config_check(cfg, err, err_len)) return NULL;
    Model *m = calloc(1, sizeof *m);
    if (m) {
        m->cfg = *cfg;
        m->tensors = calloc(4 + (size_t)cfg->n_layer * (16 + 1 + 3 * cfg->n_experts), sizeof *m->tensors);
        m->layers = calloc(cfg->n_layer, sizeof *m->layers);
    }
    if (!m || !m->tensors || !m->layers) {
        model_free(m);
        return err_set(err, err_len, "out of host memory for a parameter table"), NULL;
    }
    build_table(m);
    return m;
}

const ModelConfig *model_config(const Model *m) { return &m->cfg; }
const Ops *model_ops(const Model *m) { return m->ops; }
size_t model_num_params(const Model *m) { return m->n_params; }
int model_num_tensors(const Model *m) { return m->n_tensors; }
const ParamTensor *model_tensor(const Model *m, int i) { return &m->tensors[i]; }

int model_find_tensor(const Model *m, const char *name) {
    for (int i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i].name, name)) return i;
    return -1;
}

static int is_residual_proj(const Model *m, int t) {
    for (int l = 0; l < m->cfg.n_layer; l++)
        if (m->layers[l].o_w == t || m->layers[l].down_w == t) return 1;
        else if (m->layers[l].moe_expert0 >= 0 && t >= m->layers[l].moe_expert0 &&
                 t < m->layers[l].moe_expert0 + 3 * m->cfg.n_experts)
            return (t - m->layers[l].moe_expert0) % 3 == 2; /* experts' w2 */
    return 0;
}

static int is_norm_weight(const Model *m, int t) {
    if (t == m->t_lnf_w) return 1;
    for (int l = 0; l < m->cfg.n_layer; l++) {
        const LayerTensors *lt = &m->layers[l];
        if (lt->ln1_w == t || lt->ln2_w == t || lt->q_norm_w == t || lt->k_norm_w == t) return 1;
    }
    return 0;
}

/* p[k] = std * rng_normal(rng) for k < n, in order: the u64 stream is drawn
 * sequentially (cheap) in chunks into u, and the Box-Muller values (log,
 * cos: most of the time) computed in parallel from it; the same numbers as
 * the sequential loop (rng_normal_of), whatever the thread count. u: NULL
 * or NORMAL_CHUNK x 2 u64s. */
#define NORMAL_CHUNK ((size_t)1 << 20)
static void normals(Rng *rng, float *p, size_t n, float std, uint64_t *u) {
    for (size_t c0 = 0; c0 < n; c0 += NORMAL_CHUNK) {
        long c = (long)(n - c0 < NORMAL_CHUNK ? n - c0 : NORMAL_CHUNK);
        if (!u) { /* no scratch: one by one */
            for (long k = 0; k < c; k++) p[c0 + k] = (float)(std * rng_normal(rng));
            continue;
        }
        for (long k = 0; k < 2 * c; k++) u[k] = rng_u64(rng);
#pragma omp parallel for schedule(static) if (c > 65536)
        for (long k = 0; k < c; k++)
            p[c0 + k] = (float)(std * rng_normal_of(u[2 * k], u[2 * k + 1]));
    }
}

void model_init_weights(Model *m, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed);
    uint64_t *u = malloc(2 * NORMAL_CHUNK * sizeof *u);
    size_t max_numel = 1;
    for (int i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].numel > max_numel) max_numel = m->tensors[i].numel;
    float *p = malloc(max_numel * sizeof *p); /* one tensor at a time */
    if (!p) {
        fprintf(stderr, "dapt: out of host memory initialising a tensor of %zu floats\n", max_numel);
        abort();
    }
    float resid_std = 0.02f / sqrtf(2.0f * m->cfg.n_layer);
    for (int i = 0; i < m->n_tensors; i++) {
        const ParamTensor *t = &m->tensors[i];
        if (is_norm_weight(m, i)) {
            for (size_t k = 0; k < t->numel; k++) p[k] = 1.0f;
        } else if (t->ndim == 1) {
            memset(p, 0, t->numel * sizeof(float));
        } else {
            float std = is_residual_proj(m, i) ? resid_std : 0.02f;
            normals(&rng, p, t->numel, std, u);
        }
        model_set_param_range(m, t->offset, t->numel, p);
    }
    free(u);
    free(p);
}

/* The optimizer shard's part only (model_optimizer_count floats each).
 * Parameters: the fp32 master weights when the act type keeps them (the
 * CUDA bf16 table): they are the parameters, the bf16 copy is their
 * rounding, and a checkpoint of the rounded values would not resume
 * bitwise. */
void model_get_params_shard(const Model *m, float *dst) {
    if (m->master) {
        opt_get(m, dst, m->master, m->opt_n * sizeof(float));
        return;
    }
    m->ops->download(dst, param_at(m, m->opt_off), m->opt_n);
}

void model_get_adam_shard(const Model *m, float *m_dst, float *v_dst) {
    opt_get(m, m_dst, m->adam_m, m->opt_n * sizeof(float));
    opt_get(m, v_dst, m->adam_v, m->opt_n * sizeof(float));
}

void model_set_adam_shard(Model *m, const float *m_src, const float *v_src) {
    opt_put(m, m->adam_m, m_src, m->opt_n * sizeof(float));
    opt_put(m, m->adam_v, v_src, m->opt_n * sizeof(float));
}

/* dst[0, n_params) zero outside this rank's shard */
static void zero_outside_shard(const Model *m, float *dst) {
    memset(dst, 0, m->opt_off * sizeof(float));
    size_t end = m->opt_off + m->opt_n;
    memset(dst + end, 0, (m->n_params - end) * sizeof(float));
}

/* The whole-buffer versions: the shard's part at its offset. A sharded
 * model has the master of its shard only: elsewhere the bf16 copy (stage
 * 3: zeros, it has no parameters there). */
void model_get_params(const Model *m, float *dst) {
    if (m->zero >= 3) {
        zero_outside_shard(m, dst);
        model_get_params_shard(m, dst + m->opt_off);
        return;
    }
    if (!m->master || m->opt_n != m->n_params) m->ops->download(dst, m->params, m->n_params);
    if (m->master) model_get_params_shard(m, dst + m->opt_off);
}

void model_set_params(Model *m, const float *src) {
    if (m->zero >= 3) {
        m->ops->upload(m->params, src + m->opt_off, m->opt_n);
        drop_units(m);
    } else {
        m->ops->upload(m->params, src, m->n_params);
    }
    if (m->master) opt_put(m, m->master, src + m->opt_off, m->opt_n * sizeof(float));
}

void model_get_grads(const Model *m, float *dst) {
    if (m->zero < 2) {
        m->ops->download(dst, m->grads, m->n_params);
        return;
    }
    zero_outside_shard(m, dst);
    m->ops->download(dst + m->opt_off, m->grads, m->opt_n);
}

/* A sharded model fills [opt_off, opt_off + opt_n) and zeroes the rest. */
void model_get_adam_state(const Model *m, float *m_dst, float *v_dst) {
    size_t off = m->opt_off, end = off + m->opt_n, np = m->n_params;
    model_get_adam_shard(m, m_dst + off, v_dst + off);
    if (m->opt_n == np) return;
    memset(m_dst, 0, off * sizeof(float)), memset(v_dst, 0, off * sizeof(float));
    memset(m_dst + end, 0, (np - end) * sizeof(float));
    memset(v_dst + end, 0, (np - end) * sizeof(float));
}

void model_set_adam_state(Model *m, const float *m_src, const float *v_src) {
    model_set_adam_shard(m, m_src + m->opt_off, v_src + m->opt_off);
}

/* [offset, offset + count) within the parameters, else a programming error */
static void check_range(const Model *m, size_t offset, size_t count, const char *fn) {
    if (offset > m->n_params || count > m->n_params - offset) {
        fprintf(stderr, "dapt: %s: range [%zu, %zu) outside the %zu parameters\n", fn, offset,
                offset + count, m->n_params);
        abort();
    }
}

/* The part of [offset, offset + count) inside the optimizer shard: [*lo, *hi). */
static void shard_part(const Model *m, size_t offset, size_t count, size_t *lo, size_t *hi) {
    *lo = offset > m->opt_off ? offset : m->opt_off;
    *hi = offset + count < m->opt_off + m->opt_n ? offset + count : m->opt_off + m->opt_n;
    if (*hi < *lo) *hi = *lo;
}

/* Under ZeRO-3 a rank has the parameters of its shard only: get gives
 * zeros outside it, set ignores what lies outside it. The fp32 master
 * (bf16 table), in its shard, is on the backend or offloaded. */
void model_get_param_range(const Model *m, size_t offset, size_t count, float *dst) {
    check_range(m, offset, count, "model_get_param_range");
    size_t lo, hi;
    shard_part(m, offset, count, &lo, &hi);
    if (m->zero >= 3) {
        if (hi - lo < count) memset(dst, 0, count * sizeof(float));
        if (!m->master && hi > lo) m->ops->download(dst + (lo - offset), param_at(m, lo), hi - lo);
    } else if (!m->master || hi - lo < count) {
        m->ops->download(dst, param_at(m, offset), count);
    }
    if (m->master && hi > lo)
        opt_get(m, dst + (lo - offset), m->master + (lo - m->opt_off), (hi - lo) * sizeof(float));
}

void model_set_param_range(Model *m, size_t offset, size_t count, const float *src) {
    check_range(m, offset, count, "model_set_param_range");
    size_t lo, hi;
    shard_part(m, offset, count, &lo, &hi);
    if (m->zero >= 3) {
        if (hi > lo) m->ops->upload(param_at(m, lo), src + (lo - offset), hi - lo);
        drop_units(m);
    } else {
        m->ops->upload(param_at(m, offset), src, count);
    }
    if (m->master && hi > lo)
        opt_put(m, m->master + (lo - m->opt_off), src + (lo - offset), (hi - lo) * sizeof(float));
}

/* A buffer of n floats holding old[off, off + n) (old holds the whole
 * parameter range), through the host; NULL when memory runs out. */
static float *shard_copy(Model *m, const float *old, size_t off, size_t n) {
    float *b = m->ops->alloc((n ? n : 1) * sizeof(float)), *h = malloc((n ? n : 1) * sizeof *h);
    if (b && h) {
        m->ops->download_bytes(h, old + off, n * sizeof(float));
        m->ops->upload_bytes(b, h, n * sizeof(float));
    } else if (b) {
        m->ops->free(b), b = NULL;
    }
    free(h);
    return b;
}

int model_shard_optimizer(Model *m, size_t offset, size_t count, char *err, size_t err_len) {
    if (m->offload)
        return err_set(err, err_len, "an offloaded optimizer is sharded at model_create_sharded");
    if (m->opt_n != m->n_params)
        return err_set(err, err_len, "the optimizer state is already sharded");
    if (offset > m->n_params || count > m->n_params - offset)
        return err_set(err, err_len, "optimizer shard [%zu, %zu) is outside the %zu parameters",
                       offset, offset + count, m->n_params);
    if (offset == 0 && count == m->n_params) return 0;
    float *nm = shard_copy(m, m->adam_m, offset, count);
    float *nv = nm ? shard_copy(m, m->adam_v, offset, count) : NULL;
    float *nmaster = nv && m->master ? shard_copy(m, m->master, offset, count) : NULL;
    if (!nv || (m->master && !nmaster)) {
        float *bufs[] = {nm, nv, nmaster};
        for (int i = 0; i < 3; i++)
            if (bufs[i]) m->ops->free(bufs[i]);
        return err_set(err, err_len, "out of memory for an optimizer shard of %zu parameters on %s",
                       count, m->ops->name);
    }
    m->ops->free(m->adam_m), m->ops->free(m->adam_v);
    if (m->master) m->ops->free(m->master);
    m->adam_m = nm, m->adam_v = nv, m->master = nmaster;
    m->opt_off = offset, m->opt_n = count;
    return 0;
}

size_t model_optimizer_offset(const Model *m) { return m->opt_off; }
size_t model_optimizer_count(const Model *m) { return m->opt_n; }

size_t model_optimizer_bytes(const Model *m) {
    return m->opt_n * sizeof(float) * (m->master ? 3 : 2);
}

/* ---------------- forward ---------------- */

static int check_inputs(Model *m, const int32_t *tokens, const int32_t *targets, int B, int T,
                        char *err, size_t err_len) {
    const ModelConfig *c = &m->cfg;
    if (B < 1 || T < 1) return err_set(err, err_len, "batch %d x %d is empty", B, T);
    if (T > c->max_seq_len)
        return err_set(err, err_len, "sequence length %d is above the model's max_seq_len %d", T,
                       c->max_seq_len);
    for (int i = 0; i < B * T; i++) {
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return err_set(err, err_len,
                           "token id %d at position %d is outside the vocabulary [0, %d)",
                           tokens[i], i, c->vocab_size);
        if (targets && targets[i] >= c->vocab_size)
            return err_set(err, err_len,
                           "target id %d at position %d is outside the vocabulary [0, %d)",
                           targets[i], i, c->vocab_size);
    }
    return ensure_acts(m, B, T, err, err_len);
}

static void norm_fwd(Model *m, void *out, float *mean, float *rstd, const void *inp, int tw,
                     int tb, int N) {
    const ModelConfig *c = &m->cfg;
    if (c->arch == ARCH_GPT2)
        m->ops->layernorm_fwd(out, mean, rstd, inp, P(m, tw), P(m, tb), N, c->d_model, c->norm_eps);
    else
        m->ops->rmsnorm_fwd(out, rstd, inp, P(m, tw), N, c->d_model, c->norm_eps);
}

static void norm_bwd(Model *m, void *dinp, const void *dout, const void *inp, const float *mean,
                     const float *rstd, int tw, int tb, int N) {
    const ModelConfig *c = &m->cfg;
    if (c->arch == ARCH_GPT2)
        m->ops->layernorm_bwd(dinp, G(m, tw), G(m, tb), dout, inp, P(m, tw), mean, rstd, N,
                              c->d_model);
    else
        m->ops->rmsnorm_bwd(dinp, G(m, tw), dout, inp, P(m, tw), rstd, N, c->d_model);
}

/* res = a + b, then the norm of res (weights tw, tb) into out: the fused op
 * when the backend has it (bitwise the same, ops.h), else the two ops. res
 * may alias a or b. */
static void resid_norm_fwd(Model *m, void *res, const void *a, const void *b, void *out,
                           float *mean, float *rstd, int tw, int tb, int N) {
    const ModelConfig *c = &m->cfg;
    const Ops *o = m->ops;
    if (c->arch == ARCH_GPT2 && o->residual_layernorm_fwd)
        o->residual_layernorm_fwd(res, out, mean, rstd, a, b, P(m, tw), P(m, tb), N, c->d_model,
                                  c->norm_eps);
    else if (c->arch == ARCH_LLAMA && o->residual_rmsnorm_fwd)
        o->residual_rmsnorm_fwd(res, out, rstd, a, b, P(m, tw), N, c->d_model, c->norm_eps);
    else {
        o->residual_fwd(res, a, b, (size_t)N * c->d_model);
        norm_fwd(m, out, mean, rstd, res, tw, tb, N);
    }
}

void model_set_params_needed(Model *m, ModelGradReady fn, void *ctx) {
    m->params_needed = fn, m->params_needed_ctx = ctx;
}

/* parameters below block l's qkv weight are about to be read (l = n_layer:
 * all of them) */
static int params_needed(Model *m, int l, char *err, size_t err_len) {
    if (!m->params_needed) return 0;
    size_t end = l < m->cfg.n_layer ? m->tensors[m->layers[l].qkv_w].offset : m->n_params;
    return m->params_needed(m->params_needed_ctx, end, err, err_len);
}

/* Block l's forward from a->ln1 = norm1(x_l) (computed before the loop or
 * by the previous block's last residual) up to its FFN output in out
 * (N, C), also the o_proj output's temporary: x_{l+1}'s buffer in the
 * forward, scratch when recomputing (again = 1). The last residual add is
 * the caller's (fused with the next norm). again skips the dense FFN's down
 * projection (the backward does not read its output) and checks that an MoE
 * layer routes as in the forward (moe_layer_refwd). */
static int block_fwd(Model *m, int l, int B, int T, void *out, int again, char *err,
                     size_t err_len) {
    const ModelConfig *c = &m->cfg;
    const Ops *o = m->ops;
    int N = B * T, C = c->d_model, F = c->d_ff, NH = c->n_head, NKV = c->n_kv_head;
    int HD = model_head_dim(c), QKV = (NH + 2 * NKV) * HD, UP = c->arch == ARCH_LLAMA ? 2 * F : F;
    const LayerTensors *w = &m->layers[l];
    LayerActs *a = &m->acts[l];
    o->matmul_fwd(a->qkv, a->ln1, P(m, w->qkv_w), P(m, w->qkv_b), N, C, QKV);
    if (c->qk_norm)
        o->qk_norm_fwd(a->qkv, a->qk_pre, a->qk_rstd, P(m, w->q_norm_w), P(m, w->k_norm_w), N, NH,
                       NKV, HD, c->norm_eps);
    if (c->arch == ARCH_LLAMA && m->doc_reset)
        o->rope_pos_fwd(a->qkv, B, T, NH, NKV, HD, m->rope_inv_freq, m->doc_pos);
    else if (c->arch == ARCH_LLAMA)
        o->rope_fwd(a->qkv, B, T, NH, NKV, HD, m->rope_inv_freq);
    if (m->doc_eos >= 0)
        o->attention_doc_fwd(a->atty, a->att, a->qkv, B, T, NH, NKV, HD, m->doc_starts);
    else
        o->attention_fwd(a->atty, a->att, a->qkv, B, T, NH, NKV, HD);
    /* the o_proj output goes to `out` as a temporary, then x_mid = x + it */
    o->matmul_fwd(out, a->atty, P(m, w->o_w), P(m, w->o_b), N, NH * HD, C);
    resid_norm_fwd(m, a->resid_mid, a->resid, out, a->ln2, a->ln2_mean, a->ln2_rstd, w->ln2_w,
                   w->ln2_b, N);
    if (w->moe_router >= 0) {
        /* the router's place, the experts after it in the same unit */
        size_t e_off = m->tensors[w->moe_expert0].offset - m->tensors[w->moe_router].offset;
        if (again)
            return moe_layer_refwd(m->moe, l, P(m, w->moe_router), 0, e_off, out, a->ln2, N, err,
                                   err_len);
        moe_layer_fwd(m->moe, l, P(m, w->moe_router), 0, e_off, out, a->ln2, N);
        return 0;
    }
    o->matmul_fwd(a->up, a->ln2, P(m, w->up_w), P(m, w->up_b), N, C, UP);
    if (c->arch == ARCH_LLAMA) o->swiglu_fwd(a->act, a->up, N, F);
    else o->gelu_fwd(a->act, a->up, (size_t)N * F);
    if (!again) o->matmul_fwd(out, a->act, P(m, w->down_w), P(m, w->down_b), N, F, C);
    return 0;
}

static int head_tensor(const Model *m) { return m->t_head >= 0 ? m->t_head : m->t_wte; }
static int head_unit(const Model *m) { return m->tensor_unit[head_tensor(m)]; }

/* Runs embeddings, blocks and the final norm; leaves x_L's norm in m->lnf.
 * Each residual add is fused with the norm that reads its result: block l's
 * attention residual with its norm2, its MLP residual with norm1 of block
 * l + 1 (or the final norm after the last block). */
static int forward_blocks(Model *m, int B, int T, char *err, size_t err_len) {
    const ModelConfig *c = &m->cfg;
    const Ops *o = m->ops;
    int N = B * T, C = c->d_model;
    if (params_needed(m, 0, err, err_len) || need_units(m, 0, 1, err, err_len) ||
        prefetch(m, 2, 0, 1, err, err_len))
        return 1;
    o->embed_fwd(m->acts[0].resid, m->tokens, P(m, m->t_wte), P(m, m->t_wpe), B, T, C);
    norm_fwd(m, m->acts[0].ln1, m->acts[0].ln1_mean, m->acts[0].ln1_rstd, m->acts[0].resid,
             m->layers[0].ln1_w, m->layers[0].ln1_b, N);
    for (int l = 0; l < c->n_layer; l++) {
        LayerActs *a = &m->acts[l];
        void *out = m->acts[l + 1].resid;
        /* this block's weights and the next block's norm (the last block:
         * the final norm and the head) */
        /* (stage 3: and the unit after them prefetched; after the last
         * block, the tied head's embeddings) */
        int next = 3 + l < m->n_units ? 3 + l : head_unit(m);
        if (params_needed(m, l + 1, err, err_len) || need_units(m, 1 + l, 2 + l, err, err_len) ||
            prefetch(m, next, 1 + l, 2 + l, err, err_len))
            return 1;
        if (block_fwd(m, l, B, T, out, 0, err, err_len)) return 1;
        /* x_{l+1} = x_mid + mlp(...) (in place in `out`), and the norm that
         * reads it: the next block's norm1, or the final norm */
        if (l + 1 < c->n_layer) {
            LayerActs *nx = &m->acts[l + 1];
            resid_norm_fwd(m, out, a->resid_mid, out, nx->ln1, nx->ln1_mean, nx->ln1_rstd,
                           m->layers[l + 1].ln1_w, m->layers[l + 1].ln1_b, N);
        } else {
            resid_norm_fwd(m, out, a->resid_mid, out, m->lnf, m->lnf_mean, m->lnf_rstd,
                           m->t_lnf_w, m->t_lnf_b, N);
        }
    }
    return 0;
}

/* Block l's activations again, for its backward (MODEL_RECOMPUTE_BLOCK):
 * norm1 of the kept x_l, then block_fwd into m->dln, scratch between two
 * blocks' backwards. Bitwise the forward's: the same ops on the same
 * inputs, and the fused residual + norm that made ln1 in the forward equals
 * the norm alone on the stored x_l (ops.h). The last block is not
 * recomputed: the forward left its activations in the shared buffers (the
 * final norm and the head write elsewhere). */
static int recompute_block(Model *m, int l, int B, int T, char *err, size_t err_len) {
    if (!m->recompute || l == m->cfg.n_layer - 1) return 0;
    LayerActs *a = &m->acts[l];
    const LayerTensors *w = &m->layers[l];
    norm_fwd(m, a->ln1, a->ln1_mean, a->ln1_rstd, a->resid, w->ln1_w, w->ln1_b, B * T);
    return block_fwd(m, l, B, T, m->dln, 1, err, err_len);
}

static float mean_of_losses(Model *m, const int32_t *targets, int N) {
    m->ops->download_bytes(m->losses_host, m->losses, (size_t)N * sizeof(float));
    double s = 0.0;
    int n = 0;
    for (int i = 0; i < N; i++)
        if (targets[i] >= 0) s += m->losses_host[i], n++;
    return n ? (float)(s / n) : NAN;
}


/* data.doc_mask: each row's document start and position in its window,
 * from the tokens (a document ends with doc_eos), uploaded */
static int doc_bounds(Model *m, const int32_t *tokens, int B, int T, char *err, size_t err_len) {
    const Ops *o = m->ops;
    int N = B * T;
    if (N > m->doc_cap) {
        o->free(m->doc_starts), o->free(m->doc_pos), free(m->doc_host);
        m->doc_starts = o->alloc((size_t)N * 4), m->doc_pos = o->alloc((size_t)N * 4);
        m->doc_host = malloc((size_t)N * 8);
        m->doc_cap = m->doc_starts && m->doc_pos && m->doc_host ? N : 0;
        if (!m->doc_cap) return err_set(err, err_len, "out of memory for the document bounds");
    }
    int32_t *st = m->doc_host, *pos = m->doc_host + N;
    for (int b = 0; b < B; b++)
        for (int t = 0, s0 = 0; t < T; t++) {
            int n = b * T + t;
            if (t > 0 && tokens[n - 1] == m->doc_eos) s0 = t;
            st[n] = s0, pos[n] = t - s0;
        }
    o->upload_bytes(m->doc_starts, st, (size_t)N * 4);
    o->upload_bytes(m->doc_pos, pos, (size_t)N * 4);
    return 0;
}

int model_set_doc_mask(Model *m, int eos_id, int reset_positions, char *err, size_t err_len) {
    const Ops *o = m->ops;
    if (eos_id < 0) {
        m->doc_eos = -1, m->doc_reset = 0;
        return 0;
    }
    if (eos_id >= m->cfg.vocab_size)
        return err_set(err, err_len, "data.doc_mask: EOS id %d outside the vocabulary (%d)",
                       eos_id, m->cfg.vocab_size);
    if (!o->attention_doc_fwd || !o->rope_pos_fwd || !o->rope_pos_bwd)
        return err_set(err, err_len,
                       "data.doc_mask: the %s backend has no document-masked attention yet "
                       "(run.device = \"cpu\" has it)",
                       o->name);
    if (reset_positions && m->cfg.arch != ARCH_LLAMA)
        return err_set(err, err_len,
                       "data.reset_positions: %s's learned position embeddings are not reset "
                       "per document (RoPE models are); use data.doc_mask alone",
                       model_arch_name(m->cfg.arch));
    m->doc_eos = eos_id, m->doc_reset = reset_positions;
    return 0;
}

static int forward_common(Model *m, const int32_t *tokens, const int32_t *targets, int B, int T,
                          char *err, size_t err_len) {
    if (check_inputs(m, tokens, targets, B, T, err, err_len)) return 1;
    int N = B * T;
    m->B = B;
    m->T = T;
    if (m->doc_eos >= 0 && doc_bounds(m, tokens, B, T, err, err_len)) return 1;
    m->ops->upload_bytes(m->tokens, tokens, (size_t)N * 4);
    if (targets) m->ops->upload_bytes(m->targets, targets, (size_t)N * 4);
    if (forward_blocks(m, B, T, err, err_len)) return 1;
    /* the head (stage 3: gathered after every forward, so that every rank
     * gathers the same units, and model_logits has it) */
    return need_units(m, head_unit(m), -1, err, err_len);
}

int model_forward(Model *m, const int32_t *tokens, const int32_t *targets, int B, int T,
                  float *mean_loss, char *err, size_t err_len) {
    if (forward_common(m, tokens, targets, B, T, err, err_len)) return 1;
    if (m->moe && moe_after_forward(m->moe, 0, err, err_len)) return 1;
    if (targets) {
        const ModelConfig *c = &m->cfg;
        int th = head_tensor(m);
        m->ops->lmhead_ce(m->losses, NULL, NULL, m->lnf, P(m, th), m->targets, B * T, c->d_model,
                          c->vocab_size, 0.0f, m->scratch);
        if (mean_loss) *mean_loss = mean_of_losses(m, targets, B * T);
    }
    return 0;
}

/* ---------------- backward ---------------- */

void model_set_grad_ready(Model *m, ModelGradReady fn, void *ctx) {
    m->grad_ready = fn, m->grad_ready_ctx = ctx;
}

/* gradients from tensor t's offset on are final (t < 0: all of them) */
static int grads_ready(Model *m, int t, char *err, size_t err_len) {
    if (!m->grad_ready) return 0;
    return m->grad_ready(m->grad_ready_ctx, t < 0 ? 0 : m->tensors[t].offset, err, err_len);
}

int model_forward_backward(Model *m, const int32_t *tokens, const int32_t *targets, int B, int T,
                           float grad_scale, float *mean_loss, char *err, size_t err_len) {
    if (!targets) return err_set(err, err_len, "training needs targets");
    if (forward_common(m, tokens, targets, B, T, err, err_len)) return 1;
    if (m->moe && moe_after_forward(m->moe, 1, err, err_len)) return 1;
    const ModelConfig *c = &m->cfg;
    const Ops *o = m->ops;
    int N = B * T, C = c->d_model, F = c->d_ff, NH = c->n_head, NKV = c->n_kv_head, L = c->n_layer;
    int HD = model_head_dim(c), QKV = (NH + 2 * NKV) * HD, UP = c->arch == ARCH_LLAMA ? 2 * F : F;
    int th = head_tensor(m);

    /* head: losses, d(lnf) into dln, d(W_head) accumulated */
    grad_open(m, head_unit(m));
    o->lmhead_ce(m->losses, m->dln, G(m, th), m->lnf, P(m, th), m->targets, N, C, c->vocab_size,
                 grad_scale, m->scratch);
    if (mean_loss) *mean_loss = mean_of_losses(m, targets, N);
    o->zero(m->dresid, (size_t)N * C * o->act_bytes);
    if (need_units(m, L + 1, -1, err, err_len)) return 1;
    grad_open(m, L + 1);
    norm_bwd(m, m->dresid, m->dln, m->acts[L].resid, m->lnf_mean, m->lnf_rstd, m->t_lnf_w,
             m->t_lnf_b, N);
    if (grad_close(m, L + 1, err, err_len) || grads_ready(m, m->t_lnf_w, err, err_len)) return 1;

    for (int l = L - 1; l >= 0; l--) {
        const LayerTensors *w = &m->layers[l];
        LayerActs *a = &m->acts[l];
        /* stage 3: the block before prefetched (the embeddings' backward
         * reads no parameters) */
        if (need_units(m, 1 + l, -1, err, err_len) ||
            prefetch(m, l >= 1 ? l : -1, 1 + l, -1, err, err_len) ||
            recompute_block(m, l, B, T, err, err_len))
            return 1;
        grad_open(m, 1 + l);
        /* MLP: dresid is d(x_{l+1}) = d(mlp out) */
        if (w->moe_router >= 0) {
            /* the first MoE layer here finishes global LBL's counts sum,
             * begun after the forward: it overlapped the head and the
             * layers above */
            if (moe_before_backward(m->moe, err, err_len)) return 1;
            moe_layer_bwd(m->moe, l, P(m, w->moe_router), G(m, w->moe_router), 0,
                          m->tensors[w->moe_expert0].offset - m->tensors[w->moe_router].offset,
                          m->dln, m->dresid, a->ln2, N);
            goto norm2_bwd;
        }
        o->matmul_bwd(m->dact, G(m, w->down_w), G(m, w->down_b), m->dresid, a->act,
                      P(m, w->down_w), N, F, C);
        if (c->arch == ARCH_LLAMA) o->swiglu_bwd(m->dbig, m->dact, a->up, N, F);
        else o->gelu_bwd(m->dbig, a->up, m->dact, (size_t)N * F);
        o->matmul_bwd(m->dln, G(m, w->up_w), G(m, w->up_b), m->dbig, a->ln2, P(m, w->up_w), N, C,
                      UP);
    norm2_bwd:
        norm_bwd(m, m->dresid, m->dln, a->resid_mid, a->ln2_mean, a->ln2_rstd, w->ln2_w, w->ln2_b,
                 N);
        /* attention: dresid is now d(x_mid) = d(attn out) */
        o->matmul_bwd(m->datty, G(m, w->o_w), G(m, w->o_b), m->dresid, a->atty, P(m, w->o_w), N,
                      NH * HD, C);
        o->attention_bwd(m->dbig, m->datt, m->datty, a->atty, a->qkv, a->att, B, T, NH, NKV, HD);
        if (c->arch == ARCH_LLAMA && m->doc_reset)
            o->rope_pos_bwd(m->dbig, B, T, NH, NKV, HD, m->rope_inv_freq, m->doc_pos);
        else if (c->arch == ARCH_LLAMA)
            o->rope_bwd(m->dbig, B, T, NH, NKV, HD, m->rope_inv_freq);
        if (c->qk_norm)
            o->qk_norm_bwd(m->dbig, G(m, w->q_norm_w), G(m, w->k_norm_w), a->qk_pre,
                           P(m, w->q_norm_w), P(m, w->k_norm_w), a->qk_rstd, N, NH, NKV, HD);
        o->matmul_bwd(m->dln, G(m, w->qkv_w), G(m, w->qkv_b), m->dbig, a->ln1, P(m, w->qkv_w), N,
                      C, QKV);
        norm_bwd(m, m->dresid, m->dln, a->resid, a->ln1_mean, a->ln1_rstd, w->ln1_w, w->ln1_b, N);
        /* ln1_w is the block's first tensor (build_table) */
        if (grad_close(m, 1 + l, err, err_len) || grads_ready(m, w->ln1_w, err, err_len))
            return 1;
    }
    grad_open(m, 0); /* open already with a tied head */
    o->embed_bwd(G(m, m->t_wte), G(m, m->t_wpe), m->dresid, m->tokens, B, T, C);
    if (grad_close(m, 0, err, err_len)) return 1;
    return grads_ready(m, -1, err, err_len);
}

const float *model_token_losses(const Model *m) { return m->losses_host; }

int model_forward_join(Model *m, char *err, size_t err_len) {
    if (m->zero < 3 || m->world < 2) return 0;
    int32_t tok = 0, tgt = 0;
    float loss;
    return model_forward(m, &tok, &tgt, 1, 1, &loss, err, err_len);
}

static const char *const recompute_names[] = {"none", "block"};

int model_recompute_parse(const char *name, int *mode, char *err, size_t err_len) {
    for (int i = 0; i < 2; i++)
        if (!strcmp(name, recompute_names[i])) return *mode = i, 0;
    return err_set(err, err_len, "recompute = \"%.40s\" is not a mode (\"none\" or \"block\")",
                   name);
}

const char *model_recompute_name(int mode) {
    return mode >= 0 && mode < 2 ? recompute_names[mode] : "?";
}

void model_set_recompute(Model *m, int mode) {
    if (mode == m->recompute) return;
    free_acts(m); /* allocated again for the mode by the next forward */
    m->recompute = mode;
    if (m->moe) moe_set_recompute(m->moe, mode);
}

int model_recompute(const Model *m) { return m->recompute; }

size_t model_activation_bytes(const Model *m) {
    return m->act_bytes + (m->moe ? moe_activation_bytes(m->moe) : 0);
}

MoeState *model_moe_state(const Model *m) { return m->moe; }

void model_logits(Model *m, float *dst) {
    const ModelConfig *c = &m->cfg;
    const Ops *o = m->ops;
    size_t N = (size_t)m->B * m->T, V = c->vocab_size;
    void *buf = o->alloc(N * V * o->act_bytes);
    o->matmul_fwd(buf, m->lnf, P(m, head_tensor(m)), NULL, (int)N, c->d_model, (int)V);
    o->download(dst, buf, N * V);
    o->free(buf);
}

/* ---------------- optimizer ---------------- */

void model_zero_grad(Model *m) { m->ops->zero(m->grads, grad_elems(m) * m->ops->act_bytes); }

float model_grad_norm(Model *m) { return (float)sqrt(m->ops->sumsq(m->grads, grad_elems(m))); }

float model_clip_scale(const AdamWConfig *cfg, float norm) {
    if (cfg->grad_clip > 0.0f) {
        float coef = cfg->grad_clip / (norm + 1e-6f);
        if (coef < 1.0f) return coef;
    }
    return 1.0f;
}

double model_grad_sumsq_range(Model *m, size_t offset, size_t count) {
    return m->ops->sumsq(grad_at(m, offset), count);
}

void *model_params_buffer(Model *m) { return m->params; }
void *model_grads_buffer(Model *m) { return m->grads; }

/* AdamW on [lo, hi) with the state in host memory: chunk by chunk, the
 * gradients downloaded (fp32), the fp32 parameters (the master, or the
 * downloaded fp32 parameters) updated by the CPU backend's adamw (the same
 * update as the backend's), the result uploaded (rounded to the act type). */
static void adamw_offloaded(Model *m, const AdamWConfig *cfg, float lr, int step, size_t lo,
                            size_t hi, float wd, float clip_scale) {
    const Ops *o = m->ops, *h = ops_cpu();
    size_t so = m->opt_off;
    for (size_t x = lo; x < hi; x += OFFLOAD_CHUNK) {
        size_t n = hi - x < OFFLOAD_CHUNK ? hi - x : OFFLOAD_CHUNK;
        float *p = m->master ? m->master + (x - so) : m->off_p;
        o->download(m->off_g, grad_at(m, x), n);
        if (!m->master) o->download(p, param_at(m, x), n);
        h->adamw(p, NULL, m->off_g, m->adam_m + (x - so), m->adam_v + (x - so), n, lr, cfg->beta1,
                 cfg->beta2, cfg->eps, wd, step, clip_scale);
        o->upload(param_at(m, x), p, n);
    }
}

void model_adamw_step_range(Model *m, const AdamWConfig *cfg, float lr, int step, size_t offset,
                            size_t count, float clip_scale) {
    if (offset < m->opt_off || offset + count > m->opt_off + m->opt_n) {
        fprintf(stderr, "model_adamw_step_range: [%zu, %zu) is outside the optimizer shard "
                        "[%zu, %zu)\n",
                offset, offset + count, m->opt_off, m->opt_off + m->opt_n);
        abort();
    }
    /* runs of adjacent tensors with the same decay flag in one call, cut to
     * [offset, offset + count); the optimizer buffers start at opt_off */
    const Ops *o = m->ops;
    size_t end = offset + count, so = m->opt_off;
    for (int i = 0; i < m->n_tensors;) {
        int j = i;
        size_t n = 0;
        while (j < m->n_tensors && m->tensors[j].decay == m->tensors[i].decay)
            n += m->tensors[j++].numel;
        size_t lo = m->tensors[i].offset, hi = lo + n;
        if (lo < offset) lo = offset;
        if (hi > end) hi = end;
        if (lo < hi && m->offload)
            adamw_offloaded(m, cfg, lr, step, lo, hi, m->tensors[i].decay ? cfg->weight_decay : 0.0f,
                            clip_scale);
        else if (lo < hi)
            o->adamw(param_at(m, lo), m->master ? m->master + (lo - so) : NULL, grad_at(m, lo),
                     m->adam_m + (lo - so), m->adam_v + (lo - so),
                     hi - lo, lr, cfg->beta1, cfg->beta2, cfg->eps,
                     m->tensors[i].decay ? cfg->weight_decay : 0.0f, step, clip_scale);
        i = j;
    }
    drop_units(m); /* stage 3: the gathered parameters are the old ones */
}

float model_adamw_step(Model *m, const AdamWConfig *cfg, float lr, int step) {
    float norm = model_grad_norm(m);
    model_adamw_step_range(m, cfg, lr, step, 0, m->n_params, model_clip_scale(cfg, norm));
    return norm;
}

/* The parameters and gradients this rank holds (the whole buffers, or the
 * shard [opt_off, opt_off + opt_n) where the stage shards them), scanned
 * through the host in chunks of NONFINITE_CHUNK elements (4 MiB), never a
 * whole-model copy; a hit is named by the tensor that holds it. When the
 * chunk cannot be allocated the answer says so (a checkpoint is then
 * refused rather than written unchecked). */
#define NONFINITE_CHUNK ((size_t)1 << 20)
const char *model_find_nonfinite(Model *m) {
    float *h = malloc(NONFINITE_CHUNK * sizeof *h);
    if (!h) return "(out of host memory for the finiteness check)";
    const char *found = NULL;
    for (int pass = 0; pass < 2 && !found; pass++) {
        const char *buf = pass ? m->grads : m->params;
        size_t n = pass ? grad_elems(m) : param_elems(m);
        size_t base = n == m->n_params ? 0 : m->opt_off; /* flat offset of buf[0] */
        for (size_t at = 0; at < n && !found; at += NONFINITE_CHUNK) {
            size_t c = n - at < NONFINITE_CHUNK ? n - at : NONFINITE_CHUNK, k = 0;
            m->ops->download(h, buf + at * m->ops->act_bytes, c);
            while (k < c && isfinite(h[k])) k++;
            if (k == c) continue;
            int i = 0; /* the tensor holding flat element base + at + k */
            while (i + 1 < m->n_tensors && m->tensors[i + 1].offset <= base + at + k) i++;
            snprintf(m->nonfinite_name, sizeof m->nonfinite_name, "%s%s", pass ? "grad:" : "",
                     m->tensors[i].name);
            found = m->nonfinite_name;
        }
    }
    free(h);
    return found;
}
