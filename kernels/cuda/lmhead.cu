/* lmhead.cu: the LM head fused with softmax cross-entropy. Rows go through
 * in chunks of cuda.lmhead_chunk_rows rows (default 1024, ops.c) so the
 * full (N, V) logits never exist:
 * per chunk, one GEMM writes fp32 logits into scratch, one kernel turns each
 * row into its loss and (when training) its dlogits in the act type, and two
 * GEMMs give dx (overwritten) and dw (accumulated).
 *
 * scratch layout per chunk: logits fp32 (rows, Vp), then in the bf16 table
 * dlogits bf16 (rows, Vp); the fp32 table writes dlogits over the logits.
 * Vp is V rounded up to 64: the rows of both are 16-byte aligned whatever V
 * is (GPT-2's 50257 gives cuBLASLt 4- and 2-byte aligned rows otherwise,
 * and only its slow kernels); the columns past V are never read.
 */
#include <math.h>

#include "kernels/cuda/cuda_common.cuh"

/* One block per row, two passes over the logits: an online max and sum of
 * exp per thread (rescaled when the max grows), then block reductions (fp32),
 * loss = logsumexp - logit[target] (0 for target < 0, NaN for a target
 * >= V so a bad id is visible); when dl != NULL writes
 * dl = (softmax - onehot) * grad_scale (all 0 for an ignored row). dl may
 * alias logits (fp32 table): every element is read before it is written,
 * by the same thread. */
template <typename E>
__global__ void lmhead_ce_kernel(float *losses, E *dl, const float *logits, const int32_t *targets,
                                 int V, size_t ld, float grad_scale) {
    const float *l = logits + (size_t)blockIdx.x * ld;
    int tgt = targets[blockIdx.x];
    /* read before the reductions' barriers: dl may overwrite l afterwards */
    float l_tgt = tgt >= 0 && tgt < V ? l[tgt] : 0.0f;
    float m = -INFINITY, s = 0.0f;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float x = l[i];
        if (x > m) {
            s = s * expf(m - x) + 1.0f; /* expf(-inf) = 0 on the first element */
            m = x;
        } else {
            s += expf(x - m);
        }
    }
    float M = block_reduce(m, 1);
    s = m == -INFINITY ? 0.0f : s * expf(m - M);
    float lse = M + logf(block_reduce(s, 0));
    if (threadIdx.x == 0)
        losses[blockIdx.x] = tgt < 0 ? 0.0f : (tgt < V ? lse - l_tgt : NAN);
    if (!dl) return;
    E *d = dl + (size_t)blockIdx.x * ld;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        float g = tgt < 0 ? 0.0f : expf(l[i] - lse) * grad_scale - (i == tgt ? grad_scale : 0.0f);
        d[i] = from_f<E>(g);
    }
}

/* rows a chunk: the option cuda.lmhead_chunk_rows (an A/B knob for
 * tools/gpu-check; read at each call, so the backend must not be
 * reconfigured between a model's lmhead_scratch_bytes and its steps) */
static size_t chunk_rows(int N) {
    size_t R = (size_t)g_cuda.opt.cuda.lmhead_chunk_rows;
    return (size_t)N < R ? (size_t)N : R;
}
/* the row stride of the logits and dlogits in scratch */
static size_t padded_v(int V) { return ((size_t)V + 63) / 64 * 64; }

template <typename E> static size_t lmhead_scratch_bytes(int N, int V) {
    size_t cells = chunk_rows(N) * padded_v(V);
    return cuda_pad(cells * sizeof(float)) + (sizeof(E) == 4 ? 0 : cuda_pad(cells * sizeof(E)));
}

template <typename E>
static void lmhead_ce(float *losses, void *dx, void *dw, const void *x_, const void *w,
                      const int32_t *targets, int N, int C, int V, float grad_scale,
                      void *scratch) {
    const E *x = (const E *)x_;
    size_t R = chunk_rows(N), Vp = padded_v(V);
    float *logits = (float *)scratch;
    E *dl = sizeof(E) == 4 ? (E *)scratch : (E *)((char *)scratch + cuda_pad(R * Vp * sizeof(float)));
    /* the vocabulary in two column ranges: [0, Va) with Va a multiple of 64,
     * and the tail [Va, V) (empty when V is a multiple of 64): every large
     * GEMM then has all of M, N, K aligned (cuBLASLt's fast kernels; GPT-2's
     * V = 50257 left it at ~120 TFLOP/s), the tail GEMMs are tiny */
    const int Va = V / 64 * 64;
    const int part0[2] = {0, Va}, part1[2] = {Va, V};
    const E *we = (const E *)w;
    for (int n0 = 0; n0 < N; n0 += (int)R) {
        int rows = N - n0 < (int)R ? N - n0 : (int)R;
        const E *xc = x + (size_t)n0 * C;
        GemmArgs g = {};
        g.batch = 1;
        g.alpha = 1.0f;
        for (int p = 0; p < 2; p++) {
            int v0 = part0[p], nv = part1[p] - part0[p];
            if (nv <= 0) continue;
            /* logits[:, v0:v0+nv] (rows, nv) fp32 = xc (rows, C) @ w[v0:v0+nv]^T */
            g.ta = 0, g.tb = 1, g.M = rows, g.N = nv, g.K = C;
            g.A = xc, g.lda = C, g.B = we + (size_t)v0 * C, g.ldb = C, g.C = logits + v0;
            g.ldc = (int)Vp;
            g.ab_type = cuda_dtype<E>(), g.c_type = CUDA_R_32F, g.beta = 0.0f;
            cuda_gemm(&g);
        }
        int block = V >= 4096 ? 1024 : 256;
        lmhead_ce_kernel<E><<<rows, block, 0, g_cuda.stream>>>(
            losses + n0, dx ? dl : NULL, logits, targets + n0, V, Vp, grad_scale);
        LAUNCH_CHECK();
        if (!dx) continue;
        g.c_type = cuda_dtype<E>();
        int first = 1;
        for (int p = 0; p < 2; p++) {
            int v0 = part0[p], nv = part1[p] - part0[p];
            if (nv <= 0) continue;
            /* dx (rows, C) (=, then +=) dl[:, v0:v0+nv] @ w[v0:v0+nv] */
            g.ta = 0, g.tb = 0, g.M = rows, g.N = C, g.K = nv;
            g.A = dl + v0, g.lda = (int)Vp, g.B = we + (size_t)v0 * C, g.ldb = C;
            g.C = (E *)dx + (size_t)n0 * C, g.ldc = C;
            g.beta = first ? 0.0f : 1.0f;
            cuda_gemm(&g);
            first = 0;
            /* dw[v0:v0+nv] (nv, C) += dl[:, v0:v0+nv]^T @ xc (rows, C) */
            g.ta = 1, g.tb = 0, g.M = nv, g.N = C, g.K = rows;
            g.A = dl + v0, g.lda = (int)Vp, g.B = xc, g.ldb = C, g.C = (E *)dw + (size_t)v0 * C;
            g.ldc = C, g.beta = 1.0f;
            cuda_gemm(&g);
        }
    }
}

void cuda_fill_lmhead(Ops *o, int use_bf16) {
    o->lmhead_ce = use_bf16 ? lmhead_ce<bf16> : lmhead_ce<float>;
    o->lmhead_scratch_bytes = use_bf16 ? lmhead_scratch_bytes<bf16> : lmhead_scratch_bytes<float>;
}
