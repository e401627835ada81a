/* cuda_common.cuh: what every file of the CUDA backend shares: the error
 * checks, the backend's device state, element-type helpers (fp32 and bf16),
 * 16-byte vector loads, block reductions, and the declarations of the
 * helpers one file offers the others (cuBLASLt GEMM, column sums, scratch).
 *
 * Error policy: the op signatures in kernels/ops.h return nothing, so a
 * failed CUDA or cuBLASLt call inside an op is fatal: cuda_fatal() prints
 * "dapt: CUDA error at FILE:LINE: CALL: REASON" to stderr and calls abort().
 * The option cuda.sync_debug synchronises after every kernel, so an
 * asynchronous fault is reported at the launch that caused it. Only
 * ops_cuda()/ops_cuda_fp32() (backend start-up) return an error string
 * instead, e.g. when there is no GPU or an option is out of range.
 *
 * Device state is one process-wide struct (the op table has no context
 * argument): the options the backend was created with (ops.h OpsOptions;
 * the kernels read them from here, never from the environment), the stream
 * every op is queued on, the cuBLASLt handle and workspace, and a grow-only
 * scratch buffer. The backend is single-threaded: ops must be called from
 * one host thread.
 */
#ifndef DAPT_CUDA_COMMON_CUH
#define DAPT_CUDA_COMMON_CUH

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

extern "C" {
#include "kernels/ops.h"
}

typedef __nv_bfloat16 bf16;

/* ---- errors ---- */

[[noreturn]] void cuda_fatal(const char *file, int line, const char *call, const char *reason);
void cuda_check_(cudaError_t e, const char *file, int line, const char *call);
void cublas_check_(cublasStatus_t s, const char *file, int line, const char *call);
void cuda_after_launch_(const char *file, int line);

#define CUDA_CHECK(call) cuda_check_((call), __FILE__, __LINE__, #call)
#define CUBLAS_CHECK(call) cublas_check_((call), __FILE__, __LINE__, #call)
/* after every kernel launch: launch errors, and a sync with cuda.sync_debug */
#define LAUNCH_CHECK() cuda_after_launch_(__FILE__, __LINE__)
#define CUDA_FATAL(reason) cuda_fatal(__FILE__, __LINE__, "", (reason))

/* ---- device state ---- */

typedef struct CudaState {
    int ready;
    int device, sm_count;
    OpsOptions opt;          /* from ops_cuda / ops_cuda_fp32 (opt.cuda) */
    int debug_sync;          /* opt.cuda.sync_debug */
    cudaStream_t stream;     /* every op is queued here */
    cublasLtHandle_t lt;
    void *lt_ws;             /* cuBLASLt workspace */
    size_t lt_ws_bytes;
    void *scratch;           /* grow-only op scratch, see cuda_scratch() */
    size_t scratch_bytes;
} CudaState;

extern CudaState g_cuda;

/* A device buffer of at least n_bytes, valid until the next call (ops run in
 * stream order, so one op's scratch is free when the next op is queued).
 * Growing synchronises the stream first. */
void *cuda_scratch(size_t n_bytes);
/* the started backend's own table (use_bf16: "cuda", else "cuda-fp32"),
 * without reconfiguring it */
const Ops *cuda_table(int use_bf16);
/* round up to 256 bytes, for carving several regions out of one scratch */
static inline size_t cuda_pad(size_t n_bytes) { return (n_bytes + 255) / 256 * 256; }

/* ---- element types ---- */

__host__ __device__ __forceinline__ float to_f(float x) { return x; }
__host__ __device__ __forceinline__ float to_f(bf16 x) { return __bfloat162float(x); }
template <typename T> __host__ __device__ __forceinline__ T from_f(float x);
template <> __host__ __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __host__ __device__ __forceinline__ bf16 from_f<bf16>(float x) {
    return __float2bfloat16_rn(x);
}

template <typename T> static inline cudaDataType_t cuda_dtype(void);
template <> inline cudaDataType_t cuda_dtype<float>(void) { return CUDA_R_32F; }
template <> inline cudaDataType_t cuda_dtype<bf16>(void) { return CUDA_R_16BF; }

static inline int cuda_aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

/* ---- 8-element vector access ----
 * Elementwise kernels work on chunks of 8 elements: one 16-byte load for
 * bf16, two for fp32. `vec` says the chunk is full and 16-byte aligned (the
 * host checks pointers and sizes); otherwise `cnt` (<= 8) elements are read
 * one by one and the rest of f[] is zero. */
__device__ __forceinline__ void ld8(float f[8], const float *p) {
    float4 a = reinterpret_cast<const float4 *>(p)[0], b = reinterpret_cast<const float4 *>(p)[1];
    f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
}
__device__ __forceinline__ void ld8(float f[8], const bf16 *p) {
    int4 r = *reinterpret_cast<const int4 *>(p);
    const bf16 *h = reinterpret_cast<const bf16 *>(&r);
#pragma unroll
    for (int j = 0; j < 8; j++) f[j] = __bfloat162float(h[j]);
}
__device__ __forceinline__ void st8(float *p, const float f[8]) {
    reinterpret_cast<float4 *>(p)[0] = make_float4(f[0], f[1], f[2], f[3]);
    reinterpret_cast<float4 *>(p)[1] = make_float4(f[4], f[5], f[6], f[7]);
}
__device__ __forceinline__ void st8(bf16 *p, const float f[8]) {
    int4 r;
    bf16 *h = reinterpret_cast<bf16 *>(&r);
#pragma unroll
    for (int j = 0; j < 8; j++) h[j] = __float2bfloat16_rn(f[j]);
    *reinterpret_cast<int4 *>(p) = r;
}
template <typename T> __device__ __forceinline__ void ld8v(float f[8], const T *p, int vec, int cnt) {
    if (vec) {
        ld8(f, p);
        return;
    }
#pragma unroll
    for (int j = 0; j < 8; j++) f[j] = j < cnt ? to_f(p[j]) : 0.0f;
}
template <typename T> __device__ __forceinline__ void st8v(T *p, const float f[8], int vec, int cnt) {
    if (vec) {
        st8(p, f);
        return;
    }
#pragma unroll
    for (int j = 0; j < 8; j++)
        if (j < cnt) p[j] = from_f<T>(f[j]);
}

/* ---- reductions (fixed order: deterministic) ---- */

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
/* Sum (or max) over the block, returned to every thread. blockDim.x must be a
 * multiple of 32, at most 1024; all threads must call it. */
__device__ __forceinline__ float block_reduce(float v, int is_max) {
    __shared__ float sh[32];
    v = is_max ? warp_max(v) : warp_sum(v);
    __syncthreads(); /* sh may still be read by a previous call */
    if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
    __syncthreads();
    float r = sh[0];
    for (int w = 1; w < (int)(blockDim.x >> 5); w++) r = is_max ? fmaxf(r, sh[w]) : r + sh[w];
    return r;
}

/* grid size for a grid-stride loop over `items` work items */
static inline unsigned cuda_grid(size_t items, int block) {
    size_t g = (items + block - 1) / block, cap = (size_t)g_cuda.sm_count * 32;
    if (g < 1) g = 1;
    return (unsigned)(g < cap ? g : cap);
}

/* ---- cuBLASLt GEMM (gemm.cu) ----
 * Row-major: C (M, N) = alpha * op(A) @ op(B) + beta * C (+ bias (N) per row),
 * op(X) = X^T when the t flag is set. A is stored (M, K), or (K, M) when ta;
 * B is stored (K, N), or (N, K) when tb; lda/ldb/ldc are row strides in
 * elements. batch > 1 repeats it with element strides sA, sB, sC. A and B
 * share ab_type; C (and bias) have c_type. tf32 allows TF32 tensor cores for
 * fp32 inputs (never in the fp32 parity mode). */
typedef struct GemmArgs {
    int ta, tb;
    int M, N, K;
    const void *A;
    int lda;
    long long sA;
    const void *B;
    int ldb;
    long long sB;
    void *C;
    int ldc;
    long long sC;
    int batch;
    cudaDataType_t ab_type, c_type;
    float alpha, beta;
    const void *bias;
    int tf32;
    /* 1: M (vary_m) or K (vary_k) changes from call to call (token counts):
     * the algorithm is chosen per bucket of that dimension (gemm.cu) */
    int vary_m, vary_k;
} GemmArgs;
void cuda_gemm(const GemmArgs *g);

/* ---- column sums (norms.cu) ----
 * Deterministic sums over the N rows of (N, C) matrices, added into one or
 * two (C) outputs: row chunks write fp32 partials, a second kernel adds them
 * in order. Modes: */
enum { COLSUM_PLAIN = 0, /* o0 += sum_n dout */
       COLSUM_LN = 1,    /* o0 += sum_n dout*(x-mean)*rstd; o1 += sum_n dout */
       COLSUM_RMS = 2 }; /* o0 += sum_n dout*x*rstd */
template <typename T>
void cuda_colsum(T *o0, T *o1, const T *dout, const T *inp, const float *mean, const float *rstd,
                 int N, int C, int mode);

/* ---- kernel times inside ops (ops_cuda_ktime_enable, ops.h) ----
 * KTIME_BEGIN("name"); launch; KTIME_END(); around a kernel: one branch on
 * a flag while timing is off. */
extern int g_ktime_on;
void cuda_ktime_begin(const char *name);
void cuda_ktime_end(void);
#define KTIME_BEGIN(name)                                                                          \
    do {                                                                                           \
        if (g_ktime_on) cuda_ktime_begin(name);                                                    \
    } while (0)
#define KTIME_END()                                                                                \
    do {                                                                                           \
        if (g_ktime_on) cuda_ktime_end();                                                          \
    } while (0)

/* ---- table filling: each file sets the ops it implements ---- */
void cuda_fill_gemm(Ops *o, int use_bf16);
void cuda_fill_norms(Ops *o, int use_bf16);
void cuda_fill_elementwise(Ops *o, int use_bf16);
void cuda_fill_attention(Ops *o, int use_bf16);
void cuda_fill_lmhead(Ops *o, int use_bf16);
void cuda_fill_adamw(Ops *o, int use_bf16);
void cuda_fill_moe(Ops *o, int use_bf16);
/* the grouped expert GEMMs with cuda.moe_grouped_gemm, else NULL */
void cuda_fill_moe_grouped(Ops *o, int use_bf16);

#endif
