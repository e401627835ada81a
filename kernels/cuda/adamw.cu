/* adamw.cu: the optimizer ops: sum of squares of a gradient buffer (for
 * the global norm; clipping folds into AdamW's grad_scale) and AdamW with
 * fp32 master weights and moments.
 *
 * sumsq is deterministic: the grid size is a function of n only, each
 * thread accumulates a fixed set of elements in double, blocks reduce in a
 * fixed order, and the host adds the block partials in order. It returns a
 * number, so it synchronises the stream.
 */
#include <math.h>
#include <stdlib.h>

#include "kernels/cuda/cuda_common.cuh"

#define SUMSQ_BLOCK 256
#define SUMSQ_MAX_BLOCKS 1024

/* part[blockIdx.x] = sum of g^2 over this block's grid-stride chunks of 8 */
template <typename E>
__global__ void sumsq_kernel(double *part, const E *g, size_t n, int vec) {
    __shared__ double sh[SUMSQ_BLOCK / 32];
    double s = 0.0;
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t c = blockIdx.x * (size_t)blockDim.x + threadIdx.x; c * 8 < n; c += stride) {
        size_t i0 = c * 8;
        int cnt = n - i0 < 8 ? (int)(n - i0) : 8;
        float f[8];
        ld8v(f, g + i0, vec && cnt == 8, cnt);
        for (int j = 0; j < 8; j++) s += (double)f[j] * f[j];
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0.0;
        for (int w = 0; w < SUMSQ_BLOCK / 32; w++) t += sh[w];
        part[blockIdx.x] = t;
    }
}

template <typename E> static double sumsq(const void *g, size_t n) {
    if (!n) return 0.0;
    size_t chunks = (n + 7) / 8;
    size_t blocks = (chunks + SUMSQ_BLOCK - 1) / SUMSQ_BLOCK;
    if (blocks > SUMSQ_MAX_BLOCKS) blocks = SUMSQ_MAX_BLOCKS;
    double *part = (double *)cuda_scratch(blocks * sizeof(double));
    sumsq_kernel<E><<<(unsigned)blocks, SUMSQ_BLOCK, 0, g_cuda.stream>>>(part, (const E *)g, n,
                                                                         cuda_aligned16(g));
    LAUNCH_CHECK();
    double host[SUMSQ_MAX_BLOCKS];
    CUDA_CHECK(cudaMemcpyAsync(host, part, blocks * sizeof(double), cudaMemcpyDeviceToHost,
                               g_cuda.stream));
    CUDA_CHECK(cudaStreamSynchronize(g_cuda.stream));
    double s = 0.0;
    for (size_t b = 0; b < blocks; b++) s += host[b];
    return s;
}

/* One thread per chunk of 8 parameters: reads grad (E), the fp32 master (or
 * the param itself when master is NULL), m, v; writes m, v, master and the
 * param rounded to E. bc1/bc2 are the bias corrections 1 - b^t from the host. */
template <typename E>
__global__ void adamw_kernel(E *param, float *master, const E *grad, float *m, float *v, size_t n,
                             float lr, float b1, float b2, float eps, float wd, float bc1,
                             float bc2, float grad_scale, int vec) {
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t c = blockIdx.x * (size_t)blockDim.x + threadIdx.x; c * 8 < n; c += stride) {
        size_t i0 = c * 8;
        int cnt = n - i0 < 8 ? (int)(n - i0) : 8, vc = vec && cnt == 8;
        float g[8], p[8], mm[8], vv[8];
        ld8v(g, grad + i0, vc, cnt);
        if (master)
            ld8v(p, master + i0, vc, cnt);
        else
            ld8v(p, param + i0, vc, cnt);
        ld8v(mm, m + i0, vc, cnt);
        ld8v(vv, v + i0, vc, cnt);
        for (int j = 0; j < 8; j++) {
            float gj = g[j] * grad_scale;
            mm[j] = b1 * mm[j] + (1.0f - b1) * gj;
            vv[j] = b2 * vv[j] + (1.0f - b2) * gj * gj;
            float mh = mm[j] / bc1, vh = vv[j] / bc2;
            p[j] -= lr * (mh / (sqrtf(vh) + eps) + wd * p[j]);
        }
        st8v(m + i0, mm, vc, cnt);
        st8v(v + i0, vv, vc, cnt);
        if (master) st8v(master + i0, p, vc, cnt);
        st8v(param + i0, p, vc, cnt);
    }
}

template <typename E>
static void adamw(void *param, float *master, const void *grad, float *m, float *v, size_t n,
                  float lr, float b1, float b2, float eps, float wd, int t, float grad_scale) {
    if (!n) return;
    float bc1 = 1.0f - powf(b1, (float)t), bc2 = 1.0f - powf(b2, (float)t);
    int vec = cuda_aligned16(param) && cuda_aligned16(grad) && cuda_aligned16(m) &&
              cuda_aligned16(v) && (!master || cuda_aligned16(master));
    adamw_kernel<E><<<cuda_grid((n + 7) / 8, 256), 256, 0, g_cuda.stream>>>(
        (E *)param, master, (const E *)grad, m, v, n, lr, b1, b2, eps, wd, bc1, bc2, grad_scale,
        vec);
    LAUNCH_CHECK();
}

void cuda_fill_adamw(Ops *o, int use_bf16) {
    o->sumsq = use_bf16 ? sumsq<bf16> : sumsq<float>;
    o->adamw = use_bf16 ? adamw<bf16> : adamw<float>;
}
