/* gemm.cu: every matrix product of the CUDA backend goes through cuda_gemm(),
 * a row-major front end to cuBLASLt (which is column-major), and the linear
 * layer ops matmul_fwd/matmul_bwd built on it. The forward adds the bias in
 * cuBLASLt's BIAS epilogue (or a small kernel when the bias view is not
 * 16-byte aligned); the bias gradient is a deterministic column sum
 * (norms.cu), not an atomics-based epilogue.
 *
 * Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T, and a
 * row-major (r, c) matrix is the column-major (c, r) matrix with the same
 * stride: so cuBLASLt is called with the operands swapped (B first), the
 * transpose flags unchanged, m = N and n = M.
 */
#include <stdio.h>
#include <string.h>

#include "kernels/cuda/cuda_common.cuh"

/* largest power of two (<= 256) dividing the address: cuBLASLt's heuristic
 * must not pick a kernel that assumes more alignment than the views have */
static uint32_t ptr_alignment(const void *p) {
    uint32_t a = 256;
    while (a > 1 && ((uintptr_t)p % a)) a >>= 1;
    return a;
}

static void layout(cublasLtMatrixLayout_t *l, cudaDataType_t t, int rows, int cols, int ld,
                   int batch, long long stride) {
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(l, t, (uint64_t)rows, (uint64_t)cols, ld));
    if (batch > 1) {
        int32_t b = batch;
        int64_t s = stride;
        CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &b,
                                                      sizeof b));
        CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
            *l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &s, sizeof s));
    }
}

/* Descriptors, layouts and the chosen algorithm of a GEMM shape are built
 * once (the heuristic query costs far more than a small GEMM) and kept in a
 * small cache keyed by everything but the pointers and scalars. */
typedef struct {
    int ta, tb, M, N, K, lda, ldb, ldc, batch, has_bias, tf32;
    long long sA, sB, sC;
    cudaDataType_t ab_type, c_type;
    uint32_t al_a, al_b, al_c;
} GemmKey;

typedef struct {
    GemmKey key;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
} GemmPlan;

#define GEMM_CACHE 128
static GemmPlan g_plans[GEMM_CACHE];
static int g_n_plans, g_next_evict;

static void plan_destroy(GemmPlan *p) {
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->la));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->lb));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->lc));
    CUBLAS_CHECK(cublasLtMatmulDescDestroy(p->desc));
}

static void plan_build(GemmPlan *p, const GemmKey *key) {
    const GemmKey *g = key;
    p->key = *key;
    /* column-major problem: D (m, n) = op(a) (m, k) @ op(b) (k, n), a = B, b = A */
    int m = g->N, n = g->M, k = g->K;
    cublasOperation_t opa = g->tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t opb = g->ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
    if (g->ab_type == CUDA_R_32F && g->tf32) compute = CUBLAS_COMPUTE_32F_FAST_TF32;

    CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->desc, compute, CUDA_R_32F));
    CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
    CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
    if (g->has_bias) {
        cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi,
                                                    sizeof epi));
        cudaDataType_t bt = g->c_type;
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                                    &bt, sizeof bt));
    }
    layout(&p->la, g->ab_type, g->tb ? k : m, g->tb ? m : k, g->ldb, g->batch, g->sB);
    layout(&p->lb, g->ab_type, g->ta ? n : k, g->ta ? k : n, g->lda, g->batch, g->sA);
    layout(&p->lc, g->c_type, m, n, g->ldc, g->batch, g->sC);

    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &g_cuda.lt_ws_bytes,
        sizeof g_cuda.lt_ws_bytes));
    /* operand a of the column-major call is B, operand b is A */
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &g->al_b, sizeof g->al_b));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &g->al_a, sizeof g->al_a));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &g->al_c, sizeof g->al_c));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &g->al_c, sizeof g->al_c));
    cublasLtMatmulHeuristicResult_t heur;
    int found = 0;
    CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(g_cuda.lt, p->desc, p->la, p->lb, p->lc, p->lc,
                                                pref, 1, &heur, &found));
    CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    if (found == 0) {
        char msg[256];
        snprintf(msg, sizeof msg,
                 "cuBLASLt has no algorithm for M=%d N=%d K=%d ta=%d tb=%d batch=%d bias=%d", g->M,
                 g->N, g->K, g->ta, g->tb, g->batch, g->has_bias);
        CUDA_FATAL(msg);
    }
    p->algo = heur.algo;
}

static GemmPlan *plan_get(const GemmKey *key) {
    for (int i = 0; i < g_n_plans; i++)
        if (!memcmp(&g_plans[i].key, key, sizeof *key)) return &g_plans[i];
    GemmPlan *p;
    if (g_n_plans < GEMM_CACHE) {
        p = &g_plans[g_n_plans++];
    } else {
        p = &g_plans[g_next_evict];
        g_next_evict = (g_next_evict + 1) % GEMM_CACHE;
        plan_destroy(p);
    }
    plan_build(p, key);
    return p;
}

void cuda_gemm(const GemmArgs *g) {
    GemmKey key;
    memset(&key, 0, sizeof key); /* padding too: the key is compared with memcmp */
    key.ta = g->ta, key.tb = g->tb, key.M = g->M, key.N = g->N, key.K = g->K;
    key.lda = g->lda, key.ldb = g->ldb, key.ldc = g->ldc, key.batch = g->batch;
    key.has_bias = g->bias != NULL, key.tf32 = g->tf32;
    key.sA = g->batch > 1 ? g->sA : 0, key.sB = g->batch > 1 ? g->sB : 0;
    key.sC = g->batch > 1 ? g->sC : 0;
    key.ab_type = g->ab_type, key.c_type = g->c_type;
    key.al_a = ptr_alignment(g->A), key.al_b = ptr_alignment(g->B), key.al_c = ptr_alignment(g->C);
    GemmPlan *p = plan_get(&key);
    if (g->bias)
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                    &g->bias, sizeof g->bias));
    CUBLAS_CHECK(cublasLtMatmul(g_cuda.lt, p->desc, &g->alpha, g->B, p->la, g->A, p->lb, &g->beta,
                                g->C, p->lc, g->C, p->lc, &p->algo, g_cuda.lt_ws,
                                g_cuda.lt_ws_bytes, g_cuda.stream));
    if (g_cuda.debug_sync) CUDA_CHECK(cudaStreamSynchronize(g_cuda.stream));
}

/* out (N, OC) += bias (OC) broadcast over rows; one thread per element.
 * Used when the bias view is not 16-byte aligned, which cuBLASLt's bias
 * epilogue does not reliably support. */
template <typename T>
__global__ void add_bias_kernel(T *out, const T *bias, int OC, size_t total) {
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < total; e += stride)
        out[e] = from_f<T>(to_f(out[e]) + to_f(bias[e % OC]));
}

/* out (N, OC) = inp (N, IC) @ w^T (w: (OC, IC)) + bias */
template <typename T>
static void matmul_fwd(void *out, const void *inp, const void *w, const void *bias, int N, int IC,
                       int OC) {
    int epilogue = bias && cuda_aligned16(bias);
    GemmArgs g = {};
    g.ta = 0, g.tb = 1, g.M = N, g.N = OC, g.K = IC;
    g.A = inp, g.lda = IC, g.B = w, g.ldb = IC, g.C = out, g.ldc = OC, g.batch = 1;
    g.ab_type = g.c_type = cuda_dtype<T>();
    g.alpha = 1.0f, g.beta = 0.0f, g.bias = epilogue ? bias : NULL;
    cuda_gemm(&g);
    if (bias && !epilogue) {
        size_t total = (size_t)N * OC;
        add_bias_kernel<T><<<cuda_grid(total, 256), 256, 0, g_cuda.stream>>>(
            (T *)out, (const T *)bias, OC, total);
        LAUNCH_CHECK();
    }
}

/* dinp (N, IC) = dout (N, OC) @ w (OC, IC); dw (OC, IC) += dout^T @ inp;
 * dbias (OC) += colsum(dout) */
template <typename T>
static void matmul_bwd(void *dinp, void *dw, void *dbias, const void *dout, const void *inp,
                       const void *w, int N, int IC, int OC) {
    GemmArgs g = {};
    g.batch = 1;
    g.ab_type = g.c_type = cuda_dtype<T>();
    g.alpha = 1.0f;
    if (dinp) {
        g.ta = 0, g.tb = 0, g.M = N, g.N = IC, g.K = OC;
        g.A = dout, g.lda = OC, g.B = w, g.ldb = IC, g.C = dinp, g.ldc = IC, g.beta = 0.0f;
        cuda_gemm(&g);
    }
    g.ta = 1, g.tb = 0, g.M = OC, g.N = IC, g.K = N;
    g.A = dout, g.lda = OC, g.B = inp, g.ldb = IC, g.C = dw, g.ldc = IC, g.beta = 1.0f;
    cuda_gemm(&g);
    if (dbias)
        cuda_colsum<T>((T *)dbias, NULL, (const T *)dout, NULL, NULL, NULL, N, OC, COLSUM_PLAIN);
}

void cuda_fill_gemm(Ops *o, int use_bf16) {
    o->matmul_fwd = use_bf16 ? matmul_fwd<bf16> : matmul_fwd<float>;
    o->matmul_bwd = use_bf16 ? matmul_bwd<bf16> : matmul_bwd<float>;
}
