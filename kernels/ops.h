/* ops.h: the op contract. Every numerical operation the model graph performs
 * is listed here, forward and backward, as a function pointer in `Ops`. A
 * backend (kernels/cpu, kernels/cuda) fills one `Ops` table; the model code
 * (trainer/model.c) calls only through it, so one graph serves every backend
 * and tests can compare backends op by op.
 *
 * Conventions, binding on every backend:
 * - Buffers are backend memory obtained from ops->alloc. Activations, params
 *   and their gradients have the backend's element type ("act" type:
 *   fp32 on CPU; bf16 or fp32 on CUDA), `ops->act_bytes` bytes each, passed
 *   as void*. Buffers typed `float *` are always fp32 (norm statistics,
 *   per-token losses, AdamW master weights and moments). Token ids are
 *   int32 in backend memory.
 * - Shapes are row-major; N = B*T rows. A linear layer's weight is
 *   [OC, IC] (the Hugging Face nn.Linear layout), out = inp @ W^T + bias.
 * - Backward ops ACCUMULATE (+=) into parameter gradients and into the
 *   gradient of an input that has several consumers (the residual stream:
 *   `dinp` of the norms). Other input gradients are OVERWRITTEN; each op says
 *   which. Accumulation is what gradient accumulation over micro-batches and
 *   the residual stream rely on.
 * - Ops are asynchronous on a device backend; `sync` waits for them.
 *   Host<->backend copies (`upload`, `download`) convert between fp32 on the
 *   host and the act type.
 * - Deterministic: the same inputs and thread count give bitwise the same
 *   outputs (resume and parity tests depend on it).
 */
#ifndef DAPT_OPS_H
#define DAPT_OPS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct Ops {
    const char *name; /* "cpu", "cuda", "cuda-fp32" */
    size_t act_bytes; /* bytes per activation/parameter element */

    /* ---- memory ---- */
    void *(*alloc)(size_t n_bytes); /* zero-filled; NULL on failure */
    void (*free)(void *p);
    /* host memory the backend copies to and from fastest (CUDA: pinned),
     * zero-filled; NULL on failure. NULL ops: calloc / free serve. */
    void *(*alloc_host)(size_t n_bytes);
    void (*free_host)(void *p);
    void (*zero)(void *p, size_t n_bytes);
    void (*sync)(void);
    /* host fp32 -> act type (n elements) */
    void (*upload)(void *dst, const float *src, size_t n);
    /* act type -> host fp32 */
    void (*download)(float *dst, const void *src, size_t n);
    /* raw bytes host -> backend / backend -> host (token ids, fp32 stats) */
    void (*upload_bytes)(void *dst, const void *src, size_t n_bytes);
    void (*download_bytes)(void *dst, const void *src, size_t n_bytes);
    /* raw bytes backend -> backend (ordered with the ops; buffers disjoint) */
    void (*copy)(void *dst, const void *src, size_t n_bytes);

    /* ---- embeddings ----
     * out[n,:] = wte[tokens[n],:] (+ wpe[n % T,:] when wpe != NULL) */
    void (*embed_fwd)(void *out,            /* (N, C) */
                      const int32_t *tokens, /* (N) */
                      const void *wte,       /* (V, C) */
                      const void *wpe,       /* (maxT, C) or NULL */
                      int B, int T, int C);
    /* dwte += scatter of dout rows; dwpe += sum over b (when non-NULL) */
    void (*embed_bwd)(void *dwte, void *dwpe, const void *dout, const int32_t *tokens, int B,
                      int T, int C);

    /* ---- norms ----
     * layernorm: out = (x - mean) * rstd * w + b; saves mean, rstd (fp32). */
    void (*layernorm_fwd)(void *out, float *mean, float *rstd, /* (N,C) (N) (N) */
                          const void *inp, const void *w, const void *b, /* (N,C) (C) (C) */
                          int N, int C, float eps);
    /* dinp += ; dw += ; db += */
    void (*layernorm_bwd)(void *dinp, void *dw, void *db, const void *dout, const void *inp,
                          const void *w, const float *mean, const float *rstd, int N, int C);
    /* rmsnorm: out = x * rstd * w, rstd = 1/sqrt(mean(x^2) + eps) */
    void (*rmsnorm_fwd)(void *out, float *rstd, const void *inp, const void *w, int N, int C,
                        float eps);
    /* dinp += ; dw += */
    void (*rmsnorm_bwd)(void *dinp, void *dw, const void *dout, const void *inp, const void *w,
                        const float *rstd, int N, int C);

    /* ---- linear layers ----
     * out (N, OC) = inp (N, IC) @ w^T (w: (OC, IC)) + bias (OC, or NULL) */
    void (*matmul_fwd)(void *out, const void *inp, const void *w, const void *bias, int N, int IC,
                       int OC);
    /* dinp = dout @ w (OVERWRITTEN; skipped when dinp == NULL);
     * dw += dout^T @ inp; dbias += colsum(dout) (when non-NULL) */
    void (*matmul_bwd)(void *dinp, void *dw, void *dbias, const void *dout, const void *inp,
                       const void *w, int N, int IC, int OC);

    /* ---- attention ----
     * qkv rows hold [q heads | k heads | v heads]: (N, (NH + 2*NKV) * HD), each
     * head HD contiguous values. Query head h attends with kv head
     * h / (NH / NKV) (grouped-query attention; NKV == NH is plain MHA).
     * rope: rotates the NH q heads and NKV k heads of every row in place, at
     * position t = n % T, in the Hugging Face rotate_half layout:
     *   for i < HD/2, f = inv_freq[i], a = t*f (fp32 product), cos a and sin a
     *   of that fp32 angle:
     *   x'[i] = x[i] cos a - x[i+HD/2] sin a;  x'[i+HD/2] = x[i+HD/2] cos a + x[i] sin a
     * inv_freq: HD/2 floats in HOST memory (the model's model_rope_inv_freq:
     * theta^(-2i/HD), scaled as the config says); read during the call only. */
    void (*rope_fwd)(void *qkv, int B, int T, int NH, int NKV, int HD, const float *inv_freq);
    /* the inverse rotation, in place on the q and k parts of dqkv */
    void (*rope_bwd)(void *dqkv, int B, int T, int NH, int NKV, int HD, const float *inv_freq);
    /* causal softmax(q k^T / sqrt(HD)) v.
     * out: (N, NH*HD); att: what the backward needs, fp32: the (B, NH, T, T)
     * probabilities (the upper triangle is never read), unless the backend's
     * attention_saved_floats says otherwise (a fused kernel keeps B*NH*T
     * log-sum-exps instead and recomputes the probabilities). */
    void (*attention_fwd)(void *out, float *att, const void *qkv, int B, int T, int NH, int NKV,
                          int HD);
    /* dqkv OVERWRITTEN (all of q, k, v parts); datt: fp32 scratch of the
     * same size as att; out: attention_fwd's output for these inputs */
    void (*attention_bwd)(void *dqkv, float *datt, const void *dout, const void *out,
                          const void *qkv, const float *att, int B, int T, int NH, int NKV,
                          int HD);

    /* ---- activations ----
     * gelu, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
    void (*gelu_fwd)(void *out, const void *inp, size_t n);
    /* dinp OVERWRITTEN */
    void (*gelu_bwd)(void *dinp, const void *inp, const void *dout, size_t n);
    /* swiglu: gu rows are [gate (F) | up (F)]; out = silu(gate) * up, (N, F) */
    void (*swiglu_fwd)(void *out, const void *gu, int N, int F);
    /* dgu (N, 2F) OVERWRITTEN */
    void (*swiglu_bwd)(void *dgu, const void *dout, const void *gu, int N, int F);
    /* out = a + b (out may alias a or b) */
    void (*residual_fwd)(void *out, const void *a, const void *b, size_t n);

    /* ---- LM head fused with softmax cross-entropy ----
     * For each row n: logits = x[n] @ w^T (V values, never all stored: rows
     * are processed in chunks through `scratch`), losses[n] =
     * logsumexp(logits) - logits[targets[n]], or 0 when targets[n] < 0
     * (ignored position).
     * When dx != NULL (training), also: dlogits = (softmax - onehot) *
     * grad_scale for non-ignored rows (0 for ignored ones), dx = dlogits @ w
     * (OVERWRITTEN), dw += dlogits^T @ x.
     * scratch: at least ops->lmhead_scratch_bytes(N, V) bytes. */
    void (*lmhead_ce)(float *losses, void *dx, void *dw, const void *x, const void *w,
                      const int32_t *targets, int N, int C, int V, float grad_scale,
                      void *scratch);
    size_t (*lmhead_scratch_bytes)(int N, int V);

    /* ---- optimizer ----
     * sum of squares of n gradient elements, accumulated in at least fp32 */
    double (*sumsq)(const void *g, size_t n);
    /* AdamW (decoupled weight decay), step t >= 1, on n elements:
     *   g = grad * grad_scale (clipping folds into grad_scale)
     *   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
     *   p -= lr * ( (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps) + wd * p )
     * `master` is the fp32 copy of the parameters when the act type is not
     * fp32 (updated, then rounded into `param`); NULL when param is fp32. */
    void (*adamw)(void *param, float *master, const void *grad, float *m, float *v, size_t n,
                  float lr, float b1, float b2, float eps, float wd, int t, float grad_scale);
    /* ---- mixture of experts (the llama MoE FFN, trainer/moe.c) ----
     * Appended last; a backend without MoE kernels leaves them NULL and
     * model_create refuses MoE configs on it. E experts, K <= E slots per
     * token, NK = N*K routed (token, slot) rows. The router linear itself is
     * matmul_fwd/bwd with the (E, C) router weight.
     *
     * route: probs = softmax(logits) in fp32 over all E experts; top_idx =
     * the K largest probs in descending order (ties: the lower expert index
     * first); top_w = those probs, divided by their sum when norm_topk
     * (Mixtral) or left as they are (Qwen-MoE norm_topk_prob = false).
     * lse = logsumexp(logits) per row (router z-loss). stats (E + 1) fp32:
     * stats[e] = sum_n probs[n,e], stats[E] = sum_n lse[n]^2, accumulated in
     * fp64 in row order. */
    void (*moe_route_fwd)(float *probs, float *lse, int32_t *top_idx, float *top_w, /* (N,E) (N) (N,K) (N,K) */
                          float *stats,                                            /* (E+1) */
                          const void *logits,                                      /* (N,E) */
                          int N, int E, int K, int norm_topk);
    /* dlogits (N,E) OVERWRITTEN with the gradient through softmax of
     *   dL/dprobs[n,e] = [through top_w: dtop_w (N,K), renormalisation
     *                     included] + dprob[e] (same for every row: the
     *                     load-balancing loss, dprob (E) fp32 or NULL)
     * plus the z-loss term z_scale * 2 lse[n] probs[n,e] (z_scale = 0: none). */
    void (*moe_route_bwd)(void *dlogits, const float *dtop_w, const float *dprob, float z_scale,
                          const float *probs, const float *lse, const int32_t *top_idx,
                          const float *top_w, int N, int E, int K, int norm_topk);
    /* Stable counting sort of the NK routings by expert (token order within
     * an expert): counts (E) rows per expert; row_token (NK) the token of
     * packed row r; pos (N,K) the packed row of (token n, slot k). All int32
     * backend buffers, OVERWRITTEN. Expert e owns packed rows
     * [sum_{e'<e} counts[e'], + counts[e]). */
    void (*moe_permute)(int32_t *counts, int32_t *row_token, int32_t *pos, const int32_t *top_idx,
                        int N, int E, int K);
    /* xs[r,:] = x[row_token[r],:]; xs (NK,C) OVERWRITTEN */
    void (*moe_gather_fwd)(void *xs, const void *x, const int32_t *row_token, int NK, int C);
    /* dx[n,:] = sum_k dxs[pos[n,k],:] in slot order; dx (N,C) OVERWRITTEN */
    void (*moe_gather_bwd)(void *dx, const void *dxs, const int32_t *pos, int N, int K, int C);
    /* out[n,:] = sum_k top_w[n,k] ys[pos[n,k],:] in slot order; out (N,C) OVERWRITTEN */
    void (*moe_combine_fwd)(void *out, const void *ys, const float *top_w, const int32_t *pos,
                            int N, int K, int C);
    /* dys[pos[n,k],:] = top_w[n,k] dout[n,:] (NK,C); dtop_w[n,k] =
     * dout[n,:] . ys[pos[n,k],:] (N,K) fp32; both OVERWRITTEN */
    void (*moe_combine_bwd)(void *dys, float *dtop_w, const void *dout, const void *ys,
                            const float *top_w, const int32_t *pos, int N, int K, int C);

    /* ---- attention's saved state (appended) ----
     * Floats attention_fwd saves in `att`, and attention_bwd's `datt` scratch
     * holds, for this shape. NULL: B*NH*T*T each (the probabilities). The
     * CUDA bf16 table's fused kernel (head dims 64 and 128) needs B*NH*T. */
    size_t (*attention_saved_floats)(int B, int T, int NH, int HD);

    /* ---- residual add fused with the next norm's forward (appended) ----
     * res_out = a + b (res_out may alias a or b: elementwise, same index in
     * and out), then norm_out = norm(res_out) exactly as layernorm_fwd /
     * rmsnorm_fwd compute it from res_out as stored (after rounding to the
     * act type): bitwise the results of residual_fwd followed by the norm on
     * the same backend. One pass saves the norm's re-read of res_out.
     * NULL: the backend has no fused kernel (or it is switched off: the CUDA
     * one with cuda.fused_norm = false) and the model calls the two ops. */
    void (*residual_layernorm_fwd)(void *res_out, void *norm_out,   /* (N,C) (N,C) */
                                   float *mean, float *rstd,         /* (N) (N) */
                                   const void *a, const void *b,     /* (N,C) (N,C) */
                                   const void *w, const void *bias,  /* (C) (C) */
                                   int N, int C, float eps);
    void (*residual_rmsnorm_fwd)(void *res_out, void *norm_out, float *rstd, /* (N,C) (N,C) (N) */
                                 const void *a, const void *b, const void *w, /* (N,C) (N,C) (C) */
                                 int N, int C, float eps);
    /* ---- grouped expert GEMMs (appended; optional) ----
     * NULL (the CPU backend; the CUDA backend unless cuda.moe_grouped_gemm):
     * trainer/moe.c calls matmul_fwd/bwd once per expert instead. E experts;
     * counts (E) is a HOST int32 array: expert e owns rows [r_e, r_e +
     * counts[e]) of the packed row buffers, r_e = sum_{e'<e} counts[e'];
     * expert e's weight (OC, IC) (and its gradient) starts e * w_stride
     * elements into w (dw). Exactly matmul_fwd / matmul_bwd without bias on
     * each expert's rows, experts with counts[e] == 0 skipped:
     *   fwd: out_e (n_e, OC) = inp_e (n_e, IC) @ w_e^T   (OVERWRITTEN)
     *   bwd: dinp_e (n_e, IC) = dout_e @ w_e (OVERWRITTEN); dw_e += dout_e^T @ inp_e */
    void (*moe_expert_matmul_fwd)(void *out, const void *inp, const void *w, size_t w_stride,
                                  const int32_t *counts, int E, int IC, int OC);
    void (*moe_expert_matmul_bwd)(void *dinp, void *dw, const void *dout, const void *inp,
                                  const void *w, size_t w_stride, const int32_t *counts, int E,
                                  int IC, int OC);

    /* ---- per-head RMSNorm of q and k (Qwen3's q_norm, k_norm; appended) ----
     * qkv rows as attention's. For every row n and head h < NH + NKV (the NH
     * q heads, then the NKV k heads; the v heads are not touched), with x the
     * head's HD values as stored:
     *   saved[n, h HD + i] = x[i];  rstd[n, h] = 1 / sqrt(mean(x^2) + eps);
     *   qkv[n, h HD + i] = x[i] rstd[n, h] w[i], w = wq for q heads, wk for k heads.
     * In place on qkv; saved (N, (NH + NKV) HD) act type and rstd (N, NH + NKV)
     * fp32 OVERWRITTEN (what the backward needs). */
    void (*qk_norm_fwd)(void *qkv, void *saved, float *rstd, const void *wq, const void *wk, int N,
                        int NH, int NKV, int HD, float eps);
    /* dqkv's q and k parts hold the gradient of the normalised heads; they
     * are OVERWRITTEN with the gradient of the heads before the norm (as
     * rmsnorm_bwd's dinp, not accumulated); v parts untouched. dwq += , dwk +=
     * (sums over every row and head). saved, rstd: the forward's. */
    void (*qk_norm_bwd)(void *dqkv, void *dwq, void *dwk, const void *saved, const void *wq,
                        const void *wk, const float *rstd, int N, int NH, int NKV, int HD);

    /* ---- documents packed in a window (data.doc_mask; appended) ----
     * NULL where a backend has none (the model then refuses doc_mask).
     * starts (B*T) int32 in backend memory: row n = b T + t belongs to the
     * document that begins at window position starts[n] (0 <= starts[n] <=
     * t, non-decreasing within a window). attention_doc_fwd is
     * attention_fwd with query t attending to keys j in [starts[n], t]
     * only: the saved probabilities are 0 outside that range, so
     * attention_bwd (which reads them) is the backward unchanged. */
    void (*attention_doc_fwd)(void *out, float *att, const void *qkv, int B, int T, int NH,
                              int NKV, int HD, const int32_t *starts);
    /* rope_fwd / rope_bwd at the positions pos[n] (B*T int32 in backend
     * memory, 0 <= pos[n] < T) instead of n % T (data.reset_positions:
     * each document counts from 0) */
    void (*rope_pos_fwd)(void *qkv, int B, int T, int NH, int NKV, int HD, const float *inv_freq,
                         const int32_t *pos);
    void (*rope_pos_bwd)(void *dqkv, int B, int T, int NH, int NKV, int HD,
                         const float *inv_freq, const int32_t *pos);
} Ops;

/* The options a backend is created with: the [cuda] section of the config
 * (docs/config.md; trainer/config.h config_to_ops_options builds them from
 * a Config, whose table holds the defaults). Only the CUDA backend has
 * options; the CPU backend ignores them. */
typedef struct OpsOptions {
    struct {
        int flash_attention;       /* 1: the fused attention for head dims 64 and 128; 0: the
                                    * GEMM + softmax path always */
        int flash_heads_per_block; /* query heads a dK/dV block of the fused backward owns;
                                    * 0 = chosen from the shape and the card; else a
                                    * divisor of n_head / n_kv_head */
        int fused_norm;            /* 1: residual add fused with the next norm (the table's
                                    * residual_*norm_fwd); 0: NULL, the model calls both ops */
        int moe_grouped_gemm;      /* 1: the grouped expert GEMMs (moe_expert_matmul_*) */
        int lmhead_chunk_rows;     /* rows of logits the LM head computes at once */
        int sync_debug;            /* 1: synchronise after every kernel (faults are then
                                    * reported at the launch that caused them) */
    } cuda;
} OpsOptions;
/* the defaults: the values config_keys.c gives the [cuda] keys (test_config
 * checks that the two agree) */
OpsOptions ops_options_default(void);

/* Backends. ops_cpu never fails. ops_cuda returns NULL (and fills err) when
 * the build has no CUDA or no GPU is present, or an option is out of range.
 * ops_cuda_fp32 is the same CUDA backend with fp32 activations and no TF32
 * (the parity-test mode); it fails like ops_cuda. opt NULL: the defaults.
 * The CUDA backend is one per process (its tables are process-wide): a
 * later ops_cuda / ops_cuda_fp32 with other options reconfigures both
 * tables for every op from then on (tests do it between models; a model's
 * memory plan, e.g. attention_saved_floats, assumes the options it was
 * created under). */
const Ops *ops_cpu(void);
/* A one-line hint when the CPU backend's BLAS runs its generic kernels on a
 * CPU with AVX-512 (OpenBLAS 0.3.21 does not know recent Xeons and falls
 * back to SSE3 "Prescott" kernels, ~5x slower here), else NULL. */
const char *ops_cpu_blas_hint(void);
/* The CPU backend's byte accounting: bytes allocated through its alloc and
 * not yet freed (requested sizes, before alignment padding), and the most
 * there ever were since the process started or the last reset (which sets
 * the peak to what is live now). What `dapt plan` predicts is checked
 * against the peak (tests/c/test_plan.c). */
void ops_cpu_mem(size_t *live_bytes, size_t *peak_bytes);
void ops_cpu_mem_reset_peak(void);
const Ops *ops_cuda(const OpsOptions *opt, char *err, size_t err_len);
const Ops *ops_cuda_fp32(const OpsOptions *opt, char *err, size_t err_len);
/* RoPE's cos/sin table for positions t < T, shared by the backends' rope
 * ops: cs[t*half + i] = cosf(a), sn[t*half + i] = sinf(a), a = (float)t *
 * inv_freq[i] in fp32 (as transformers computes the angle). */
void ops_rope_table(float *cs, float *sn, int T, int half, const float *inv_freq);
/* by name: "cpu", "cuda" or "cuda-fp32", created with opt (NULL: defaults) */
const Ops *ops_get(const char *name, const OpsOptions *opt, char *err, size_t err_len);
/* The CUDA backend's compute stream (a cudaStream_t; every op is queued on
 * it), so that collectives on device buffers (trainer/dist_nccl.h) are
 * ordered with the ops; NULL before the backend started or without CUDA. */
void *ops_cuda_stream(void);
/* Test hook: the CUDA backend forgets every cached GEMM plan and heuristic
 * result (kernels/cuda/gemm.cu). What the caches hold must never change a
 * result; tests call this to check that a shape's bits do not depend on
 * what ran before it. No effect without CUDA. */
void ops_cuda_forget_gemm_plans(void);
/* Kernel times inside ops, for profiles: while on, the CUDA backend
 * brackets the kernels of its multi-kernel ops (the fused attention's
 * forward, and its backward's D, dK/dV, GQA-sum and dQ kernels) with
 * events and waits for each (slow: profile steps only), adding the time to
 * the kernel's line; report prints ms and calls per step (steps: how many
 * steps ran while on) and clears the table. No effect without CUDA; the
 * report then prints nothing. */
void ops_cuda_ktime_enable(int on);
/* Device memory in use on the current GPU (cudaMemGetInfo: total - free,
 * the CUDA context and every other process's allocations included) and its
 * total; 1 without CUDA. */
int ops_cuda_mem(size_t *used, size_t *total);
void ops_cuda_ktime_report(FILE *f, int steps);

#endif
