/* flash_attention.cuh: the fused attention of the bf16 table
 * (flash_attention.cu), called by attention.cu's ops. */
#ifndef DAPT_FLASH_ATTENTION_CUH
#define DAPT_FLASH_ATTENTION_CUH

#include <stddef.h>

/* 1 when the fused kernels handle head dim HD (64 or 128) and they are not
 * switched off with cuda.flash_attention = false (then the GEMM path runs:
 * for A/B benchmarks and as a fallback). Reconfiguring the backend inside
 * a process would change attention_saved_floats under a model's feet. */
int cuda_flash_enabled(int HD);
/* out (N, NH*HD) bf16; lse (B*NH*T) fp32, base-2 log-sum-exp of the scaled
 * scores; qkv (N, (NH + 2 NKV) HD) bf16 */
void cuda_flash_fwd(void *out, float *lse, const void *qkv, int B, int T, int NH, int NKV, int HD);
/* dqkv overwritten; D (B*NH*T) fp32 scratch; out and lse from cuda_flash_fwd */
void cuda_flash_bwd(void *dqkv, float *D, const void *dout, const void *out, const void *qkv,
                    const float *lse, int B, int T, int NH, int NKV, int HD);

#endif
