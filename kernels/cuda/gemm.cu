/* gemm.cu: every matrix product of the CUDA backend goes through cuda_gemm(),
 * a row-major front end to cuBLASLt (which is column-major), and the linear
 * layer ops matmul_fwd/matmul_bwd built on it. The forward adds the bias in
 * cuBLASLt's BIAS epilogue; the bias gradient is a deterministic column sum
 * (norms.cu), not an atomics-based epilogue.
 *
 * Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T, and a
 * row-major (r, c) matrix is the column-major (c, r) matrix with the same
 * stride: so cuBLASLt is called with the operands swapped (B first), the
 * transpose flags unchanged, m = N and n = M.
 */
#include <stdio.h>

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

void cuda_gemm(const GemmArgs *g) {
    /* column-major problem: D (m, n) = op(a) (m, k) @ op(b) (k, n), a = B, b = A */
    int m = g->N, n = g->M, k = g->K;
    cublasOperation_t opa = g->tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t opb = g->ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
    if (g->ab_type == CUDA_R_32F && g->tf32) compute = CUBLAS_COMPUTE_32F_FAST_TF32;

    cublasLtMatmulDesc_t desc;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, compute, CUDA_R_32F));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
    if (g->bias) {
        cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
        CUBLAS_CHECK(
            cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                    &g->bias, sizeof g->bias));
        cudaDataType_t bt = g->c_type;
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                                    &bt, sizeof bt));
    }

    cublasLtMatrixLayout_t la, lb, lc;
    layout(&la, g->ab_type, g->tb ? k : m, g->tb ? m : k, g->ldb, g->batch, g->sB);
    layout(&lb, g->ab_type, g->ta ? n : k, g->ta ? k : n, g->lda, g->batch, g->sA);
    layout(&lc, g->c_type, m, n, g->ldc, g->batch, g->sC);

    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &g_cuda.lt_ws_bytes,
        sizeof g_cuda.lt_ws_bytes));
    uint32_t al_a = ptr_alignment(g->B), al_b = ptr_alignment(g->A), al_c = ptr_alignment(g->C);
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof al_c));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof al_c));

    cublasLtMatmulHeuristicResult_t heur;
    int found = 0;
    CUBLAS_CHECK(
        cublasLtMatmulAlgoGetHeuristic(g_cuda.lt, desc, la, lb, lc, lc, pref, 1, &heur, &found));
    if (found == 0) {
        char msg[256];
        snprintf(msg, sizeof msg,
                 "cuBLASLt has no algorithm for M=%d N=%d K=%d ta=%d tb=%d batch=%d bias=%d", g->M,
                 g->N, g->K, g->ta, g->tb, g->batch, g->bias != NULL);
        CUDA_FATAL(msg);
    }
    CUBLAS_CHECK(cublasLtMatmul(g_cuda.lt, desc, &g->alpha, g->B, la, g->A, lb, &g->beta, g->C, lc,
                                g->C, lc, &heur.algo, g_cuda.lt_ws, g_cuda.lt_ws_bytes,
                                g_cuda.stream));
    if (g_cuda.debug_sync) CUDA_CHECK(cudaStreamSynchronize(g_cuda.stream));

    CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(la));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(lb));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(lc));
    CUBLAS_CHECK(cublasLtMatmulDescDestroy(desc));
}

/* out (N, OC) = inp (N, IC) @ w^T (w: (OC, IC)) + bias */
template <typename T>
static void matmul_fwd(void *out, const void *inp, const void *w, const void *bias, int N, int IC,
                       int OC) {
    GemmArgs g = {};
    g.ta = 0, g.tb = 1, g.M = N, g.N = OC, g.K = IC;
    g.A = inp, g.lda = IC, g.B = w, g.ldb = IC, g.C = out, g.ldc = OC, g.batch = 1;
    g.ab_type = g.c_type = cuda_dtype<T>();
    g.alpha = 1.0f, g.beta = 0.0f, g.bias = bias;
    cuda_gemm(&g);
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
