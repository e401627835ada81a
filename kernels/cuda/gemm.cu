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
 *
 * The host cost of a GEMM is a plan (descriptors, layouts, algorithm); the
 * algorithm comes from cuBLASLt's heuristic query, which costs far more
 * than a small GEMM. Plans are cached per exact shape, and the heuristic is
 * asked once per bucket of row counts for the linear layers (whose row
 * count, the tokens an MoE expert receives, changes every step): the rule
 * that keeps this deterministic is under "plans" below.
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

/* ---- plans ----
 * A plan is what cublasLtMatmul needs besides the pointers and scalars: the
 * operation descriptor, the three matrix layouts and an algorithm. Two
 * caches, both keyed by a GemmKey (every field of the call but pointers and
 * scalars, plus the pointers' alignments and the vary flags):
 *
 *   g_plans   exact shape -> descriptor, layouts, algorithm (direct-mapped
 *             hash table; a colliding shape replaces the entry; rebuilding
 *             an entry costs a few descriptor creations and at most one
 *             cublasLtMatmulAlgoCheck)
 *   g_algos   shape -> the first result of cublasLtMatmulAlgoGetHeuristic
 *             for it (the expensive call, hundreds of microseconds; an
 *             open-addressed table, emptied when three quarters full)
 *
 * The algorithm rule. A dimension marked as varying (GemmArgs.vary_m /
 * vary_k: the token rows of matmul_fwd/bwd, which for MoE experts change
 * every step and every expert) is replaced by its bucket: x <= 128 rounds
 * up to a power of two, larger x up to a multiple of 128. R is the shape
 * with its varying dimensions bucketed, S the exact shape, H(X) the
 * heuristic's first algorithm for shape X. Then
 *
 *   algo(S) = H(S)   if S == R (no varying dimension, or one already on a
 *                    bucket boundary: every fixed shape of a dense model
 *                    whose row count is a multiple of 128 gets its own
 *                    shape's algorithm; other fixed row counts may take
 *                    their bucket's)
 *           = H(R)   if cublasLtMatmulAlgoCheck accepts H(R) for S with a
 *                    workspace that fits
 *           = H(S)   otherwise
 *
 * so one heuristic query serves every row count of a bucket. algo(S) is a
 * function of S alone (given the device, the cuBLASLt build and the
 * workspace size), never of the order of calls: the caches only memoise it,
 * and what they evict or forget is recomputed to the same value. This rests
 * on the heuristic and the check being deterministic functions of their
 * arguments, as any plan cache assumes.
 * With one algorithm per shape, a given shape gives bitwise-repeatable
 * results (ops.h). Two row counts of one bucket use the same algorithm but
 * are different problems; two different buckets may use different
 * algorithms (so different rounding), as two shapes always could. The vary
 * flags are part of the key, so a shape reached with and without them
 * cannot share a cache entry (they could choose differently). */
typedef struct {
    int ta, tb, M, N, K, lda, ldb, ldc, batch, has_bias, tf32, vary_m, vary_k;
    long long sA, sB, sC;
    cudaDataType_t ab_type, c_type;
    uint32_t al_a, al_b, al_c;
} GemmKey;

typedef struct {
    GemmKey key;
    int used;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulAlgo_t algo;
} GemmPlan;

typedef struct {
    GemmKey key;
    int used;
    cublasLtMatmulAlgo_t algo;
} AlgoEntry;

#define GEMM_PLANS 4096 /* exact shapes (descriptors and layouts) */
#define GEMM_ALGOS 4096 /* heuristic results */
static GemmPlan g_plans[GEMM_PLANS];
static AlgoEntry g_algos[GEMM_ALGOS];
static int g_n_algos;

/* FNV-1a over the key's bytes (padding included: keys are memset first) */
static uint64_t key_hash(const GemmKey *k) {
    const unsigned char *b = (const unsigned char *)k;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < sizeof *k; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* the bucket of a varying dimension: the row count whose heuristic result
 * the whole bucket tries first */
static int gemm_bucket(int x) {
    if (x <= 0) return x;
    if (x <= 128) {
        int b = 1;
        while (b < x) b <<= 1;
        return b;
    }
    return (int)(((long long)x + 127) / 128 * 128);
}

/* the descriptor and layouts of a key's exact shape */
static void plan_objects(const GemmKey *g, cublasLtMatmulDesc_t *desc, cublasLtMatrixLayout_t *la,
                         cublasLtMatrixLayout_t *lb, cublasLtMatrixLayout_t *lc) {
    /* column-major problem: D (m, n) = op(a) (m, k) @ op(b) (k, n), a = B, b = A */
    int m = g->N, n = g->M, k = g->K;
    cublasOperation_t opa = g->tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t opb = g->ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
    if (g->ab_type == CUDA_R_32F && g->tf32) compute = CUBLAS_COMPUTE_32F_FAST_TF32;

    CUBLAS_CHECK(cublasLtMatmulDescCreate(desc, compute, CUDA_R_32F));
    CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(*desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
    CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(*desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
    if (g->has_bias) {
        cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(*desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi,
                                                    sizeof epi));
        cudaDataType_t bt = g->c_type;
        CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(*desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                                    &bt, sizeof bt));
    }
    layout(la, g->ab_type, g->tb ? k : m, g->tb ? m : k, g->ldb, g->batch, g->sB);
    layout(lb, g->ab_type, g->ta ? n : k, g->ta ? k : n, g->lda, g->batch, g->sA);
    layout(lc, g->c_type, m, n, g->ldc, g->batch, g->sC);
}

static void objects_destroy(cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t la,
                            cublasLtMatrixLayout_t lb, cublasLtMatrixLayout_t lc) {
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(la));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(lb));
    CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(lc));
    CUBLAS_CHECK(cublasLtMatmulDescDestroy(desc));
}

/* H(g): the heuristic's first algorithm for the key's exact shape */
static cublasLtMatmulAlgo_t heuristic(const GemmKey *g) {
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc;
    plan_objects(g, &desc, &la, &lb, &lc);
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
    CUBLAS_CHECK(
        cublasLtMatmulAlgoGetHeuristic(g_cuda.lt, desc, la, lb, lc, lc, pref, 1, &heur, &found));
    CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    objects_destroy(desc, la, lb, lc);
    if (found == 0) {
        char msg[256];
        snprintf(msg, sizeof msg,
                 "cuBLASLt has no algorithm for M=%d N=%d K=%d ta=%d tb=%d batch=%d bias=%d", g->M,
                 g->N, g->K, g->ta, g->tb, g->batch, g->has_bias);
        CUDA_FATAL(msg);
    }
    return heur.algo;
}

/* H(g), memoised */
static cublasLtMatmulAlgo_t algo_memo(const GemmKey *g) {
    size_t i = (size_t)(key_hash(g) % GEMM_ALGOS);
    for (; g_algos[i].used; i = (i + 1) % GEMM_ALGOS)
        if (!memcmp(&g_algos[i].key, g, sizeof *g)) return g_algos[i].algo;
    if (g_n_algos >= GEMM_ALGOS * 3 / 4) { /* forget everything: recomputed identically */
        memset(g_algos, 0, sizeof g_algos);
        g_n_algos = 0;
        i = (size_t)(key_hash(g) % GEMM_ALGOS);
    }
    g_algos[i].key = *g;
    g_algos[i].algo = heuristic(g);
    g_algos[i].used = 1;
    g_n_algos++;
    return g_algos[i].algo;
}

/* algo(S) of the header comment; p holds S's descriptor and layouts */
static cublasLtMatmulAlgo_t choose_algo(const GemmPlan *p) {
    GemmKey rep = p->key;
    if (rep.vary_m) rep.M = gemm_bucket(rep.M);
    if (rep.vary_k) rep.K = gemm_bucket(rep.K);
    cublasLtMatmulAlgo_t a = algo_memo(&rep);
    if (!memcmp(&rep, &p->key, sizeof rep)) return a;
    cublasLtMatmulHeuristicResult_t r;
    memset(&r, 0, sizeof r);
    /* a refusal is an answer here, not an error: the exact shape's own
     * heuristic query follows */
    cublasStatus_t st =
        cublasLtMatmulAlgoCheck(g_cuda.lt, p->desc, p->la, p->lb, p->lc, p->lc, &a, &r);
    if (st == CUBLAS_STATUS_SUCCESS && r.state == CUBLAS_STATUS_SUCCESS &&
        r.workspaceSize <= g_cuda.lt_ws_bytes)
        return a;
    return algo_memo(&p->key);
}

static GemmPlan *plan_get(const GemmKey *key) {
    GemmPlan *p = &g_plans[key_hash(key) % GEMM_PLANS];
    if (p->used && !memcmp(&p->key, key, sizeof *key)) return p;
    if (p->used) objects_destroy(p->desc, p->la, p->lb, p->lc);
    p->used = 0;
    p->key = *key;
    plan_objects(key, &p->desc, &p->la, &p->lb, &p->lc);
    p->used = 1;
    p->algo = choose_algo(p);
    return p;
}

void ops_cuda_forget_gemm_plans(void) {
    if (g_cuda.ready) CUDA_CHECK(cudaStreamSynchronize(g_cuda.stream));
    for (int i = 0; i < GEMM_PLANS; i++) {
        GemmPlan *p = &g_plans[i];
        if (p->used) objects_destroy(p->desc, p->la, p->lb, p->lc);
    }
    memset(g_plans, 0, sizeof g_plans);
    memset(g_algos, 0, sizeof g_algos);
    g_n_algos = 0;
}

void cuda_gemm(const GemmArgs *g) {
    GemmKey key;
    memset(&key, 0, sizeof key); /* padding too: the key is compared with memcmp */
    key.ta = g->ta, key.tb = g->tb, key.M = g->M, key.N = g->N, key.K = g->K;
    key.lda = g->lda, key.ldb = g->ldb, key.ldc = g->ldc, key.batch = g->batch;
    key.has_bias = g->bias != NULL, key.tf32 = g->tf32;
    key.vary_m = g->vary_m != 0, key.vary_k = g->vary_k != 0;
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
    g.vary_m = 1; /* the rows: tokens, a different count per MoE expert and step */
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
        g.vary_m = 1, g.vary_k = 0; /* rows: tokens */
        cuda_gemm(&g);
    }
    g.ta = 1, g.tb = 0, g.M = OC, g.N = IC, g.K = N;
    g.A = dout, g.lda = OC, g.B = inp, g.ldb = IC, g.C = dw, g.ldc = IC, g.beta = 1.0f;
    g.vary_m = 0, g.vary_k = 1; /* the reduction runs over the tokens */
    cuda_gemm(&g);
    if (dbias)
        cuda_colsum<T>((T *)dbias, NULL, (const T *)dout, NULL, NULL, NULL, N, OC, COLSUM_PLAIN);
}

void cuda_fill_gemm(Ops *o, int use_bf16) {
    o->matmul_fwd = use_bf16 ? matmul_fwd<bf16> : matmul_fwd<float>;
    o->matmul_bwd = use_bf16 ? matmul_bwd<bf16> : matmul_bwd<float>;
}
