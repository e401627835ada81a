/* moe.h: the mixture-of-experts FFN of `llama` models (Mixtral semantics):
 * router linear -> softmax over all experts (fp32) -> top-k -> optional
 * renormalisation of the k weights -> sum_k w_k * SwiGLU_expert(x).
 * Dropless: every (token, slot) routing is computed.
 *
 * Also the load-balancing loss (LBL, Qiu et al. 2025) and router z-loss
 * bookkeeping, the per-layer / per-source routing metrics, and upcycling
 * of a dense model into an MoE. docs/moe.md has the math.
 *
 * Objective of one optimizer step (what the gradients accumulated by the
 * micro-batches of a step, summed over ranks, are the gradient of):
 *   L = CE_sum / n_valid_targets_global
 *     + sum_{rank r, micro-batch j} (N_rj / N_global)
 *         * sum_{MoE layers l} [ lbl_coef * LBL_lrj + z_loss_coef * Z_lrj ]
 *   LBL_lrj = s * E * sum_i f_i * P_i,  P_i = mean_n probs[n,i] over the N_rj
 *             tokens of micro-batch j on rank r (carries the gradient),
 *   f_i = c_i / sum_i' c_i' (no gradient), c = routing counts:
 *     micro : of micro-batch j on rank r only;
 *     global: all-reduced over ranks at every micro-batch and summed over
 *             micro-batches 1..j of the step (reset by model_moe_begin_step);
 *   s = 1 (paper normalisation: balanced minimum LBL = 1) or K (HF's).
 *   Z_lrj = mean_n logsumexp(router logits[n])^2.
 * N counts every token position (ignored targets included: the router sees
 * them all); N_global = model_moe_begin_step's n_tokens_global.
 *
 * Invariant: the MoE ops of the backend are non-NULL (model_create checks).
 */
#ifndef DAPT_MOE_H
#define DAPT_MOE_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/ops.h"
#include "trainer/model.h"

/* ---------------- config ---------------- */

/* "none" | "micro" | "global" -> MoeLblMode; a misspelling gets a
 * "did you mean". */
int moe_lbl_mode_parse(const char *s, int *mode, char *err, size_t err_len);
const char *moe_lbl_mode_name(int mode);
/* "paper" | "hf" -> MoeLblNorm */
int moe_lbl_norm_parse(const char *s, int *norm, char *err, size_t err_len);
/* The MoE rules of model_config_check (n_experts = 0: nothing to check). */
int moe_config_check(const ModelConfig *c, char *err, size_t err_len);
/* 1 when layer l has an MoE FFN */
int moe_is_layer(const ModelConfig *c, int l);
/* The load-balancing loss of one layer: f_i = counts_i / sum(counts)
 * (written to f, E), P_i = prob_sum_i / n_tokens (written to p, E);
 * returns s E sum_i f_i P_i, s = K for MOE_LBL_NORM_HF, 1 for paper. */
double moe_lbl(const int64_t *counts, const float *prob_sum, int E, int K, int n_tokens,
               int lbl_norm, double *f, double *p);

/* ---------------- the training loop's API ---------------- */

/* Sets the training-only MoE fields (lbl_mode, lbl_norm, lbl_coef,
 * z_loss_coef) of m from src, e.g. the [moe] keys of a run over a model
 * loaded from init_from or a checkpoint (whose config.json has no loss
 * settings). Checked like model_config_check; no-op on a dense model. */
int model_moe_set_loss(Model *m, const ModelConfig *src, char *err, size_t err_len);

/* Distributed hooks, a non-blocking sum over ranks of n int64 values (the
 * global-LBL expert counts of every MoE layer): begin starts it and sets
 * *req, a handle for finish; finish waits for it and writes the sums into
 * the buf given to begin (until then buf is the caller's and is not read).
 * 0 on success. After the forward of a training micro-batch, the MoE code
 * begins the sum; the first MoE layer's backward finishes it (see
 * moe_before_backward; docs/moe.md says what runs in between). NULL (the
 * default) means one rank. dist_moe_sum_begin/finish (trainer/dist.h, MPI)
 * and dist_nccl_moe_sum_begin/finish (trainer/dist_nccl.h) are such
 * hooks. */
typedef int (*MoeSumBegin)(void *ctx, int64_t *buf, size_t n, void **req, char *err,
                           size_t err_len);
typedef int (*MoeSumFinish)(void *ctx, void *req, char *err, size_t err_len);
void model_moe_set_allreduce(Model *m, MoeSumBegin begin, MoeSumFinish finish, void *ctx);

/* Starts an optimizer step: resets the global-LBL counts and sets the
 * number of token positions of the whole global batch (all ranks, all
 * micro-batches), which weighs each micro-batch's aux loss by
 * N_micro / n_tokens_global. Must be called before the first
 * model_forward_backward of every step of an MoE model. */
int model_moe_begin_step(Model *m, int64_t n_tokens_global, char *err, size_t err_len);

/* Number of MoE layers (0 for a dense model) and their layer indices. */
int model_moe_num_layers(const Model *m);

typedef struct {
    int layer;          /* model layer index */
    int n_tokens;       /* N of the last forward pass */
    double lbl;         /* LBL of the last forward (cfg normalisation, without coef) */
    double z_loss;      /* Z of the last forward (without coef) */
    double load_max;    /* max_i f_i / mean_i f_i of the local counts of the last forward */
    const double *f;    /* (E) f_i used by the LBL of the last forward (sum 1) */
    const double *p;    /* (E) P_i of the last forward */
    const int64_t *counts; /* (E) local routing counts of the last forward */
} MoeLayerStats;
/* Stats of MoE layer i (0 <= i < model_moe_num_layers) from the last
 * forward pass; pointers valid until the next forward. */
int model_moe_layer_stats(const Model *m, int i, MoeLayerStats *out);
/* Aux objective of the last forward: sum_l (lbl_coef LBL_l + z_loss_coef
 * Z_l), times the micro-batch weight in training (1 after model_forward). */
double model_moe_aux_loss(const Model *m);

/* Routing metrics over a logging window. After a forward pass,
 * record the routings of its B rows: row_source[b] = 0 (domain), 1
 * (general), or -1 (not recorded): data/stream.h's StreamRole values. */
int model_moe_record_routing(Model *m, const int *row_source, int B, char *err, size_t err_len);
typedef struct {
    int n_layers, n_experts;
    /* per MoE layer i, expert e (arrays of n_layers * n_experts, row-major) */
    double *dist[2];  /* routing distribution per source (0 domain, 1 general); sums to 1 */
    double *load_max; /* (n_layers) max/mean of f over both sources */
    double *jsd;      /* (n_layers) Jensen-Shannon divergence (nats) domain vs general */
    double specialization; /* mean of jsd over layers (NaN when a source has no tokens) */
    double worst_load;     /* max of load_max over layers */
} MoeMetrics;
/* Fills *out from the routings recorded since the last reset (arrays
 * malloc'd; moe_metrics_free). */
int model_moe_metrics(const Model *m, MoeMetrics *out, char *err, size_t err_len);
void moe_metrics_free(MoeMetrics *mm);
void model_moe_metrics_reset(Model *m);

/* Upcycling: a new MoE model (moe_cfg: the dense config plus MoE fields;
 * every size must match the dense one's) on dense's backend whose shared
 * tensors are copies of dense's, whose experts in MoE layers all start as
 * copies of that layer's dense FFN (w1 = gate_proj, w3 = up_proj, w2 =
 * down_proj) plus N(0, noise_std) noise when noise_std > 0, and whose
 * router is N(0, 0.02) from seed. */
Model *model_upcycle(Model *dense, const ModelConfig *moe_cfg, float noise_std, uint64_t seed,
                     char *err, size_t err_len);

/* ---------------- internal: used by trainer/model.c and model_moe.c ---------------- */

typedef struct MoeState MoeState;
MoeState *moe_create(const ModelConfig *c, const Ops *ops, char *err, size_t err_len);
void moe_free(MoeState *s);
/* activations for N rows (reallocating when N grows) */
int moe_ensure_acts(MoeState *s, int N, char *err, size_t err_len);
/* out (N, C) = MoE FFN of x (N, C) for model layer l; params: the model's
 * parameter buffer, router_off / expert0_off: element offsets of the
 * router and of expert 0's w1 (experts contiguous: w1, w3, w2 each). */
void moe_layer_fwd(MoeState *s, int l, const void *params, size_t router_off, size_t expert0_off,
                   void *out, const void *x, int N);
/* moe_layer_fwd again, for the backward of a recomputing model
 * (MODEL_RECOMPUTE_BLOCK): fails (message in err) when the routing counts
 * differ from the forward's (moe_after_forward's copy), which would make
 * the gradients those of another routing. The LBL counts are not counted
 * again: moe_after_forward alone adds them up. */
int moe_layer_refwd(MoeState *s, int l, const void *params, size_t router_off, size_t expert0_off,
                    void *out, const void *x, int N, char *err, size_t err_len);
/* on: the expert activations (xs, gu, h, ys: the bulk) become one layer's
 * worth, shared by all MoE layers (the routing stays per layer); frees
 * the activations when it changes (the next moe_ensure_acts allocates) */
void moe_set_recompute(MoeState *s, int on);
/* backend bytes moe_ensure_acts allocated */
size_t moe_activation_bytes(const MoeState *s);
/* After all layers' forward: z values and coefficients; counts -> f, LBL
 * values and gradients, except in global mode when training with sum
 * hooks: then it begins the counts' sum over ranks and
 * moe_before_backward does the rest. */
int moe_after_forward(MoeState *s, int training, char *err, size_t err_len);
/* Before each MoE layer's backward (a no-op but for the first of a pass):
 * finishes the counts' sum begun by moe_after_forward, then f, the LBL
 * values and the LBL gradients of every layer (one upload). */
int moe_before_backward(MoeState *s, char *err, size_t err_len);
/* dx (N, C) OVERWRITTEN = d(MoE FFN)/dx . dout; parameter grads +=. */
void moe_layer_bwd(MoeState *s, int l, const void *params, void *grads, size_t router_off,
                   size_t expert0_off, void *dx, const void *dout, const void *x, int N);
/* The loop's API above on the state itself (model_moe.c forwards each
 * model_moe_X(m, ...) to moe_X(model_moe_state(m), ...); s NULL: a dense
 * model, nothing to do, except moe_set_loss, which needs a state). */
int moe_set_loss(MoeState *s, const ModelConfig *src, char *err, size_t err_len);
void moe_set_allreduce(MoeState *s, MoeSumBegin begin, MoeSumFinish finish, void *ctx);
int moe_begin_step(MoeState *s, int64_t n_tokens_global, char *err, size_t err_len);
int moe_num_layers(const MoeState *s);
int moe_layer_stats(const MoeState *s, int i, MoeLayerStats *out);
double moe_aux_loss(const MoeState *s);
int moe_record_routing(MoeState *s, const int *row_source, int B, char *err, size_t err_len);
int moe_metrics(const MoeState *s, MoeMetrics *out, char *err, size_t err_len);
void moe_metrics_reset(MoeState *s);
/* model.c's accessor for the state of m (NULL for a dense model) */
MoeState *model_moe_state(const Model *m);

#endif
