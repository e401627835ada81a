/* cuemu.h: a host emulator of the CUDA subset dapt's kernels use, so that
 * the CUDA backend (kernels/cuda) runs, unchanged, on a machine without a
 * GPU: CI tests its kernels against the CPU backend (docs/cuda.md, "Without
 * a GPU").
 *
 * tests/cuemu/hostify.py rewrites each kernels/cuda source for the host
 * compiler (launches `k<<<grid, block, smem, stream>>>(args)` become
 * `cuemu::launch(k, grid, block, smem, stream)(args)`, dynamic shared
 * memory becomes a pointer, the CUDA headers become this one); the sources
 * themselves only spell out, under DAPT_CUEMU, the few inline-PTX helpers
 * (mma, ldmatrix, cp.async) as calls into the emulator.
 *
 * Execution model: a launch runs its blocks one after the other; each
 * thread of a block is a fiber (ucontext) with its own stack, switched at
 * __syncthreads, at cp.async waits and at warp collectives (shuffles, mma,
 * ldmatrix), which wait until every live lane of the warp has arrived.
 * Stricter than a GPU where that helps find bugs: dynamic shared memory
 * starts as NaN bytes, a cp.async destination is NaN from the issue until
 * the issuing thread waits for its group, when the copy lands,
 * mismatched collectives in one warp, a lane exiting while its warp waits,
 * barriers no thread can pass, and > 48 KiB of dynamic shared memory
 * without cudaFuncSetAttribute are fatal errors. Arithmetic is the host's:
 * exp2f and friends are correctly rounded where the GPU approximates, and
 * mma sums its 16 products in fp32 in order, so results match a GPU to
 * rounding, not bitwise.
 *
 * cuBLASLt (cublasLtMatmul with bias epilogue, batches, TF32 rounding) and
 * cublasGemmGroupedBatchedEx are emulated through OpenBLAS sgemm on fp32
 * copies of the operands. Kernels and GEMMs are queued on their stream and
 * run when the host waits for it (below, "Streams"); "device" memory is
 * host memory. */
#ifndef DAPT_CUEMU_H
#define DAPT_CUEMU_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

/* ---- language ---- */

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
/* static __shared__ arrays: one per kernel function, used by one block at
 * a time (blocks run one after the other) */
#define __shared__ static

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) int4 {
    int x, y, z, w;
};
struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(8) float2 {
    float x, y;
};
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline int4 make_int4(int x, int y, int z, int w) { return int4{x, y, z, w}; }

/* ---- bf16 ---- */

inline uint32_t cuemu_f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
inline float cuemu_u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
/* round to nearest even; NaN stays a (quiet) NaN */
inline unsigned short cuemu_f2bf(float f) {
    uint32_t u = cuemu_f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}
struct __nv_bfloat16 {
    unsigned short x;
    __nv_bfloat16() = default;
    __nv_bfloat16(float f) : x(cuemu_f2bf(f)) {}
    operator float() const { return cuemu_u2f((uint32_t)x << 16); }
};
inline float __bfloat162float(__nv_bfloat16 h) { return cuemu_u2f((uint32_t)h.x << 16); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    __nv_bfloat16 h;
    h.x = cuemu_f2bf(f);
    return h;
}
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) {
    __nv_bfloat16 h;
    h.x = u;
    return h;
}

/* ---- math the device has and the host lacks ---- */

inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
template <class A, class B> inline std::common_type_t<A, B> min(A a, B b) {
    typedef std::common_type_t<A, B> C;
    return (C)b < (C)a ? (C)b : (C)a;
}
template <class A, class B> inline std::common_type_t<A, B> max(A a, B b) {
    typedef std::common_type_t<A, B> C;
    return (C)a < (C)b ? (C)b : (C)a;
}

/* ---- runtime API ---- */

typedef enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorNoDevice = 100,
    cudaErrorNotReady = 600,
} cudaError_t;
typedef struct CUstream_st *cudaStream_t;
typedef enum {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4
} cudaMemcpyKind;
typedef enum { cudaDevAttrMultiProcessorCount = 16 } cudaDeviceAttr;
typedef enum { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 } cudaFuncAttribute;
#define cudaStreamNonBlocking 0x01
#define cudaEventDisableTiming 0x02

/* C linkage, and the runtime's signatures: C code compiled against the real
 * cuda_runtime.h (trainer/dist_nccl.c) links to these in the emulator's
 * programs */
extern "C" {
cudaError_t cudaMalloc(void **p, size_t n);
}
template <class T> inline cudaError_t cudaMalloc(T **p, size_t n) {
    return cudaMalloc((void **)p, n);
}
extern "C" {
cudaError_t cudaFree(void *p);
cudaError_t cudaMallocHost(void **p, size_t n);
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind,
                            cudaStream_t s = 0);
cudaError_t cudaMemset(void *p, int v, size_t n);
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s = 0);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDevice(int *d);
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int d);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
typedef struct cuemuEvent *cudaEvent_t;
cudaError_t cudaEventCreate(cudaEvent_t *e);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
/* Streams: each a queue. Kernels and GEMMs are queued (their launch
 * checked and counted at the call) and run only when something waits for
 * them: cudaStreamSynchronize, cudaDeviceSynchronize, cudaFree, a
 * synchronous copy or memset (after the blocking streams),
 * cudaEventQuery/Synchronize on an event behind them, cudaStreamWaitEvent
 * on such an event, cuemu_progress; copies and memsets run at once on an
 * empty queue, else behind it. Work deferred by cuemu_stream_defer (the
 * emulated NCCL's collectives) starts as soon as it is first in line
 * (reading its inputs then) and finishes (writing its outputs) only when
 * the host waits for it. So work on one stream sees another stream's
 * kernels only after a cudaStreamWaitEvent on an event recorded behind
 * them: a missing wait reads the old data, as on a GPU where the other
 * stream runs late. An event's time is the host clock when its stream gets
 * to it. */
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = 0);
cudaError_t cudaEventQuery(cudaEvent_t e);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t stop);
/* work queued on s after this call runs after e's: e's stream runs up to
 * e now when it can without blocking (its kernels always can), else a
 * deferred wait on s that advances e's stream when s is advanced (flags
 * must be 0) */
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags);
cudaError_t cudaGetLastError(void);
const char *cudaGetErrorString(cudaError_t e);
#include "cuemu_export.h"
}
namespace cuemu {
void set_func_smem(const void *kernel, int bytes);
/* finishes the work queued on stream s */
void stream_finish(cudaStream_t s);
}
template <class K> inline cudaError_t cudaFuncSetAttribute(K *kernel, cudaFuncAttribute a, int v) {
    if (a == cudaFuncAttributeMaxDynamicSharedMemorySize)
        cuemu::set_func_smem((const void *)kernel, v);
    return cudaSuccess;
}

/* ---- threads, warps, blocks ---- */

namespace cuemu {

struct Fiber;
extern Fiber *g_cur;
extern dim3 g_block, g_bdim, g_gdim;
const dim3 &thread_idx(void);

/* Every live lane of the calling thread's warp deposits `in` (op names the
 * collective, so lanes in different collectives are caught); the last lane
 * to arrive runs `complete` (if any) on the 32 deposits, which it may
 * rewrite in place; returns them once all have arrived, valid until this
 * warp's next collective but one. */
enum { SLOT = 6 };
typedef uint64_t Slot[SLOT];
const Slot *warp_collect(int op, const uint64_t in[SLOT], void (*complete)(Slot *all) = nullptr);
int lane(void);
void syncthreads(void);
void *dyn_smem(void);
int in_smem(const void *p, size_t n);
[[noreturn]] void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

enum { OP_SHFL = 1, OP_MMA, OP_LDSM, OP_LDSM_T, OP_VOTE };

template <class T> inline uint64_t bits(T v) {
    static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
    uint64_t u = 0;
    memcpy(&u, &v, sizeof v);
    return u;
}
template <class T> inline T unbits(uint64_t u) {
    T v;
    memcpy(&v, &u, sizeof v);
    return v;
}
template <class T, class F> inline T shuffle(unsigned mask, T v, F src_lane) {
    if (mask != 0xffffffffu) fail("shuffle with a partial mask 0x%x is not emulated", mask);
    uint64_t in[SLOT] = {bits(v)};
    const Slot *all = warp_collect(OP_SHFL, in);
    int s = src_lane(lane());
    if (s < 0 || s > 31) return v;
    return unbits<T>(all[s][0]);
}

/* m16n8k16 bf16 mma with fp32 accumulators (row.col): d += a b */
void mma_bf16_16816(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1);
/* ldmatrix.x4 (.trans when trans): r[i] from matrix i, whose 8 row
 * addresses lanes 8i..8i+7 give */
void ldmatrix_x4(uint32_t r[4], const void *row_addr, int trans);
/* matrices ldmatrix read so far, and the extra shared-memory wavefronts
 * their bank conflicts cost (0: conflict-free); CUEMU_BANK_CONFLICTS=fail
 * in the environment makes a conflict a fault */
void ldmatrix_stats(long *matrices, long *extra_wavefronts);
/* bytes of "device" memory cudaMalloc'd now and at the peak (with
 * CUEMU_MEM_REPORT=1 the peak is printed at exit): model.c's allocations
 * are the GPU's, so this checks a memory estimate without the GPU */
void device_bytes(size_t *current, size_t *peak);
/* cp.async.cg 16 bytes (zero-fill when !valid), commit_group, wait_group n */
void cp_async16(void *dst, const void *src, int valid);
void cp_async_commit(void);
void cp_async_wait(int n);

/* ---- launches ---- */

struct LaunchCfg {
    dim3 grid, block;
    size_t smem;
    const void *kernel;
};
void run_grid(const LaunchCfg &cfg, void (*body)(void *), void *ctx);

/* an argument as the kernel parameter's type, converted as a call would
 * (a literal NULL arrives as an integer: it becomes a null pointer) */
template <class P, class A> inline P param(A &&a) {
    if constexpr (std::is_pointer_v<P> && std::is_integral_v<std::decay_t<A>>) {
        if (a != 0) fail("kernel argument: an integer where a pointer is expected");
        return nullptr;
    } else {
        P p = std::forward<A>(a);
        return p;
    }
}

/* the grid queued on stream s (checked now, run when s gets to it); ctx
 * holds the arguments until then */
void enqueue_grid(cudaStream_t s, const LaunchCfg &cfg, void (*body)(void *),
                  std::shared_ptr<void> ctx);

template <class F> struct Launcher;
template <class... P> struct Launcher<void(P...)> {
    void (*k)(P...);
    LaunchCfg cfg;
    cudaStream_t s;
    template <class... A> void operator()(A &&...a) const {
        /* the parameters as the kernel receives them, converted once */
        struct Ctx {
            void (*k)(P...);
            std::tuple<std::decay_t<P>...> args;
        };
        auto ctx = std::make_shared<Ctx>(
            Ctx{k, std::tuple<std::decay_t<P>...>(param<std::decay_t<P>>(std::forward<A>(a))...)});
        enqueue_grid(s, cfg, [](void *c) {
            Ctx *x = (Ctx *)c;
            std::apply(x->k, x->args); /* every thread gets its own copies */
        }, ctx);
    }
};
template <class F>
inline Launcher<F> launch(F *kernel, dim3 grid, dim3 block, size_t smem = 0, cudaStream_t s = 0) {
    return Launcher<F>{kernel, LaunchCfg{grid, block, smem, (const void *)kernel}, s};
}

} // namespace cuemu

#define threadIdx (cuemu::thread_idx())
#define blockIdx (cuemu::g_block)
#define blockDim (cuemu::g_bdim)
#define gridDim (cuemu::g_gdim)
#define warpSize 32

inline void __syncthreads(void) { cuemu::syncthreads(); }
template <class T> inline T __shfl_xor_sync(unsigned mask, T v, int m, int width = 32) {
    return cuemu::shuffle(mask, v,
                          [&](int l) { return (l & ~(width - 1)) | ((l ^ m) & (width - 1)); });
}
template <class T> inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
    return cuemu::shuffle(mask, v, [&](int l) { return (l & ~(width - 1)) | (src & (width - 1)); });
}
template <class T> inline T __shfl_down_sync(unsigned mask, T v, unsigned d, int width = 32) {
    return cuemu::shuffle(mask, v, [&](int l) {
        int s = (l & (width - 1)) + (int)d;
        return s < width ? (l & ~(width - 1)) + s : l;
    });
}
template <class T> inline T __shfl_up_sync(unsigned mask, T v, unsigned d, int width = 32) {
    return cuemu::shuffle(mask, v, [&](int l) {
        int s = (l & (width - 1)) - (int)d;
        return s >= 0 ? (l & ~(width - 1)) + s : l;
    });
}
/* threads run one at a time, between switches: read-modify-write is atomic */
template <class T, class U> inline T atomicAdd(T *p, U v) {
    T old = *p;
    *p = (T)(old + (T)v);
    return old;
}
template <class T, class U> inline T atomicMax(T *p, U v) {
    T old = *p;
    if ((T)v > old) *p = (T)v;
    return old;
}
inline void __threadfence(void) {}
inline void __threadfence_block(void) {}
inline size_t __cvta_generic_to_shared(const void *p) { return (size_t)p; }

/* ---- cuBLASLt and cuBLAS (emulated with OpenBLAS) ---- */

typedef enum {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_NOT_SUPPORTED = 15,
} cublasStatus_t;
typedef enum { CUDA_R_32F = 0, CUDA_R_16BF = 14 } cudaDataType_t;
typedef cudaDataType_t cudaDataType;
typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 } cublasOperation_t;
typedef enum { CUBLAS_COMPUTE_32F = 68, CUBLAS_COMPUTE_32F_FAST_TF32 = 77 } cublasComputeType_t;
typedef enum { CUBLASLT_EPILOGUE_DEFAULT = 1, CUBLASLT_EPILOGUE_BIAS = 4 } cublasLtEpilogue_t;
typedef enum {
    CUBLASLT_MATMUL_DESC_TRANSA = 3,
    CUBLASLT_MATMUL_DESC_TRANSB = 4,
    CUBLASLT_MATMUL_DESC_EPILOGUE = 7,
    CUBLASLT_MATMUL_DESC_BIAS_POINTER = 8,
    CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE = 26,
} cublasLtMatmulDescAttributes_t;
typedef enum {
    CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT = 5,
    CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET = 6,
} cublasLtMatrixLayoutAttribute_t;
typedef enum {
    CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1,
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES = 5,
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES = 6,
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES = 7,
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES = 8,
} cublasLtMatmulPreferenceAttributes_t;

typedef struct cuemuLtHandle *cublasLtHandle_t;
typedef struct cuemuLtDesc *cublasLtMatmulDesc_t;
typedef struct cuemuLtLayout *cublasLtMatrixLayout_t;
typedef struct cuemuLtPref *cublasLtMatmulPreference_t;
typedef struct cuemuHandle *cublasHandle_t;
typedef struct {
    uint64_t data[8];
} cublasLtMatmulAlgo_t;
typedef struct {
    cublasLtMatmulAlgo_t algo;
    size_t workspaceSize;
    cublasStatus_t state;
    float wavesCount;
    int reserved[4];
} cublasLtMatmulHeuristicResult_t;

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h);
const char *cublasLtGetStatusString(cublasStatus_t s);
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t c,
                                        cudaDataType_t scale);
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d);
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d,
                                              cublasLtMatmulDescAttributes_t a, const void *v,
                                              size_t n);
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType_t t,
                                          uint64_t rows, uint64_t cols, int64_t ld);
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l);
cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l,
                                                cublasLtMatrixLayoutAttribute_t a, const void *v,
                                                size_t n);
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p);
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p);
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t a,
                                                    const void *v, size_t n);
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t d,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t dl,
                                              cublasLtMatmulPreference_t p, int requested,
                                              cublasLtMatmulHeuristicResult_t *out, int *found);
cublasStatus_t cublasLtMatmulAlgoCheck(cublasLtHandle_t h, cublasLtMatmulDesc_t d,
                                       cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                       cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t dl,
                                       const cublasLtMatmulAlgo_t *algo,
                                       cublasLtMatmulHeuristicResult_t *out);
cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t d, const void *alpha,
                              const void *A, cublasLtMatrixLayout_t la, const void *B,
                              cublasLtMatrixLayout_t lb, const void *beta, const void *C,
                              cublasLtMatrixLayout_t lc, void *D, cublasLtMatrixLayout_t ld,
                              const cublasLtMatmulAlgo_t *algo, void *ws, size_t ws_bytes,
                              cudaStream_t s);

cublasStatus_t cublasCreate_v2(cublasHandle_t *h);
cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t s);
cublasStatus_t cublasGemmGroupedBatchedEx(
    cublasHandle_t h, const cublasOperation_t transa[], const cublasOperation_t transb[],
    const int m[], const int n[], const int k[], const void *alpha, const void *const A[],
    cudaDataType_t at, const int lda[], const void *const B[], cudaDataType_t bt, const int ldb[],
    const void *beta, void *const C[], cudaDataType_t ct, const int ldc[], int group_count,
    const int group_size[], cublasComputeType_t compute);

#endif
