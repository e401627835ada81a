/* ops_cpu_moe.h: the CPU backend's mixture-of-experts kernels
 * (kernels/cpu/ops_cpu_moe.c), declared for the table in ops_cpu.c, which
 * lists them with OPS_CPU_MOE_ENTRIES. Contract: kernels/ops.h. */
#ifndef DAPT_OPS_CPU_MOE_H
#define DAPT_OPS_CPU_MOE_H

#include <stdint.h>

void cpu_moe_route_fwd(float *probs, float *lse, int32_t *top_idx, float *top_w, float *stats,
                       const void *logits, int N, int E, int K, int norm_topk);
void cpu_moe_route_bwd(void *dlogits, const float *dtop_w, const float *dprob, float z_scale,
                       const float *probs, const float *lse, const int32_t *top_idx,
                       const float *top_w, int N, int E, int K, int norm_topk);
void cpu_moe_permute(int32_t *counts, int32_t *row_token, int32_t *pos, const int32_t *top_idx,
                     int N, int E, int K);
void cpu_moe_gather_fwd(void *xs, const void *x, const int32_t *row_token, int NK, int C);
void cpu_moe_gather_bwd(void *dx, const void *dxs, const int32_t *pos, int N, int K, int C);
void cpu_moe_combine_fwd(void *out, const void *ys, const float *top_w, const int32_t *pos, int N,
                         int K, int C);
void cpu_moe_combine_bwd(void *dys, float *dtop_w, const void *dout, const void *ys,
                         const float *top_w, const int32_t *pos, int N, int K, int C);

#define OPS_CPU_MOE_ENTRIES                                                                        \
    .moe_route_fwd = cpu_moe_route_fwd, .moe_route_bwd = cpu_moe_route_bwd,                        \
    .moe_permute = cpu_moe_permute, .moe_gather_fwd = cpu_moe_gather_fwd,                          \
    .moe_gather_bwd = cpu_moe_gather_bwd, .moe_combine_fwd = cpu_moe_combine_fwd,                  \
    .moe_combine_bwd = cpu_moe_combine_bwd,

#endif
