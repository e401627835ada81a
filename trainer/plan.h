/* plan.h: the memory a training run needs, computed from the model shape and
 * the run's settings without allocating anything (`dapt plan`,
 * docs/distributed.md "Memory plan").
 *
 * The plan mirrors what dapt allocates today, buffer for buffer: the
 * parameter, gradient and optimizer buffers of model_create_sharded (the
 * shards and the ZeRO-2/3 windows), the activations of the model's and the MoE FFN's
 * ensure_acts, the LM head scratch of the backend's lmhead_scratch_bytes.
 * tests/c/test_plan.c holds it to within 5% of the CPU backend's measured
 * peak (ops_cpu_mem): when model.c or moe.c allocate differently, that test
 * fails until this file follows.
 *
 * Backend bytes are device memory on CUDA and host memory on the CPU
 * backend; host bytes are the process's other large host buffers.
 */
#ifndef DAPT_PLAN_H
#define DAPT_PLAN_H

#include <stddef.h>

#include "trainer/model.h"

/* The backend and run settings a plan depends on. */
typedef struct {
    size_t act_bytes;      /* bytes a parameter/activation: 4 (cpu, cuda-fp32) or 2 (cuda) */
    int cuda;              /* 1: the CUDA backend (workspace, context allowance) */
    int flash_attention;   /* cuda.flash_attention (bf16 only, head dims 64 and 128) */
    int lmhead_chunk_rows; /* cuda.lmhead_chunk_rows; the CPU backend's is fixed at 256 */
    int B, T;              /* micro-batch and sequence length */
    int zero_world;        /* ZeRO over this many ranks; 0 or 1: nothing sharded */
    int zero_stage;        /* 1..3 when zero_world > 1 (0 there means 1) */
    int recompute;         /* train.recompute: 1 = "block" (model.c keeps block inputs only) */
    int offload;           /* train.offload_optimizer: master and moments in host memory */
    size_t context_bytes;  /* CUDA context + NCCL + kernel scratch allowance (an assumption) */
} PlanSetup;

/* Bytes, per rank. steady = everything live during a training step (the
 * model is created for its shard, so nothing is allocated whole before:
 * peak = steady). */
typedef struct {
    size_t n_params;
    size_t params, grads;  /* act type each: whole, or the shard plus the windows (ZeRO-3
                            * parameters, ZeRO-2/3 gradients) */
    size_t param_windows, grad_windows; /* of which the windows of the largest unit */
    size_t master;         /* fp32 master weights of the shard (bf16 act type only) */
    size_t moments;        /* Adam m and v of the shard, fp32 */
    size_t offloaded;      /* with offload: master + moments + the host staging, in host
                            * memory (not in steady/peak) */
    size_t acts;           /* forward activations kept for the backward, attention's included */
    size_t attention;      /* of which attention's saved state (probabilities or LSEs) */
    int attention_fused;   /* 1: the CUDA fused kernel's log-sum-exps, 0: the probabilities */
    size_t moe_acts;       /* the MoE FFN's saved activations (trainer/moe.c) */
    size_t bwd_scratch;    /* backward buffers: dresid, dln, datty, dbig, dact, datt, MoE's */
    size_t lmhead_scratch; /* the fused LM head's chunk of logits (and dlogits) */
    size_t io;             /* tokens, targets, per-token losses */
    size_t cuda_workspace; /* cuBLASLt workspace (32 MiB) */
    size_t cuda_scratch;   /* the kernels' shared scratch: at least the bf16 upload staging
                            * (80 MiB); larger kernel needs are in the context allowance */
    size_t context;        /* PlanSetup.context_bytes on CUDA */
    size_t steady, peak; /* backend bytes */
    size_t host;         /* host buffers besides: the largest tensor, losses, the offloaded state */
    double act_bytes_per_token;   /* (acts + bwd_scratch + io) / (B*T) */
} Plan;

/* The plan for cfg (checked by model_config_check) under s. */
void plan_compute(const ModelConfig *cfg, const PlanSetup *s, Plan *p);
/* The largest micro-batch (<= max_B) whose peak fits budget_bytes at s's
 * other settings; 0 when none does. */
int plan_max_micro_batch(const ModelConfig *cfg, const PlanSetup *s, size_t budget_bytes,
                         int max_B);


#endif
