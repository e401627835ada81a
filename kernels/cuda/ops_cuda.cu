/* ops_cuda.cu: start-up of the CUDA backend and its two op tables, the
 * error reporting shared by all its files, the scratch buffer, and the
 * memory ops (alloc, zero, upload/download with fp32 <-> act conversion).
 *
 * Tables: "cuda" (act type bf16: parameters, activations and gradients in
 * bf16, fp32 master weights and Adam moments, fp32 accumulation everywhere)
 * and "cuda-fp32" (act type fp32, no TF32: the mode the parity tests compare
 * against the CPU backend). Both run the same kernels, templated on the
 * element type. The device is the calling thread's current CUDA device when
 * the backend is first asked for (a multi-GPU launcher calls cudaSetDevice
 * before ops_cuda()). The options (ops.h OpsOptions) are checked and kept in
 * g_cuda at every ops_cuda / ops_cuda_fp32, and both tables are filled
 * again from them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/util.h"

CudaState g_cuda;

/* ---- errors ---- */

void cuda_fatal(const char *file, int line, const char *call, const char *reason) {
    fprintf(stderr, "dapt: CUDA error at %s:%d: %s%s%s\n", file, line, call, *call ? ": " : "",
            reason);
    fflush(stderr);
    abort();
}

void cuda_check_(cudaError_t e, const char *file, int line, const char *call) {
    if (e != cudaSuccess) cuda_fatal(file, line, call, cudaGetErrorString(e));
}

void cublas_check_(cublasStatus_t s, const char *file, int line, const char *call) {
    if (s != CUBLAS_STATUS_SUCCESS) cuda_fatal(file, line, call, cublasLtGetStatusString(s));
}

void cuda_after_launch_(const char *file, int line) {
    cuda_check_(cudaGetLastError(), file, line, "kernel launch");
    if (g_cuda.debug_sync)
        cuda_check_(cudaStreamSynchronize(g_cuda.stream), file, line, "kernel (cuda.sync_debug)");
}

void *cuda_scratch(size_t n_bytes) {
    if (n_bytes <= g_cuda.scratch_bytes) return g_cuda.scratch;
    size_t want = n_bytes + n_bytes / 4;
    CUDA_CHECK(cudaStreamSynchronize(g_cuda.stream));
    if (g_cuda.scratch) CUDA_CHECK(cudaFree(g_cuda.scratch));
    g_cuda.scratch = NULL;
    g_cuda.scratch_bytes = 0;
    CUDA_CHECK(cudaMalloc(&g_cuda.scratch, want));
    g_cuda.scratch_bytes = want;
    return g_cuda.scratch;
}

/* ---- kernel times ---- */

int g_ktime_on;
namespace {
struct KTime {
    const char *name;
    double ms;
    long calls;
};
KTime g_ktimes[64];
int g_n_ktimes;
cudaEvent_t g_kt_start, g_kt_stop;
const char *g_kt_name;
} // namespace

void cuda_ktime_begin(const char *name) {
    if (!g_kt_start) {
        CUDA_CHECK(cudaEventCreate(&g_kt_start));
        CUDA_CHECK(cudaEventCreate(&g_kt_stop));
    }
    g_kt_name = name;
    CUDA_CHECK(cudaEventRecord(g_kt_start, g_cuda.stream));
}

void cuda_ktime_end(void) {
    CUDA_CHECK(cudaEventRecord(g_kt_stop, g_cuda.stream));
    CUDA_CHECK(cudaEventSynchronize(g_kt_stop));
    float ms = 0.0f;
    CUDA_CHECK(cudaEventElapsedTime(&ms, g_kt_start, g_kt_stop));
    int i = 0;
    while (i < g_n_ktimes && strcmp(g_ktimes[i].name, g_kt_name)) i++;
    if (i == g_n_ktimes) {
        if (g_n_ktimes == (int)(sizeof g_ktimes / sizeof *g_ktimes)) return;
        g_ktimes[g_n_ktimes++] = KTime{g_kt_name, 0.0, 0};
    }
    g_ktimes[i].ms += ms;
    g_ktimes[i].calls++;
}

void ops_cuda_ktime_enable(int on) { g_ktime_on = on && g_cuda.ready; }

void ops_cuda_ktime_report(FILE *f, int steps) {
    if (g_n_ktimes == 0 || steps < 1) return;
    /* largest first */
    for (int i = 1; i < g_n_ktimes; i++)
        for (int j = i; j > 0 && g_ktimes[j].ms > g_ktimes[j - 1].ms; j--) {
            KTime t = g_ktimes[j];
            g_ktimes[j] = g_ktimes[j - 1], g_ktimes[j - 1] = t;
        }
    fprintf(f, "kernels inside ops (CUDA events, each kernel waited for):\n");
    fprintf(f, "  %-24s %10s %10s\n", "kernel", "calls/step", "ms/step");
    for (int i = 0; i < g_n_ktimes; i++)
        fprintf(f, "  %-24s %10.1f %10.3f\n", g_ktimes[i].name, (double)g_ktimes[i].calls / steps,
                g_ktimes[i].ms / steps);
    g_n_ktimes = 0;
}

/* ---- memory ---- */

static void *cu_alloc(size_t n_bytes) {
    void *p = NULL;
    size_t size = n_bytes ? cuda_pad(n_bytes) : 256;
    if (cudaMalloc(&p, size) != cudaSuccess) {
        (void)cudaGetLastError(); /* out of memory is reported as NULL, not sticky */
        return NULL;
    }
    CUDA_CHECK(cudaMemsetAsync(p, 0, size, g_cuda.stream));
    return p;
}

static void cu_free(void *p) {
    if (p) CUDA_CHECK(cudaFree(p));
}

static void cu_zero(void *p, size_t n_bytes) {
    CUDA_CHECK(cudaMemsetAsync(p, 0, n_bytes, g_cuda.stream));
}

static void cu_sync(void) { CUDA_CHECK(cudaStreamSynchronize(g_cuda.stream)); }

static void cu_upload_bytes(void *dst, const void *src, size_t n_bytes) {
    CUDA_CHECK(cudaMemcpyAsync(dst, src, n_bytes, cudaMemcpyHostToDevice, g_cuda.stream));
    CUDA_CHECK(cudaStreamSynchronize(g_cuda.stream));
}

static void cu_download_bytes(void *dst, const void *src, size_t n_bytes) {
    CUDA_CHECK(cudaMemcpyAsync(dst, src, n_bytes, cudaMemcpyDeviceToHost, g_cuda.stream));
    CUDA_CHECK(cudaStreamSynchronize(g_cuda.stream));
}

static void *cu_alloc_host(size_t n_bytes) {
    void *p = NULL;
    if (cudaMallocHost(&p, n_bytes ? n_bytes : 1) != cudaSuccess) return NULL;
    memset(p, 0, n_bytes);
    return p;
}

static void cu_free_host(void *p) {
    if (p) CUDA_CHECK(cudaFreeHost(p));
}

static void cu_copy(void *dst, const void *src, size_t n_bytes) {
    if (n_bytes)
        CUDA_CHECK(cudaMemcpyAsync(dst, src, n_bytes, cudaMemcpyDeviceToDevice, g_cuda.stream));
}

/* Elementwise type conversion, 8 elements per thread (grid-stride). */
template <typename TO, typename TI>
__global__ void convert_kernel(TO *out, const TI *in, size_t n, int vec) {
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t c = blockIdx.x * (size_t)blockDim.x + threadIdx.x; c * 8 < n; c += stride) {
        size_t i0 = c * 8;
        int cnt = n - i0 < 8 ? (int)(n - i0) : 8;
        float f[8];
        ld8v(f, in + i0, vec && cnt == 8, cnt);
        st8v(out + i0, f, vec && cnt == 8, cnt);
    }
}

/* fp32 host <-> bf16 device goes through an fp32 staging region of the
 * scratch buffer, converted on the device, 16M elements at a time. */
#define STAGE_ELEMS ((size_t)1 << 24)

static void cu_upload_f32(void *dst, const float *src, size_t n) { cu_upload_bytes(dst, src, n * 4); }
static void cu_download_f32(float *dst, const void *src, size_t n) {
    cu_download_bytes(dst, src, n * 4);
}

static void cu_upload_bf16(void *dst_, const float *src, size_t n) {
    bf16 *dst = (bf16 *)dst_;
    float *stage = (float *)cuda_scratch(STAGE_ELEMS * 4);
    for (size_t i = 0; i < n; i += STAGE_ELEMS) {
        size_t m = n - i < STAGE_ELEMS ? n - i : STAGE_ELEMS;
        CUDA_CHECK(cudaMemcpyAsync(stage, src + i, m * 4, cudaMemcpyHostToDevice, g_cuda.stream));
        int vec = cuda_aligned16(dst + i);
        convert_kernel<bf16, float><<<cuda_grid((m + 7) / 8, 256), 256, 0, g_cuda.stream>>>(
            dst + i, stage, m, vec);
        LAUNCH_CHECK();
    }
    CUDA_CHECK(cudaStreamSynchronize(g_cuda.stream));
}

static void cu_download_bf16(float *dst, const void *src_, size_t n) {
    const bf16 *src = (const bf16 *)src_;
    float *stage = (float *)cuda_scratch(STAGE_ELEMS * 4);
    for (size_t i = 0; i < n; i += STAGE_ELEMS) {
        size_t m = n - i < STAGE_ELEMS ? n - i : STAGE_ELEMS;
        int vec = cuda_aligned16(src + i);
        convert_kernel<float, bf16><<<cuda_grid((m + 7) / 8, 256), 256, 0, g_cuda.stream>>>(
            stage, src + i, m, vec);
        LAUNCH_CHECK();
        CUDA_CHECK(cudaMemcpyAsync(dst + i, stage, m * 4, cudaMemcpyDeviceToHost, g_cuda.stream));
        CUDA_CHECK(cudaStreamSynchronize(g_cuda.stream));
    }
}

/* ---- start-up ---- */

static Ops g_ops_bf16, g_ops_f32;

static void fill_table(Ops *o, int use_bf16) {
    memset(o, 0, sizeof *o);
    o->name = use_bf16 ? "cuda" : "cuda-fp32";
    o->act_bytes = use_bf16 ? 2 : 4;
    o->alloc = cu_alloc;
    o->free = cu_free;
    o->zero = cu_zero;
    o->sync = cu_sync;
    o->upload = use_bf16 ? cu_upload_bf16 : cu_upload_f32;
    o->download = use_bf16 ? cu_download_bf16 : cu_download_f32;
    o->upload_bytes = cu_upload_bytes;
    o->download_bytes = cu_download_bytes;
    o->copy = cu_copy;
    o->alloc_host = cu_alloc_host;
    o->free_host = cu_free_host;
    cuda_fill_gemm(o, use_bf16);
    cuda_fill_norms(o, use_bf16);
    cuda_fill_elementwise(o, use_bf16);
    cuda_fill_attention(o, use_bf16);
    cuda_fill_lmhead(o, use_bf16);
    cuda_fill_adamw(o, use_bf16);
    cuda_fill_moe(o, use_bf16);
    cuda_fill_moe_grouped(o, use_bf16);
}

/* 0 when every option is in range (the ranges of the [cuda] keys,
 * trainer/config_keys.c), else fills err naming the key */
static int check_options(const OpsOptions *o, char *err, size_t err_len) {
    const struct {
        const char *key;
        int v, lo, hi;
    } k[] = {{"cuda.flash_attention", o->cuda.flash_attention, 0, 1},
             {"cuda.flash_heads_per_block", o->cuda.flash_heads_per_block, 0, 1024},
             {"cuda.fused_norm", o->cuda.fused_norm, 0, 1},
             {"cuda.moe_grouped_gemm", o->cuda.moe_grouped_gemm, 0, 1},
             {"cuda.lmhead_chunk_rows", o->cuda.lmhead_chunk_rows, 1, 1 << 20},
             {"cuda.sync_debug", o->cuda.sync_debug, 0, 1}};
    for (size_t i = 0; i < sizeof k / sizeof *k; i++)
        if (k[i].v < k[i].lo || k[i].v > k[i].hi)
            return err_set(err, err_len, "%s = %d: expected %d to %d", k[i].key, k[i].v, k[i].lo,
                           k[i].hi);
    return 0;
}

/* the device, stream, cuBLASLt handle and workspace, once; 0 on success, on
 * failure fills err and leaves the backend unusable */
static int cuda_start(char *err, size_t err_len) {
    if (g_cuda.ready) return 0;
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        err_set(err, err_len, "no GPU: cudaGetDeviceCount: %s",
                 e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        (void)cudaGetLastError();
        return -1;
    }
    if ((e = cudaGetDevice(&g_cuda.device)) != cudaSuccess ||
        (e = cudaDeviceGetAttribute(&g_cuda.sm_count, cudaDevAttrMultiProcessorCount,
                                    g_cuda.device)) != cudaSuccess ||
        (e = cudaStreamCreateWithFlags(&g_cuda.stream, cudaStreamNonBlocking)) != cudaSuccess) {
        err_set(err, err_len, "CUDA start-up failed: %s", cudaGetErrorString(e));
        return -1;
    }
    cublasStatus_t s = cublasLtCreate(&g_cuda.lt);
    if (s != CUBLAS_STATUS_SUCCESS) {
        err_set(err, err_len, "cublasLtCreate failed: %s", cublasLtGetStatusString(s));
        return -1;
    }
    g_cuda.lt_ws_bytes = (size_t)32 << 20;
    if ((e = cudaMalloc(&g_cuda.lt_ws, g_cuda.lt_ws_bytes)) != cudaSuccess) {
        err_set(err, err_len, "cudaMalloc of the cuBLASLt workspace failed: %s",
                 cudaGetErrorString(e));
        return -1;
    }
    g_cuda.ready = 1;
    return 0;
}

/* starts the backend (once) and (re)configures it with opt: 0 on success */
static int cuda_configure(const OpsOptions *opt, char *err, size_t err_len) {
    const OpsOptions o = opt ? *opt : ops_options_default();
    if (check_options(&o, err, err_len) || cuda_start(err, err_len)) return -1;
    g_cuda.opt = o;
    g_cuda.debug_sync = o.cuda.sync_debug;
    fill_table(&g_ops_bf16, 1);
    fill_table(&g_ops_f32, 0);
    return 0;
}

const Ops *ops_cuda(const OpsOptions *opt, char *err, size_t err_len) {
    return cuda_configure(opt, err, err_len) ? NULL : &g_ops_bf16;
}

const Ops *ops_cuda_fp32(const OpsOptions *opt, char *err, size_t err_len) {
    return cuda_configure(opt, err, err_len) ? NULL : &g_ops_f32;
}

const Ops *cuda_table(int use_bf16) { return use_bf16 ? &g_ops_bf16 : &g_ops_f32; }

void *ops_cuda_stream(void) { return g_cuda.ready ? (void *)g_cuda.stream : NULL; }

int ops_cuda_mem(size_t *used, size_t *total) {
    size_t fr = 0, tot = 0;
    *used = *total = 0;
    if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) return 1;
    *used = tot - fr, *total = tot;
    return 0;
}
