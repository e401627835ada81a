/* flash_common.cuh: what the two versions of the fused attention
 * (flash_attention.cu: version 1, flash_attention2.cu: version 2) share:
 * the m16n8k16 mma and the packing of its accumulators into the next
 * product's A fragment (the fragment layouts are described at the top of
 * flash_attention.cu), cp.async, the quad reductions of the online softmax,
 * the backward's D = rowsum(dO O) and GQA-sum kernels, and allow_smem.
 * Included by those two files only; everything is in an anonymous
 * namespace (each file compiles its own copy). */
#ifndef DAPT_FLASH_COMMON_CUH
#define DAPT_FLASH_COMMON_CUH

#include "kernels/cuda/cuda_common.cuh"

namespace {

constexpr float LOG2E = 1.4426950408889634f;

__device__ __forceinline__ uint32_t pack2(bf16 lo, bf16 hi) {
    return (uint32_t)__bfloat16_as_ushort(lo) | ((uint32_t)__bfloat16_as_ushort(hi) << 16);
}
__device__ __forceinline__ uint32_t pack_f(float lo, float hi) {
    return pack2(__float2bfloat16_rn(lo), __float2bfloat16_rn(hi));
}

/* d += a (16x16) b (16x8) */
__device__ __forceinline__ void mma(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
#ifdef DAPT_CUEMU /* the host emulator's (tests/cuemu) */
    cuemu::mma_bf16_16816(d, a, b0, b1);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

/* the A fragment (16 x 16, columns 16c..16c+15) from score accumulators
 * s[2c], s[2c+1] (16 x 8 each) */
__device__ __forceinline__ void acc_to_a(uint32_t a[4], const float lo[4], const float hi[4]) {
    a[0] = pack_f(lo[0], lo[1]);
    a[1] = pack_f(lo[2], lo[3]);
    a[2] = pack_f(hi[0], hi[1]);
    a[3] = pack_f(hi[2], hi[3]);
}

/* cp.async (sm_80+): 16-byte copies global -> shared that bypass registers
 * and run while the block computes; valid == false zero-fills the 16 bytes
 * (source size 0, the address then only has to be valid). Issued copies
 * form a group at cp_async_commit(); cp_async_wait<N>() waits until at
 * most N groups are still in flight. */
#ifdef DAPT_CUEMU /* the host emulator's (tests/cuemu) */
__device__ __forceinline__ void cp_async16(void *dst, const void *src, bool valid) {
    cuemu::cp_async16(dst, src, valid);
}
__device__ __forceinline__ void cp_async_commit() { cuemu::cp_async_commit(); }
template <int N> __device__ __forceinline__ void cp_async_wait() { cuemu::cp_async_wait(N); }
#else
__device__ __forceinline__ void cp_async16(void *dst, const void *src, bool valid) {
    unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    int n = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
#endif

/* max / sum over the 4 threads of a quad (the 4 holders of one C row) */
__device__ __forceinline__ float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

/* D[(b, h), t] = sum_i dO[b, t, h, i] O[b, t, h, i]; one warp per row */
template <int HD>
__global__ void flash_bwd_dot_kernel(float *D, const bf16 *dout, const bf16 *out, int T, int NH,
                                     size_t rows) {
    size_t r = blockIdx.x * (size_t)(blockDim.x / 32) + threadIdx.x / 32; /* (b, t, h) */
    int lane = threadIdx.x % 32;
    if (r >= rows) return;
    const bf16 *a = dout + r * HD, *o = out + r * HD;
    float s = 0.0f;
#pragma unroll
    for (int i = lane; i < HD; i += 32) s += __bfloat162float(a[i]) * __bfloat162float(o[i]);
    s = warp_sum(s);
    int h = (int)(r % NH);
    size_t bt = r / NH;
    int tt = (int)(bt % T), b = (int)(bt / T);
    if (lane == 0) D[((size_t)b * NH + h) * T + tt] = s;
}

/* dK, dV of GQA: dqkv's k and v parts = the sum over the NH / NKV query
 * heads of each group, in head order, of the fp32 shares; one thread per
 * (b, t, kv head, 2 HD) element */
template <int HD>
__global__ void flash_gqa_sum_kernel(bf16 *dqkv, const float *part, int T, int NH, int NKV,
                                     size_t total) {
    size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (e >= total) return;
    int i = (int)(e % (2 * HD));
    size_t r = e / (2 * HD);
    int g = (int)(r % NKV);
    size_t bt = r / NKV;
    int tt = (int)(bt % T), b = (int)(bt / T), group = NH / NKV;
    float s = 0.0f;
    for (int h = g * group; h < (g + 1) * group; h++)
        s += part[(((size_t)b * NH + h) * T + tt) * 2 * HD + i];
    size_t W = (size_t)(NH + 2 * NKV) * HD;
    int col = i < HD ? (NH + g) * HD + i : (NH + NKV + g) * HD + (i - HD);
    dqkv[bt * W + col] = __float2bfloat16_rn(s);
}

/* once per kernel: allow more than 48 KiB of dynamic shared memory */
template <typename K> static void allow_smem(K kernel, size_t bytes, int *done) {
    if (*done) return;
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)bytes));
    *done = 1;
}

} // namespace

#endif
