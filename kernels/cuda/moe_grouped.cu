/* moe_grouped.cu: the grouped expert GEMMs of the op contract
 * (moe_expert_matmul_fwd/bwd, kernels/ops.h). Opt-in: the table gets them
 * only with the option cuda.moe_grouped_gemm = true when the backend is
 * configured (and libcublas loads: it is dlopen'ed then, so nothing else
 * needs it); otherwise trainer/moe.c runs one matmul_fwd/bwd (cuBLASLt,
 * gemm.cu) per expert. Verified on an H100 and an H200, and slower there
 * than the per-expert loop on the benchmark's MoE (docs/gpu-log.md,
 * docs/performance.md).
 *
 * One cublasGemmGroupedBatchedEx call per op over every expert with rows,
 * instead of one cuBLASLt call per expert and direction: each GEMM problem
 * is its own group of size 1 (the experts' row counts differ), so a call
 * has one group per expert (forward) or two (backward: dinp and dw, which
 * touch different memory). The m/n/k/ld/alpha/beta/transpose arrays are
 * host arrays; the A/B/C pointer arrays must be device arrays: a one-block
 * kernel copies them from its by-value argument into a small device buffer
 * (no host buffer whose lifetime would outlast the call, no copy that could
 * synchronise the stream), at most MAX_PROBLEMS per call (more experts:
 * several calls).
 *
 * Row-major to column-major as in gemm.cu: a row-major (r, c) matrix with
 * row stride ld is the column-major (c, r) matrix with leading dimension
 * ld, so row-major C = A B is column-major C^T = B^T A^T. Expert e with n
 * rows, its weight w (OC, IC) row-major:
 *   fwd   out (n, OC) = inp (n, IC) w^T:   out^T (OC, n) = op_T(w: (IC, OC), ld IC) inp^T (IC, n)
 *           m = OC, n = n, k = IC; A = w (T, ld IC); B = inp (N, ld IC); C = out (ld OC); beta 0
 *   dinp  (n, IC) = dout (n, OC) w:        dinp^T (IC, n) = w^T (IC, OC) dout^T (OC, n)
 *           m = IC, n = n, k = OC; A = w (N, ld IC); B = dout (N, ld OC); C = dinp (ld IC); beta 0
 *   dw   (OC, IC) += dout^T (OC, n) inp (n, IC): dw^T (IC, OC) += inp^T (IC, n) dout (n, OC)
 *           m = IC, n = OC, k = n; A = inp (N, ld IC); B = dout (T, ld OC); C = dw (ld IC); beta 1
 * fp32 accumulation (CUBLAS_COMPUTE_32F) for both tables: bf16 inputs and
 * outputs in the bf16 table, fp32 (no TF32) in the fp32 table, as gemm.cu.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublas_v2.h>

#include "kernels/cuda/cuda_common.cuh"
#include "kernels/util.h"

namespace {

enum { MAX_PROBLEMS = 128 }; /* per call: the pointer kernel's argument is 3 KB */

struct Problem {
    cublasOperation_t ta, tb;
    int m, n, k, lda, ldb, ldc;
    float beta;
    const void *A, *B;
    void *C;
};

/* the pointers of up to MAX_PROBLEMS problems: A's at [0, MAX_PROBLEMS),
 * B's at [MAX_PROBLEMS, 2 MAX_PROBLEMS), C's after them; unused NULL */
struct PtrArgs {
    const void *p[3 * MAX_PROBLEMS];
};

/* dst = a.p (3 MAX_PROBLEMS pointers); one block, a thread per pointer */
__global__ void fill_ptrs_kernel(const void **dst, PtrArgs a) {
    for (int i = threadIdx.x; i < 3 * MAX_PROBLEMS; i += blockDim.x) dst[i] = a.p[i];
}

/* cuBLAS (not cuBLASLt, which the rest of the backend uses) is dlopen'ed
 * when the path is selected, so that no program needs libcublas unless it
 * asks for grouped GEMMs */
struct Grouped {
    void *lib;
    decltype(&cublasCreate_v2) create;
    decltype(&cublasSetStream_v2) set_stream;
    decltype(&cublasGemmGroupedBatchedEx) gemm;
    cublasHandle_t handle;
    const void **ptrs; /* device (3 * MAX_PROBLEMS) */
};
Grouped g_grouped;

/* 0 when libcublas and its three functions are loaded; else err filled */
int grouped_load(char *err, size_t err_len) {
    if (g_grouped.gemm) return 0;
#ifdef DAPT_CUEMU /* the host emulator's cuBLAS (tests/cuemu) */
    (void)err, (void)err_len;
    g_grouped.create = cublasCreate_v2;
    g_grouped.set_stream = cublasSetStream_v2;
    g_grouped.gemm = cublasGemmGroupedBatchedEx;
    return 0;
#endif
    static const char *const names[] = {"libcublas.so.13", "libcublas.so"};
    for (size_t i = 0; i < sizeof names / sizeof *names && !g_grouped.lib; i++)
        g_grouped.lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!g_grouped.lib) {
        const char *why = dlerror();
        err_set(err, err_len, "cannot load libcublas.so.13: %s", why ? why : "dlopen failed");
        return 1;
    }
    void *c = dlsym(g_grouped.lib, "cublasCreate_v2");
    void *st = dlsym(g_grouped.lib, "cublasSetStream_v2");
    void *gm = dlsym(g_grouped.lib, "cublasGemmGroupedBatchedEx");
    if (!c || !st || !gm) {
        err_set(err, err_len, "libcublas lacks cublasGemmGroupedBatchedEx (CUDA >= 12.5 needed)");
        return 1;
    }
    /* POSIX: a void * from dlsym converts to a function pointer */
    memcpy(&g_grouped.create, &c, sizeof c);
    memcpy(&g_grouped.set_stream, &st, sizeof st);
    memcpy(&g_grouped.gemm, &gm, sizeof gm);
    return 0;
}

void grouped_init(void) {
    if (g_grouped.handle) return;
    CUBLAS_CHECK(g_grouped.create(&g_grouped.handle));
    CUDA_CHECK(cudaMalloc((void **)&g_grouped.ptrs, 3 * MAX_PROBLEMS * sizeof(void *)));
}

/* problems [0, n) in calls of at most MAX_PROBLEMS, on the compute stream */
void run_problems(const Problem *p, int n, cudaDataType_t t) {
    grouped_init();
    CUBLAS_CHECK(g_grouped.set_stream(g_grouped.handle, g_cuda.stream));
    for (int at = 0; at < n; at += MAX_PROBLEMS) {
        int c = n - at < MAX_PROBLEMS ? n - at : MAX_PROBLEMS;
        PtrArgs a;
        memset(&a, 0, sizeof a);
        cublasOperation_t ta[MAX_PROBLEMS], tb[MAX_PROBLEMS];
        int m[MAX_PROBLEMS], nn[MAX_PROBLEMS], k[MAX_PROBLEMS], lda[MAX_PROBLEMS];
        int ldb[MAX_PROBLEMS], ldc[MAX_PROBLEMS], size[MAX_PROBLEMS];
        float alpha[MAX_PROBLEMS], beta[MAX_PROBLEMS];
        for (int i = 0; i < c; i++) {
            const Problem *q = &p[at + i];
            ta[i] = q->ta, tb[i] = q->tb, m[i] = q->m, nn[i] = q->n, k[i] = q->k;
            lda[i] = q->lda, ldb[i] = q->ldb, ldc[i] = q->ldc, size[i] = 1;
            alpha[i] = 1.0f, beta[i] = q->beta;
            a.p[i] = q->A, a.p[MAX_PROBLEMS + i] = q->B, a.p[2 * MAX_PROBLEMS + i] = q->C;
        }
        fill_ptrs_kernel<<<1, 256, 0, g_cuda.stream>>>(g_grouped.ptrs, a);
        LAUNCH_CHECK();
        const void *const *A = g_grouped.ptrs, *const *B = g_grouped.ptrs + MAX_PROBLEMS;
        void *const *C = (void *const *)(g_grouped.ptrs + 2 * MAX_PROBLEMS);
        CUBLAS_CHECK(g_grouped.gemm(g_grouped.handle, ta, tb, m, nn, k, alpha, A, t, lda, B, t,
                                    ldb, beta, C, t, ldc, c, size, CUBLAS_COMPUTE_32F));
        if (g_cuda.debug_sync) CUDA_CHECK(cudaStreamSynchronize(g_cuda.stream));
    }
}

/* The experts with rows, in order: add(e, rows, first_row, out) writes
 * its (at most per_expert) problems to out and returns how many; then all
 * of them run. */
template <typename F>
void run_experts(const int32_t *counts, int E, int per_expert, cudaDataType_t t, F add) {
    Problem *p = (Problem *)malloc((size_t)(E > 0 ? per_expert * E : 1) * sizeof *p);
    if (!p) CUDA_FATAL("out of host memory (grouped expert GEMM)");
    int n = 0;
    size_t row = 0;
    for (int e = 0; e < E; e++) {
        int r = counts[e];
        if (r > 0) {
            n += add(e, r, row, p + n);
            row += (size_t)r;
        }
    }
    run_problems(p, n, t);
    free(p);
}

template <typename T>
void expert_matmul_fwd(void *out, const void *inp, const void *w, size_t w_stride,
                       const int32_t *counts, int E, int IC, int OC) {
    run_experts(counts, E, 1, cuda_dtype<T>(), [&](int e, int r, size_t row, Problem *q) {
        *q = Problem{};
        q->ta = CUBLAS_OP_T, q->tb = CUBLAS_OP_N, q->m = OC, q->n = r, q->k = IC;
        q->A = (const T *)w + (size_t)e * w_stride, q->lda = IC;
        q->B = (const T *)inp + row * IC, q->ldb = IC;
        q->C = (T *)out + row * OC, q->ldc = OC, q->beta = 0.0f;
        return 1;
    });
}

template <typename T>
void expert_matmul_bwd(void *dinp, void *dw, const void *dout, const void *inp, const void *w,
                       size_t w_stride, const int32_t *counts, int E, int IC, int OC) {
    run_experts(counts, E, 2, cuda_dtype<T>(), [&](int e, int r, size_t row, Problem *q) {
        /* dinp_e = dout_e @ w_e (overwritten) */
        q[0] = Problem{};
        q[0].ta = CUBLAS_OP_N, q[0].tb = CUBLAS_OP_N, q[0].m = IC, q[0].n = r, q[0].k = OC;
        q[0].A = (const T *)w + (size_t)e * w_stride, q[0].lda = IC;
        q[0].B = (const T *)dout + row * OC, q[0].ldb = OC;
        q[0].C = (T *)dinp + row * IC, q[0].ldc = IC, q[0].beta = 0.0f;
        /* dw_e += dout_e^T @ inp_e */
        q[1] = Problem{};
        q[1].ta = CUBLAS_OP_N, q[1].tb = CUBLAS_OP_T, q[1].m = IC, q[1].n = OC, q[1].k = r;
        q[1].A = (const T *)inp + row * IC, q[1].lda = IC;
        q[1].B = (const T *)dout + row * OC, q[1].ldb = OC;
        q[1].C = (T *)dw + (size_t)e * w_stride, q[1].ldc = IC, q[1].beta = 1.0f;
        return 2;
    });
}

} // namespace

void cuda_fill_moe_grouped(Ops *o, int use_bf16) {
    o->moe_expert_matmul_fwd = NULL;
    o->moe_expert_matmul_bwd = NULL;
    if (!g_cuda.opt.cuda.moe_grouped_gemm) return;
    char err[256];
    if (grouped_load(err, sizeof err)) {
        /* the per-expert GEMMs still work: say (once) why the asked-for
         * path is off */
        static int said;
        if (!said++) fprintf(stderr, "dapt: cuda.moe_grouped_gemm = true ignored: %s\n", err);
        return;
    }
    o->moe_expert_matmul_fwd = use_bf16 ? expert_matmul_fwd<bf16> : expert_matmul_fwd<float>;
    o->moe_expert_matmul_bwd = use_bf16 ? expert_matmul_bwd<bf16> : expert_matmul_bwd<float>;
}
