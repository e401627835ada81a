/* model.h: the transformer graph shared by every backend: GPT-2 (LayerNorm,
 * learned positions, GELU, biases) and Llama (RMSNorm, RoPE, SwiGLU, GQA, no
 * biases unless qkv_bias, Qwen2-style; per-head q/k RMSNorm and a free head
 * size with qk_norm and head_dim, Qwen3-style; RoPE frequencies scaled as
 * Llama 3.x's rope_scaling). Forward, backward, AdamW.
 *
 * Parameters live in one contiguous backend buffer carved into views named
 * with the Hugging Face tensor names; gradients mirror it element for
 * element (same offsets). In memory every linear weight is [out, in] (the
 * nn.Linear layout); the HF GPT-2 Conv1D weights are [in, out] on disk, which
 * ParamTensor.hf_transposed records for the checkpoint code.
 *
 * Invariants: a Model's activations are sized for the largest B*T seen so
 * far; a backward pass uses the activations of the last forward pass, which
 * must have been called with the same tokens. Only the ops table touches
 * backend memory.
 */
#ifndef DAPT_MODEL_H
#define DAPT_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/ops.h"

typedef enum { ARCH_GPT2 = 0, ARCH_LLAMA = 1 } Arch;

/* RoPE frequency scaling (Hugging Face config.json "rope_scaling"; llama):
 * none; linear: inv_freq / factor (positions divided by factor); llama3:
 * transformers' _compute_llama3_parameters remap, low frequencies divided
 * by factor, high ones kept, a smooth blend between (model_rope_inv_freq). */
typedef enum { ROPE_SCALING_NONE = 0, ROPE_SCALING_LINEAR = 1, ROPE_SCALING_LLAMA3 = 2 } RopeScaling;

typedef struct {
    Arch arch;
    int n_layer;
    int n_head;
    int n_kv_head; /* == n_head for gpt2 and plain multi-head attention */
    int d_model;
    int d_ff; /* MLP hidden size (gpt2: usually 4*d_model) */
    int vocab_size;
    int max_seq_len;
    float rope_theta; /* llama only */
    float norm_eps;
    int tie_embeddings; /* LM head shares the token embedding */
    int qkv_bias;       /* llama: bias on q/k/v projections (Qwen2) */
    int head_dim;       /* llama: size of a head; 0 = d_model / n_head (model_head_dim).
                         * q_proj is (n_head*head_dim, d_model), o_proj (d_model, n_head*head_dim) */
    int qk_norm;        /* llama: RMSNorm (weights of head_dim, eps norm_eps) on every q and
                         * k head after the projection, before RoPE (Qwen3's q_norm, k_norm) */
    /* ---- RoPE scaling (llama; RopeScaling) ---- */
    int rope_scaling;           /* RopeScaling */
    float rope_factor;          /* linear, llama3: > 0 */
    float rope_low_freq_factor; /* llama3 */
    float rope_high_freq_factor;     /* llama3: > rope_low_freq_factor */
    int rope_original_max_pos;  /* llama3: original_max_position_embeddings, >= 1 */
    /* ---- mixture of experts (llama only; trainer/moe.h, docs/moe.md) ---- */
    int n_experts;       /* 0: dense FFN everywhere; >= 2: experts per MoE layer */
    int top_k;           /* experts per token, 1..n_experts */
    int moe_layer_start; /* layer l is MoE when l >= start and (l - start) % step == 0 */
    int moe_layer_step;  /* >= 1 (1: every layer from start on, as Mixtral) */
    int norm_topk_prob;  /* renormalise the k routing weights to sum 1 (Mixtral: 1) */
    int lbl_mode;        /* MoeLblMode: load-balancing loss statistics scope */
    int lbl_norm;        /* MoeLblNorm: paper (balanced minimum 1) or HF (top_k times larger) */
    float lbl_coef;      /* weight of the load-balancing loss (paper: 0.008, paper norm) */
    float z_loss_coef;   /* weight of the router z-loss (0: off) */
} ModelConfig;

/* Load-balancing loss modes ([moe] lbl = "none" | "micro" | "global"). */
typedef enum { MOE_LBL_NONE = 0, MOE_LBL_MICRO = 1, MOE_LBL_GLOBAL = 2 } MoeLblMode;
/* LBL normalisation: paper f_i = count_i / (K n_tokens) (sum 1, balanced
 * minimum LBL = 1); hf f_i = count_i / n_tokens (transformers'
 * load_balancing_loss_func, top_k times larger). */
typedef enum { MOE_LBL_NORM_PAPER = 0, MOE_LBL_NORM_HF = 1 } MoeLblNorm;

/* Defaults for an architecture (sizes must still be set). */
ModelConfig model_config_default(Arch arch);
/* "gpt2" | "llama" -> Arch; 0 on success. */
int model_arch_parse(const char *name, Arch *arch, char *err, size_t err_len);
const char *model_arch_name(Arch arch);
/* Every rule a config must satisfy; the message names the value and the rule. */
int model_config_check(const ModelConfig *cfg, char *err, size_t err_len);
/* 1 when a and b describe the same parameters and the same function (the
 * training-only MoE loss options aside): what a checkpoint's config.json must
 * match to resume. */
int model_config_same(const ModelConfig *a, const ModelConfig *b);
/* The size of a head: head_dim, or d_model / n_head when it is 0. */
int model_head_dim(const ModelConfig *cfg);
/* "none" | "linear" | "llama3" (Hugging Face's rope_type names). */
const char *model_rope_scaling_name(int rope_scaling);
/* RoPE's inverse frequencies (model_head_dim / 2 floats) as transformers
 * computes them in fp32: theta^(-2i/HD), then the config's scaling. The one
 * place they are computed: the forward passes hand them to the rope ops,
 * GGUF export derives llama.cpp's frequency factors from them. */
void model_rope_inv_freq(const ModelConfig *cfg, float *inv_freq);

typedef struct {
    char name[96];    /* Hugging Face name, e.g. model.layers.0.self_attn.q_proj.weight */
    size_t offset;    /* in elements, into params and grads */
    size_t numel;
    int ndim;         /* 1 or 2 */
    int shape[2];     /* in-memory shape: [out, in] for linear weights */
    int decay;        /* AdamW weight decay applies (matrices, embeddings) */
    int hf_transposed; /* HF stores it as shape[1] x shape[0] (GPT-2 Conv1D) */
} ParamTensor;

/* Indices into Model.tensors for one block; -1 when absent. qkv_w points at
 * the first of the adjacent q, k, v weights (one stacked (QKV, C) matrix);
 * up_w at gpt2's c_fc or at llama's adjacent gate_proj, up_proj (one stacked
 * (2F, C) matrix). */
typedef struct {
    int ln1_w, ln1_b, qkv_w, qkv_b, o_w, o_b, ln2_w, ln2_b, up_w, up_b, down_w, down_b;
    int q_norm_w, k_norm_w; /* qk_norm: (HD) each; -1 otherwise */
    /* MoE layers (up_w, down_w are -1 there): the router (E, C) and the
     * first expert tensor; expert e's w1 (F, C), w3 (F, C), w2 (C, F) are
     * tensors moe_expert0 + 3e + 0, 1, 2 (w1, w3 adjacent: one (2F, C)
     * gate|up matrix). -1 on dense layers. */
    int moe_router, moe_expert0;
} LayerTensors;

typedef struct {
    float beta1, beta2, eps, weight_decay;
    float grad_clip; /* <= 0: no clipping */
} AdamWConfig;

typedef struct Model Model;

/* Builds the parameter table and allocates parameters, gradients and
 * optimizer state on the backend (parameters zero until model_init_weights
 * or model_set_params). Returns NULL with a message on a bad config or when
 * memory runs out. */
Model *model_create(const ModelConfig *cfg, const Ops *ops, char *err, size_t err_len);

/* ZeRO data parallelism (dist.zero, docs/distributed.md). The flat
 * parameter buffer is cut into world contiguous pieces, rank r's being
 * pieces[r] elements after those of ranks 0..r-1 (they sum to the model's
 * parameters; trainer/dist.h dist_shard makes them). A rank keeps, of its
 * piece only:
 *   stage 1: the optimizer state (Adam m, v; the fp32 master weights on a
 *            bf16 act type); parameters and gradients whole;
 *   stage 2: also the gradients: the backward writes each unit's
 *            gradients (below) into a window, and when the unit is done the
 *            window is reduce-scattered over the ranks and the rank's part
 *            added to its gradient shard (every micro-batch);
 *   stage 3: also the parameters: before a unit's parameters are read (in
 *            the forward, and again in the backward) they are all-gathered
 *            into one of three windows, the next unit's gather begun while
 *            the current one computes (ModelShardComm.allgather_begin); a
 *            gathered unit stays until its window is needed for another, or
 *            the parameters change.
 * Units: 0 = everything before block 0 (embeddings), 1 + l = block l
 * (from its first norm on), L + 1 = the final norm and an untied head.
 * Stage 0 keeps everything whole (the plain model). */
typedef struct {
    int stage;             /* 0..3 */
    int world, rank;       /* world >= 1, 0 <= rank < world */
    const size_t *pieces;  /* (world) copied; NULL: the whole model on one rank */
    /* optimizer offload (train.offload_optimizer; any stage, 0 too): the
     * Adam moments and the fp32 master weights of the shard live in host
     * memory (the backend's alloc_host: pinned on CUDA) and AdamW runs on
     * the host (the CPU backend's adamw, OpenMP), chunk by chunk: the
     * gradients downloaded, the updated parameters uploaded. */
    int offload;
} ModelShard;
/* model_create for this rank's shard: nothing is ever allocated whole that
 * the stage shards (no start-up peak). sh NULL: model_create. */
Model *model_create_sharded(const ModelConfig *cfg, const Ops *ops, const ModelShard *sh,
                            char *err, size_t err_len);
/* The collectives stages 2 and 3 need, on backend buffers in place, with
 * the layout of trainer/dist.h: rank r's piece is counts[r] elements at
 * counts[0] + ... + counts[r-1] (some counts may be 0). allgather copies
 * every rank's piece to every rank; reduce_scatter sums rank r's piece over
 * the ranks into rank r's piece. Every rank calls them in the same order
 * (the model's unit sequence is the same on every rank). Nonzero, with a
 * message, is an error that ends the pass. At world size 1 none is needed. */
typedef struct {
    int (*allgather)(void *ctx, void *buf, const size_t *counts, char *err, size_t err_len);
    int (*reduce_scatter)(void *ctx, void *buf, const size_t *counts, char *err,
                          size_t err_len);
    /* Optional (NULL: no prefetch): stage 3's gather of the next unit, begun
     * after the kernels that read the current ones were queued and waited
     * for when the unit is needed; one in flight at a time, and the model
     * waits for it before any other collective. begin may return with the
     * gather done (a blocking transport), wait then has nothing to do. */
    int (*allgather_begin)(void *ctx, void *buf, const size_t *counts, char *err,
                           size_t err_len);
    int (*allgather_wait)(void *ctx, char *err, size_t err_len);
    void *ctx;
} ModelShardComm;
void model_set_shard_comm(Model *m, const ModelShardComm *sc);
/* The ZeRO stage the model was created for (0 when unsharded). */
int model_zero_stage(const Model *m);
/* 1 when the optimizer state is offloaded to host memory (ModelShard). */
int model_offload(const Model *m);
/* Host bytes of the offloaded optimizer state and its staging buffers (0
 * without offload). */
size_t model_offload_host_bytes(const Model *m);
/* Backend bytes of parameters and gradients (the shards and the windows
 * under stages 2 and 3), for the start-up line and the plan. */
size_t model_param_bytes(const Model *m);
size_t model_grad_bytes(const Model *m);
/* Stage 3: a forward pass that joins the parameter gathers of a
 * model_forward with targets without computing anything useful (B = T = 1,
 * token 0): a rank with no evaluation batch left runs it so that every rank
 * gathers the same units in the same order. Other stages: nothing. */
int model_forward_join(Model *m, char *err, size_t err_len);
void model_free(Model *m);

const ModelConfig *model_config(const Model *m);
const Ops *model_ops(const Model *m);
size_t model_num_params(const Model *m);
/* The parameters model_create would allocate for cfg (a valid config),
 * counted without allocating them (0 when host memory runs out). */
size_t model_config_num_params(const ModelConfig *cfg);
/* The largest ZeRO unit of cfg (model_create_sharded), in elements: the size
 * of one parameter or gradient window under stages 2 and 3 (0 when host
 * memory runs out). */
size_t model_config_max_unit(const ModelConfig *cfg);
/* The parameter table of cfg alone, nothing allocated on a backend: for
 * tools that move weights between files tensor by tensor (GGUF export)
 * without a Model's buffers. Only the table's accessors (model_config,
 * model_num_params, model_num_tensors, model_tensor, model_find_tensor) and
 * model_free may be called on it. */
Model *model_create_table(const ModelConfig *cfg, char *err, size_t err_len);
int model_num_tensors(const Model *m);
const ParamTensor *model_tensor(const Model *m, int i);
/* index of the tensor with this HF name, or -1 */
int model_find_tensor(const Model *m, const char *name);

/* GPT-2 initialisation with a seed: weights N(0, 0.02), residual output
 * projections N(0, 0.02/sqrt(2 n_layer)), biases 0, norm weights 1. */
void model_init_weights(Model *m, uint64_t seed);
/* Host fp32 copies of all parameters / gradients (model_num_params floats,
 * in-memory layout, tensor by tensor at their offsets). With a bf16 act type
 * the parameters are the fp32 master weights (get), and set writes both the
 * master and its bf16 rounding. A sharded model (model_shard_optimizer)
 * keeps the master of its shard only: get returns it there and the bf16
 * parameters elsewhere, set reads src's shard into the master. */
void model_get_params(const Model *m, float *dst);
void model_set_params(Model *m, const float *src);
/* The same for parameters [offset, offset + count) only (host fp32, count
 * floats), so that checkpoints and loaders move a model tensor by tensor or
 * chunk by chunk instead of through a whole-model host buffer. get returns
 * the fp32 master where the range lies in the optimizer shard (the bf16
 * parameters elsewhere); set writes the parameters (their bf16 rounding on
 * a bf16 table) and the master of the part inside the shard. A range
 * outside the parameters is a programming error and aborts. */
void model_get_param_range(const Model *m, size_t offset, size_t count, float *dst);
void model_set_param_range(Model *m, size_t offset, size_t count, const float *src);
void model_get_grads(const Model *m, float *dst);

/* Forward pass on tokens (B*T, host int32). With targets (B*T, host int32,
 * < 0 = ignored) the per-token losses are computed and *mean_loss is their
 * mean over non-ignored positions (NaN when all are ignored). Fails with a
 * message when T > max_seq_len or a token id is out of range. */
int model_forward(Model *m, const int32_t *tokens, const int32_t *targets, int B, int T,
                  float *mean_loss, char *err, size_t err_len);
/* Forward and backward in one pass (the LM head and cross-entropy are fused),
 * accumulating into the gradients: grad += grad_scale * d(sum of token
 * losses)/d(param). For a batch of micro-batches, pass grad_scale = 1 /
 * (non-ignored targets in the whole batch) so the gradient is that of the
 * batch's mean loss. */
int model_forward_backward(Model *m, const int32_t *tokens, const int32_t *targets, int B, int T,
                           float grad_scale, float *mean_loss, char *err, size_t err_len);
/* A hook the backward of model_forward_backward calls as gradients become
 * final, for collectives that overlap the rest of the backward: after the
 * final norm (offset = the norm weight's), after each block (offset = its
 * first tensor's, the blocks from the last down) and after the embedding
 * (offset 0). Each call means: gradient elements [offset, model_num_params)
 * are written for this backward, and no kernel still to run in it writes
 * them (the backend's queue may still be running the kernels that did:
 * order a collective after them, e.g. with an event on the compute stream).
 * Offsets never increase; a tied embedding sits at offset 0, so its two
 * writes (head and embedding) are both before the last call. Nonzero
 * (message in err) ends the backward with that error. NULL: no hook. */
typedef int (*ModelGradReady)(void *ctx, size_t offset, char *err, size_t err_len);
void model_set_grad_ready(Model *m, ModelGradReady fn, void *ctx);
/* The forward's counterpart, for parameters still arriving (ZeRO-1's
 * all-gather overlapped with the next forward): forward passes
 * (model_forward, model_forward_backward) call it before they read
 * parameter elements below `end`: before the embedding (end = the first
 * block's qkv weight: the embedding and block 0's norm), before each block
 * l (end = block l + 1's qkv weight: the next block's norm is computed at
 * the end of block l) and before the last block (end = model_num_params:
 * the final norm and the head too). A call returns once those parameters
 * may be read by kernels launched after it. Ends never decrease within a
 * pass. Nonzero (message in err) ends the pass with that error. NULL: no
 * hook. */
void model_set_params_needed(Model *m, ModelGradReady fn, void *ctx);
/* Activation recomputation ([train] recompute). NONE keeps every block's
 * activations from the forward for the backward. BLOCK keeps each block's
 * input x_l (and the MoE routing counts, to check the recomputation) and
 * one block's worth of activations, shared by all blocks: the backward runs
 * each block's forward again, from x_l, just before that block's backward.
 * Same ops on the same inputs, so the gradients are bitwise those of NONE
 * (ops.h: deterministic); the cost is about one more forward per step. */
typedef enum { MODEL_RECOMPUTE_NONE = 0, MODEL_RECOMPUTE_BLOCK = 1 } ModelRecompute;
/* "none" | "block" -> ModelRecompute; 0 on success. */
int model_recompute_parse(const char *name, int *mode, char *err, size_t err_len);
const char *model_recompute_name(int mode);
/* Sets the mode; the activations are freed when it changes and allocated
 * again, for the mode, by the next forward pass. */
void model_set_recompute(Model *m, int mode);
int model_recompute(const Model *m);

/* Documents packed in a window (data.doc_mask, docs/data.md): a document
 * ends with eos_id (the EOS is its last token; the next token starts the
 * next document), and every token attends only to the tokens of its own
 * document up to itself. reset_positions: RoPE positions count from each
 * document's start (GPT-2's learned positions are not reset: refused).
 * eos_id < 0 turns both off. Every later forward (training, evaluation)
 * masks. 1 and err when the backend has no document-masked attention
 * (ops.h attention_doc_fwd: the CPU backend has it, CUDA not yet). */
int model_set_doc_mask(Model *m, int eos_id, int reset_positions, char *err, size_t err_len);
/* Backend bytes allocated for activations and backward scratch (the MoE
 * FFN's included) for the largest B*T seen so far: 0 before the first
 * forward pass. */
size_t model_activation_bytes(const Model *m);
/* Per-token losses of the last forward pass (B*T floats, host). */
const float *model_token_losses(const Model *m);
/* Logits of the last forward pass, (B*T, V) fp32 into host dst. */
void model_logits(Model *m, float *dst);

void model_zero_grad(Model *m);
/* Global gradient L2 norm (before clipping). */
float model_grad_norm(Model *m);
/* Clip (coefficient min(1, clip / (norm + 1e-6)), as torch's
 * clip_grad_norm_) and apply one AdamW step with learning rate lr; weight
 * decay only on tensors with decay set. step counts from 1. Returns the
 * gradient norm before clipping. */
float model_adamw_step(Model *m, const AdamWConfig *cfg, float lr, int step);
/* The clipping coefficient model_adamw_step applies for a gradient norm. */
float model_clip_scale(const AdamWConfig *cfg, float norm);
/* Sum of squares of gradients [offset, offset + count) (elements). */
double model_grad_sumsq_range(Model *m, size_t offset, size_t count);
/* AdamW (as model_adamw_step) on parameters [offset, offset + count) only,
 * gradients multiplied by clip_scale; ZeRO-1 steps each rank's shard with
 * it. model_adamw_step is this over the whole buffer. The range must lie in
 * the optimizer shard (the whole buffer unless model_shard_optimizer was
 * called); outside it is a programming error and aborts. */
void model_adamw_step_range(Model *m, const AdamWConfig *cfg, float lr, int step, size_t offset,
                            size_t count, float clip_scale);
/* The backend buffers of parameters and gradients: model_num_params
 * elements of model_ops(m)->act_bytes bytes each, host memory on the CPU
 * backend and device memory on CUDA; for collectives that work in place. */
void *model_params_buffer(Model *m);
void *model_grads_buffer(Model *m);
/* Optimizer moments, host fp32 copies (for checkpoints and tests), always
 * model_num_params floats each. A sharded model gets its shard at the
 * shard's offset and zeroes the rest; set reads only the shard's range. */
void model_get_adam_state(const Model *m, float *m_dst, float *v_dst);
void model_set_adam_state(Model *m, const float *m_src, const float *v_src);

/* The same for the optimizer shard alone (model_optimizer_count floats
 * each, the shard's first element first): a ZeRO-1 checkpoint writes and
 * reads each rank's shard without a whole-model host copy. get_params_shard
 * returns the fp32 master weights of the shard (the parameters themselves
 * when the act type is fp32). */
void model_get_params_shard(const Model *m, float *dst);
void model_get_adam_shard(const Model *m, float *m_dst, float *v_dst);
void model_set_adam_shard(Model *m, const float *m_src, const float *v_src);

/* ZeRO-1: keep the optimizer state (Adam m and v, and the fp32 master
 * weights when the act type has them) for parameters [offset, offset +
 * count) only, freeing the rest; the parameters and gradients stay whole.
 * Call it once, right after model_create and before any state is set, so
 * that the whole state is never allocated twice (called later, the shard's
 * part of the current state is kept). Afterwards model_adamw_step_range
 * takes ranges inside the shard only (model_adamw_step needs the whole
 * buffer), and the whole parameters outside the shard are whatever was set
 * or collectively gathered (the bf16 rounding of the other ranks' masters).
 * The whole range is a no-op; without this call nothing changes. Fails
 * (message in err) on a range outside the parameters, a second call, or no
 * memory. */
int model_shard_optimizer(Model *m, size_t offset, size_t count, char *err, size_t err_len);
/* The optimizer shard (0 and model_num_params unless sharded). */
size_t model_optimizer_offset(const Model *m);
size_t model_optimizer_count(const Model *m);
/* Bytes of optimizer state this model holds: m and v, plus the fp32 master
 * weights when the act type keeps them (on the backend, or offloaded in
 * host memory: model_offload). */
size_t model_optimizer_bytes(const Model *m);

/* Name of the first parameter or gradient tensor holding a NaN or Inf
 * (prefixed "grad:" for gradients), or NULL when everything is finite. */
const char *model_find_nonfinite(Model *m);

#endif
