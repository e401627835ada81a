/* ops_cpu_moe.c: CPU (fp32) kernels of the mixture-of-experts FFN: router
 * softmax + top-k, its backward, the stable permutation of routed rows by
 * expert, gather/combine and their backwards. The expert GEMMs themselves
 * are ops->matmul_* on contiguous slices of the permuted rows.
 *
 * Determinism: every kernel is parallel over rows (tokens or packed rows)
 * and each thread writes only its own rows; the per-expert column sums in
 * route_fwd are parallel over experts, each summed sequentially in row
 * order in fp64; permute is a sequential counting sort. So outputs are
 * bitwise reproducible for any thread count.
 */
#include <math.h>
#include <string.h>

#include "kernels/cpu/ops_cpu_moe.h"

void cpu_moe_route_fwd(float *probs, float *lse, int32_t *top_idx, float *top_w, float *stats,
                       const void *logits_, int N, int E, int K, int norm_topk) {
    const float *logits = logits_;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = logits + (size_t)n * E;
        float *p = probs + (size_t)n * E;
        float mx = x[0];
        for (int e = 1; e < E; e++) mx = x[e] > mx ? x[e] : mx;
        double s = 0.0;
        for (int e = 0; e < E; e++) s += exp((double)(x[e] - mx));
        for (int e = 0; e < E; e++) p[e] = (float)(exp((double)(x[e] - mx)) / s);
        lse[n] = (float)(mx + log(s));
        /* selection of the K largest, descending; strict > keeps the lower
         * index first on ties */
        int32_t *idx = top_idx + (size_t)n * K;
        float *w = top_w + (size_t)n * K;
        for (int k = 0; k < K; k++) {
            int best = -1;
            for (int e = 0; e < E; e++) {
                int taken = 0;
                for (int j = 0; j < k; j++) taken |= idx[j] == e;
                if (!taken && (best < 0 || p[e] > p[best])) best = e;
            }
            idx[k] = best;
            w[k] = p[best];
        }
        if (norm_topk) {
            float sum = 0.0f;
            for (int k = 0; k < K; k++) sum += w[k];
            for (int k = 0; k < K; k++) w[k] /= sum;
        }
    }
#pragma omp parallel for schedule(static)
    for (int e = 0; e <= E; e++) {
        double s = 0.0;
        if (e < E)
            for (int n = 0; n < N; n++) s += probs[(size_t)n * E + e];
        else
            for (int n = 0; n < N; n++) s += (double)lse[n] * lse[n];
        stats[e] = (float)s;
    }
}

void cpu_moe_route_bwd(void *dlogits_, const float *dtop_w, const float *dprob, float z_scale,
                       const float *probs, const float *lse, const int32_t *top_idx,
                       const float *top_w, int N, int E, int K, int norm_topk) {
    float *dlogits = dlogits_;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *p = probs + (size_t)n * E;
        const int32_t *idx = top_idx + (size_t)n * K;
        const float *w = top_w + (size_t)n * K, *dw = dtop_w + (size_t)n * K;
        float *dl = dlogits + (size_t)n * E;
        /* dL/dp into dl (used as scratch) */
        for (int e = 0; e < E; e++) dl[e] = dprob ? dprob[e] : 0.0f;
        if (norm_topk) {
            /* w_k = p_k / s, s = sum_k p_k: dp_k = (dw_k - sum_j dw_j w_j) / s */
            float s = 0.0f, dot = 0.0f;
            for (int k = 0; k < K; k++) s += p[idx[k]], dot += dw[k] * w[k];
            for (int k = 0; k < K; k++) dl[idx[k]] += (dw[k] - dot) / s;
        } else {
            for (int k = 0; k < K; k++) dl[idx[k]] += dw[k];
        }
        /* softmax: dx_e = p_e (g_e - sum_j p_j g_j); z-loss: d(lse^2) = 2 lse p */
        double dot = 0.0;
        for (int e = 0; e < E; e++) dot += (double)p[e] * dl[e];
        float zt = z_scale * 2.0f * lse[n];
        for (int e = 0; e < E; e++) dl[e] = p[e] * (dl[e] - (float)dot + zt);
    }
}

void cpu_moe_permute(int32_t *counts, int32_t *row_token, int32_t *pos, const int32_t *top_idx,
                     int N, int E, int K) {
    memset(counts, 0, (size_t)E * sizeof *counts);
    for (int i = 0; i < N * K; i++) counts[top_idx[i]]++;
    /* counts -> start row of each expert, then a cursor walked in token
     * order (stable); afterwards counts[e] is the end row of expert e */
    int32_t start = 0;
    for (int e = 0; e < E; e++) {
        int32_t c = counts[e];
        counts[e] = start;
        start += c;
    }
    for (int i = 0; i < N * K; i++) {
        int32_t r = counts[top_idx[i]]++;
        row_token[r] = i / K;
        pos[i] = r;
    }
    for (int e = E - 1; e > 0; e--) counts[e] -= counts[e - 1];
}

void cpu_moe_gather_fwd(void *xs_, const void *x_, const int32_t *row_token, int NK, int C) {
    float *xs = xs_;
    const float *x = x_;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < NK; r++)
        memcpy(xs + (size_t)r * C, x + (size_t)row_token[r] * C, (size_t)C * sizeof(float));
}

void cpu_moe_gather_bwd(void *dx_, const void *dxs_, const int32_t *pos, int N, int K, int C) {
    float *dx = dx_;
    const float *dxs = dxs_;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float *o = dx + (size_t)n * C;
        memcpy(o, dxs + (size_t)pos[(size_t)n * K] * C, (size_t)C * sizeof(float));
        for (int k = 1; k < K; k++) {
            const float *s = dxs + (size_t)pos[(size_t)n * K + k] * C;
            for (int c = 0; c < C; c++) o[c] += s[c];
        }
    }
}

void cpu_moe_combine_fwd(void *out_, const void *ys_, const float *top_w, const int32_t *pos,
                         int N, int K, int C) {
    float *out = out_;
    const float *ys = ys_;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float *o = out + (size_t)n * C;
        for (int k = 0; k < K; k++) {
            const float *y = ys + (size_t)pos[(size_t)n * K + k] * C;
            float w = top_w[(size_t)n * K + k];
            if (k == 0)
                for (int c = 0; c < C; c++) o[c] = w * y[c];
            else
                for (int c = 0; c < C; c++) o[c] += w * y[c];
        }
    }
}

void cpu_moe_combine_bwd(void *dys_, float *dtop_w, const void *dout_, const void *ys_,
                         const float *top_w, const int32_t *pos, int N, int K, int C) {
    float *dys = dys_;
    const float *dout = dout_, *ys = ys_;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *d = dout + (size_t)n * C;
        for (int k = 0; k < K; k++) {
            size_t r = (size_t)pos[(size_t)n * K + k];
            float w = top_w[(size_t)n * K + k], *dy = dys + r * C;
            const float *y = ys + r * C;
            double dot = 0.0;
            for (int c = 0; c < C; c++) dy[c] = w * d[c], dot += (double)d[c] * y[c];
            dtop_w[(size_t)n * K + k] = (float)dot;
        }
    }
}
