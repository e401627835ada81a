/* plan.c: the memory plan of a training run (see plan.h). Every term names
 * the buffer it stands for; the shapes are model.c's (B, T, N = B*T, C,
 * NH, NKV, HD, QKV, F, UP, V, L) and moe.c's (E experts, K slots, NK =
 * N*K). Alignment padding (64 bytes a block on the CPU, 256 on CUDA) is
 * left out: a few KiB against the GiB that matter. */
#include "trainer/plan.h"

#include "trainer/moe.h"
#include "trainer/safetensors.h"

#define CPU_LMHEAD_CHUNK_ROWS 256                /* kernels/cpu/ops_cpu.c LMHEAD_CHUNK_ROWS */
#define CUDA_LT_WORKSPACE     ((size_t)32 << 20) /* kernels/cuda/ops_cuda.cu lt_ws_bytes */
/* kernels/cuda/ops_cuda.cu: the bf16 table converts uploads and downloads
 * through STAGE_ELEMS (1 << 24) fp32 values of cuda_scratch, which
 * allocates a quarter more than asked */
#define CUDA_BF16_STAGE_SCRATCH (((size_t)1 << 24) * 4 / 4 * 5)

static size_t pad(size_t n, size_t to) {
    return (n + to - 1) / to * to;
}

/* attention's saved floats per layer (ops.h attention_saved_floats): the
 * CUDA bf16 fused kernel keeps B*NH*T log-sum-exps for head dims 64 and
 * 128, everything else the (B, NH, T, T) probabilities */
static size_t att_floats(const ModelConfig *c, const PlanSetup *s) {
    size_t rows = (size_t)s->B * c->n_head * s->T;
    int HD = model_head_dim(c);
    int fused = s->cuda && s->act_bytes == 2 && s->flash_attention && (HD == 64 || HD == 128);
    return fused ? rows : rows * s->T;
}

/* bytes of one layer's LayerActs (model.c ensure_acts); dense_ffn: with the
 * dense FFN's up and act */
static size_t layer_bytes(const ModelConfig *c, const PlanSetup *s, int dense_ffn) {
    size_t ab = s->act_bytes, N = (size_t)s->B * s->T, C = c->d_model, F = c->d_ff;
    size_t HD = model_head_dim(c), QKV = (c->n_head + 2 * c->n_kv_head) * HD;
    size_t UP = c->arch == ARCH_LLAMA ? 2 * F : F, NQK = c->n_head + c->n_kv_head;
    size_t stats = c->arch == ARCH_GPT2 ? 2 : 1;          /* mean and rstd, or rstd */
    size_t b = 4 * N * C * ab;                            /* resid, ln1, resid_mid, ln2 */
    b += 2 * stats * N * 4;                               /* ln1 and ln2 statistics */
    b += N * QKV * ab + N * c->n_head * HD * ab;          /* qkv, atty */
    if (c->qk_norm) b += N * NQK * HD * ab + N * NQK * 4; /* qk_pre, qk_rstd */
    b += att_floats(c, s) * 4;
    if (dense_ffn) b += N * UP * ab + N * F * ab; /* up, act */
    return b;
}

/* one MoE layer's routing state (moe.c moe_ensure_acts): kept per layer
 * with recomputation too */
static size_t moe_route_bytes(const ModelConfig *c, const PlanSetup *s) {
    size_t ab = s->act_bytes, N = (size_t)s->B * s->T, E = c->n_experts, NK = N * c->top_k;
    return N * E * ab + N * E * 4 + N * 4 /* logits, probs, lse */
           + 4 * NK * 4 + (2 * E + 1) * 4; /* top_idx, top_w, row_token, pos; counts */
}

/* one MoE layer's expert activations: shared by all layers with
 * recomputation */
static size_t moe_expert_bytes(const ModelConfig *c, const PlanSetup *s) {
    size_t ab = s->act_bytes, N = (size_t)s->B * s->T, C = c->d_model;
    size_t F = c->d_ff, NK = N * c->top_k;
    return NK * C * ab * 2 + NK * 3 * F * ab; /* xs, ys; gu (2F), h (F) */
}

static size_t moe_layer_bytes(const ModelConfig *c, const PlanSetup *s) {
    return moe_route_bytes(c, s) + moe_expert_bytes(c, s);
}

static int n_moe_layers(const ModelConfig *c) {
    int n = 0;
    for (int l = 0; c->n_experts && l < c->n_layer; l++)
        n += moe_is_layer(c, l);
    return n;
}

/* The largest host buffer of a rank besides the losses: model_init_weights'
 * (and upcycling's) one tensor, or the 4 MiB chunk that checkpoints, loads
 * and the finiteness check stream through (docs/checkpoints.md). */
static size_t host_buffer_bytes(const ModelConfig *c) {
    char err[256];
    size_t n = ST_STREAM_CHUNK;
    Model *t = model_create_table(c, err, sizeof err);
    for (int i = 0; t && i < model_num_tensors(t); i++)
        if (model_tensor(t, i)->numel > n) n = model_tensor(t, i)->numel;
    model_free(t);
    return n * 4;
}

void plan_compute(const ModelConfig *c, const PlanSetup *s, Plan *p) {
    *p = (Plan){0};
    size_t ab = s->act_bytes, N = (size_t)s->B * s->T, C = c->d_model, F = c->d_ff;
    size_t V = c->vocab_size, HD = model_head_dim(c);
    size_t QKV = (c->n_head + 2 * c->n_kv_head) * HD, UP = c->arch == ARCH_LLAMA ? 2 * F : F;
    size_t P = model_config_num_params(c);
    p->n_params = P;
    /* ZeRO: dist_shard gives the first P % W ranks one element more; stage
     * 2 adds a gradient window of the largest unit (two with a tied head:
     * the embeddings' waits through the backward), stage 3 three parameter
     * windows (the unit, the next, the prefetched; model.c
     * model_create_sharded) */
    size_t W = s->zero_world > 1 ? (size_t)s->zero_world : 1, shard = (P + W - 1) / W;
    int stage = W > 1 ? (s->zero_stage ? s->zero_stage : 1) : 0;
    size_t unit = stage >= 2 ? model_config_max_unit(c) : 0;
    p->param_windows = stage >= 3 ? 3 * unit * ab : 0;
    p->grad_windows = stage >= 2 ? (c->tie_embeddings ? 2 : 1) * unit * ab : 0;
    p->params = (stage >= 3 ? shard : P) * ab + p->param_windows;
    p->grads = (stage >= 2 ? shard : P) * ab + p->grad_windows;
    p->moments = shard * 8;
    p->master = ab == 4 ? 0 : shard * 4;

    if (s->recompute) {
        /* train.recompute = "block": one set of block activations that
         * every block reuses (with the dense FFN's when any layer is dense)
         * and each other block's input */
        int any_dense = 0;
        for (int l = 0; l < c->n_layer; l++)
            any_dense |= !moe_is_layer(c, l);
        p->acts += layer_bytes(c, s, any_dense) + (size_t)(c->n_layer - 1) * N * C * ab;
        p->attention = att_floats(c, s) * 4;
    } else {
        for (int l = 0; l < c->n_layer; l++)
            p->acts += layer_bytes(c, s, !moe_is_layer(c, l));
        p->attention = (size_t)c->n_layer * att_floats(c, s) * 4;
    }
    p->attention_fused = att_floats(c, s) < (size_t)s->B * c->n_head * s->T * s->T;
    size_t stats = c->arch == ARCH_GPT2 ? 2 : 1;
    p->acts += 2 * N * C * ab + stats * N * 4; /* resid[L], lnf, its statistics */
    int n_moe = n_moe_layers(c);
    if (n_moe) {
        size_t NK = N * c->top_k, E = c->n_experts;
        p->moe_acts = s->recompute ? (size_t)n_moe * moe_route_bytes(c, s) + moe_expert_bytes(c, s)
                                   : (size_t)n_moe * moe_layer_bytes(c, s);
        /* dys, dxs, dtmp; dh, dgu; dlogits; dtop_w, dprob */
        p->bwd_scratch += 2 * NK * C * ab + N * C * ab + NK * 3 * F * ab + N * E * ab + NK * 4 +
                          (size_t)n_moe * E * 4;
    }
    /* dresid, dln, datty, dbig, dact, datt */
    p->bwd_scratch += 2 * N * C * ab + N * c->n_head * HD * ab + N * (QKV > UP ? QKV : UP) * ab +
                      N * F * ab + att_floats(c, s) * 4;
    p->io = 3 * N * 4;
    if (s->cuda) {
        size_t R = N < (size_t)s->lmhead_chunk_rows ? N : (size_t)s->lmhead_chunk_rows;
        size_t cells = R * pad(V, 64);
        p->lmhead_scratch = pad(cells * 4, 256) + (ab == 4 ? 0 : pad(cells * ab, 256));
        p->cuda_workspace = CUDA_LT_WORKSPACE;
        p->cuda_scratch = ab == 2 ? CUDA_BF16_STAGE_SCRATCH : 0;
        p->context = s->context_bytes;
    } else {
        p->lmhead_scratch = (N < CPU_LMHEAD_CHUNK_ROWS ? N : CPU_LMHEAD_CHUNK_ROWS) * V * 4;
    }
    size_t fixed = p->params + p->grads + p->cuda_workspace + p->cuda_scratch + p->context;
    size_t opt = p->master + p->moments;
    if (s->offload) {
        /* model.c: the state and OFFLOAD_CHUNK (1 << 22) fp32 gradients
         * (and parameters without a master) of staging, in host memory */
        size_t ch = shard < ((size_t)1 << 22) ? shard : ((size_t)1 << 22);
        p->offloaded = opt + ch * 4 * (p->master ? 1 : 2);
        opt = 0;
    }
    p->steady = fixed + opt + p->acts + p->moe_acts + p->bwd_scratch + p->lmhead_scratch + p->io;
    p->peak = p->steady;
    /* one tensor or chunk, losses_host, the offloaded state */
    p->host = host_buffer_bytes(c) + N * 4 + p->offloaded;
    p->act_bytes_per_token =
        (double)(p->acts + p->moe_acts + p->bwd_scratch + p->io) / (double)(N ? N : 1);
}

int plan_max_micro_batch(const ModelConfig *cfg, const PlanSetup *s, size_t budget_bytes,
                         int max_B) {
    PlanSetup t = *s;
    int best = 0;
    for (int B = 1; B <= max_B; B++) {
        Plan p;
        t.B = B;
        plan_compute(cfg, &t, &p);
        if (p.peak > budget_bytes) break; /* the peak grows with B */
        best = B;
    }
    return best;
}

