/* flash_attention.cuh: the fused attention of the bf16 table
 * (flash_attention.cu: version 1 and the entry points; flash_attention2.cu:
 * version 2), called by attention.cu's ops. */
#ifndef DAPT_FLASH_ATTENTION_CUH
#define DAPT_FLASH_ATTENTION_CUH

#include <stddef.h>

/* which fused kernels run, from DAPT_CUDA_FLASH (read at each call): 0 the
 * GEMM path (DAPT_CUDA_FLASH=0), 2 version 2 (DAPT_CUDA_FLASH=2: 128-row
 * tiles, ldmatrix; opt-in until verified on a GPU), else 1 (the default).
 * Both versions save the same lse2, so either backward runs from either
 * forward. Switching between 0 and the others inside a process would change
 * attention_saved_floats under a model's feet: only test_cuda_ops switches,
 * between 1 and 2. */
int cuda_flash_version(void);
/* 1 when the fused kernel handles head dim HD (64 or 128) and it is not
 * switched off with DAPT_CUDA_FLASH=0 (then the GEMM path runs: for A/B
 * benchmarks and as a fallback) */
int cuda_flash_enabled(int HD);
/* out (N, NH*HD) bf16; lse (B*NH*T) fp32, base-2 log-sum-exp of the scaled
 * scores; qkv (N, (NH + 2 NKV) HD) bf16 */
void cuda_flash_fwd(void *out, float *lse, const void *qkv, int B, int T, int NH, int NKV, int HD);
/* dqkv overwritten; D (B*NH*T) fp32 scratch; out and lse from cuda_flash_fwd */
void cuda_flash_bwd(void *dqkv, float *D, const void *dout, const void *out, const void *qkv,
                    const float *lse, int B, int T, int NH, int NKV, int HD);

/* version 2's kernels (flash_attention2.cu), which cuda_flash_fwd/bwd call
 * when cuda_flash_version() is 2 (after their checks); same arguments */
void cuda_flash2_fwd(void *out, float *lse, const void *qkv, int B, int T, int NH, int NKV, int HD);
void cuda_flash2_bwd(void *dqkv, float *D, const void *dout, const void *out, const void *qkv,
                     const float *lse, int B, int T, int NH, int NKV, int HD);

#endif
